// ClientChannel: the calling side of a channel, for single-copy calls from
// one client process to one server process through a shared memfd region.
// ServerChannel (server_channel.h) is the other side;
// docs/shared-memory-layout.md has the protocol.
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
// client threads may have calls in flight at once (one slot each). Oneway
// calls (Send) are run by the server one at a time, in the order they were
// sent.
//
// Failure semantics, the same on both sides (docs/error-handling.md):
//   - peer process died            UNAVAILABLE, IsPeerDead() true, within
//                                   microseconds of its exit
//   - deadline passed              DEADLINE_EXCEEDED
//   - message over the receiver's  RESOURCE_EXHAUSTED with both sizes,
//     limit                         before anything is built
//   - malformed data from the peer DATA_LOSS; the channel is closed
//   - Close() on this side         CANCELLED
//
// Thread safety: ClientChannel is thread safe. An OutgoingCall or a Reply
// belongs to one thread at a time and must be destroyed before its channel.
#ifndef SLUICE_IPC_CHANNEL_CLIENT_CHANNEL_H_
#define SLUICE_IPC_CHANNEL_CLIENT_CHANNEL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ipc/base/mutex.h"
#include "ipc/base/unique_fd.h"
#include "ipc/channel/arena_allocator.h"
#include "ipc/channel/call_header.h"
#include "ipc/channel/channel_options.h"
#include "ipc/channel/endpoint.h"
#include "ipc/channel/layout.h"
#include "ipc/channel/peer_watcher.h"
#include "ipc/channel/reply_waiter.h"
#include "ipc/shm/region.h"

namespace sluice {

class ClientChannel;

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
  // The server's IncomingCall::set_reply_word, as it wrote it: untrusted.
  uint64_t word() const { return word_; }

 private:
  friend class ClientChannel;
  Reply(ClientChannel* channel, uint32_t slot, std::span<const std::byte> data,
        std::vector<UniqueFd> fds, std::optional<Region> spill, uint64_t word)
      : channel_(channel),
        slot_(slot),
        word_(word),
        data_(data),
        fds_(std::move(fds)),
        spill_(std::move(spill)) {}
  ClientChannel* channel_;  // nullptr once the slot is released.
  uint32_t slot_;
  uint64_t word_;
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
  // A server-side error arrives as that status (code and message). While
  // it waits, the thread runs the work `waiter` has (null: it only waits).
  absl::StatusOr<Reply> Call(OutgoingCall call, std::span<const std::byte> message,
                             absl::Time deadline = absl::InfiniteFuture(),
                             ReplyWaiter* waiter = nullptr);

  // Sends `message` oneway: returns once it is published; the server runs
  // oneway messages one at a time in the order they were sent. An error
  // means it was not published: the server never sees it.
  absl::Status Send(OutgoingCall call, std::span<const std::byte> message);

  // Runs `recipient` exactly once, on the PeerWatcher thread, when the
  // channel ends from the server's side: its process dies (SIGKILL
  // included), it closes the channel (a malformed request, its shutdown),
  // or it answers this side finding the channel broken by hanging up too.
  // Never once this side has closed the channel. Returns an id for
  // UnlinkToDeath, or, if the peer is gone or this side closed the channel,
  // why. A recipient must be quick. It may destroy this channel (say, drop
  // the last Remote<> of a dead object) if no other thread still uses it.
  absl::StatusOr<uint64_t> LinkToDeath(absl::AnyInvocable<void()> recipient) {
    return endpoint_->LinkToDeath(std::move(recipient));
  }
  // NOT_FOUND if `id` is unknown or already fired. After OK it never runs.
  absl::Status UnlinkToDeath(uint64_t id) { return endpoint_->UnlinkToDeath(id); }

  // The server's ServerChannel::AnnounceFeatures bits, as it wrote them:
  // untrusted, a hint of what it can take.
  uint32_t server_features() const {
    return endpoint_->server_words().features.load(std::memory_order_acquire);
  }
  // Tells the server what this side's upper layer can take in replies
  // (bits opaque to the channel, ORed into ClientWords::features).
  void AnnounceFeatures(uint32_t bits) {
    auto& features = endpoint_->client_words().features;
    if ((features.load(std::memory_order_relaxed) & bits) != bits) {
      features.fetch_or(bits, std::memory_order_release);
    }
  }

  // The words (Reply::word) of OK replies to calls whose callers abandoned
  // them at their deadlines, found as their slots are reclaimed (at a later
  // BeginCall): nobody read those replies, so the layer that gives the
  // words a meaning must end what they stand for. Takes them; the cheap
  // check says whether there are any.
  bool HasUnreadReplyWords() const { return has_unread_words_.load(std::memory_order_acquire); }
  std::vector<uint64_t> TakeUnreadReplyWords();

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
  // Publishes the request; returns its seq. `deadline` bounds sending its
  // descriptors (a server that reads none).
  absl::StatusOr<uint32_t> Publish(OutgoingCall& call, std::span<const std::byte> message,
                                   bool oneway, absl::Time deadline);
  absl::Status WaitForReply(uint32_t slot, uint32_t seq, absl::Time deadline, ReplyWaiter* waiter);
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
  // Wakes a server thread, unless one polls: one asleep on the doorbell, and
  // with `ring` one waiting on the bell (a spurious wake costs it a look).
  void WakeServer(bool ring);
  void ReleaseReply(uint32_t slot);
  void WakeLocalWaiters();

  std::unique_ptr<internal::Endpoint> endpoint_;
  mutable Mutex mu_;
  ArenaAllocator arena_ ABSL_GUARDED_BY(mu_);
  uint64_t free_slots_ ABSL_GUARDED_BY(mu_);           // Bit i: slot i is free.
  uint64_t detached_slots_ ABSL_GUARDED_BY(mu_);       // Bit i: waiting for the server to finish.
  uint32_t abandoned_slots_ ABSL_GUARDED_BY(mu_) = 0;  // Detached with SlotState::abandoned.
  SlotState slots_[channel_layout::kMaxSlots] ABSL_GUARDED_BY(mu_);
  uint64_t next_oneway_seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<uint64_t> unread_words_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> has_unread_words_{false};
  // Threads waiting for a slot or arena space; releasing wakes them only
  // when non-zero.
  std::atomic<uint32_t> local_waiters_{0};
};

}  // namespace sluice

#endif  // SLUICE_IPC_CHANNEL_CLIENT_CHANNEL_H_
