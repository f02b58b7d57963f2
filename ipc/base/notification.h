// Notification: absl::Notification's interface on sluice::Mutex.
//
// Why not absl::Notification: like absl::Mutex (see mutex.h) it lives in
// Debian's prebuilt abseil, so ThreadSanitizer sees no happens-before edge
// from Notify() to a waiter and reports every value handed over that way as a
// race.
#ifndef SLUICE_IPC_BASE_NOTIFICATION_H_
#define SLUICE_IPC_BASE_NOTIFICATION_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "ipc/base/mutex.h"

namespace sluice {

class Notification {
 public:
  Notification() = default;
  Notification(const Notification&) = delete;
  Notification& operator=(const Notification&) = delete;

  void Notify() {
    MutexLock lock(&mu_);
    notified_ = true;
    cv_.SignalAll();
  }
  bool HasBeenNotified() const {
    MutexLock lock(&mu_);
    return notified_;
  }
  void WaitForNotification() const { WaitUntil(absl::InfiniteFuture()); }
  // True if notified before `timeout` passed.
  bool WaitForNotificationWithTimeout(absl::Duration timeout) const {
    return WaitUntil(absl::Now() + timeout);
  }

 private:
  bool WaitUntil(absl::Time deadline) const {
    MutexLock lock(&mu_);
    return cv_.WaitUntil(&mu_, &notified_, deadline);
  }

  mutable Mutex mu_;
  mutable CondVar cv_;
  bool notified_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace sluice

#endif  // SLUICE_IPC_BASE_NOTIFICATION_H_
