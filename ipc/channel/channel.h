// Channel: single-copy calls from one client process to one server process
// through a shared memfd region.
//
//   client thread                         server thread
//   BeginCall(n) -> OutgoingCall          Receive() -> IncomingCall
//     write the request into                request(): the bytes, in place
//     call.buffer() (in the region)         ReserveReply(n): space in the region
//   Call(call, message) -> Reply            Reply(message) / Fail(status)
//     reply.data(): the bytes, in place
//
// The request is written once, by the caller, straight into memory only the
// caller can write: its arena, or, for a message too large for the arena (or
// over channel_layout::kLargeMessage for a server that does not trust it), a
// memfd of its own that is sealed immutable when sent ("spilled"). The
// server reads it where it lies; the reply travels back the same way.
// Whoever reads a message in an arena copies it first unless it trusts the
// writer (ChannelOptions::trust_peer); a spilled message cannot change. Many
// client threads may have calls in flight at once (one slot each); many
// server threads may Receive on one ServerChannel. Oneway calls (Send) are
// run by the server one at a time, in the order they were sent.
//
// Failure semantics (docs/error-handling.md):
//   - peer process died            UNAVAILABLE, IsPeerDead() true, within
//                                   microseconds of its exit
//   - deadline passed              DEADLINE_EXCEEDED
//   - message over the receiver's  RESOURCE_EXHAUSTED with both sizes,
//     limit                         before anything is built
//   - malformed data from the peer DATA_LOSS; the channel is closed
//   - Close() on this side         CANCELLED
//
// Thread safety: ClientChannel and ServerChannel are thread safe. An
// OutgoingCall, Reply or IncomingCall belongs to one thread at a time and must
// be destroyed before its channel.
#ifndef SLUICE_IPC_CHANNEL_CHANNEL_H_
#define SLUICE_IPC_CHANNEL_CHANNEL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ipc/base/mutex.h"
#include "ipc/base/unique_fd.h"
#include "ipc/channel/arena_allocator.h"
#include "ipc/channel/channel_options.h"
#include "ipc/channel/endpoint.h"
#include "ipc/channel/layout.h"
#include "ipc/channel/peer_watcher.h"
#include "ipc/shm/region.h"

namespace sluice {

// Creates and formats a channel's control region for the given geometry,
// ready to hand to both sides (each makes its own arena when it opens).
absl::StatusOr<Region> CreateChannelRegion(const channel_layout::Geometry& geometry = {});

class ClientChannel;
class ServerChannel;

// Descriptors one call (or reply) may carry: one SCM_RIGHTS message's worth,
// less the one a spilled message needs.
inline constexpr size_t kMaxFdsPerCall = kMaxFdsPerMessage - 1;

// What a call is addressed to, carried beside the message in the slot. The
// channel does not interpret it; the RPC layer puts its interface id and
// method id (plus signature) here.
struct CallHeader {
  uint64_t interface_id = 0;
  uint64_t method = 0;
  // The call chain this call belongs to (rpc::CallRouter); 0 for none.
  uint64_t chain_id = 0;
};

// What a thread blocked in ClientChannel::Call does while it waits, if
// anything besides sleeping: the RPC layer installs one per thread so that
// calls nested inside the one being waited for (A calls B, B calls back into
// A) are served by the waiting thread, as Binder does.
class ReplyWaiter {
 public:
  virtual ~ReplyWaiter() = default;
  // True if the thread has nested work queued (cheap; polled while spinning).
  virtual bool HasWork() = 0;
  // Runs the queued nested work.
  virtual void RunWork() = 0;
  // Sleeps until `reply_word` != `unanswered`, work is queued, or `deadline`.
  // OK on any wake-up; the channel re-checks its conditions.
  virtual absl::Status Sleep(const FutexWord& reply_word, uint32_t unanswered,
                             absl::Time deadline) = 0;
};
// The calling thread's waiter (null: plain sleep). Set and restored by the
// RPC layer around a call.
ReplyWaiter* ThreadReplyWaiter();
void SetThreadReplyWaiter(ReplyWaiter* waiter);

// Space reserved in the request arena for one call. Dropping it unsent gives
// the space back.
class OutgoingCall {
 public:
  OutgoingCall(OutgoingCall&& other) noexcept;
  OutgoingCall& operator=(OutgoingCall&& other) noexcept;
  ~OutgoingCall();

  // Where to write the request: memory only this process can write, at
  // least the capacity asked for.
  std::span<std::byte> buffer() const { return buffer_; }
  // True when the request goes in a sealed memfd of its own.
  bool spilled() const { return spill_.has_value(); }
  CallHeader& header() { return header_; }

  // Sends duplicates of `fds` with the request (SCM_RIGHTS); the caller keeps
  // its own. INVALID_ARGUMENT for a descriptor that is not open or for more
  // than kMaxFdsPerCall in all.
  absl::Status AttachFds(std::span<const int> fds);

 private:
  friend class ClientChannel;
  OutgoingCall(ClientChannel* channel, uint32_t slot, uint32_t seq, std::span<std::byte> buffer,
               std::optional<Region> spill)
      : channel_(channel), slot_(slot), seq_(seq), buffer_(buffer), spill_(std::move(spill)) {}
  ClientChannel* channel_;
  uint32_t slot_;
  uint32_t seq_;  // The request_seq this call will publish (the slot is reserved for it).
  std::span<std::byte> buffer_;
  std::optional<Region> spill_;  // Set when buffer_ is a memfd of its own.
  CallHeader header_;
  std::vector<int> fds_;  // Borrowed until the call is sent.
};

// A reply, read in place: from the server's arena (read-only here) or from
// the sealed memfd it spilled to. The bytes stay valid, and the call's slot
// stays taken, until the Reply is destroyed or its slot released.
class Reply {
 public:
  Reply(Reply&& other) noexcept;
  Reply& operator=(Reply&& other) noexcept;
  ~Reply();

  // In the arena the server can still change unless immutable(): copy what
  // you must trust (a large one arrives here only from a trusted server).
  std::span<const std::byte> data() const { return data_; }
  // True when data() lies in a sealed memfd: nobody can change it.
  bool immutable() const { return spill_.has_value(); }
  // Gives the slot (and the arena space) back before the Reply goes: for a
  // caller that has copied data(), or whose data() is immutable(), which
  // stays readable. Otherwise data() is empty afterwards.
  void ReleaseSlot();
  // Descriptors the server attached, owned by the caller from now on.
  std::vector<UniqueFd> TakeFds() { return std::move(fds_); }
  // The attached descriptor at `index` (attachment order), or an invalid
  // one if there is none or it was taken already.
  UniqueFd TakeFd(size_t index) {
    return index < fds_.size() ? std::move(fds_[index]) : UniqueFd();
  }
  size_t fd_count() const { return fds_.size(); }

 private:
  friend class ClientChannel;
  Reply(ClientChannel* channel, uint32_t slot, std::span<const std::byte> data,
        std::vector<UniqueFd> fds, std::optional<Region> spill)
      : channel_(channel),
        slot_(slot),
        data_(data),
        fds_(std::move(fds)),
        spill_(std::move(spill)) {}
  ClientChannel* channel_;  // nullptr once the slot is released.
  uint32_t slot_;
  std::span<const std::byte> data_;
  std::vector<UniqueFd> fds_;
  std::optional<Region> spill_;  // The sealed mapping data_ lies in, if spilled.
};

class ClientChannel {
 public:
  // Maps the client side of a channel region. `liveness` is a descriptor
  // that hangs up when the server process dies (a socket only the server
  // holds the other end of); `watcher` must outlive the channel.
  static absl::StatusOr<std::unique_ptr<ClientChannel>> Open(Region region, UniqueFd liveness,
                                                             PeerWatcher& watcher,
                                                             const ChannelOptions& options = {});
  ~ClientChannel();
  ClientChannel(const ClientChannel&) = delete;
  ClientChannel& operator=(const ClientChannel&) = delete;

  // Reserves a slot and `capacity` bytes to build the request in, waiting
  // until `deadline` while other calls hold every slot. The bytes are in the
  // request arena when they fit there now (and, over kLargeMessage, the
  // server trusts this client), else in a fresh memfd sent sealed: a full
  // arena never makes a call wait. RESOURCE_EXHAUSTED at once if `capacity`
  // exceeds max_request_size().
  // `chain_id` is the call chain the call will belong to (CallHeader): when
  // every slot is held by calls of that same chain (recursion deeper than
  // the slot count through this channel), none can be released until this
  // one is made, so waiting would deadlock: RESOURCE_EXHAUSTED at once.
  absl::StatusOr<OutgoingCall> BeginCall(uint64_t capacity,
                                         absl::Time deadline = absl::InfiniteFuture(),
                                         uint64_t chain_id = 0);

  // Sends `message` (a span inside call.buffer()) and waits for the reply.
  // A server-side error arrives as that status (code and message).
  absl::StatusOr<Reply> Call(OutgoingCall call, std::span<const std::byte> message,
                             absl::Time deadline = absl::InfiniteFuture());

  // Sends `message` oneway: returns once it is published; the server runs
  // oneway messages one at a time in the order they were sent.
  absl::Status Send(OutgoingCall call, std::span<const std::byte> message);

  // Runs `recipient` exactly once, on the PeerWatcher thread, when the
  // server process dies (SIGKILL included); not when this side closes.
  // Returns an id for UnlinkToDeath, or the peer-dead error if it already
  // died. A recipient must be quick. It may destroy this channel (say, drop
  // the last Remote<> of a dead object) if no other thread still uses it.
  absl::StatusOr<uint64_t> LinkToDeath(absl::AnyInvocable<void()> recipient) {
    return endpoint_->LinkToDeath(std::move(recipient));
  }
  // NOT_FOUND if `id` is unknown or already fired. After OK it never runs.
  absl::Status UnlinkToDeath(uint64_t id) { return endpoint_->UnlinkToDeath(id); }

  // Fails calls in progress with CANCELLED and refuses new ones.
  void Close();
  // OK while usable; otherwise the reason it is not (e.g. IsPeerDead()),
  // or RESOURCE_EXHAUSTED while every slot is held by a call whose caller
  // gave up at its deadline and the server has not answered (a hung
  // handler): no call can start until it answers one.
  absl::Status health() const;
  struct Stats {
    uint32_t slots = 0;
    uint32_t in_use = 0;  // Reserved, in flight, or held by an unread reply.
    // Of those, calls the caller abandoned (its deadline passed) that the
    // server has not answered yet: each keeps its slot until it does, while
    // the channel goes on with the others.
    uint32_t abandoned = 0;
  };
  Stats stats() const;
  // The largest request the server accepts (it publishes its limit).
  uint64_t max_request_size() const { return endpoint_->PeerMaxMessageSize(); }
  uint64_t request_arena_size() const { return endpoint_->own_arena_size(); }
  uint32_t slot_count() const { return endpoint_->header().slot_count; }

 private:
  friend class OutgoingCall;
  friend class Reply;
  enum class SlotUse : uint8_t { kFree, kReserved, kSync, kDetached };
  struct SlotState {
    SlotUse use = SlotUse::kFree;
    uint32_t seq = 0;        // Last request_seq published on this slot.
    bool has_block = false;  // The request occupies the arena (not spilled, not yet answered).
    uint64_t block = 0;      // Request arena offset while has_block.
    uint64_t chain_id = 0;   // Call chain of the call holding it (BeginCall).
    bool abandoned = false;  // kDetached because the caller stopped waiting.
  };

  explicit ClientChannel(std::unique_ptr<internal::Endpoint> endpoint);
  // Publishes the request; returns its seq.
  absl::StatusOr<uint32_t> Publish(OutgoingCall& call, std::span<const std::byte> message,
                                   bool oneway);
  absl::Status WaitForReply(uint32_t slot, uint32_t seq, absl::Time deadline);
  absl::StatusOr<Reply> TakeReply(uint32_t slot);
  // Takes a free slot, and `capacity` bytes of arena for it when `in_arena`
  // and there is room (*block then set). False when no slot is free.
  bool TryReserveLocked(uint64_t capacity, bool in_arena, uint64_t chain_id, uint32_t* slot,
                        std::optional<uint64_t>* block, uint32_t* seq)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ChainHoldsEverySlotLocked(uint64_t chain_id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FreeBlockLocked(uint32_t slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReclaimDetachedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseSlotLocked(uint32_t slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseUnsent(uint32_t slot);
  void ReleaseReply(uint32_t slot);
  void WakeLocalWaiters();

  std::unique_ptr<internal::Endpoint> endpoint_;
  mutable Mutex mu_;
  ArenaAllocator arena_ ABSL_GUARDED_BY(mu_);
  uint64_t free_slots_ ABSL_GUARDED_BY(mu_);      // Bit i: slot i is free.
  uint64_t detached_slots_ ABSL_GUARDED_BY(mu_);  // Bit i: waiting for the server to finish.
  SlotState slots_[channel_layout::kMaxSlots] ABSL_GUARDED_BY(mu_);
  uint64_t next_oneway_seq_ ABSL_GUARDED_BY(mu_) = 0;
  // Threads waiting for a slot or arena space; releasing wakes them only
  // when non-zero.
  std::atomic<uint32_t> local_waiters_{0};
};

// One request taken by a server thread. It must be answered exactly once
// (Reply or Fail); dropping it unanswered fails the caller with INTERNAL.
class IncomingCall {
 public:
  IncomingCall(IncomingCall&& other) noexcept;
  IncomingCall& operator=(IncomingCall&& other) noexcept;
  ~IncomingCall();

  // The request, in place: in the client's arena (read-only here; the
  // client can still change it: copy what you must trust, and read each
  // field once; a large one arrives there only from a trusted client), or
  // in the sealed memfd the client spilled it to (request_immutable()).
  std::span<const std::byte> request() const { return request_; }
  bool request_immutable() const { return request_spill_.has_value(); }
  // As the client set it; untrusted like the request bytes.
  const CallHeader& header() const { return header_; }
  bool oneway() const { return oneway_; }
  // Descriptors the client attached, owned by the caller from now on.
  std::vector<UniqueFd> TakeFds() { return std::move(fds_); }
  // As Reply::TakeFd.
  UniqueFd TakeFd(size_t index) {
    return index < fds_.size() ? std::move(fds_[index]) : UniqueFd();
  }
  size_t fd_count() const { return fds_.size(); }
  // Descriptors attached to the reply so far (the index the next one gets).
  size_t reply_fd_count() const { return reply_fds_.size(); }
  // Sends `fds` with the reply. They are duplicated now, so the caller may
  // close its own at once (a stub method returns before the reply is sent).
  // INVALID_ARGUMENT as OutgoingCall::AttachFds; FAILED_PRECONDITION for a
  // oneway call.
  absl::Status AttachReplyFds(std::span<const int> fds);
  const PeerCredentials& caller() const { return *caller_; }

  // Space for the reply, at least `capacity` bytes, in memory only this
  // process can write: the reply arena when it fits there now (and, over
  // kLargeMessage, the client trusts this server), else a fresh memfd sent
  // sealed. Reserving again replaces the previous reservation.
  // RESOURCE_EXHAUSTED over the client's limit; FAILED_PRECONDITION for
  // oneway calls.
  absl::StatusOr<std::span<std::byte>> ReserveReply(uint64_t capacity);
  // Sends `message`, a span inside the reserved space (or empty).
  absl::Status Reply(std::span<const std::byte> message);
  // Sends `error` (not OK) to the caller, code and message.
  absl::Status Fail(const absl::Status& error);

 private:
  friend class ServerChannel;
  IncomingCall(ServerChannel* channel, uint32_t slot, uint32_t seq,
               std::span<const std::byte> request, const CallHeader& header, bool oneway,
               std::vector<UniqueFd> fds, std::optional<Region> request_spill);
  void Abandon();
  void DropReservation();

  ServerChannel* channel_ = nullptr;  // nullptr once answered.
  const PeerCredentials* caller_ = nullptr;
  uint32_t slot_ = 0;
  uint32_t seq_ = 0;
  std::span<const std::byte> request_;
  CallHeader header_;
  bool oneway_ = false;
  bool has_reservation_ = false;       // In the reply arena, at reservation_.
  uint64_t reservation_ = 0;           // Reply arena offset.
  std::optional<Region> reply_spill_;  // Or a memfd of its own.
  std::span<std::byte> reserved_;
  std::vector<UniqueFd> fds_;
  std::vector<UniqueFd> reply_fds_;
  std::optional<Region> request_spill_;  // The sealed mapping request_ lies in.
};

class ServerChannel {
 public:
  // Maps the server side of a channel region; see ClientChannel::Open.
  static absl::StatusOr<std::unique_ptr<ServerChannel>> Open(Region region, UniqueFd liveness,
                                                             PeerWatcher& watcher,
                                                             const ChannelOptions& options = {});
  ~ServerChannel();
  ServerChannel(const ServerChannel&) = delete;
  ServerChannel& operator=(const ServerChannel&) = delete;

  // Waits for the next request. UNAVAILABLE (IsPeerDead) once the client is
  // gone, DATA_LOSS if it wrote a malformed request (the channel then closes),
  // DEADLINE_EXCEEDED at `deadline`, CANCELLED after Close().
  absl::StatusOr<IncomingCall> Receive(absl::Time deadline = absl::InfiniteFuture());

  // --- For servers that wait on many channels at once (rpc::ServerPool) ---
  // Takes a pending request without waiting: a call, nullopt when none is
  // pending, or the reason the channel ended (as Receive).
  absl::StatusOr<std::optional<IncomingCall>> TryReceive();
  // As TryReceive, but takes only synchronous requests whose
  // header().chain_id `accept` approves; others stay pending for the next
  // caller. Used by threads blocked in a call to pick up nested calls.
  absl::StatusOr<std::optional<IncomingCall>> TryReceiveNested(
      absl::FunctionRef<bool(uint64_t chain_id)> accept);
  // True if TryReceiveNested(accept) would likely find a request; lock-free,
  // for polling while spinning.
  bool NestedRequestPending(absl::FunctionRef<bool(uint64_t chain_id)> accept) const;
  // To sleep on several channels: BeginSleep() on each (announces a sleeper,
  // so the client will FUTEX_WAKE the doorbell, and returns its value), then
  // TryReceive() on each once more, then futex_waitv on every doorbell() with
  // those values; EndSleep() on each afterwards.
  const FutexWord& doorbell() const { return endpoint_->client_words().doorbell; }
  uint32_t BeginSleep();
  void EndSleep();
  // Around a spell of polling for requests without sleeping (a pool
  // thread's serve spin): clients skip their wake-up meanwhile. EndPoll as
  // soon as the thread claims a call or stops polling: it hands the wake-up
  // on to a sleeper if a request is still pending.
  void BeginPoll();
  void EndPoll();
  // For more channels than a futex_waitv holds: ListenOnBell() once makes
  // the client ring bell() (a socket to add to an epoll set, edge-triggered)
  // for every request it publishes; DrainBell() after each wake-up, before
  // TryReceive, so the next ring is an edge again. RingBell() rings it from
  // this side: to pass a wake-up on to another thread waiting on the bell
  // (more requests are pending than one thread takes). Closing or the
  // client's death rings it too.
  void ListenOnBell();
  int bell() const { return endpoint_->bell(); }
  void DrainBell() const { endpoint_->DrainBell(); }
  void RingBell() { endpoint_->RingBell(); }
  // Until when polling for this channel's next request pays off
  // (MonotonicNanos), as Receive decides for its own spin: within
  // SpinPolicy::serve_spin of the last answer, and only while the client
  // last ran on another CPU. 0 when it does not.
  int64_t PollUntilNanos() const;
  // True if a request nobody has taken is pending (lock-free).
  bool RequestPending() const { return AnyRequestPending(); }
  // True if some slot holds a request nobody has claimed, even one that
  // cannot be taken yet (a oneway queued behind the one in service): false
  // means TryReceive would find nothing and note nothing (lock-free).
  bool Unclaimed() const;
  // As ClientChannel::LinkToDeath, for the client process.
  absl::StatusOr<uint64_t> LinkToDeath(absl::AnyInvocable<void()> recipient) {
    return endpoint_->LinkToDeath(std::move(recipient));
  }
  absl::Status UnlinkToDeath(uint64_t id) { return endpoint_->UnlinkToDeath(id); }

  // Ends the channel: Receive and answers fail with `why` from now on.
  void Close(absl::Status why = absl::CancelledError("server channel closed"));
  absl::Status health() const { return endpoint_->health(); }
  // The client process. With ChannelOptions::hello_identity it is known
  // only once the first call has been received (each IncomingCall::caller()
  // is always right).
  const PeerCredentials& peer() const { return peer_; }

  // Runs `hook` in every answer, after the reply is visible to the client
  // and before its slot is free here: a test stops a thread in that window.
  void SetReplyPublishedHookForTesting(absl::AnyInvocable<void()> hook) {
    reply_published_for_testing_ = std::move(hook);
  }

 private:
  friend class IncomingCall;
  struct SlotState {
    bool busy = false;  // Claimed by a server thread.
    // A scan found a new request here while busy and left it: Complete
    // wakes another thread for it.
    bool passed_over = false;
    uint32_t served_seq = 0;  // Last request_seq claimed.
    bool has_reply_block = false;
    uint32_t reply_seq = 0;  // Seq the reply block answers.
    uint64_t reply_block = 0;
  };

  explicit ServerChannel(std::unique_ptr<internal::Endpoint> endpoint);
  // Claims a pending request into `*call`; leaves it empty when none is
  // pending (no Status for that: building one allocates, and this runs on
  // every idle poll). Errors only for a malformed request.
  absl::Status TryClaimLocked(std::optional<IncomingCall>* call,
                              absl::FunctionRef<bool(uint64_t)>* accept = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AnyRequestPending() const;
  // Wakes one other server thread waiting for requests, on the doorbell or
  // the bell, whichever it waits on.
  void WakeAnotherServerThread();
  // Reply arena space, taking back what the client has finished reading;
  // nullopt when there is no room.
  std::optional<uint64_t> AllocateReplyLocked(uint64_t capacity) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FreeReplyBlockLocked(uint32_t slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Complete(IncomingCall& call, absl::StatusCode code, uint64_t offset,
                        uint64_t length);
  // The request bytes of a claimed slot: in the client's arena or in the
  // spilled memfd among `fds` (removed from it). DATA_LOSS for anything
  // out of bounds or not sealed as it must be.
  absl::StatusOr<std::span<const std::byte>> LocateRequestLocked(uint32_t slot, uint32_t flags,
                                                                 uint64_t offset, uint64_t length,
                                                                 std::vector<UniqueFd>& fds,
                                                                 std::optional<Region>& spill)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FreeReservation(uint64_t offset);

  std::unique_ptr<internal::Endpoint> endpoint_;
  Mutex mu_;
  // Written once, under mu_, before the first call that points to it.
  PeerCredentials peer_;
  bool awaiting_hello_ ABSL_GUARDED_BY(mu_);
  ArenaAllocator arena_ ABSL_GUARDED_BY(mu_);
  SlotState slots_[channel_layout::kMaxSlots] ABSL_GUARDED_BY(mu_);
  uint32_t scan_start_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_oneway_seq_ ABSL_GUARDED_BY(mu_) = 0;
  bool oneway_in_service_ ABSL_GUARDED_BY(mu_) = false;
  bool oneway_deferred_ ABSL_GUARDED_BY(mu_) = false;
  // MonotonicNanos() of the last completion: threads spin for new requests
  // only shortly after one, so an idle server sleeps.
  std::atomic<int64_t> last_completion_ns_{0};
  // Mirror of SlotState::served_seq readable without mu_, for spinning: a
  // slot whose request_seq differs holds a request nobody has taken yet.
  std::atomic<uint32_t> claimed_seq_[channel_layout::kMaxSlots] = {};
  std::atomic<bool> oneway_busy_{false};  // Mirror of oneway_in_service_.
  absl::AnyInvocable<void()> reply_published_for_testing_;
};

}  // namespace sluice

#endif  // SLUICE_IPC_CHANNEL_CHANNEL_H_
