#include "ipc/sync/futex.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <climits>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "ipc/base/errno_status.h"

namespace sluice {
namespace {

uint32_t* Addr(const FutexWord& word) {
  // The kernel only reads the word in FUTEX_WAIT; the cast drops const for the
  // syscall's signature.
  return reinterpret_cast<uint32_t*>(const_cast<FutexWord*>(&word));
}

// Absolute CLOCK_MONOTONIC time for `deadline`; false if it is infinite.
bool MonotonicDeadline(absl::Time deadline, timespec* out) {
  if (deadline == absl::InfiniteFuture()) return false;
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  absl::Duration remaining = deadline - absl::Now();
  if (remaining < absl::ZeroDuration()) remaining = absl::ZeroDuration();
  // Clamp absurdly far deadlines so the addition cannot overflow.
  remaining = std::min(remaining, absl::Hours(24 * 365));
  *out = absl::ToTimespec(absl::DurationFromTimespec(now) + remaining);
  return true;
}

}  // namespace

absl::Status FutexWait(const FutexWord& word, uint32_t expected, absl::Time deadline,
                       FutexScope scope) {
  timespec abs_timeout{};
  const bool has_deadline = MonotonicDeadline(deadline, &abs_timeout);
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout, so retries
  // after EINTR do not stretch the deadline.
  int op = FUTEX_WAIT_BITSET | (scope == FutexScope::kPrivate ? FUTEX_PRIVATE_FLAG : 0);
  long rc = ::syscall(SYS_futex, Addr(word), op, expected, has_deadline ? &abs_timeout : nullptr,
                      nullptr, FUTEX_BITSET_MATCH_ANY);
  if (rc == 0) return absl::OkStatus();
  switch (errno) {
    case EAGAIN:
    case EINTR:
      return absl::OkStatus();
    case ETIMEDOUT:
      // No message: an empty Status allocates nothing, and a timed wait that
      // expires is routine for the pool's watchdog and idle threads.
      return absl::Status(absl::StatusCode::kDeadlineExceeded, "");
    default:
      return ErrnoStatus("futex(FUTEX_WAIT_BITSET)", errno);
  }
}

int FutexWake(const FutexWord& word, int count, FutexScope scope) {
  int op = FUTEX_WAKE | (scope == FutexScope::kPrivate ? FUTEX_PRIVATE_FLAG : 0);
  long rc = ::syscall(SYS_futex, Addr(word), op, count, nullptr, nullptr, 0);
  return rc < 0 ? 0 : static_cast<int>(rc);
}

absl::StatusOr<int> FutexWaitAny(std::span<const FutexWaitEntry> entries, absl::Time deadline) {
  static_assert(kMaxFutexWaitEntries == FUTEX_WAITV_MAX);
  if (entries.empty() || entries.size() > kMaxFutexWaitEntries) {
    return absl::InvalidArgumentError(
        absl::StrCat("futex_waitv takes 1 to ", kMaxFutexWaitEntries, " entries"));
  }
  futex_waitv waiters[kMaxFutexWaitEntries] = {};
  for (size_t i = 0; i < entries.size(); ++i) {
    waiters[i].val = entries[i].expected;
    waiters[i].uaddr = reinterpret_cast<uintptr_t>(Addr(*entries[i].word));
    waiters[i].flags =
        FUTEX_32 | (entries[i].scope == FutexScope::kPrivate ? FUTEX_PRIVATE_FLAG : 0);
  }
  timespec abs_timeout{};
  const bool has_deadline = MonotonicDeadline(deadline, &abs_timeout);
  long rc = ::syscall(SYS_futex_waitv, waiters, entries.size(), 0,
                      has_deadline ? &abs_timeout : nullptr, CLOCK_MONOTONIC);
  if (rc >= 0) return static_cast<int>(rc);
  switch (errno) {
    case EAGAIN:
    case EINTR:
      return -1;
    case ETIMEDOUT:
      return absl::Status(absl::StatusCode::kDeadlineExceeded, "");  // As FutexWait.
    default:
      return ErrnoStatus("futex_waitv", errno);
  }
}

}  // namespace sluice
