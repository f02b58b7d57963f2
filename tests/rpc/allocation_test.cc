// The call hot path allocates nothing once warm: counts every operator new in
// this process (client thread and server thread) across many typed calls.
#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>

#include "gtest/gtest.h"
#include "tests/rpc/kitchen_sink_service.h"
#include "tests/testing/channel_pair.h"
#include "tests/testing/status_matchers.h"

namespace {
std::atomic<bool> counting{false};
std::atomic<uint64_t> allocations{0};
}  // namespace

void* operator new(size_t size) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace sluice::testing {
namespace {

namespace sink = ::sluice::test::sink;

TEST(HotPathAllocations, WarmTypedCallsAllocateNothingOnEitherSide) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  ASSERT_OK_AND_ASSIGN(LocalPair pair, MakeLocalPair(*watcher));
  PainterService painter;
  std::thread server([&] { (void)rpc::Serve(*pair.server, painter); });
  sink::PainterProxy proxy(*pair.client);
  const std::vector<uint8_t> blob(64, 1);
  auto call = [&] {
    auto echo = proxy.Echo("key", 7, true, sink::Color::Red, blob, {});
    return echo.ok() && (*echo)->number() == 7;
  };
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(call());  // Warm up both threads.
  counting = true;
  int ok = 0;
  for (int i = 0; i < 10000; ++i) ok += call() ? 1 : 0;
  counting = false;
  EXPECT_EQ(ok, 10000);
  EXPECT_EQ(allocations.load(), 0u) << "heap allocations in 10000 warm calls";
  pair.client.reset();
  server.join();
}

}  // namespace
}  // namespace sluice::testing
