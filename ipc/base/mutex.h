// Mutex and MutexLock: a std::mutex carrying Clang thread-safety annotations.
//
// Why not absl::Mutex: Debian's abseil is a prebuilt library that
// ThreadSanitizer cannot see into, so every absl::Mutex-protected access shows
// up as a false race in the TSan build. std::mutex goes through pthread, which
// TSan intercepts, and these annotations keep -Wthread-safety checking the
// ABSL_GUARDED_BY contracts under clang.
#ifndef SLUICE_IPC_BASE_MUTEX_H_
#define SLUICE_IPC_BASE_MUTEX_H_

#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

namespace sluice {

class CondVar;

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* mu_;
};

// A condition variable for Mutex (absl::CondVar has the same TSan blind spot).
class CondVar {
 public:
  // With `mu` held: waits until `*done` or `deadline`; true if `*done`.
  bool WaitUntil(Mutex* mu, const bool* done, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    const bool result =
        deadline == absl::InfiniteFuture()
            ? (cv_.wait(lock, [done] { return *done; }), true)
            : cv_.wait_until(lock, absl::ToChronoTime(deadline), [done] { return *done; });
    lock.release();  // Still held: the caller's MutexLock unlocks it.
    return result;
  }
  // With `mu` held: waits until `done()`.
  template <typename Done>
  void Wait(Mutex* mu, Done done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait(lock, done);
    lock.release();
  }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace sluice

#endif  // SLUICE_IPC_BASE_MUTEX_H_
