#include "ipc/channel/peer_watcher.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/base/notification.h"
#include "ipc/socket/unix_socket.h"
#include "tests/testing/status_matchers.h"

namespace sluice {
namespace {

using ::sluice::testing::StatusIs;
using Kind = PeerWatcher::FdKind;

// Long enough for any machine; a passing test never waits this long.
constexpr absl::Duration kPatience = absl::Seconds(10);

std::pair<UniqueFd, UniqueFd> SocketPair() {
  auto pair = SeqPacketPair();
  EXPECT_OK(pair);
  return pair.ok() ? *std::move(pair) : std::pair<UniqueFd, UniqueFd>();
}

// DeathLog synchronizes with std::mutex, which TSan sees (see ipc/base/mutex.h).

// Records which callbacks ran and lets a test wait for a given total.
class DeathLog {
 public:
  absl::AnyInvocable<void()> Callback(int index) {
    return [this, index] {
      std::lock_guard<std::mutex> lock(mu_);
      deaths_.push_back(index);
      cv_.notify_all();
    };
  }
  // True once `count` deaths were recorded (false after kPatience).
  bool WaitFor(size_t count) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoSeconds(kPatience),
                        [&] { return deaths_.size() >= count; });
  }
  std::vector<int> deaths() {
    std::lock_guard<std::mutex> lock(mu_);
    return deaths_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> deaths_;  // Guarded by mu_.
};

// Events are handled in order on one thread, so once a later "barrier" watch
// has fired, any earlier event that was going to run its callback has run.
class Barrier {
 public:
  explicit Barrier(PeerWatcher& watcher) : watcher_(watcher), pair_(SocketPair()) {
    auto id = watcher.Watch(pair_.first.get(), Kind::kSocket, [this] { fired_.Notify(); });
    EXPECT_OK(id);
    id_ = id.value_or(0);
  }
  ~Barrier() { watcher_.Unwatch(id_); }
  bool Pass() {
    pair_.second.reset();
    return fired_.WaitForNotificationWithTimeout(kPatience);
  }

 private:
  PeerWatcher& watcher_;
  Notification fired_;
  std::pair<UniqueFd, UniqueFd> pair_;
  PeerWatcher::WatchId id_ = 0;
};

// A forked child that stays alive until Release() and then exits 0.
class Child {
 public:
  Child() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(fds[1]);
      char byte;
      // Blocks until the parent closes its end (or dies).
      while (::read(fds[0], &byte, 1) < 0 && errno == EINTR) {
      }
      ::_exit(0);
    }
    ::close(fds[0]);
    release_.reset(fds[1]);
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  UniqueFd OpenPidfd() const {
    return UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0)));
  }
  void Release() { release_.reset(); }
  int Reap() {
    int status = -1;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
  UniqueFd release_;
};

class PeerWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto created = PeerWatcher::Create();
    ASSERT_OK(created);
    watcher_ = *std::move(created);
  }
  DeathLog log_;  // Outlives the watcher, whose thread calls into it.
  std::unique_ptr<PeerWatcher> watcher_;
};

TEST_F(PeerWatcherTest, CallbackFiresOnceWhenTheOtherEndOfASocketCloses) {
  auto [mine, theirs] = SocketPair();
  ASSERT_OK(watcher_->Watch(mine.get(), Kind::kSocket, log_.Callback(1)));
  theirs.reset();
  ASSERT_TRUE(log_.WaitFor(1));
  // A later event has been handled: the first has had every chance to repeat.
  Barrier barrier(*watcher_);
  ASSERT_TRUE(barrier.Pass());
  EXPECT_THAT(log_.deaths(), ::testing::ElementsAre(1));
}

TEST_F(PeerWatcherTest, FiresForAPeerThatClosedBeforeTheWatchBegan) {
  auto [mine, theirs] = SocketPair();
  theirs.reset();
  ASSERT_OK(watcher_->Watch(mine.get(), Kind::kSocket, log_.Callback(1)));
  EXPECT_TRUE(log_.WaitFor(1));
}

TEST_F(PeerWatcherTest, ReadableSocketIsNotADeath) {
  auto [mine, theirs] = SocketPair();
  ASSERT_OK_AND_ASSIGN(PeerWatcher::WatchId id,
                       watcher_->Watch(mine.get(), Kind::kSocket, log_.Callback(1)));
  const std::byte byte{1};
  ASSERT_OK(SendMessage(theirs.get(), std::span<const std::byte>(&byte, 1)));
  Barrier barrier(*watcher_);
  ASSERT_TRUE(barrier.Pass());
  EXPECT_TRUE(log_.deaths().empty());
  watcher_->Unwatch(id);  // `mine` must stay open until then.
}

TEST_F(PeerWatcherTest, FiresForAPidfdWhenAForkedChildExits) {
  Child child;
  ASSERT_GT(child.pid(), 0);
  UniqueFd pidfd = child.OpenPidfd();
  ASSERT_TRUE(pidfd.valid()) << "pidfd_open: " << std::strerror(errno);
  ASSERT_OK(watcher_->Watch(pidfd.get(), Kind::kPidfd, log_.Callback(7)));
  child.Release();
  ASSERT_TRUE(log_.WaitFor(1));
  EXPECT_THAT(log_.deaths(), ::testing::ElementsAre(7));
  const int status = child.Reap();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(PeerWatcherTest, FiresForAPidfdWhenAChildIsKilled) {
  Child child;
  ASSERT_GT(child.pid(), 0);
  UniqueFd pidfd = child.OpenPidfd();
  ASSERT_TRUE(pidfd.valid());
  ASSERT_OK(watcher_->Watch(pidfd.get(), Kind::kPidfd, log_.Callback(9)));
  ASSERT_EQ(::kill(child.pid(), SIGKILL), 0);
  EXPECT_TRUE(log_.WaitFor(1));
  child.Reap();
}

TEST_F(PeerWatcherTest, PidfdOfALiveChildDoesNotFire) {
  Child child;
  ASSERT_GT(child.pid(), 0);
  UniqueFd pidfd = child.OpenPidfd();
  ASSERT_TRUE(pidfd.valid());
  ASSERT_OK_AND_ASSIGN(PeerWatcher::WatchId id,
                       watcher_->Watch(pidfd.get(), Kind::kPidfd, log_.Callback(1)));
  Barrier barrier(*watcher_);
  ASSERT_TRUE(barrier.Pass());
  EXPECT_TRUE(log_.deaths().empty());
  watcher_->Unwatch(id);
}

TEST_F(PeerWatcherTest, UnwatchPreventsTheCallback) {
  auto [mine, theirs] = SocketPair();
  ASSERT_OK_AND_ASSIGN(PeerWatcher::WatchId id,
                       watcher_->Watch(mine.get(), Kind::kSocket, log_.Callback(1)));
  watcher_->Unwatch(id);
  theirs.reset();
  Barrier barrier(*watcher_);
  ASSERT_TRUE(barrier.Pass());
  EXPECT_TRUE(log_.deaths().empty());
}

TEST_F(PeerWatcherTest, UnwatchAfterFiringIsHarmless) {
  auto [mine, theirs] = SocketPair();
  ASSERT_OK_AND_ASSIGN(PeerWatcher::WatchId id,
                       watcher_->Watch(mine.get(), Kind::kSocket, log_.Callback(1)));
  theirs.reset();
  ASSERT_TRUE(log_.WaitFor(1));
  watcher_->Unwatch(id);
  watcher_->Unwatch(id);
  // The fd may now be closed and its number reused by a new watch.
  mine.reset();
  auto [again, other] = SocketPair();
  ASSERT_OK(watcher_->Watch(again.get(), Kind::kSocket, log_.Callback(2)));
  other.reset();
  ASSERT_TRUE(log_.WaitFor(2));
  EXPECT_THAT(log_.deaths(), ::testing::ElementsAre(1, 2));
}

TEST_F(PeerWatcherTest, UnwatchOfAnUnknownIdIsHarmless) {
  watcher_->Unwatch(0);
  watcher_->Unwatch(12345);
}

TEST_F(PeerWatcherTest, UnwatchWaitsForARunningCallback) {
  auto [mine, theirs] = SocketPair();
  Notification entered, release;
  std::atomic<bool> finished{false};
  ASSERT_OK_AND_ASSIGN(PeerWatcher::WatchId id, watcher_->Watch(mine.get(), Kind::kSocket, [&] {
    entered.Notify();
    release.WaitForNotification();
    finished = true;
  }));
  theirs.reset();
  ASSERT_TRUE(entered.WaitForNotificationWithTimeout(kPatience));
  std::atomic<bool> finished_when_unwatch_returned{false};
  std::thread unwatcher([&] {
    watcher_->Unwatch(id);
    finished_when_unwatch_returned = finished.load();
  });
  release.Notify();
  unwatcher.join();
  EXPECT_TRUE(finished_when_unwatch_returned);
}

// A death callback may end what it watches (drop a channel, which unwatches
// it) and watch something new, without deadlocking on the watcher.
TEST_F(PeerWatcherTest, CallbackMayUnwatchItselfAndWatchAgain) {
  auto [mine, theirs] = SocketPair();
  // Not a structured binding: clang 14 cannot capture one in a lambda.
  auto next_pair = SocketPair();
  UniqueFd& next = next_pair.first;
  UniqueFd& next_peer = next_pair.second;
  Notification done;
  std::atomic<PeerWatcher::WatchId> self{0};
  std::atomic<bool> rewatched{false};
  ASSERT_OK_AND_ASSIGN(PeerWatcher::WatchId id, watcher_->Watch(mine.get(), Kind::kSocket, [&] {
    watcher_->Unwatch(self.load());
    auto again = watcher_->Watch(next.get(), Kind::kSocket, [&] { done.Notify(); });
    rewatched = again.ok();
  }));
  self = id;
  theirs.reset();
  // The second watch fires too: the watcher thread came back from the first.
  next_peer.reset();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kPatience));
  EXPECT_TRUE(rewatched);
}

TEST_F(PeerWatcherTest, WatchIdsAreDistinctAndNonZero) {
  auto [a, a_peer] = SocketPair();
  auto [b, b_peer] = SocketPair();
  ASSERT_OK_AND_ASSIGN(PeerWatcher::WatchId first,
                       watcher_->Watch(a.get(), Kind::kSocket, log_.Callback(1)));
  ASSERT_OK_AND_ASSIGN(PeerWatcher::WatchId second,
                       watcher_->Watch(b.get(), Kind::kSocket, log_.Callback(2)));
  EXPECT_NE(first, 0u);
  EXPECT_NE(second, 0u);
  EXPECT_NE(first, second);
  watcher_->Unwatch(first);
  watcher_->Unwatch(second);
}

TEST_F(PeerWatcherTest, WatchOfAnInvalidFdFails) {
  EXPECT_THAT(watcher_->Watch(-1, Kind::kSocket, log_.Callback(1)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(PeerWatcherTest, ManyWatchesEachFireExactlyOnceForTheirOwnPeer) {
  constexpr int kCount = 200;
  std::vector<UniqueFd> mine, theirs;
  std::vector<PeerWatcher::WatchId> ids;
  for (int i = 0; i < kCount; ++i) {
    auto [a, b] = SocketPair();
    ASSERT_OK_AND_ASSIGN(PeerWatcher::WatchId id,
                         watcher_->Watch(a.get(), Kind::kSocket, log_.Callback(i)));
    ids.push_back(id);
    mine.push_back(std::move(a));
    theirs.push_back(std::move(b));
  }
  // Unwatch every third, then hang up every peer in a shuffled order.
  std::vector<int> expected;
  for (int i = 0; i < kCount; ++i) {
    if (i % 3 == 0) {
      watcher_->Unwatch(ids[i]);
    } else {
      expected.push_back(i);
    }
  }
  std::vector<int> order(kCount);
  for (int i = 0; i < kCount; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(1234));
  for (int i : order) theirs[i].reset();

  ASSERT_TRUE(log_.WaitFor(expected.size()));
  Barrier barrier(*watcher_);
  ASSERT_TRUE(barrier.Pass());
  std::vector<int> deaths = log_.deaths();
  std::sort(deaths.begin(), deaths.end());
  EXPECT_EQ(deaths, expected);
}

TEST(PeerWatcherLifetimeTest, DestructorJoinsCleanlyWithNothingWatched) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<PeerWatcher> watcher, PeerWatcher::Create());
  watcher.reset();
}

TEST(PeerWatcherLifetimeTest, DestructorJoinsCleanlyAndDropsPendingCallbacks) {
  auto [mine, theirs] = SocketPair();
  auto token = std::make_shared<int>(0);
  std::atomic<int> calls{0};
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<PeerWatcher> watcher, PeerWatcher::Create());
    ASSERT_OK(watcher->Watch(mine.get(), Kind::kSocket, [token, &calls] { ++calls; }));
    EXPECT_EQ(token.use_count(), 2);
  }
  EXPECT_EQ(token.use_count(), 1) << "the callback must be destroyed with the watcher";
  theirs.reset();
  EXPECT_EQ(calls.load(), 0);
}

TEST(PeerWatcherLifetimeTest, DestructorJoinsCleanlyAfterCallbacksRan) {
  auto [mine, theirs] = SocketPair();
  Notification fired;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<PeerWatcher> watcher, PeerWatcher::Create());
  ASSERT_OK(watcher->Watch(mine.get(), Kind::kSocket, [&] { fired.Notify(); }));
  theirs.reset();
  ASSERT_TRUE(fired.WaitForNotificationWithTimeout(kPatience));
  watcher.reset();
}

TEST(PeerWatcherLifetimeTest, ManyWatchersCanBeCreatedAndDestroyed) {
  for (int i = 0; i < 20; ++i) {
    auto [mine, theirs] = SocketPair();
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<PeerWatcher> watcher, PeerWatcher::Create());
    ASSERT_OK(watcher->Watch(mine.get(), Kind::kSocket, [] {}));
    if (i % 2 == 0) theirs.reset();
  }
}

}  // namespace
}  // namespace sluice
