#include "bench/channel_transport.h"

#include <sys/wait.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bench/harness.h"
#include "ipc/channel/channel_region.h"
#include "ipc/channel/client_channel.h"
#include "ipc/channel/server_channel.h"
#include "ipc/socket/unix_socket.h"

namespace sluice::bench {
namespace {

using testing::Subprocess;

class ChannelClient final : public PingPongClient {
 public:
  ChannelClient(Subprocess child, std::unique_ptr<ClientChannel> channel)
      : child_(std::move(child)), channel_(std::move(channel)) {}

  absl::StatusOr<uint64_t> RoundTrip(std::span<const std::byte> payload) override {
    absl::StatusOr<OutgoingCall> call = channel_->BeginCall(payload.size());
    if (!call.ok()) return call.status();
    const std::span<std::byte> buffer = call->buffer().first(payload.size());
    std::memcpy(buffer.data(), payload.data(), payload.size());
    absl::StatusOr<Reply> reply = channel_->Call(*std::move(call), buffer);
    if (!reply.ok()) return reply.status();
    ReplyWords words{};
    if (reply->data().size() != sizeof(words)) {
      return absl::DataLossError(absl::StrCat("reply of ", reply->data().size(), " bytes"));
    }
    std::memcpy(&words, reply->data().data(), sizeof(words));
    if (words.length != payload.size()) {
      return absl::DataLossError("channel server answered a different length");
    }
    return words.sum;
  }

  absl::Status Stop() override {
    // An empty request is the stop signal; the server answers it, then exits.
    // The empty message must point into the call's buffer: Publish derives
    // the request offset from message.data(), so a default span (nullptr)
    // would publish a garbage offset and the server would close the channel
    // with DATA_LOSS.
    absl::StatusOr<OutgoingCall> call = channel_->BeginCall(0);
    if (!call.ok()) return call.status();
    const std::span<std::byte> empty = call->buffer().first(0);
    absl::StatusOr<Reply> reply = channel_->Call(*std::move(call), empty);
    if (!reply.ok()) return reply.status();
    absl::StatusOr<int> status = child_.Wait(absl::Seconds(10));
    if (!status.ok()) return status.status();
    if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      return absl::InternalError(absl::StrCat("channel server exited with wait status ", *status));
    }
    return absl::OkStatus();
  }

  pid_t server_pid() const override { return child_.pid(); }

 private:
  // Declared first so it is destroyed last: the channel goes first and the
  // child is reaped after.
  Subprocess child_;
  std::unique_ptr<ClientChannel> channel_;
};

}  // namespace

absl::StatusOr<ChannelPeer> SpawnChannelPeer(const std::vector<std::string>& argv,
                                             const std::vector<int>& extra_fds,
                                             std::optional<int> cpu) {
  absl::StatusOr<Region> region = CreateChannelRegion(kBenchGeometry);
  if (!region.ok()) return region.status();
  absl::StatusOr<std::pair<UniqueFd, UniqueFd>> sockets = SeqPacketPair();
  if (!sockets.ok()) return sockets.status();
  absl::StatusOr<UniqueFd> child_region = region->DuplicateFd();
  if (!child_region.ok()) return child_region.status();
  std::vector<int> fds = {child_region->get(), sockets->second.get()};
  fds.insert(fds.end(), extra_fds.begin(), extra_fds.end());
  absl::StatusOr<Subprocess> child = Subprocess::Spawn(argv, fds, cpu);
  if (!child.ok()) return child.status();
  // Only the child may hold its liveness end, or its death would go unseen.
  sockets->second.reset();
  return ChannelPeer{*std::move(child), *std::move(region), std::move(sockets->first)};
}

absl::StatusOr<ChildChannelEnds> AdoptChildChannelEnds() {
  absl::StatusOr<Region> region =
      Region::Adopt(UniqueFd(3), sizeof(channel_layout::ChannelHeader), Region::kMaxSize);
  if (!region.ok()) return region.status();
  return ChildChannelEnds{*std::move(region), UniqueFd(4)};
}

absl::StatusOr<std::unique_ptr<PingPongClient>> StartChannel(const CaseSetup& setup,
                                                             PeerWatcher& watcher) {
  absl::StatusOr<ChannelPeer> peer =
      SpawnChannelPeer(ServerArgv(Transport::kChannel, setup), {}, setup.server_cpu);
  if (!peer.ok()) return peer.status();
  ChannelOptions options;
  options.spin = setup.channel_spin;
  // Both ends are this benchmark's processes, one user: the same-user trust
  // ServiceHost gives by default (large messages stay in place). The sealed
  // path is sluice_large_bench's.
  options.trust_peer = true;
  absl::StatusOr<std::unique_ptr<ClientChannel>> channel =
      ClientChannel::Open(std::move(peer->region), std::move(peer->liveness), watcher, options);
  if (!channel.ok()) return channel.status();
  return std::make_unique<ChannelClient>(std::move(peer->process), *std::move(channel));
}

int ServeChannel(const CaseSetup& setup) {
  absl::StatusOr<ChildChannelEnds> ends = AdoptChildChannelEnds();
  if (!ends.ok()) Die(ends.status(), "adopting the channel region");
  absl::StatusOr<std::unique_ptr<PeerWatcher>> watcher = PeerWatcher::Create();
  if (!watcher.ok()) Die(watcher.status(), "PeerWatcher::Create");
  ChannelOptions options;
  options.spin = setup.channel_spin;
  // Both ends are this benchmark's processes, one user: the same-user trust
  // ServiceHost gives by default (large messages stay in place). The sealed
  // path is sluice_large_bench's.
  options.trust_peer = true;
  absl::StatusOr<std::unique_ptr<ServerChannel>> server =
      ServerChannel::Open(std::move(ends->region), std::move(ends->liveness), **watcher, options);
  if (!server.ok()) Die(server.status(), "ServerChannel::Open");
  for (;;) {
    absl::StatusOr<IncomingCall> call = (*server)->Receive();
    if (!call.ok()) Die(call.status(), "Receive");
    const std::span<const std::byte> request = call->request();
    if (request.empty()) {
      if (absl::Status s = call->Reply({}); !s.ok()) Die(s, "Reply (stop)");
      return 0;
    }
    const ReplyWords words{SumWords(request), request.size()};
    absl::StatusOr<std::span<std::byte>> space = call->ReserveReply(sizeof(words));
    if (!space.ok()) Die(space.status(), "ReserveReply");
    std::memcpy(space->data(), &words, sizeof(words));
    if (absl::Status s = call->Reply(space->first(sizeof(words))); !s.ok()) Die(s, "Reply");
  }
}

}  // namespace sluice::bench
