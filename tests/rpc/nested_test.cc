// Nested and recursive calls across processes (ipc/rpc/call_router.h): a
// call back into a process within a call it is waiting for is served by the
// very thread that waits, as in Binder, so recursion needs no extra threads
// and pools of one thread do not deadlock.
//
// Every process hosts a Bouncer (tests/rpc/bouncer.h): the test process
// publishes "A" through its own ServiceHost, nested_peer processes publish
// the other names, all through the real service manager. A Bounce appends
// (pid, tid, name) and calls the next name of its route, so the hops of the
// reply say which thread served each visit.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "ipc/base/notification.h"
#include "ipc/base/unique_fd.h"
#include "ipc/host/service_host.h"
#include "ipc/rpc/call_router.h"
#include "ipc/testing/subprocess.h"
#include "tests/rpc/bouncer.h"
#include "tests/testing/status_matchers.h"

namespace sluice::testing {
namespace {

using ::sluice::test::nested::BouncerProxy;
using ::testing::HasSubstr;

// Long enough for a loaded machine, short enough that a deadlock fails the
// test (ctest's timeout is 120 s) instead of hanging it.
constexpr absl::Duration kCallTimeout = absl::Seconds(30);

// `cycle` repeated until the route has `length` names.
std::vector<std::string> Route(const std::vector<std::string>& cycle, size_t length) {
  std::vector<std::string> route;
  for (size_t i = 0; i < length; ++i) route.push_back(cycle[i % cycle.size()]);
  return route;
}

// The names the hops must have: `first`, then the route.
std::vector<std::string> Expected(const std::string& first, const std::vector<std::string>& route) {
  std::vector<std::string> names = {first};
  names.insert(names.end(), route.begin(), route.end());
  return names;
}

std::vector<std::string> NamesOf(const std::vector<HopRecord>& hops) {
  std::vector<std::string> names;
  for (const HopRecord& hop : hops) names.push_back(hop.name);
  return names;
}

// The distinct tids the hops named `name` ran on.
std::set<int> TidsOf(const std::vector<HopRecord>& hops, const std::string& name) {
  std::set<int> tids;
  for (const HopRecord& hop : hops) {
    if (hop.name == name) tids.insert(hop.tid);
  }
  return tids;
}

// The distinct pids of the hops named `name`.
std::set<int> PidsOf(const std::vector<HopRecord>& hops, const std::string& name) {
  std::set<int> pids;
  for (const HopRecord& hop : hops) {
    if (hop.name == name) pids.insert(hop.pid);
  }
  return pids;
}

// A nested_peer in --call mode: a client in a process of its own, so its
// call chain starts outside the test process.
struct Client {
  Subprocess process;
  UniqueFd output;
};

absl::StatusOr<Client> StartClient(const std::string& socket, const std::string& target,
                                   const std::vector<std::string>& route) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
  UniqueFd read_end(fds[0]);
  UniqueFd write_end(fds[1]);
  std::vector<std::string> argv = {SLUICE_NESTED_PEER, socket, "--call", target};
  argv.insert(argv.end(), route.begin(), route.end());
  absl::StatusOr<Subprocess> process = Subprocess::Spawn(argv, {write_end.get()});
  if (!process.ok()) return process.status();
  return Client{*std::move(process), std::move(read_end)};
}

// Reads the client's hops and reaps it.
absl::StatusOr<std::vector<HopRecord>> FinishClient(Client& client) {
  std::string text;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(client.output.get(), buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  absl::StatusOr<int> exit = client.process.Wait(absl::Seconds(60));
  if (!exit.ok()) return exit.status();
  if (!WIFEXITED(*exit) || WEXITSTATUS(*exit) != 0) {
    return absl::InternalError("client failed: " + text);
  }
  std::vector<HopRecord> hops;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ');
    HopRecord hop;
    if (fields.size() != 3 || !absl::SimpleAtoi(fields[0], &hop.pid) ||
        !absl::SimpleAtoi(fields[1], &hop.tid)) {
      return absl::InternalError("bad client output: " + text);
    }
    hop.name = fields[2];
    hops.push_back(std::move(hop));
  }
  return hops;
}

class NestedCallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(::mkdtemp(dir_), nullptr);
    socket_ = std::string(dir_) + "/sm.sock";
    ASSERT_OK_AND_ASSIGN(Subprocess manager, Subprocess::SpawnAndWaitReady(
                                                 {SLUICE_SERVICEMANAGER_BIN, "--socket=" + socket_,
                                                  "--log_level=error"}));
    manager_ = std::make_unique<Subprocess>(std::move(manager));
    ASSERT_OK_AND_ASSIGN(sm_, ServiceManager::Connect({.socket_path = socket_}));
  }

  void TearDown() override {
    // The peers first: a thread of ours still blocked in a call to one of
    // them (a failed test) then wakes, and the host can join its threads.
    for (Subprocess& peer : peers_) (void)peer.Kill(SIGKILL);
    peers_.clear();
    if (host_ != nullptr) host_->Shutdown();
    host_.reset();
    bouncer_.reset();
    sm_.reset();
    if (manager_ != nullptr) {
      EXPECT_OK(manager_->Kill(SIGTERM));
      EXPECT_OK(manager_->Wait());
    }
    const std::string cleanup = std::string("rm -rf ") + dir_;
    (void)!std::system(cleanup.c_str());
  }

  // Publishes this process's Bouncer "A" with a host of `max_threads`.
  // `thread_cap`: 0 for the pool's default; max_threads for a pool the
  // watchdog may not grow (a slow peer on a loaded machine would otherwise
  // make it add a thread, which is its job but not what a test of pool
  // sizes may count on).
  void HostA(int max_threads, BouncerService::Hook hook = nullptr, int thread_cap = 0) {
    ServiceHost::Options options{.max_threads = max_threads};
    if (thread_cap > 0) options.thread_cap = thread_cap;
    host_ = std::make_unique<ServiceHost>(*sm_, options);
    bouncer_ = std::make_shared<BouncerService>(*sm_, "A", std::move(hook));
    ASSERT_OK(host_->Publish(bouncer_, "A"));
  }

  // Starts a nested_peer publishing a Bouncer `name`; returns its pid.
  absl::StatusOr<pid_t> StartPeer(const std::string& name, int max_threads) {
    absl::StatusOr<Subprocess> peer = Subprocess::SpawnAndWaitReady(
        {SLUICE_NESTED_PEER, socket_, name, std::to_string(max_threads)});
    if (!peer.ok()) return peer.status();
    const pid_t pid = peer->pid();
    peers_.push_back(*std::move(peer));
    return pid;
  }

  absl::StatusOr<Connection<BouncerProxy>> ConnectTo(const std::string& name) {
    return Connect<BouncerProxy>(*sm_, name);
  }

  static absl::StatusOr<std::vector<HopRecord>> Bounce(Connection<BouncerProxy>& to,
                                                       const std::vector<std::string>& route) {
    return CallBounce(to.proxy(), route, absl::Now() + kCallTimeout);
  }

  char dir_[64] = "/tmp/sluice-nested-XXXXXX";
  std::string socket_;
  std::unique_ptr<Subprocess> manager_;
  std::unique_ptr<ServiceManager> sm_;
  std::vector<Subprocess> peers_;
  std::unique_ptr<ServiceHost> host_;
  std::shared_ptr<BouncerService> bouncer_;
};

// A -> B -> A -> B ...: the calls back into the test process run on its main
// thread, which waits in the chain (it is no pool thread), and B's calls on
// B's one pool thread.
TEST_F(NestedCallTest, ServedByTheWaitingThread) {
  HostA(/*max_threads=*/1);
  ASSERT_OK_AND_ASSIGN(const pid_t b_pid, StartPeer("B", /*max_threads=*/1));
  ASSERT_OK_AND_ASSIGN(auto b, ConnectTo("B"));
  const std::vector<std::string> route = Route({"A", "B"}, 24);
  for (int round = 0; round < 3; ++round) {
    ASSERT_OK_AND_ASSIGN(std::vector<HopRecord> hops, Bounce(b, route));
    ASSERT_EQ(NamesOf(hops), Expected("B", route));
    EXPECT_EQ(TidsOf(hops, "A"), std::set<int>{::gettid()});
    EXPECT_EQ(PidsOf(hops, "A"), std::set<int>{::getpid()});
    EXPECT_EQ(TidsOf(hops, "B").size(), 1u);
    EXPECT_EQ(PidsOf(hops, "B"), std::set<int>{b_pid});
  }
}

// A loopback call (this process calls its own A through the manager) is a
// call into a process whose thread waits in the chain: the caller serves it
// itself, and every later visit to A as well.
TEST_F(NestedCallTest, LoopbackCallIsServedByTheCallingThread) {
  HostA(/*max_threads=*/1);
  ASSERT_OK_AND_ASSIGN(const pid_t b_pid, StartPeer("B", /*max_threads=*/1));
  ASSERT_OK_AND_ASSIGN(auto a, ConnectTo("A"));
  const std::vector<std::string> route = Route({"B", "A"}, 24);
  ASSERT_OK_AND_ASSIGN(std::vector<HopRecord> hops, Bounce(a, route));
  ASSERT_EQ(NamesOf(hops), Expected("A", route));
  EXPECT_EQ(TidsOf(hops, "A"), std::set<int>{::gettid()});
  EXPECT_EQ(PidsOf(hops, "A"), std::set<int>{::getpid()});
  EXPECT_EQ(TidsOf(hops, "B").size(), 1u);
  EXPECT_EQ(PidsOf(hops, "B"), std::set<int>{b_pid});
}

// A chain that starts in another process (nested_peer --call): A's only pool
// thread serves the first visit and is blocked in its call to B while B
// calls back into A; it serves that call itself, at every depth.
TEST_F(NestedCallTest, PoolsOfOneDoNotDeadlock) {
  // Held to one thread: no growth could serve the recursion instead.
  HostA(/*max_threads=*/1, nullptr, /*thread_cap=*/1);
  ASSERT_OK_AND_ASSIGN(const pid_t b_pid, StartPeer("B", /*max_threads=*/1));
  const std::vector<std::string> route = Route({"B", "A"}, 24);
  for (int round = 0; round < 3; ++round) {
    ASSERT_OK_AND_ASSIGN(Client client, StartClient(socket_, "A", route));
    ASSERT_OK_AND_ASSIGN(std::vector<HopRecord> hops, FinishClient(client));
    ASSERT_EQ(NamesOf(hops), Expected("A", route));
    const std::set<int> a_tids = TidsOf(hops, "A");
    ASSERT_EQ(a_tids.size(), 1u);
    EXPECT_NE(*a_tids.begin(), ::gettid());  // A pool thread, not the test's.
    EXPECT_EQ(PidsOf(hops, "A"), std::set<int>{::getpid()});
    EXPECT_EQ(TidsOf(hops, "B").size(), 1u);
    EXPECT_EQ(PidsOf(hops, "B"), std::set<int>{b_pid});
  }
  EXPECT_EQ(host_->thread_count(), 1u);
}

// A -> B -> C -> A, and longer cycles through three processes in several
// orders: each process serves the chain on one thread, even with pools of
// four, and A's visits run on the test's main thread.
TEST_F(NestedCallTest, ThroughAThirdProcess) {
  HostA(/*max_threads=*/4);
  ASSERT_OK_AND_ASSIGN(const pid_t b_pid, StartPeer("B", /*max_threads=*/4));
  ASSERT_OK_AND_ASSIGN(const pid_t c_pid, StartPeer("C", /*max_threads=*/4));
  ASSERT_OK_AND_ASSIGN(auto b, ConnectTo("B"));
  const std::vector<std::vector<std::string>> routes = {
      {"C", "A"},
      Route({"C", "A", "B"}, 24),
      Route({"A", "C", "B", "C", "A", "B", "A"}, 28),
  };
  for (const std::vector<std::string>& route : routes) {
    SCOPED_TRACE(route.size());
    ASSERT_OK_AND_ASSIGN(std::vector<HopRecord> hops, Bounce(b, route));
    ASSERT_EQ(NamesOf(hops), Expected("B", route));
    EXPECT_EQ(TidsOf(hops, "A"), std::set<int>{::gettid()});
    EXPECT_EQ(PidsOf(hops, "A"), std::set<int>{::getpid()});
    EXPECT_EQ(TidsOf(hops, "B").size(), 1u);
    EXPECT_EQ(PidsOf(hops, "B"), std::set<int>{b_pid});
    EXPECT_EQ(TidsOf(hops, "C").size(), 1u);
    EXPECT_EQ(PidsOf(hops, "C"), std::set<int>{c_pid});
  }
}

// While one chain is held in progress (its thread of A stopped in a Bounce,
// its thread of B blocked in the call to A), another chain through the same
// processes is served by the other threads of B's pool and by its own
// waiting thread in A.
TEST_F(NestedCallTest, UnrelatedChainsProceedWhileOneIsBlocked) {
  Notification held, release;
  std::atomic<int> hold_tid{0};
  HostA(/*max_threads=*/2, [&](absl::Span<const std::string>) {
    if (::gettid() != hold_tid.load()) return;
    held.Notify();
    EXPECT_TRUE(release.WaitForNotificationWithTimeout(kCallTimeout));
  });
  ASSERT_OK_AND_ASSIGN(const pid_t b_pid, StartPeer("B", /*max_threads=*/2));
  ASSERT_OK_AND_ASSIGN(auto b, ConnectTo("B"));

  absl::StatusOr<std::vector<HopRecord>> first_hops;
  int first_tid = 0;
  std::thread first([&] {
    first_tid = ::gettid();
    hold_tid.store(first_tid);
    first_hops = Bounce(b, {"A"});
  });
  auto finish = [&] {
    if (!release.HasBeenNotified()) release.Notify();
    if (first.joinable()) first.join();
  };
  // A failed assertion returns early: let `first` finish all the same.
  absl::Cleanup finish_first = finish;
  ASSERT_TRUE(held.WaitForNotificationWithTimeout(kCallTimeout));

  // The second chain, while the first is stopped in A on `first`.
  for (int round = 0; round < 3; ++round) {
    ASSERT_OK_AND_ASSIGN(std::vector<HopRecord> hops, Bounce(b, Route({"A", "B"}, 8)));
    ASSERT_EQ(NamesOf(hops), Expected("B", Route({"A", "B"}, 8)));
    EXPECT_EQ(TidsOf(hops, "A"), std::set<int>{::gettid()});
    EXPECT_EQ(TidsOf(hops, "B").size(), 1u);
    EXPECT_EQ(PidsOf(hops, "B"), std::set<int>{b_pid});
  }
  EXPECT_FALSE(release.HasBeenNotified());
  finish();
  ASSERT_OK(first_hops);
  ASSERT_EQ(NamesOf(*first_hops), (std::vector<std::string>{"B", "A"}));
  EXPECT_EQ((*first_hops)[1].tid, first_tid);
  EXPECT_EQ((*first_hops)[0].pid, b_pid);
}

// The same from outside: a chain that started in another process holds one
// of A's two pool threads (stopped in a nested visit, below its own call to
// B); a call from a third process is served by A's other thread meanwhile.
TEST_F(NestedCallTest, PoolServesOtherCallersWhileAThreadIsBlocked) {
  // Shared with the hook, which a pool thread may still run when a failed
  // assertion leaves the test early.
  struct Hold {
    Notification held, release;
    std::atomic<bool> armed{true};
  };
  auto hold = std::make_shared<Hold>();
  HostA(
      /*max_threads=*/2,
      [hold](absl::Span<const std::string> route) {
        // Only the nested visit of the held chain (the last of its route).
        if (!route.empty() || !hold->armed.exchange(false)) return;
        hold->held.Notify();
        EXPECT_TRUE(hold->release.WaitForNotificationWithTimeout(kCallTimeout));
      },
      /*thread_cap=*/2);
  absl::Cleanup release_on_exit = [hold] {
    if (!hold->release.HasBeenNotified()) hold->release.Notify();
  };
  ASSERT_OK_AND_ASSIGN(const pid_t b_pid, StartPeer("B", /*max_threads=*/1));

  ASSERT_OK_AND_ASSIGN(Client blocked, StartClient(socket_, "A", {"B", "A"}));
  ASSERT_TRUE(hold->held.WaitForNotificationWithTimeout(kCallTimeout));
  ASSERT_OK_AND_ASSIGN(Client other, StartClient(socket_, "A", {}));
  ASSERT_OK_AND_ASSIGN(std::vector<HopRecord> other_hops, FinishClient(other));
  EXPECT_FALSE(hold->release.HasBeenNotified());
  hold->release.Notify();
  ASSERT_OK_AND_ASSIGN(std::vector<HopRecord> hops, FinishClient(blocked));

  ASSERT_EQ(NamesOf(hops), (std::vector<std::string>{"A", "B", "A"}));
  EXPECT_EQ(hops[0].tid, hops[2].tid);  // The nested visit ran on the waiting thread.
  EXPECT_EQ(hops[1].pid, b_pid);
  ASSERT_EQ(NamesOf(other_hops), std::vector<std::string>{"A"});
  EXPECT_NE(other_hops[0].tid, hops[0].tid);  // Served by the other pool thread.
  EXPECT_EQ(other_hops[0].pid, ::getpid());
  EXPECT_EQ(host_->thread_count(), 2u);
}

// Several chains at once through the same channels: each stays on its own
// threads.
TEST_F(NestedCallTest, ConcurrentChainsStayOnTheirThreads) {
  HostA(/*max_threads=*/2);
  ASSERT_OK_AND_ASSIGN(const pid_t b_pid, StartPeer("B", /*max_threads=*/4));
  ASSERT_OK_AND_ASSIGN(auto b, ConnectTo("B"));
  const std::vector<std::string> route = Route({"A", "B"}, 6);
  constexpr int kThreads = 4;
  constexpr int kRounds = 25;
  std::vector<std::thread> threads;
  std::vector<std::string> failures(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const int tid = ::gettid();
      for (int round = 0; round < kRounds && failures[t].empty(); ++round) {
        absl::StatusOr<std::vector<HopRecord>> hops = Bounce(b, route);
        if (!hops.ok()) {
          failures[t] = hops.status().ToString();
        } else if (NamesOf(*hops) != Expected("B", route)) {
          failures[t] = "wrong route";
        } else if (TidsOf(*hops, "A") != std::set<int>{tid}) {
          failures[t] = "A visited off the calling thread";
        } else if (TidsOf(*hops, "B").size() != 1 || PidsOf(*hops, "B") != std::set<int>{b_pid}) {
          failures[t] = "B visited on several threads";
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], "") << "thread " << t;
}

// Nesting deeper than kMaxNestingDepth on one thread is refused with
// RESOURCE_EXHAUSTED, which comes back up the chain; the threads are fine
// afterwards. (Each process is reached under several names, so that no
// channel has more calls of the chain in flight than it has slots.)
TEST_F(NestedCallTest, NestingDeeperThanTheLimitIsRefused) {
  constexpr int kAliases = 5;
  HostA(/*max_threads=*/1);
  std::string b_names = "B";
  for (int i = 1; i < kAliases; ++i) {
    ASSERT_OK(host_->Publish(bouncer_, "A" + std::to_string(i)));
    b_names += ",B" + std::to_string(i);
  }
  ASSERT_OK_AND_ASSIGN(const pid_t b_pid, StartPeer(b_names, /*max_threads=*/1));
  ASSERT_OK_AND_ASSIGN(auto b, ConnectTo("B"));
  auto alias = [](const std::string& name, int i) {
    return i % kAliases == 0 ? name : name + std::to_string(i % kAliases);
  };
  // After the first B: A and B at nesting depth 1, 2, ... on their threads.
  auto route_to_depth = [&](int depth) {
    std::vector<std::string> route;
    for (int i = 1; i <= depth; ++i) {
      route.push_back(alias("A", i));
      if (i < depth) route.push_back(alias("B", i + 1));
    }
    return route;
  };

  // As deep as allowed: B's and A's threads each nested kMaxNestingDepth deep.
  const std::vector<std::string> deepest = route_to_depth(rpc::kMaxNestingDepth);
  ASSERT_OK_AND_ASSIGN(std::vector<HopRecord> hops, Bounce(b, deepest));
  ASSERT_EQ(hops.size(), deepest.size() + 1);
  EXPECT_EQ(TidsOf(hops, "A"), std::set<int>{::gettid()});
  EXPECT_EQ(TidsOf(hops, "B").size(), 1u);
  EXPECT_EQ(PidsOf(hops, "B"), std::set<int>{b_pid});

  // One more visit to B is one too deep for its thread.
  std::vector<std::string> too_deep = deepest;
  too_deep.push_back(alias("B", rpc::kMaxNestingDepth + 1));
  EXPECT_THAT(Bounce(b, too_deep),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("nested calls deeper")));

  ASSERT_OK_AND_ASSIGN(hops, Bounce(b, Route({"A", "B"}, 8)));
  EXPECT_EQ(TidsOf(hops, "A"), std::set<int>{::gettid()});
}

// An error anywhere down the chain comes back up as the caller's status.
// Recursion through one channel pair deeper than a channel has slots: every
// slot is held by an outer call of the same chain, so none can free up.
TEST_F(NestedCallTest, ChainHoldingEverySlotOfAChannelFailsFast) {
  HostA(/*max_threads=*/1);
  ASSERT_OK_AND_ASSIGN(const pid_t b_pid, StartPeer("B", /*max_threads=*/1));
  (void)b_pid;
  ASSERT_OK_AND_ASSIGN(auto b, ConnectTo("B"));
  const absl::Time start = absl::Now();
  EXPECT_THAT(Bounce(b, Route({"A", "B"}, 40)),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("holds all 16 slots")));
  // At once, not at the call's deadline.
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  ASSERT_OK_AND_ASSIGN(std::vector<HopRecord> hops, Bounce(b, Route({"A", "B"}, 4)));
  EXPECT_EQ(TidsOf(hops, "A"), std::set<int>{::gettid()});
}

TEST_F(NestedCallTest, ErrorsComeBackUpTheChain) {
  HostA(/*max_threads=*/1);
  ASSERT_OK(StartPeer("B", /*max_threads=*/1));
  ASSERT_OK_AND_ASSIGN(auto b, ConnectTo("B"));
  EXPECT_THAT(Bounce(b, {"A", "B", "A", "nobody"}), StatusIs(absl::StatusCode::kNotFound));
  // The chain's threads are fine afterwards.
  ASSERT_OK_AND_ASSIGN(std::vector<HopRecord> hops, Bounce(b, {"A", "B", "A"}));
  EXPECT_EQ(TidsOf(hops, "A"), std::set<int>{::gettid()});
}

}  // namespace
}  // namespace sluice::testing
