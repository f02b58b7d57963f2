// libFuzzer target: the object protocol as a hostile peer reaches it.
//
// Two surfaces, both served by the runtime's own pools in this process:
//   reverse     the reverse channel this process serves for the objects it
//               lent by handle (three Painters): calls addressed to any
//               handle and interface fold, Acquire and Release with any
//               payload, Clone of a handle, in any order. The fuzzer holds
//               the holder's end, as the peer would.
//   connection  a service connection served with ServeWithObjectProtocol:
//               Clone and OpenReverse (with no descriptors, with a memfd of
//               the input's bytes posing as a channel region, with a real
//               region, with too many) beside the service's own methods.
// Every input must end in a reply or an error; a call that outlives its
// deadline is a hang and aborts. A reverse channel or connection that the
// host closed as malformed is made again for the next input.
//
// Input: byte 0 flags (bit 0 surface: 0 reverse, 1 connection; bit 1
// oneway; bits 2-3 how to address the call; bits 4-6 which descriptors go
// with it), byte 1 a handle or method pick, bytes 2-17 an interface word
// and method word used when bits 2-3 say raw, then the request bytes.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "ipc/channel/channel_region.h"
#include "ipc/channel/client_channel.h"
#include "ipc/rpc/object.h"
#include "ipc/rpc/object_wire.h"
#include "ipc/rpc/server_pool.h"
#include "ipc/socket/unix_socket.h"
#include "tests/rpc/kitchen_sink_service.h"
#include "tests/testing/channel_pair.h"

namespace {

namespace rpc = ::sluice::rpc;
namespace sink = ::sluice::test::sink;
namespace wire = ::sluice::rpc::object_wire;

constexpr absl::Duration kPatience = absl::Seconds(5);
constexpr int kLent = 3;

// Handlers that wait by design (Hang never answers, Sleep sleeps as asked)
// are for the deadline tests, not for a fuzzer that treats a wait as a hang.
bool Waits(uint64_t method) {
  const uint32_t id = rpc::MethodIdOf(method);
  return id == rpc::MethodIdOf(sink::PainterInterface::kHang) ||
         id == rpc::MethodIdOf(sink::PainterInterface::kSleep);
}

[[noreturn]] void Hung(const absl::Status& status) {
  std::fprintf(stderr, "a call was not answered: %s\n", std::string(status.message()).c_str());
  std::abort();
}

// The lender side: three Painters lent by handle on `primary`, whose server
// end this fuzzer plays to take the reverse channel's holder end.
struct Lender {
  sluice::testing::LocalPair primary;
  std::shared_ptr<rpc::ExportLink> link = rpc::ExportLink::Create();
  std::vector<rpc::ExportLink::Loan> loans;
  std::shared_ptr<rpc::RemoteObject> holder;

  ~Lender() {
    for (const auto& loan : loans) rpc::ExportLink::EndLoan(loan);
  }
};

std::unique_ptr<Lender> MakeLender(sluice::PeerWatcher& watcher) {
  auto lender = std::make_unique<Lender>();
  lender->primary = *sluice::testing::MakeLocalPair(watcher);
  // The first loan opens the reverse channel: a synchronous OpenReverse on
  // primary, answered here with the holder's end adopted.
  std::thread answer([&lender] {
    auto call = lender->primary.server->Receive(absl::Now() + kPatience);
    if (!call.ok()) Hung(call.status());
    std::vector<sluice::UniqueFd> fds = call->TakeFds();
    if (fds.size() != 2) std::abort();
    auto holder = rpc::RemoteObject::Adopt(rpc::ObjectFds{std::move(fds[0]), std::move(fds[1])});
    if (!holder.ok()) std::abort();
    lender->holder = *std::move(holder);
    (void)call->Reply({});
  });
  for (int i = 0; i < kLent; ++i) {
    auto loan = lender->link->Lend(*lender->primary.client,
                                   std::make_shared<sluice::testing::PainterService>(),
                                   absl::Now() + kPatience);
    if (!loan.ok()) std::abort();
    lender->loans.push_back(*std::move(loan));
  }
  answer.join();
  return lender;
}

struct Harness {
  std::unique_ptr<sluice::PeerWatcher> watcher = *sluice::PeerWatcher::Create();
  std::unique_ptr<Lender> lender;
  rpc::ServerPool pool;
  std::unique_ptr<sluice::ClientChannel> connection;
  int connection_calls = 0;
};

void Connect(Harness& h) {
  h.connection.reset();
  auto pair = *sluice::testing::MakeLocalPair(*h.watcher);
  h.connection = std::move(pair.client);
  if (!h.pool
           .Add(std::move(pair.server),
                rpc::ServeWithObjectProtocol(std::make_shared<sluice::testing::PainterService>()))
           .ok()) {
    std::abort();
  }
  h.connection_calls = 0;
}

// Descriptors to send with a call, owned until it is made.
std::vector<sluice::UniqueFd> Descriptors(int pick, std::span<const uint8_t> bytes) {
  std::vector<sluice::UniqueFd> fds;
  auto socket = [] {
    auto pair = sluice::SeqPacketPair();
    return pair.ok() ? std::move(pair->first) : sluice::UniqueFd();
  };
  switch (pick) {
    case 1: {  // The input's bytes posing as a channel region, and a socket.
      sluice::UniqueFd memfd(::memfd_create("fuzz-region", MFD_CLOEXEC | MFD_ALLOW_SEALING));
      if (!bytes.empty() && ::write(memfd.get(), bytes.data(), bytes.size()) < 0) std::abort();
      // Sealed as a region must be, so its header, not its seals, is judged.
      (void)::fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
      fds.push_back(std::move(memfd));
      fds.push_back(socket());
      break;
    }
    case 2: {  // A well-formed region nobody serves, and a socket.
      auto region = sluice::CreateChannelRegion();
      if (!region.ok()) std::abort();
      fds.push_back(sluice::UniqueFd(::dup(region->fd())));
      fds.push_back(socket());
      break;
    }
    case 3:  // One descriptor too many.
      for (int i = 0; i < 3; ++i) fds.push_back(socket());
      break;
    case 4:  // Two descriptors of the wrong kind.
      fds.push_back(socket());
      fds.push_back(sluice::UniqueFd(::memfd_create("fuzz-liveness", MFD_CLOEXEC)));
      break;
    default:
      break;
  }
  return fds;
}

// Makes one call; DATA_LOSS from the host means it closed the channel.
void CallOn(sluice::ClientChannel& channel, const sluice::CallHeader& header, bool oneway,
            std::span<const uint8_t> body, const std::vector<sluice::UniqueFd>& fds) {
  auto call = channel.BeginCall(body.empty() ? 1 : body.size(), absl::Now() + kPatience);
  if (!call.ok()) {
    if (absl::IsDeadlineExceeded(call.status())) Hung(call.status());
    return;
  }
  if (!body.empty()) std::memcpy(call->buffer().data(), body.data(), body.size());
  call->header() = header;
  std::vector<int> raw;
  for (const auto& fd : fds) raw.push_back(fd.get());
  if (!call->AttachFds(raw).ok()) return;
  const auto message = call->buffer().first(body.size());
  if (oneway) {
    (void)channel.Send(*std::move(call), message);
    return;
  }
  auto reply = channel.Call(*std::move(call), message, absl::Now() + kPatience);
  if (!reply.ok() && absl::IsDeadlineExceeded(reply.status())) Hung(reply.status());
  // Descriptors in the reply (a Clone's) close here, ending that channel.
}

uint64_t PainterMethod(uint8_t pick) {
  constexpr uint64_t kMethods[] = {
      sink::PainterInterface::kSummarize, sink::PainterInterface::kEcho,
      sink::PainterInterface::kFail,      sink::PainterInterface::kNote,
      sink::PainterInterface::kTotal,     sink::PainterInterface::kUpload,
      sink::PainterInterface::kDownload,  sink::PainterInterface::kWhoAmI,
  };
  return kMethods[pick % std::size(kMethods)];
}

uint64_t ControlMethod(uint8_t pick) {
  switch (pick % 5) {
    case 0:
      return wire::kAcquireMethod;
    case 1:
      return wire::kReleaseMethod;
    case 2:
      return wire::kCloneMethod;
    case 3:
      return wire::kOpenReverseMethod;
    default:
      return uint64_t{pick} << 32 | pick;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness* harness = new Harness();
  if (size < 18) return 0;
  const uint8_t flags = data[0];
  const uint8_t pick = data[1];
  sluice::CallHeader header;
  std::memcpy(&header.interface_id, data + 2, 8);
  std::memcpy(&header.method, data + 10, 8);
  const bool oneway = (flags & 2) != 0;
  const int addressing = (flags >> 2) & 3;
  const std::span<const uint8_t> body(data + 18, std::min<size_t>(size - 18, 64 * 1024));

  if ((flags & 1) == 0) {
    Harness& h = *harness;
    if (h.lender == nullptr || !h.lender->holder->channel().health().ok()) {
      h.lender = MakeLender(*h.watcher);
    }
    // Handles 1..kLent are lent; 0 and kLent+1.. are not.
    const uint32_t handle = pick % (kLent + 3);
    switch (addressing) {
      case 0:  // A Painter method on a handle, with the right fold.
        header.interface_id = wire::ObjectWord(handle, sink::PainterInterface::kInterfaceId);
        header.method = PainterMethod(pick >> 3);
        break;
      case 1:  // A handle with whatever fold the input has.
        header.interface_id =
            (wire::kObjectTag << 48) | (header.interface_id & 0x0000ffff00000000) | handle;
        break;
      case 2:  // A control call: Acquire, Release (handles from the input), Clone.
        header.interface_id = (pick & 0x80) != 0
                                  ? wire::ObjectWord(handle, wire::kControlInterfaceId)
                                  : wire::kControlInterfaceId;
        header.method = ControlMethod(pick >> 4);
        break;
      default:  // Raw.
        break;
    }
    if (Waits(header.method)) return 0;
    CallOn(h.lender->holder->channel(), header, oneway, body, {});
    return 0;
  }

  Harness& h = *harness;
  // A fresh connection when the host closed the last one, and now and then
  // so that the bound on reverse channels per connection is not all it sees.
  if (h.connection == nullptr || !h.connection->health().ok() || ++h.connection_calls > 32) {
    Connect(h);
  }
  switch (addressing) {
    case 0:
    case 1:
      header.interface_id = wire::kControlInterfaceId;
      header.method = ControlMethod(pick);
      break;
    case 2:
      header.interface_id = sink::PainterInterface::kInterfaceId;
      header.method = PainterMethod(pick);
      break;
    default:
      break;
  }
  if (Waits(header.method)) return 0;
  const std::vector<sluice::UniqueFd> fds = Descriptors((flags >> 4) & 7, body);
  CallOn(*h.connection, header, oneway, body, fds);
  return 0;
}
