// ServerWaiting: a ServerChannel as a server that waits on many channels at
// once sees it (rpc::ServerPool). Such a server does not block in one
// channel's Receive: its threads take requests without waiting, and sleep
// on every channel's doorbell in one futex_waitv or, past what one
// futex_waitv holds, on the channels' bells in an epoll set
// (docs/shared-memory-layout.md, "Many channels: the bell").
//
// A view: it holds a pointer to its channel, is cheap to copy, and must not
// outlive the channel. Thread safe as the channel is.
#ifndef SLUICE_IPC_CHANNEL_SERVER_WAITING_H_
#define SLUICE_IPC_CHANNEL_SERVER_WAITING_H_

#include <cstdint>
#include <optional>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "ipc/channel/server_channel.h"
#include "ipc/sync/futex.h"

namespace sluice {

class ServerWaiting {
 public:
  explicit ServerWaiting(ServerChannel& channel) : channel_(&channel) {}

  // --- Taking requests ---
  // Takes a pending request without waiting: a call, nullopt when none is
  // pending, or the reason the channel ended (as Receive).
  absl::StatusOr<std::optional<IncomingCall>> TryReceive();
  // As TryReceive, but takes only synchronous requests whose
  // header().chain_id `accept` approves; others stay pending for the next
  // caller. (The RPC layer's thread blocked in a call serves the calls of
  // its own chain this way.)
  absl::StatusOr<std::optional<IncomingCall>> TryReceiveChained(
      absl::FunctionRef<bool(uint64_t chain_id)> accept);
  // True if TryReceiveChained(accept) would likely find a request;
  // lock-free, for polling while spinning.
  bool ChainedRequestPending(absl::FunctionRef<bool(uint64_t chain_id)> accept) const;
  // True if a request nobody has taken is pending (lock-free).
  bool RequestPending() const { return channel_->AnyRequestPending(); }
  // True if some slot holds a request nobody has claimed, even one that
  // cannot be taken yet (a oneway queued behind the one in service): false
  // means TryReceive would find nothing and note nothing (lock-free).
  bool Unclaimed() const { return channel_->AnyRequestPending(/*with_queued_oneways=*/true); }

  // --- Sleeping on doorbells ---
  // BeginSleep() on each channel (announces a sleeper, so the client will
  // FUTEX_WAKE the doorbell, and returns its value), then TryReceive() on
  // each once more, then futex_waitv on every doorbell() with those values;
  // EndSleep() on each afterwards.
  const FutexWord& doorbell() const;
  uint32_t BeginSleep();
  void EndSleep();

  // --- Polling ---
  // Around a spell of polling for requests without sleeping (a thread's
  // serve spin): clients skip their wake-up meanwhile. EndPoll as soon as
  // the thread claims a call or stops polling: it hands the wake-up on to a
  // sleeper if a request is still pending.
  void BeginPoll() { channel_->BeginPoll(); }
  void EndPoll() { channel_->EndPoll(); }
  // Until when polling for this channel's next request pays off
  // (MonotonicNanos), as Receive decides for its own spin: within
  // SpinPolicy::serve_spin of the last answer, and only while the client
  // last ran on another CPU. 0 when it does not.
  int64_t PollUntilNanos() const { return channel_->PollUntilNanos(); }
  // Until when to poll on for a request the client announced it is filling
  // in a memfd of its own (SpinPolicy::build_spin from now), or 0: the
  // client is not, runs on this CPU, or a poll was granted for it since the
  // channel's last answer (to any thread: the announcement is the client's
  // to make, so it buys at most one poll per answer). Ask when a poll runs
  // out or a wake-up finds nothing, not in a loop.
  int64_t BuildPollUntilNanos() const { return channel_->BuildPollUntilNanos(); }

  // --- Waiting on the bell, for more channels than a futex_waitv holds ---
  // ListenOnBell(kick) once makes the client ring bell() (the liveness
  // socket, to add to an epoll set edge-triggered) for a request it
  // publishes; DrainBell() after each wake-up, before TryReceive, so the
  // next ring is an edge again. The client's death makes bell() readable.
  // This side cannot ring the client's end, so wake-ups it must pass on
  // to another of its threads (more requests are pending than one thread
  // takes, a local end) go to `kick`, from any thread, at any time until
  // the channel is destroyed; RingBell() calls it.
  void ListenOnBell(absl::AnyInvocable<void() const> kick);
  int bell() const;
  void DrainBell();
  void RingBell();

 private:
  ServerChannel* channel_;
};

}  // namespace sluice

#endif  // SLUICE_IPC_CHANNEL_SERVER_WAITING_H_
