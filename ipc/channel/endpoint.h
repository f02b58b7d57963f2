// Endpoint: what the client and the server side of a channel have in common.
// Internal to ipc/channel; users see ClientChannel and ServerChannel.
//
// It owns the mapped control region, a validated private copy of its
// header, this side's arena (created here, sealed against writes by anyone
// else, and sent to the peer as the first descriptor message), the peer's
// arena once it has arrived (mapped read-only), the liveness registration
// with the PeerWatcher, and the local "events" word:
// a private futex bumped whenever a waiter must re-check something that is
// not in shared memory (the peer died, the channel was closed, a local call
// released its resources). Every blocking wait in the channel is a
// futex_waitv on one shared word plus this local word, so death and close
// wake sleepers without anybody writing into the shared region.
#ifndef SLUICE_IPC_CHANNEL_ENDPOINT_H_
#define SLUICE_IPC_CHANNEL_ENDPOINT_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ipc/base/mutex.h"
#include "ipc/base/unique_fd.h"
#include "ipc/channel/call_header.h"
#include "ipc/channel/channel_options.h"
#include "ipc/channel/layout.h"
#include "ipc/channel/peer_watcher.h"
#include "ipc/shm/region.h"
#include "ipc/sync/futex.h"
#include "ipc/sync/spin.h"

namespace sluice::internal {

// --- A call's message and descriptors, as both sides handle them ---

// Longest error message carried back from a server; longer ones are cut.
inline constexpr uint64_t kMaxErrorMessage = 4096;

// How long a side waits to send descriptors when nothing else bounds it (a
// reply's, a oneway's) on a peer that reads none: a peer that keeps its
// socket full this long is not reading, and must not hold a thread here.
inline constexpr absl::Duration kDescriptorSendBound = absl::Seconds(5);

// True if `inner` lies within `outer` (an empty `inner` anywhere).
bool Contains(std::span<const std::byte> outer, std::span<const std::byte> inner);

// A memfd for one message too large for an arena (or for the peer's trust):
// filled here, then sealed immutable before the peer gets it.
absl::StatusOr<Region> CreateSpill(uint64_t capacity);

// Maps a spilled message received from the peer: it must be sealed so that
// nobody can write it, and hold [offset, offset + length). DATA_LOSS,
// naming `what`, otherwise.
absl::StatusOr<Region> MapSpill(UniqueFd fd, uint64_t offset, uint64_t length,
                                absl::string_view what);

// Appends `fds` to `out` after checking each is open. INVALID_ARGUMENT for
// one that is not, or for more than kMaxFdsPerCall in all.
absl::Status AppendFds(std::span<const int> fds, std::vector<int>& out);

class Endpoint {
 public:
  enum class Side : uint8_t { kClient, kServer };

  static absl::StatusOr<std::unique_ptr<Endpoint>> Open(Side side, Region region, UniqueFd liveness,
                                                        PeerWatcher& watcher,
                                                        const ChannelOptions& options);
  ~Endpoint();

  const channel_layout::ChannelHeader& header() const { return header_; }
  channel_layout::ClientWords& client_words() const { return *client_words_; }
  channel_layout::ServerWords& server_words() const { return *server_words_; }
  channel_layout::Slot& slot(uint32_t index) const { return slots_[index]; }
  // This side's arena: the request arena for a client, the reply arena for
  // a server. Writable here only.
  std::byte* own_arena() const { return own_arena_.data(); }
  uint64_t own_arena_size() const { return own_arena_.size(); }
  // The peer's arena, mapped read-only the first time it is needed (the peer
  // sends it before it publishes anything that points into it). DATA_LOSS
  // if the peer sent something else, or a memfd that is not sealed against
  // our writes or has the wrong size.
  absl::StatusOr<const std::byte*> PeerArena();
  uint64_t peer_arena_size() const;

  // Whether a message of up to `capacity` bytes may be built in this side's
  // arena: it fits, and over kLargeMessage only if the peer reads such
  // messages in place (it trusts us). Otherwise it goes in a sealed memfd.
  bool MayBuildInOwnArena(uint64_t capacity) const;
  // The peer's message at [offset, offset + length) of its arena, read-only.
  // DATA_LOSS (naming `what` and `slot`) if it lies outside the arena, if it is over
  // kLargeMessage while this side does not trust the peer, or if the arena
  // itself is bad (see PeerArena).
  absl::StatusOr<std::span<const std::byte>> PeerMessage(uint64_t offset, uint64_t length,
                                                         absl::string_view what, uint32_t slot);
  const ChannelOptions& options() const { return options_; }

  // What the peer published about the messages it accepts (hints: this side
  // only uses them to choose between the arena and a sealed memfd, and to
  // fail early; the peer enforces its own limits).
  bool PeerAcceptsLargeInPlace() const;
  uint64_t PeerMaxMessageSize() const;

  // OK while usable; otherwise why not (peer dead, closed, broken by a
  // malformed message). The first cause sticks.
  absl::Status health() const;
  bool terminated() const { return terminated_.load(std::memory_order_acquire); }
  // How this side ends a channel (Terminate).
  enum class Ending : uint8_t {
    // Found broken here (a malformed message, a failed read): the peer is
    // told at once, and its hang-up in answer runs the death recipients,
    // for the channel is over for good.
    kBroken,
    // Closed here on purpose: the peer is told at once; no death notice.
    kClosed,
    // Closed here on purpose with the calls in flight still to be answered
    // (a server's shutdown): the peer learns of it when this endpoint goes,
    // so those answers still reach it.
    kClosedAfterCalls,
  };
  // Ends the channel with `why` (if not already ended) and wakes every waiter.
  void Terminate(absl::Status why, Ending ending = Ending::kBroken);

  // Death recipients: run once, on the PeerWatcher thread, when the peer
  // ends the channel (its process dies, or it closes its end); never once
  // this side has closed it. See ClientChannel::LinkToDeath.
  absl::StatusOr<uint64_t> LinkToDeath(absl::AnyInvocable<void()> recipient);
  absl::Status UnlinkToDeath(uint64_t id);

  uint32_t events() const { return events_.load(std::memory_order_acquire); }
  // Bumps the events word and wakes everyone sleeping in Wait().
  void Notify();

  // Sleeps until `word` != `expected`, events() != `events_seen`, or
  // `deadline`. OK on any wake-up; callers re-check their condition.
  // Returns at once if the channel has ended; `events_seen` must have been
  // read before the caller last checked whatever it waits for.
  absl::Status Wait(const FutexWord& word, uint32_t expected, uint32_t events_seen,
                    absl::Time deadline) const;

  // The fast path for the two hot waits (a reply; the next request): a plain
  // futex wait on the peer's word, cheaper than futex_waitv. Terminate()
  // bumps exactly these words (see there), so an end still wakes the
  // sleeper. `expected` must be read before this call, which then checks
  // for an end itself.
  absl::Status WaitOnPeerWord(const FutexWord& word, uint32_t expected, absl::Time deadline) const;

  // File descriptors of a call travel on the liveness socket, as one
  // SCM_RIGHTS message whose 8 bytes are the call's FdTag. Send before the
  // call (or reply) is published, so the receiver finds them already queued.
  // DEADLINE_EXCEEDED if the peer leaves its socket full until `deadline`.
  absl::Status SendFds(uint64_t tag, std::span<const int> fds, absl::Time deadline) const;
  // The descriptors sent under `tag`. Messages for other calls read on the
  // way are kept for their own callers. DATA_LOSS if none is queued (the
  // peer flagged descriptors it never sent) or the peer floods us.
  absl::StatusOr<std::vector<UniqueFd>> TakeFds(uint64_t tag);

  // The identity hello (ChannelOptions::hello_identity): Open() sends it on
  // the client side, first of all; the server reads it before serving the
  // first call. DATA_LOSS if the first queued message is not a hello with
  // credentials.
  absl::StatusOr<PeerCredentials> ReceiveHello();

  // --- The bell (see channel_layout::ServerWords::bell_listeners) ---
  // Client: sends a ring on the liveness socket, never blocking, unless a
  // ring is still unheard (ClientWords::bell_rings). Server: calls the kick
  // SetBellKick gave, which hands a wake-up on to another of its threads.
  // Best effort: a full socket already has a wake-up pending.
  void RingBell();
  // Server only, before it listens on the bell: what RingBell does on this
  // side. Called from any thread, also after the channel ended. The first
  // kick set stays; later ones are ignored.
  void SetBellKick(absl::AnyInvocable<void() const> kick);
  // Server only: the descriptor to wait on (readable when rung, or when the
  // client sent descriptors or went) and, after a wake-up, before looking
  // at the slots: reads the rings queued at the front (the hello and the
  // client's arena too, on the way) and then marks the rings so far heard,
  // so the next ring is an edge again. A call's descriptors stay queued,
  // never taken into this process before the call asks for them. A bad
  // hello or arena ends the channel.
  int bell() const { return liveness_.get(); }
  void DrainBell();

  // Spins until `done()` or `budget` passes or the channel ends. True if done.
  template <typename Done>
  bool Spin(Done done, absl::Duration budget) const;

  // True when spinning for the peer can pay off: the machine has more than
  // one CPU and the peer last ran on another CPU than this thread's. The
  // peer's running/sleeping state is deliberately not consulted: a peer that
  // is being woken (or just woke us) is about to run, and a waiter that
  // sleeps because of it keeps both sides on the slow path.
  bool PeerOnAnotherCpu(uint32_t peer_activity) const;
  // Publishes what this side is doing (into its own words only).
  void PublishActivity(channel_layout::ActivityState state) const;

 private:
  Endpoint(Side side, Region region, Region own_arena, UniqueFd liveness,
           const channel_layout::ChannelHeader& h, const ChannelOptions& options);
  // Client only, at open: maps the server's arena if
  // its message is queued already; a bad one ends the channel (DATA_LOSS).
  void TakePeerArenaIfQueued();

  const Side side_;
  Region region_;
  Region own_arena_;
  UniqueFd liveness_;
  channel_layout::ChannelHeader header_;
  ChannelOptions options_;
  channel_layout::ClientWords* client_words_;
  channel_layout::ServerWords* server_words_;
  channel_layout::Slot* slots_;
  int online_cpus_;
  // Who may hang up: a child forked without exec holds the same socket,
  // and ending its copy must not end the parent's channel.
  const pid_t owner_pid_;

  PeerWatcher* watcher_ = nullptr;
  PeerWatcher::WatchId watch_id_ = 0;

  // Server: RingBell's kick, set once (SetBellKick) before kick_set_.
  absl::AnyInvocable<void() const> kick_;
  std::atomic<bool> kick_set_{false};

  mutable FutexWord events_{0};  // Private futex; see the file comment.
  std::atomic<bool> terminated_{false};
  mutable Mutex mu_;
  absl::Status termination_ ABSL_GUARDED_BY(mu_);
  bool peer_died_ ABSL_GUARDED_BY(mu_) = false;    // Its recipients were run.
  bool closed_here_ ABSL_GUARDED_BY(mu_) = false;  // Ended kClosed*, not kBroken.
  uint64_t next_recipient_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<std::pair<uint64_t, absl::AnyInvocable<void()>>> recipients_ ABSL_GUARDED_BY(mu_);

  void PeerDied();

  absl::StatusOr<std::vector<UniqueFd>> TakeFdsLocked(uint64_t tag)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(fds_mu_);
  // DrainBell's reads; an error ends the channel.
  absl::Status ReadRingsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(fds_mu_);
  // Server: stores the client's ring count as heard (see DrainBell).
  void MarkRingsHeardLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(fds_mu_);
  // Reads the hello into hello_ unless it was read already.
  void ReadHelloLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(fds_mu_);
  // Keeps one received descriptor message (or maps the peer's arena): for
  // TakeFdsLocked, which reads past messages for others.
  absl::Status StashLocked(uint64_t tag, std::vector<UniqueFd> fds)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(fds_mu_);
  absl::Status MapPeerArenaLocked(std::vector<UniqueFd> fds) ABSL_EXCLUSIVE_LOCKS_REQUIRED(fds_mu_);

  Mutex fds_mu_;
  absl::flat_hash_map<uint64_t, std::vector<UniqueFd>> stashed_fds_ ABSL_GUARDED_BY(fds_mu_);
  size_t stashed_fd_count_ ABSL_GUARDED_BY(fds_mu_) = 0;
  // Set once, under fds_mu_, when the peer's arena is mapped.
  Region peer_arena_region_ ABSL_GUARDED_BY(fds_mu_);
  std::atomic<const std::byte*> peer_arena_{nullptr};
  // Server: the client's hello, once read: by DrainBell, which may find it
  // first, or by ReceiveHello.
  std::optional<absl::StatusOr<PeerCredentials>> hello_ ABSL_GUARDED_BY(fds_mu_);
};

using ::sluice::CpuRelax;
using ::sluice::MonotonicNanos;

template <typename Done>
bool Endpoint::Spin(Done done, absl::Duration budget) const {
  const int64_t end = MonotonicNanos() + absl::ToInt64Nanoseconds(budget);
  for (uint32_t i = 1;; ++i) {
    if (done()) return true;
    CpuRelax();
    if ((i & 31) == 0 && (terminated() || MonotonicNanos() > end)) return done();
  }
}

}  // namespace sluice::internal

#endif  // SLUICE_IPC_CHANNEL_ENDPOINT_H_
