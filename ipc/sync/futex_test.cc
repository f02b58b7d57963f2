#include "ipc/sync/futex.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/shm/region.h"
#include "tests/testing/status_matchers.h"

namespace sluice {
namespace {

using ::sluice::testing::StatusIs;

// Generous bounds only: timing on a loaded CI machine is unpredictable.
constexpr absl::Duration kShortTimeout = absl::Milliseconds(100);
constexpr absl::Duration kLongWait = absl::Seconds(10);
constexpr absl::Duration kUpperBound = absl::Seconds(5);

// Calls FutexWake until it reports having woken one waiter, i.e. until the
// waiter is provably asleep on `word` and now woken. The word's value is left
// alone, so a waiter that never slept cannot be mistaken for a woken one.
bool WakeOneSleeper(const FutexWord& word, FutexScope scope) {
  const absl::Time give_up = absl::Now() + kLongWait;
  while (absl::Now() < give_up) {
    if (FutexWake(word, 1, scope) == 1) return true;
    absl::SleepFor(absl::Microseconds(200));
  }
  return false;
}

Region CreateRegionOrDie() {
  absl::StatusOr<Region> region = Region::Create("futex-test", 4096);
  if (!region.ok()) {
    ADD_FAILURE() << region.status();
    std::abort();
  }
  return *std::move(region);
}

// A futex word inside a memfd region, as the channel uses them.
struct SharedWord {
  Region region = CreateRegionOrDie();
  FutexWord* word = new (region.data()) FutexWord(0);
};

class FutexScopeTest : public ::testing::TestWithParam<FutexScope> {};

INSTANTIATE_TEST_SUITE_P(BothScopes, FutexScopeTest,
                         ::testing::Values(FutexScope::kShared, FutexScope::kPrivate),
                         [](const ::testing::TestParamInfo<FutexScope>& param_info) {
                           return param_info.param == FutexScope::kShared ? "Shared" : "Private";
                         });

TEST_P(FutexScopeTest, WaitReturnsImmediatelyOnValueMismatch) {
  FutexWord word{7};
  const absl::Time start = absl::Now();
  EXPECT_OK(FutexWait(word, 6, absl::Now() + kLongWait, GetParam()));
  EXPECT_LT(absl::Now() - start, kUpperBound);
}

TEST_P(FutexScopeTest, WaitTimesOutWithDeadlineExceededNearTheDeadline) {
  FutexWord word{0};
  const absl::Time start = absl::Now();
  EXPECT_THAT(FutexWait(word, 0, start + kShortTimeout, GetParam()),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_GE(elapsed, kShortTimeout * 0.8);
  EXPECT_LT(elapsed, kUpperBound);
}

TEST_P(FutexScopeTest, WaitWithAPastDeadlineTimesOutAtOnce) {
  FutexWord word{0};
  const absl::Time start = absl::Now();
  EXPECT_THAT(FutexWait(word, 0, start - absl::Seconds(1), GetParam()),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(FutexWait(word, 0, absl::InfinitePast(), GetParam()),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(absl::Now() - start, kUpperBound);
}

TEST_P(FutexScopeTest, WakeFromAnotherThreadEndsTheWait) {
  FutexWord word{0};
  absl::Status waited;
  std::thread waiter([&] { waited = FutexWait(word, 0, absl::Now() + kLongWait, GetParam()); });
  EXPECT_TRUE(WakeOneSleeper(word, GetParam()));
  waiter.join();
  EXPECT_OK(waited);
}

TEST_P(FutexScopeTest, WaitWithInfiniteDeadlineIsWoken) {
  FutexWord word{0};
  absl::Status waited = absl::UnknownError("not run");
  std::thread waiter([&] {
    // A wait may end early (spurious wake-up), so loop on the condition.
    while (word.load() == 0) {
      waited = FutexWait(word, 0, absl::InfiniteFuture(), GetParam());
      if (!waited.ok()) return;
    }
  });
  // Proves the waiter slept with no timeout; it re-checks and sleeps again.
  EXPECT_TRUE(WakeOneSleeper(word, GetParam()));
  word.store(1);
  FutexWake(word, 1, GetParam());
  waiter.join();
  EXPECT_OK(waited);
}

TEST_P(FutexScopeTest, WakeWithNoWaitersWakesNobody) {
  FutexWord word{0};
  EXPECT_EQ(FutexWake(word, 1, GetParam()), 0);
  EXPECT_EQ(FutexWake(word, INT32_MAX, GetParam()), 0);
}

TEST_P(FutexScopeTest, WakeCountLimitsHowManyWaitersWake) {
  FutexWord word{0};
  constexpr int kWaiters = 3;
  std::atomic<int> woken{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.emplace_back([&] {
      if (FutexWait(word, 0, absl::Now() + kLongWait, GetParam()).ok()) ++woken;
    });
  }
  // Wait until all three are asleep, one wake at a time, each waking one.
  for (int i = 0; i < kWaiters; ++i) EXPECT_TRUE(WakeOneSleeper(word, GetParam()));
  for (std::thread& t : waiters) t.join();
  EXPECT_EQ(woken.load(), kWaiters);
}

TEST(FutexTest, WakeAcrossProcessesThroughDifferentMappings) {
  SharedWord shared;
  ASSERT_OK_AND_ASSIGN(UniqueFd child_fd, shared.region.DuplicateFd());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Map the memfd a second time, so the child sleeps at another address.
    auto adopted = Region::Adopt(std::move(child_fd), 4096, 4096);
    if (!adopted.ok()) ::_exit(10);
    if (adopted->data() == shared.region.data()) ::_exit(11);
    const auto* word = reinterpret_cast<const FutexWord*>(adopted->data());
    const absl::Status waited = FutexWait(*word, 0, absl::Now() + kLongWait, FutexScope::kShared);
    ::_exit(waited.ok() ? 0 : 12);
  }
  child_fd.reset();
  const bool woke = WakeOneSleeper(*shared.word, FutexScope::kShared);
  if (!woke) ::kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(woke);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(FutexTest, ValueChangeInAnotherProcessIsSeenBySharedWait) {
  SharedWord shared;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Wait in a loop until the parent's store becomes visible.
    const absl::Time deadline = absl::Now() + kLongWait;
    while (shared.word->load() == 0) {
      if (!FutexWait(*shared.word, 0, deadline, FutexScope::kShared).ok()) ::_exit(1);
    }
    ::_exit(shared.word->load() == 42 ? 0 : 2);
  }
  shared.word->store(42);
  FutexWake(*shared.word, 1, FutexScope::kShared);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(FutexWaitAnyTest, ReturnsTheIndexOfTheWokenWord) {
  SharedWord shared;
  FutexWord local{0};
  const FutexWaitEntry entries[] = {
      {shared.word, 0, FutexScope::kShared},
      {&local, 0, FutexScope::kPrivate},
  };
  for (int target : {1, 0}) {
    absl::StatusOr<int> woken = absl::UnknownError("not run");
    std::thread waiter([&] { woken = FutexWaitAny(entries, absl::Now() + kLongWait); });
    EXPECT_TRUE(WakeOneSleeper(*entries[target].word, entries[target].scope));
    waiter.join();
    ASSERT_OK(woken);
    EXPECT_EQ(*woken, target);
  }
}

TEST(FutexWaitAnyTest, ReturnsMinusOneWhenAValueAlreadyDiffers) {
  SharedWord shared;
  FutexWord local{5};
  const FutexWaitEntry entries[] = {
      {shared.word, 0, FutexScope::kShared},
      {&local, 4, FutexScope::kPrivate},
  };
  ASSERT_OK_AND_ASSIGN(int woken, FutexWaitAny(entries, absl::Now() + kLongWait));
  EXPECT_EQ(woken, -1);
}

TEST(FutexWaitAnyTest, TimesOutWithDeadlineExceededNearTheDeadline) {
  SharedWord shared;
  FutexWord local{0};
  const FutexWaitEntry entries[] = {
      {shared.word, 0, FutexScope::kShared},
      {&local, 0, FutexScope::kPrivate},
  };
  const absl::Time start = absl::Now();
  EXPECT_THAT(FutexWaitAny(entries, start + kShortTimeout),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_GE(elapsed, kShortTimeout * 0.8);
  EXPECT_LT(elapsed, kUpperBound);
}

TEST(FutexWaitAnyTest, RejectsAnEmptyList) {
  EXPECT_THAT(FutexWaitAny({}, absl::Now() + kLongWait),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(FutexWaitAnyTest, RejectsMoreThan128Entries) {
  std::vector<FutexWord> words(kMaxFutexWaitEntries + 1);
  std::vector<FutexWaitEntry> entries;
  for (FutexWord& w : words) entries.push_back({&w, 1, FutexScope::kPrivate});
  EXPECT_THAT(FutexWaitAny(entries, absl::Now() + kLongWait),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(FutexWaitAnyTest, AcceptsExactly128Entries) {
  std::vector<FutexWord> words(kMaxFutexWaitEntries);
  std::vector<FutexWaitEntry> entries;
  for (FutexWord& w : words) entries.push_back({&w, 0, FutexScope::kPrivate});
  // Only the last entry's value differs: the kernel must have seen all 128.
  entries.back().expected = 1;
  ASSERT_OK_AND_ASSIGN(int woken, FutexWaitAny(entries, absl::Now() + kLongWait));
  EXPECT_EQ(woken, -1);
}

}  // namespace
}  // namespace sluice
