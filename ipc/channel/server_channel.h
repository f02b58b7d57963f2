// ServerChannel: the serving side of a channel (ClientChannel, in
// client_channel.h, is the calling side and has the picture of a call and
// the failure semantics, which hold here too). Server threads take requests
// with Receive, each request by one thread, as an IncomingCall it answers
// exactly once, with the reply built in place. A server that waits on many
// channels at once does not block in Receive: it takes requests through each
// channel's ServerWaiting (server_waiting.h).
//
// Thread safety: ServerChannel is thread safe; many threads may Receive on
// one. An IncomingCall belongs to one thread at a time and must be destroyed
// before its channel.
#ifndef SLUICE_IPC_CHANNEL_SERVER_CHANNEL_H_
#define SLUICE_IPC_CHANNEL_SERVER_CHANNEL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
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
#include "ipc/shm/region.h"

namespace sluice {

class ServerChannel;

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
  // The client's ClientChannel::AnnounceFeatures bits, as it wrote them:
  // untrusted. 0 once answered.
  uint32_t client_features() const;
  // ServerChannel::AnnounceFeatures, on this call's channel (nothing once
  // answered).
  void AnnounceServerFeatures(uint32_t bits);

  // Space for the reply, at least `capacity` bytes, in memory only this
  // process can write: the reply arena when it fits there now (and, over
  // kLargeMessage, the client trusts this server), else a fresh memfd sent
  // sealed. Reserving again replaces the previous reservation.
  // RESOURCE_EXHAUSTED over the client's limit; FAILED_PRECONDITION for
  // oneway calls.
  absl::StatusOr<std::span<std::byte>> ReserveReply(uint64_t capacity);
  // A word that goes with the reply if it is OK (Reply::word), opaque to
  // the channel; 0 (the default) for none.
  void set_reply_word(uint64_t word) { reply_word_ = word; }
  // Sends `message`, a span inside the reserved space (or empty).
  absl::Status Reply(std::span<const std::byte> message);
  // After Reply: whether an OK reply went out with a non-zero reply word
  // (not when sending its descriptors failed and it became INTERNAL).
  bool reply_word_sent() const { return reply_word_sent_; }
  // Sends `error` (not OK) to the caller, code and message.
  absl::Status Fail(const absl::Status& error);

  // For a server thread that looks for the channel's next request as soon
  // as it has answered this call (a ServerPool thread, when the handler
  // returns): the answer then announces that look as a poll
  // (ServerWaiting::BeginPoll) before the client can see it, so that the
  // client's next request, which may come at once (on one CPU the reply's
  // wake-up hands the CPU to the client), does not wake another thread only
  // for this one to take it. The thread owes the EndPoll when
  // poll_announced(). A moved call no longer announces: whoever answers it
  // then owes nothing. Off again once the handler has returned: a call it
  // left unanswered is abandoned later, with no look to follow.
  void set_announce_poll_with_reply(bool announce) { announce_poll_ = announce; }
  bool poll_announced() const { return poll_announced_; }

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
  uint64_t reply_word_ = 0;
  bool reply_word_sent_ = false;
  bool announce_poll_ = false;
  bool poll_announced_ = false;
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

  // As ClientChannel::LinkToDeath, for the client process.
  absl::StatusOr<uint64_t> LinkToDeath(absl::AnyInvocable<void()> recipient) {
    return endpoint_->LinkToDeath(std::move(recipient));
  }
  absl::Status UnlinkToDeath(uint64_t id) { return endpoint_->UnlinkToDeath(id); }

  // Ends the channel: Receive and answers fail with `why` from now on, and
  // the client learns of it at once.
  void Close(absl::Status why = absl::CancelledError("server channel closed"));
  // Ends the channel for new calls (CANCELLED) but lets the calls in flight
  // be answered: the client learns of the end when this channel is
  // destroyed, so those answers still reach it (a pool's Shutdown).
  void CloseAfterCalls();
  absl::Status health() const { return endpoint_->health(); }
  // Tells the client what this side's upper layer can take in requests
  // (bits opaque to the channel, ORed into ServerWords::features).
  void AnnounceFeatures(uint32_t bits);
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
  friend class ServerWaiting;
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
  // True if a request nobody has taken is pending (lock-free). A oneway
  // queued behind the one in service counts only `with_queued_oneways`.
  bool AnyRequestPending(bool with_queued_oneways = false) const;
  // As ServerWaiting: Receive polls and spins the same way.
  int64_t PollUntilNanos() const;
  int64_t BuildPollUntilNanos();
  void BeginPoll();
  void EndPoll();
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
  // The last_completion_ns_ a build poll was granted after: one grant per
  // answer, whichever thread asks (BuildPollUntilNanos).
  std::atomic<int64_t> build_poll_granted_after_{-1};
  // Mirror of SlotState::served_seq readable without mu_, for spinning: a
  // slot whose request_seq differs holds a request nobody has taken yet.
  std::atomic<uint32_t> claimed_seq_[channel_layout::kMaxSlots] = {};
  std::atomic<bool> oneway_busy_{false};  // Mirror of oneway_in_service_.
  absl::AnyInvocable<void()> reply_published_for_testing_;
};

}  // namespace sluice

#endif  // SLUICE_IPC_CHANNEL_SERVER_CHANNEL_H_
