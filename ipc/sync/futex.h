// Futex wait/wake on 32-bit words, shared between processes.
//
// Words that live in a shared region use the shared (non-PRIVATE) futex ops:
// the kernel keys them by the backing memfd page, so a waiter and a waker in
// different processes meet even at different virtual addresses. Words in
// private memory (a local interrupt flag) may use the cheaper private ops.
//
// Deadlines are absl::Time; waits return DEADLINE_EXCEEDED when it passes.
// A wait may also return early (spurious wake, EINTR, value changed): callers
// always re-check their condition in a loop.
#ifndef SLUICE_IPC_SYNC_FUTEX_H_
#define SLUICE_IPC_SYNC_FUTEX_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace sluice {

using FutexWord = std::atomic<uint32_t>;
static_assert(sizeof(FutexWord) == 4 && FutexWord::is_always_lock_free);

enum class FutexScope : uint8_t { kShared, kPrivate };

// Sleeps while `*word == expected`, until woken or `deadline`.
// OK on wake-up or mismatch; DEADLINE_EXCEEDED (without a message, so
// that it allocates nothing) on timeout.
absl::Status FutexWait(const FutexWord& word, uint32_t expected, absl::Time deadline,
                       FutexScope scope = FutexScope::kShared);

// Wakes up to `count` waiters on `word`. Returns how many were woken.
int FutexWake(const FutexWord& word, int count, FutexScope scope = FutexScope::kShared);

struct FutexWaitEntry {
  const FutexWord* word;
  uint32_t expected;
  FutexScope scope;
};

// The most entries one futex_waitv takes (the kernel's FUTEX_WAITV_MAX).
inline constexpr size_t kMaxFutexWaitEntries = 128;

// futex_waitv(2): sleeps until any entry's word differs from its expected
// value or is woken, or until `deadline`. At most kMaxFutexWaitEntries
// entries. Returns the index of the entry that woke us, -1 if a value
// already differed (nothing slept), or DEADLINE_EXCEEDED.
absl::StatusOr<int> FutexWaitAny(std::span<const FutexWaitEntry> entries, absl::Time deadline);

}  // namespace sluice

#endif  // SLUICE_IPC_SYNC_FUTEX_H_
