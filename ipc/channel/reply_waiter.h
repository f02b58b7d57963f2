// ReplyWaiter: what a thread blocked in ClientChannel::Call does while it
// waits, besides sleeping. The caller passes one to Call; the channel only
// polls it between looks at the reply and sleeps through it. The RPC layer
// passes one so that calls nested inside the one being waited for (A calls
// B, B calls back into A) are served by the waiting thread, as Binder does.
//
// Thread safety: used only by the thread waiting in the call it was passed
// to; what else may touch it is the implementation's business.
#ifndef SLUICE_IPC_CHANNEL_REPLY_WAITER_H_
#define SLUICE_IPC_CHANNEL_REPLY_WAITER_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "ipc/sync/futex.h"

namespace sluice {

class ReplyWaiter {
 public:
  virtual ~ReplyWaiter() = default;
  // True if the thread has work queued (cheap; polled while spinning).
  virtual bool HasWork() = 0;
  // Runs the queued work.
  virtual void RunWork() = 0;
  // Around each spell of spinning for the reply, while HasWork is polled:
  // the waiter may tell whoever would be woken for its work that it looks
  // itself. EndSpin comes after the spell (also after a RunWork it ended
  // in, which may end it first); calling it again is harmless.
  virtual void BeginSpin() {}
  virtual void EndSpin() {}
  // Sleeps until `reply_word` != `unanswered`, work is queued, or `deadline`.
  // OK on any wake-up; the channel re-checks its conditions.
  virtual absl::Status Sleep(const FutexWord& reply_word, uint32_t unanswered,
                             absl::Time deadline) = 0;
};

}  // namespace sluice

#endif  // SLUICE_IPC_CHANNEL_REPLY_WAITER_H_
