// The call hot path allocates nothing once warm: counts every operator new in
// this process across many typed calls through a generated proxy, served by
// an rpc::ServerPool with the stub wrapped as ServiceHost wraps it. Two
// scenarios, because a pool serves calls from its own process differently:
// - client and pool here: the calling thread claims its own request
//   (call_router.h) and serves it while it waits; counts both sides.
// - client in another process (rpc_test_peer warm-caller): the pool's
//   threads serve, as for every remote client; counts the server side.
#include <dirent.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <new>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "ipc/channel/channel_region.h"
#include "ipc/rpc/object.h"
#include "ipc/rpc/server_pool.h"
#include "ipc/socket/unix_socket.h"
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

// Threads of this process blocked in futex_waitv now (/proc/self/task/*/syscall).
size_t ThreadsInFutexWaitv() {
  size_t count = 0;
  DIR* tasks = ::opendir("/proc/self/task");
  if (tasks == nullptr) return 0;
  while (const dirent* task = ::readdir(tasks)) {
    if (task->d_name[0] == '.') continue;
    std::ifstream syscall(absl::StrCat("/proc/self/task/", task->d_name, "/syscall"));
    long number = -1;
    if (syscall >> number && number == SYS_futex_waitv) ++count;
  }
  ::closedir(tasks);
  return count;
}

// A pool starts threads on demand (whenever every thread is busy, even for
// a moment) up to max_threads, and each allocates as it starts and in its
// first round (std::thread state, ThreadCalls, its vectors): a cost per
// thread, not per call. So after the warm-up the pool is held at its size,
// and since a thread started late may not have run yet, the count begins
// once every thread of the pool sleeps in futex_waitv, past that round.
// Growth past a stall (a thread busy a whole stall_after, which a loaded
// machine produces by preempting it) is a cost per stall: these pools wait
// an hour before they call anything a stall.
constexpr absl::Duration kNoStalls = absl::Hours(1);

void HoldThreads(rpc::ServerPool& pool) {
  pool.SetMaxThreads(static_cast<int>(pool.thread_count()));
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (ThreadsInFutexWaitv() < pool.thread_count() && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_GE(ThreadsInFutexWaitv(), pool.thread_count()) << "pool threads that never slept";
}

TEST(HotPathAllocations, WarmTypedCallsAllocateNothingOnEitherSide) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  ASSERT_OK_AND_ASSIGN(LocalPair pair, MakeLocalPair(*watcher));
  rpc::ServerPool pool({.stall_after = kNoStalls});  // Else ServiceHost's defaults.
  ASSERT_OK(pool.Add(std::move(pair.server),
                     rpc::ServeWithObjectProtocol(std::make_shared<PainterService>())));
  sink::PainterProxy proxy(*pair.client);
  const std::vector<uint8_t> blob(64, 1);
  auto call = [&] {
    auto echo = proxy.Echo("key", 7, true, sink::Color::Red, blob, {});
    return echo.ok() && (*echo)->number() == 7;
  };
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(call());  // Warm up every thread.
  HoldThreads(pool);
  counting = true;
  int ok = 0;
  for (int i = 0; i < 10000; ++i) ok += call() ? 1 : 0;
  counting = false;
  EXPECT_EQ(ok, 10000);
  EXPECT_EQ(allocations.load(), 0u) << "heap allocations in 10000 warm calls";
  EXPECT_EQ(pool.channel_count(), 1u);
}

TEST(HotPathAllocations, WarmCallsFromAnotherProcessAllocateNothingInThePool) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  ASSERT_OK_AND_ASSIGN(Region region, CreateChannelRegion());
  ASSERT_OK_AND_ASSIGN(auto sockets, SeqPacketPair());
  // The caller says "w" once warm, waits for "g", says "d" after its calls,
  // and waits for "q" to exit.
  ASSERT_OK_AND_ASSIGN(auto control, SeqPacketPair());
  ASSERT_OK_AND_ASSIGN(Subprocess child,
                       Subprocess::Spawn({SLUICE_RPC_TEST_PEER, "warm-caller"},
                                         {region.fd(), sockets.first.get(), control.first.get()}));
  sockets.first.reset();
  control.first.reset();
  ASSERT_OK_AND_ASSIGN(auto channel,
                       ServerChannel::Open(std::move(region), std::move(sockets.second), *watcher));
  // One thread, so the warm-up warms the thread that serves: with more, the
  // scheduler picks which one serves, and a thread's first call sizes its
  // polling list once (an allocation per thread, not per call). The path of
  // a call is the same for any number of threads.
  rpc::ServerPool pool({.max_threads = 1, .stall_after = kNoStalls});
  ASSERT_OK(pool.Add(std::move(channel),
                     rpc::ServeWithObjectProtocol(std::make_shared<PainterService>())));
  char said = 0;
  ASSERT_EQ(::read(control.second.get(), &said, 1), 1);
  ASSERT_EQ(said, 'w');
  HoldThreads(pool);
  allocations = 0;
  counting = true;
  ASSERT_EQ(::write(control.second.get(), "g", 1), 1);
  const ssize_t done = ::read(control.second.get(), &said, 1);
  counting = false;
  ASSERT_EQ(done, 1);
  EXPECT_EQ(said, 'd');
  // Only now may the caller exit: its death is no hot path.
  ASSERT_EQ(::write(control.second.get(), "q", 1), 1);
  EXPECT_EQ(allocations.load(), 0u)
      << "heap allocations serving 10000 warm calls (" << pool.stats().stalls << " stalls, "
      << pool.stats().peak_threads << " threads at most)";
  ASSERT_OK_AND_ASSIGN(int status, child.Wait());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the caller's calls failed (status " << status << ")";
}

}  // namespace
}  // namespace sluice::testing
