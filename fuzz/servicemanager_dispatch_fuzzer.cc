// libFuzzer target: the service manager's request handling, fed through the
// same RequestDispatcher and Registry the daemon runs, with a fake outbox
// instead of sockets. Any sequence of messages from any mix of connections
// must end in replies, events or a closed connection: never a crash, a
// sanitizer report, or a message from the manager that does not verify.
//
// Input: records of [u8 peer][u16 length, little-endian][length bytes].
// `peer % 4` picks the connection (0 and 1 said Hello and acknowledge
// connections, 2 said Hello without, 3 has said nothing); the top bit closes
// that connection instead (its state is undone and a fresh one takes its
// place). Each record advances the clock by 1 ms, so waits expire.
#include <fcntl.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "services/servicemanager/dispatch.h"
#include "services/servicemanager/registry.h"

namespace {

namespace wire = ::sluice::servicemanager::wire;

class CheckingOutbox : public sluice::Outbox {
 public:
  bool Send(uint64_t, sluice::OutgoingMessage message) override {
    // Whatever a peer sent, what the manager sends must be well formed.
    if (!sluice::service_wire::VerifyEnvelope(message.bytes).ok()) std::abort();
    if (message.bytes.size() > sluice::service_wire::kMaxReplyBytes) std::abort();
    return true;
  }
};

absl::StatusOr<sluice::ChannelMaterial> FakeMaterial(const sluice::channel_layout::Geometry&) {
  sluice::ChannelMaterial out;
  out.region_size = 4096;
  for (int i = 0; i < 2; ++i) {
    out.client_fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    out.server_fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  }
  return out;
}

std::vector<std::byte> Hello(bool acks) {
  flatbuffers::FlatBufferBuilder builder;
  auto hello = wire::CreateHelloRequest(builder, 1, acks);
  sluice::service_wire::FinishEnvelope(builder, 1, absl::OkStatus(), wire::Body::HelloRequest,
                                       hello.Union());
  auto bytes = sluice::service_wire::Bytes(builder);
  return {bytes.begin(), bytes.end()};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const sluice::Logger* log = new sluice::Logger(sluice::Logger::Level::kOff);
  static const sluice::Policy* policy = [] {
    // Some names allowed to uid 1000, some not, so denials are exercised.
    auto parsed = sluice::Policy::Parse(
        "deny * f.secret* *\nallow * f.* uid:1000\nlimit f.s* 64KiB\ntrust f.t* gid:7\n", 0);
    if (!parsed.ok()) std::abort();
    return new sluice::Policy(*std::move(parsed));
  }();
  CheckingOutbox outbox;
  sluice::Registry::Limits limits;
  limits.waits_per_connection = 8;
  limits.subscriptions_per_connection = 8;
  limits.records_per_client = 16;
  limits.unacked_connections = 4;
  sluice::Registry registry(limits, outbox, *policy, FakeMaterial, *log);
  sluice::RequestDispatcher::Limits request_limits;
  request_limits.max_region_size = 1 << 20;
  sluice::RequestDispatcher dispatcher(request_limits, /*epoch=*/42, *policy, registry, outbox,
                                       *log);
  sluice::RequestDispatcher::Peer peers[4];
  uint64_t next_id = 100;
  auto reset = [&](int i) {
    peers[i] = {};
    peers[i].id = next_id++;
    peers[i].creds = {static_cast<pid_t>(100 + i), i == 2 ? 0u : 1000u, 1000u};
    if (i < 3) (void)dispatcher.Handle(peers[i], Hello(/*acks=*/i < 2), 0, absl::UnixEpoch());
  };
  for (int i = 0; i < 4; ++i) reset(i);

  absl::Time now = absl::UnixEpoch();
  size_t at = 0;
  while (at + 3 <= size) {
    const uint8_t selector = data[at];
    const size_t length =
        std::min<size_t>(data[at + 1] | (size_t{data[at + 2]} << 8), size - at - 3);
    const int i = selector % 4;
    // A copy, so the fuzzer's bounds checks end where the message does.
    const std::vector<std::byte> message(
        reinterpret_cast<const std::byte*>(data + at + 3),
        reinterpret_cast<const std::byte*>(data + at + 3 + length));
    at += 3 + length;
    now += absl::Milliseconds(1);
    if ((selector & 0x80) != 0 || !dispatcher.Handle(peers[i], message, 0, now).ok()) {
      registry.RemoveClient(peers[i].id);
      reset(i);
    }
    registry.ExpireWaits(now);
  }
  for (auto& peer : peers) registry.RemoveClient(peer.id);
  // Everything hangs off a connection: with none left, nothing may remain.
  const sluice::Registry::Counts counts = registry.counts();
  if (counts.clients != 0 || counts.services != 0 || counts.records != 0 ||
      counts.pending_lookups != 0 || counts.waits != 0 || counts.subscriptions != 0) {
    std::abort();
  }
  return 0;
}
