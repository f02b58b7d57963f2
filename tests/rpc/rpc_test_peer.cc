// The other process in the RPC tests.
//
//   rpc_test_peer painter|calculator   serve that service on fds 3 (region), 4 (liveness)
//   rpc_test_peer hostile VARIANT      act as a client sending a malformed Echo request;
//                                      exit 0 if it was refused with DATA_LOSS and
//                                      the server then hung up
//   rpc_test_peer warm-caller          a client on fds 3/4: 1000 Echo calls, "w" on fd 5,
//                                      waits for "g", 10000 more, "d", waits for "q";
//                                      exit 0 if all succeeded (allocation_test counts
//                                      the server's allocations meanwhile)
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "ipc/base/errors.h"
#include "ipc/base/notification.h"
#include "ipc/host/service_host.h"
#include "ipc/rpc/server_pool.h"
#include "tests/rpc/kitchen_sink_service.h"
#include "tests/testing/channel_pair.h"

namespace sluice::testing {
namespace {

namespace sink = ::sluice::test::sink;

int Fail(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "rpc_test_peer: %s: %s\n", what, status.ToString().c_str());
  return 2;
}

// Writes a malformed Echo request of the given kind into `out`; returns its size.
size_t WriteMalformed(const std::string& variant, std::span<std::byte> out) {
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<int32_t> ints(16, 7);
  fbb.Finish(
      sink::CreateEchoRequestDirect(fbb, "hello", 1, true, sink::Color::Blue, nullptr, &ints));
  std::vector<uint8_t> good(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  std::mt19937_64 rng(7);
  if (variant == "random") {
    for (auto& b : good) b = static_cast<uint8_t>(rng());
  } else if (variant == "root-outside") {
    const uint32_t far = 0x7ffffff0;  // Root table offset pointing past the buffer.
    std::memcpy(good.data(), &far, 4);
  } else if (variant == "truncated") {
    good.resize(good.size() / 2);  // The size lies: the table runs past the end.
  } else if (variant == "vector-length") {
    // The ints vector's length word: find it by its value and make it huge.
    for (size_t i = 0; i + 4 <= good.size(); i += 4) {
      uint32_t v;
      std::memcpy(&v, good.data() + i, 4);
      if (v == 16) {
        const uint32_t huge = 0x10000000;
        std::memcpy(good.data() + i, &huge, 4);
        break;
      }
    }
  } else if (variant == "empty") {
    good.clear();
  }
  std::memcpy(out.data(), good.data(), good.size());
  return good.size();
}

int RunHostile(const std::string& variant) {
  auto watcher = PeerWatcher::Create();
  if (!watcher.ok()) return Fail("watcher", watcher.status());
  auto region = Region::Adopt(UniqueFd(3), 0, Region::kMaxSize);
  if (!region.ok()) return Fail("adopt", region.status());
  auto channel = ClientChannel::Open(*std::move(region), UniqueFd(4), **watcher);
  if (!channel.ok()) return Fail("open", channel.status());
  auto call = (*channel)->BeginCall(4096);
  if (!call.ok()) return Fail("begin", call.status());
  const size_t size = WriteMalformed(variant, call->buffer());
  call->header() = CallHeader{sink::PainterInterface::kInterfaceId, sink::PainterInterface::kEcho};
  auto reply = (*channel)->Call(*std::move(call), call->buffer().first(size));
  if (!absl::IsDataLoss(reply.status())) {
    std::fprintf(stderr, "rpc_test_peer: malformed %s request got %s\n", variant.c_str(),
                 reply.status().ToString().c_str());
    return 1;
  }
  // A malformed request closes the connection: the server hangs up.
  Notification hung_up;
  absl::StatusOr<uint64_t> link = (*channel)->LinkToDeath([&] { hung_up.Notify(); });
  if (!link.ok() && !IsPeerDead(link.status())) return Fail("link", link.status());
  if (link.ok() && !hung_up.WaitForNotificationWithTimeout(absl::Seconds(10))) {
    (void)(*channel)->UnlinkToDeath(*link);
    std::fprintf(stderr, "rpc_test_peer: the server kept the connection after DATA_LOSS\n");
    return 3;
  }
  return 0;
}

int RunWarmCaller() {
  auto watcher = PeerWatcher::Create();
  if (!watcher.ok()) return Fail("watcher", watcher.status());
  auto region = Region::Adopt(UniqueFd(3), 0, Region::kMaxSize);
  if (!region.ok()) return Fail("adopt", region.status());
  auto channel = ClientChannel::Open(*std::move(region), UniqueFd(4), **watcher);
  if (!channel.ok()) return Fail("open", channel.status());
  const UniqueFd control(5);
  sink::PainterProxy proxy(**channel);
  const std::vector<uint8_t> blob(64, 1);
  auto call = [&] {
    auto echo = proxy.Echo("key", 7, true, sink::Color::Red, blob, {});
    return echo.ok() && (*echo)->number() == 7;
  };
  for (int i = 0; i < 1000; ++i) {
    if (!call()) return Fail("warm-up call", absl::InternalError("Echo failed"));
  }
  char go = 0;
  if (::write(control.get(), "w", 1) != 1 || ::read(control.get(), &go, 1) != 1 || go != 'g') {
    return Fail("control", absl::InternalError("no go"));
  }
  int ok = 0;
  for (int i = 0; i < 10000; ++i) ok += call() ? 1 : 0;
  char quit = 0;
  if (::write(control.get(), "d", 1) != 1 || ::read(control.get(), &quit, 1) != 1 || quit != 'q') {
    return Fail("control", absl::InternalError("no quit"));
  }
  return ok == 10000 ? 0 : 1;
}

// Publishes a Painter with the service manager at `socket`, says "ready" on
// fd 3 (--ready_fd=3 is the last argument), and serves until killed, with
// `max_threads` and `thread_cap` (0: ServiceHost's defaults).
int RunPublished(const std::string& socket, int max_threads, int thread_cap) {
  auto manager = ServiceManager::Connect({.socket_path = socket});
  if (!manager.ok()) return Fail("connect", manager.status());
  ServiceHost::Options options;
  if (max_threads > 0) options.max_threads = max_threads;
  if (thread_cap > 0) options.thread_cap = thread_cap;
  ServiceHost host(**manager, options);
  if (absl::Status published = host.Publish(std::make_shared<PainterService>()); !published.ok()) {
    return Fail("publish", published);
  }
  (void)!::write(3, "ready\n", 6);
  ::close(3);
  for (;;) ::pause();
}

int Main(int argc, char** argv) {
  if (argc < 2) return Fail("usage", absl::InvalidArgumentError("role missing"));
  const std::string role = argv[1];
  if (role == "hostile") return RunHostile(argc > 2 ? argv[2] : "random");
  if (role == "publish") {
    // publish SOCKET [MAX_THREADS THREAD_CAP] --ready_fd=3
    const bool sized = argc > 5;
    return RunPublished(argc > 2 ? argv[2] : "", sized ? std::atoi(argv[3]) : 0,
                        sized ? std::atoi(argv[4]) : 0);
  }
  if (role == "warm-caller") return RunWarmCaller();
  auto watcher = PeerWatcher::Create();
  if (!watcher.ok()) return Fail("watcher", watcher.status());
  auto channel = ServerChannelFromInheritedFds(**watcher);
  if (!channel.ok()) return Fail("open", channel.status());
  std::shared_ptr<rpc::ServiceStub> stub;
  if (role == "calculator") {
    stub = std::make_shared<CalculatorService>();
  } else {
    stub = std::make_shared<PainterService>();
  }
  // Served as ServiceHost serves: by a pool, until the client hangs up.
  absl::Status ended_why;
  Notification ended;
  rpc::ServerPool pool;
  absl::Status added = pool.Add(*std::move(channel), std::move(stub), [&](absl::Status why) {
    ended_why = std::move(why);
    ended.Notify();
  });
  if (!added.ok()) return Fail("add", added);
  ended.WaitForNotification();
  return IsPeerDead(ended_why) ? 0 : Fail("serve", ended_why);
}

}  // namespace
}  // namespace sluice::testing

int main(int argc, char** argv) { return sluice::testing::Main(argc, argv); }
