// libFuzzer target: everything a hostile peer can put in front of one side of
// a channel, read the way that side reads it.
//
//   mode 0  the victim is a ServerChannel: the input writes the control
//           region (header copy aside, any byte: slot client lines, client
//           words) and sends liveness messages (hello, arena, descriptor
//           tags, with memfds sealed right or wrong, pipes; floods of rings);
//           then the server claims what it finds (draining its bell first
//           when it waits on it, as a pool of many channels does), verifies
//           it as the stub does and answers.
//   mode 1  the victim is a ClientChannel: the same for the server lines of
//           the slots and the reply-side messages; then a call reads the
//           reply as the proxy does (Response<T>::Make verifies it).
//   mode 2  the input is a channel header: ValidateHeader, then opening
//           both sides over a region that carries it.
// Any input must end in an answer or an error, never a crash, a hang or a
// sanitizer report; each input starts from a fresh channel.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "ipc/channel/channel_region.h"
#include "ipc/channel/client_channel.h"
#include "ipc/channel/layout.h"
#include "ipc/channel/server_channel.h"
#include "ipc/channel/server_waiting.h"
#include "ipc/rpc/message.h"
#include "ipc/socket/unix_socket.h"
#include "ipc/sync/futex.h"
#include "kitchen_sink_sluice.h"

namespace {

using namespace ::sluice;  // NOLINT: a fuzzer's one file.
namespace sink = ::sluice::test::sink;

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint64_t Word(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= uint64_t{Byte()} << (8 * i);
    return v;
  }
  std::span<const uint8_t> Bytes(size_t n) {
    n = std::min(n, size_ - std::min(pos_, size_));
    std::span<const uint8_t> out(data_ + pos_, n);
    pos_ += n;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

PeerWatcher& Watcher() {
  static PeerWatcher* watcher = PeerWatcher::Create()->release();
  return *watcher;
}

// A memfd holding `bytes`, sealed according to `kind`: 0 immutable (right
// for spills), 1 future-write only (right for arenas), 2 size seals only,
// 3 none.
UniqueFd MakeMemfd(std::span<const uint8_t> bytes, uint64_t size, int kind) {
  UniqueFd fd(::memfd_create("sluice-fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return UniqueFd();
  if (!bytes.empty())
    (void)!::pwrite(fd.get(), bytes.data(), std::min<size_t>(bytes.size(), size), 0);
  int seals = 0;
  if (kind == 0) seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
  if (kind == 1) seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE;
  if (kind == 2) seals = F_SEAL_SHRINK | F_SEAL_GROW;
  if (seals != 0) (void)::fcntl(fd.get(), F_ADD_SEALS, seals);
  return fd;
}

// Applies the hostile side's writes and messages until the input runs out.
void PlayHostile(Input& in, Region& region, int socket, uint64_t arena_size) {
  for (int op = 0; op < 64 && !in.empty(); ++op) {
    switch (in.Byte() % 5) {
      case 0: {  // Eight bytes anywhere past the header.
        const uint64_t at =
            sizeof(channel_layout::ChannelHeader) +
            in.Word(2) % (region.size() - sizeof(channel_layout::ChannelHeader) - 8);
        const uint64_t value = in.Word(8);
        std::memcpy(region.data() + at / 8 * 8, &value, 8);
        break;
      }
      case 1: {  // A slot's seq word, the one that makes a request or reply pending.
        const uint64_t slot = in.Byte() % 4;
        const bool server_line = (in.Byte() & 1) != 0;
        const uint32_t seq = static_cast<uint32_t>(in.Word(1));
        auto* slots = reinterpret_cast<channel_layout::Slot*>(
            region.data() + channel_layout::PlanRegion({})->slots_offset);
        (server_line ? slots[slot].reply_seq : slots[slot].request_seq).store(seq);
        break;
      }
      case 2:
      case 3: {  // A liveness message: a tag and up to two descriptors.
        const uint8_t shape = in.Byte();
        uint64_t tag;
        switch (shape % 4) {
          case 0:
            tag = channel_layout::kArenaTag;
            break;
          case 1:
            tag = ~uint64_t{0};
            break;  // The hello's.
          case 2:
            tag = channel_layout::FdTag(in.Byte() % 4, static_cast<uint32_t>(in.Word(1)));
            break;
          default:
            tag = in.Word(8);
            break;
        }
        std::vector<UniqueFd> fds;
        const int count = (shape >> 2) % 3;
        for (int i = 0; i < count; ++i) {
          const uint8_t kind = in.Byte();
          if (kind % 5 == 4) {
            int p[2];
            if (::pipe2(p, O_CLOEXEC) == 0) {
              fds.emplace_back(p[0]);
              ::close(p[1]);
            }
            continue;
          }
          const uint64_t size = (kind & 0x80) != 0 ? arena_size : 4096 * (1 + in.Byte() % 4);
          fds.push_back(MakeMemfd(in.Bytes(in.Byte()), size, kind % 5));
        }
        std::vector<int> raw;
        for (const UniqueFd& fd : fds) {
          if (fd) raw.push_back(fd.get());
        }
        std::byte bytes[8];
        std::memcpy(bytes, &tag, 8);
        // A short or long message now and then, which no valid peer sends.
        const size_t length = (shape & 0x40) != 0 ? 3 : 8;
        (void)SendMessage(socket, std::span<const std::byte>(bytes, length), raw);
        break;
      }
      case 4: {  // Rings of the bell, up to far more than a client ever queues.
        const int rings = 1 + in.Byte() * 2;
        const uint64_t tag = channel_layout::kBellTag;
        for (int i = 0; i < rings; ++i) {
          if (::send(socket, &tag, sizeof(tag), MSG_DONTWAIT | MSG_NOSIGNAL) != sizeof(tag)) break;
        }
        break;
      }
    }
  }
}

void FuzzServer(Input& in) {
  auto region = CreateChannelRegion();
  auto sockets = SeqPacketPair();
  if (!region.ok() || !sockets.ok()) return;
  const uint8_t flags = in.Byte();
  const bool hello = (flags & 1) != 0;
  // Waiting as a pool with many channels does: on the bell (the liveness
  // socket), draining it before each look.
  const bool bells = (flags & 2) != 0;
  if (hello) (void)EnableSenderCredentials(sockets->first.get());
  auto hostile = Region::Adopt(*region->DuplicateFd(), 0, Region::kMaxSize);
  ChannelOptions options;
  options.spin = SpinPolicy::NeverSpin();
  options.hello_identity = hello;
  auto server =
      ServerChannel::Open(*std::move(region), std::move(sockets->first), Watcher(), options);
  if (!server.ok() || !hostile.ok()) return;
  // Rings can fill the socket: a full one refuses instead of blocking.
  (void)::fcntl(sockets->second.get(), F_SETFL, O_NONBLOCK);
  ServerWaiting waiting(**server);
  if (bells) waiting.ListenOnBell([] {});
  PlayHostile(in, *hostile, sockets->second.get(),
              channel_layout::PlanRegion({})->request_arena_size);
  rpc::MessageBuffer copy;
  for (int i = 0; i < 4; ++i) {
    if (bells) waiting.DrainBell();
    auto call = waiting.TryReceive();
    if (!call.ok() || !call->has_value()) break;
    IncomingCall& c = **call;
    auto request = rpc::VerifyMessage<sink::EchoRequest>(
        rpc::Stabilize(c.request(), c.request_immutable(), copy), "fuzz");
    if (request.ok() && (*request)->text() != nullptr) (void)(*request)->text()->size();
    (void)c.TakeFds();
    if (c.oneway()) continue;
    auto space = c.ReserveReply(1 + in.Word(3));
    if (space.ok() && !space->empty()) {
      (void)c.Reply(space->first(std::min<size_t>(space->size(), 16)));
    } else {
      (void)c.Fail(absl::InternalError("fuzz"));
    }
  }
}

void FuzzClient(Input& in) {
  auto region = CreateChannelRegion();
  auto sockets = SeqPacketPair();
  if (!region.ok() || !sockets.ok()) return;
  auto hostile = Region::Adopt(*region->DuplicateFd(), 0, Region::kMaxSize);
  ChannelOptions options;
  options.spin = SpinPolicy::NeverSpin();
  options.trust_peer = (in.Byte() & 1) != 0;
  auto client =
      ClientChannel::Open(*std::move(region), std::move(sockets->first), Watcher(), options);
  if (!client.ok() || !hostile.ok()) return;
  (void)::fcntl(sockets->second.get(), F_SETFL, O_NONBLOCK);  // As for the server.
  // The client's own arena and hello arrive at the hostile end; drop them.
  for (;;) {
    auto message = TryReceiveMessage(sockets->second.get(), 8);
    if (!message.ok() || !message->has_value()) break;
  }
  PlayHostile(in, *hostile, sockets->second.get(),
              channel_layout::PlanRegion({})->reply_arena_size);
  for (int i = 0; i < 2; ++i) {
    auto call = (*client)->BeginCall(64, absl::Now() + absl::Milliseconds(1));
    if (!call.ok()) break;
    auto reply = (*client)->Call(*std::move(call), {}, absl::Now() + absl::Milliseconds(1));
    if (!reply.ok()) continue;
    auto response = rpc::Response<sink::EchoResponse>::Make(*std::move(reply), "fuzz");
    if (response.ok() && (*response)->blob() != nullptr) (void)(*response)->blob()->size();
  }
}

void FuzzHeader(Input& in) {
  channel_layout::ChannelHeader header{};
  const auto bytes = in.Bytes(sizeof(header));
  std::memcpy(&header, bytes.data(), bytes.size());
  auto region = CreateChannelRegion();
  if (!region.ok()) return;
  (void)channel_layout::ValidateHeader(header, region->size());
  std::memcpy(region->data(), &header, sizeof(header));
  auto sockets = SeqPacketPair();
  if (!sockets.ok()) return;
  auto copy = Region::Adopt(*region->DuplicateFd(), 0, Region::kMaxSize);
  if (!copy.ok()) return;
  (void)ClientChannel::Open(*std::move(region), std::move(sockets->first), Watcher());
  (void)ServerChannel::Open(*std::move(copy), std::move(sockets->second), Watcher());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  switch (in.Byte() % 3) {
    case 0:
      FuzzServer(in);
      break;
    case 1:
      FuzzClient(in);
      break;
    default:
      FuzzHeader(in);
      break;
  }
  return 0;
}
