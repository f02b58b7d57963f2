#include "ipc/channel/endpoint.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "ipc/base/errno_status.h"
#include "ipc/base/errors.h"
#include "ipc/base/poll_timeout.h"
#include "ipc/socket/unix_socket.h"

namespace sluice {

bool Trusts(TrustPolicy policy, const PeerCredentials& peer) {
  switch (policy) {
    case TrustPolicy::kSameUser:
      return peer.pid != 0 && peer.uid == ::geteuid();
    case TrustPolicy::kNobody:
      return false;
    case TrustPolicy::kEveryone:
      return true;
  }
  return false;
}

}  // namespace sluice

namespace sluice::internal {

using channel_layout::ActivityState;
using channel_layout::ChannelHeader;

namespace {

bool RangeInArena(uint64_t offset, uint64_t length, uint64_t arena_size) {
  return offset <= arena_size && length <= arena_size - offset;
}

// Never an FdTag (slots are numbered below kMaxSlots) nor kArenaTag.
constexpr uint64_t kHelloTag = ~uint64_t{0};

// One message on the liveness socket: an 8-byte tag and its descriptors.
using TagBytes = std::array<std::byte, sizeof(uint64_t)>;
TagBytes BytesOfTag(uint64_t tag) {
  TagBytes bytes;
  std::memcpy(bytes.data(), &tag, sizeof(tag));
  return bytes;
}
// The tag a received message carries; nullopt if it is not 8 bytes long.
std::optional<uint64_t> TagOf(std::span<const std::byte> bytes) {
  if (bytes.size() != sizeof(uint64_t)) return std::nullopt;
  uint64_t tag;
  std::memcpy(&tag, bytes.data(), sizeof(tag));
  return tag;
}

absl::Status SendTagged(int socket, uint64_t tag, std::span<const int> fds) {
  return SendMessage(socket, BytesOfTag(tag), fds);
}
}  // namespace

bool Contains(std::span<const std::byte> outer, std::span<const std::byte> inner) {
  if (inner.empty()) return true;
  const auto* begin = outer.data();
  const auto* end = outer.data() + outer.size();
  return inner.data() >= begin && inner.data() <= end &&
         inner.size() <= static_cast<size_t>(end - inner.data());
}

absl::StatusOr<Region> CreateSpill(uint64_t capacity) {
  return Region::Create("sluice-message", std::max<uint64_t>(capacity, 1), /*prefault=*/true);
}

absl::StatusOr<Region> MapSpill(UniqueFd fd, uint64_t offset, uint64_t length,
                                absl::string_view what) {
  absl::StatusOr<Region> spill = Region::Adopt(std::move(fd), 1, Region::kMaxSize,
                                               Region::Access::kReadOnly, Region::kImmutableSeals);
  if (!spill.ok()) {
    return absl::DataLossError(absl::StrCat(what, ": ", spill.status().message()));
  }
  if (!RangeInArena(offset, length, spill->size())) {
    return absl::DataLossError(absl::StrCat(what, " [", offset, ", +", length,
                                            ") lies outside its ", spill->size(), "-byte memfd"));
  }
  spill->CloseFd();
  return spill;
}

absl::Status AppendFds(std::span<const int> fds, std::vector<int>& out) {
  // The limit is one SCM_RIGHTS message's, less the spilled message's memfd.
  if (out.size() + fds.size() > kMaxFdsPerCall) {
    return absl::InvalidArgumentError(absl::StrCat("a call carries at most ", kMaxFdsPerCall,
                                                   " file descriptors, not ",
                                                   out.size() + fds.size()));
  }
  for (int fd : fds) {
    if (fd < 0 || ::fcntl(fd, F_GETFD) < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("file descriptor ", fd, " is not open; nothing was sent"));
    }
  }
  out.insert(out.end(), fds.begin(), fds.end());
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Endpoint>> Endpoint::Open(Side side, Region region,
                                                         UniqueFd liveness, PeerWatcher& watcher,
                                                         const ChannelOptions& options) {
  if (!region.mapped() || region.size() < sizeof(ChannelHeader)) {
    return absl::InvalidArgumentError(
        absl::StrCat("channel region of ", region.size(), " bytes is too small for its header"));
  }
  // Read the header once; from here on only the private copy is used, so a
  // peer rewriting it later changes nothing.
  ChannelHeader header;
  std::memcpy(&header, region.data(), sizeof(header));
  if (absl::Status valid = channel_layout::ValidateHeader(header, region.size()); !valid.ok()) {
    return valid;
  }
  if (!liveness) return absl::InvalidArgumentError("channel needs a liveness fd for its peer");
  // Mapped, the region needs no descriptor: the liveness socket stays each
  // side's only one per channel.
  region.CloseFd();
  // This side's arena is made here, by the only process that will write it,
  // and sealed before its fd leaves: the peer can map it read-only only.
  const bool client = side == Side::kClient;
  auto arena = Region::Create(client ? "sluice-requests" : "sluice-replies",
                              client ? header.request_arena_size : header.reply_arena_size);
  if (!arena.ok()) return arena.status();
  if (absl::Status sealed = arena->SealFutureWrites(); !sealed.ok()) return sealed;
  // The hello comes first (the server reads it as the first message).
  if (client && options.hello_identity) {
    // A failure here shows again, and is handled, on the arena's send below.
    (void)SendTagged(liveness.get(), kHelloTag, {});
  }
  const int arena_fd = arena->fd();
  absl::Status sent = SendTagged(liveness.get(), channel_layout::kArenaTag, {&arena_fd, 1});
  // UNAVAILABLE: the peer's end is closed already (it exited, or gave up on
  // the channel). The channel opens, ended: calls fail as on any dead peer.
  if (!sent.ok() && !absl::IsUnavailable(sent)) return sent;
  arena->CloseFd();  // The mapping is all this side needs.
  std::unique_ptr<Endpoint> ep(new Endpoint(side, std::move(region), *std::move(arena),
                                            std::move(liveness), header, options));
  Endpoint* raw = ep.get();
  if (!sent.ok()) {
    raw->Terminate(
        PeerDeadError(absl::StrCat(client ? "the server" : "the client",
                                   " closed the channel before it opened: ", sent.message())));
  }
  // A server that opened first (through the manager it always has: it
  // acknowledges the connection before the client gets it) has its arena
  // queued already: mapping it now keeps this side's descriptors the same
  // from here on.
  if (client) raw->TakePeerArenaIfQueued();
  auto id =
      watcher.Watch(raw->liveness_.get(), PeerWatcher::FdKind::kSocket, [raw] { raw->PeerDied(); });
  if (!id.ok()) return id.status();
  raw->watcher_ = &watcher;
  raw->watch_id_ = *id;
  return ep;
}

Endpoint::Endpoint(Side side, Region region, Region own_arena, UniqueFd liveness,
                   const ChannelHeader& h, const ChannelOptions& options)
    : side_(side),
      region_(std::move(region)),
      own_arena_(std::move(own_arena)),
      liveness_(std::move(liveness)),
      header_(h),
      options_(options),
      client_words_(
          reinterpret_cast<channel_layout::ClientWords*>(region_.data() + h.client_words_offset)),
      server_words_(
          reinterpret_cast<channel_layout::ServerWords*>(region_.data() + h.server_words_offset)),
      slots_(reinterpret_cast<channel_layout::Slot*>(region_.data() + h.slots_offset)),
      online_cpus_(static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN))),
      owner_pid_(::getpid()) {
  // What this side accepts, for the peer to choose where it puts messages.
  const uint32_t reception = options_.trust_peer ? channel_layout::kAcceptsInPlace : 0;
  if (side_ == Side::kClient) {
    client_words_->reception.store(reception, std::memory_order_relaxed);
    client_words_->max_reply_size.store(options_.max_message_size, std::memory_order_relaxed);
  } else {
    server_words_->reception.store(reception, std::memory_order_relaxed);
    server_words_->max_request_size.store(options_.max_message_size, std::memory_order_relaxed);
  }
}

uint64_t Endpoint::peer_arena_size() const {
  return side_ == Side::kClient ? header_.reply_arena_size : header_.request_arena_size;
}

bool Endpoint::PeerAcceptsLargeInPlace() const {
  const uint32_t reception = side_ == Side::kClient
                                 ? server_words_->reception.load(std::memory_order_relaxed)
                                 : client_words_->reception.load(std::memory_order_relaxed);
  return (reception & channel_layout::kAcceptsInPlace) != 0;
}

uint64_t Endpoint::PeerMaxMessageSize() const {
  const uint64_t published = side_ == Side::kClient
                                 ? server_words_->max_request_size.load(std::memory_order_relaxed)
                                 : client_words_->max_reply_size.load(std::memory_order_relaxed);
  // Zero: a peer that publishes nothing; only the hard limit applies.
  return published == 0 ? kMaxMessageSize : std::min(published, kMaxMessageSize);
}

bool Endpoint::MayBuildInOwnArena(uint64_t capacity) const {
  return capacity <= own_arena_size() &&
         (capacity <= channel_layout::kLargeMessage || PeerAcceptsLargeInPlace());
}

absl::StatusOr<std::span<const std::byte>> Endpoint::PeerMessage(uint64_t offset, uint64_t length,
                                                                 absl::string_view what,
                                                                 uint32_t slot) {
  if (length == 0) return std::span<const std::byte>();
  const uint64_t size = peer_arena_size();
  if (offset > size || length > size - offset) {
    return absl::DataLossError(absl::StrCat(what, " in slot ", slot, " [", offset, ", +", length,
                                            ") lies outside the peer's ", size, "-byte arena"));
  }
  if (length > channel_layout::kLargeMessage && !options_.trust_peer) {
    return absl::DataLossError(absl::StrCat(
        what, " in slot ", slot, " has ", length,
        " bytes in the peer's arena, where the peer could still change them; this side does "
        "not trust it, so messages over ",
        channel_layout::kLargeMessage, " bytes must come sealed"));
  }
  absl::StatusOr<const std::byte*> arena = PeerArena();
  if (!arena.ok()) return arena.status();
  return std::span<const std::byte>(*arena + offset, static_cast<size_t>(length));
}

absl::StatusOr<const std::byte*> Endpoint::PeerArena() {
  if (const std::byte* arena = peer_arena_.load(std::memory_order_acquire)) return arena;
  MutexLock lock(&fds_mu_);
  if (const std::byte* arena = peer_arena_.load(std::memory_order_relaxed)) return arena;
  absl::StatusOr<std::vector<UniqueFd>> fds = TakeFdsLocked(channel_layout::kArenaTag);
  if (!fds.ok()) return fds.status();
  if (absl::Status mapped = MapPeerArenaLocked(*std::move(fds)); !mapped.ok()) return mapped;
  return peer_arena_region_.data();
}

void Endpoint::TakePeerArenaIfQueued() {
  MutexLock lock(&fds_mu_);
  absl::StatusOr<std::optional<ReceivedMessage>> message =
      TryReceiveMessage(liveness_.get(), sizeof(uint64_t));
  if (!message.ok() || !message->has_value()) return;  // Not yet: taken when first needed.
  ReceivedMessage& received = **message;
  absl::Status taken = absl::OkStatus();
  if (TagOf(received.bytes) != channel_layout::kArenaTag || received.fds.empty()) {
    taken =
        absl::DataLossError("the server's first message on the liveness socket is not its arena");
  } else {
    taken = MapPeerArenaLocked(std::move(received.fds));
  }
  // Read once only: what it said stays the channel's end.
  if (!taken.ok()) Terminate(taken);
}

absl::Status Endpoint::MapPeerArenaLocked(std::vector<UniqueFd> fds) {
  if (peer_arena_.load(std::memory_order_relaxed) != nullptr) {
    return absl::DataLossError("the peer sent its arena twice");
  }
  if (fds.size() != 1) {
    return absl::DataLossError(
        absl::StrCat("the peer's arena message carries ", fds.size(), " descriptors, not 1"));
  }
  const uint64_t size = peer_arena_size();
  absl::StatusOr<Region> region = Region::Adopt(
      std::move(fds[0]), size, size, Region::Access::kReadOnly, Region::kOwnerWritesSeals);
  if (!region.ok()) {
    return absl::DataLossError(absl::StrCat("the peer's arena: ", region.status().message()));
  }
  region->CloseFd();
  peer_arena_region_ = *std::move(region);
  peer_arena_.store(peer_arena_region_.data(), std::memory_order_release);
  return absl::OkStatus();
}

Endpoint::~Endpoint() {
  if (watcher_ != nullptr) watcher_->Unwatch(watch_id_);
}

absl::Status Endpoint::health() const {
  if (!terminated()) return absl::OkStatus();
  MutexLock lock(&mu_);
  return termination_;
}

void Endpoint::Terminate(absl::Status why, Ending ending) {
  {
    MutexLock lock(&mu_);
    if (terminated_.load(std::memory_order_relaxed)) return;
    termination_ = std::move(why);
    closed_here_ = ending != Ending::kBroken;
    terminated_.store(true, std::memory_order_release);
  }
  // The peer learns of the end now, not when this endpoint is destroyed,
  // which whoever still holds the channel (a thread in a long handler of
  // another channel, a queued nested call) may put off for any time: its
  // watcher sees the hang-up at once. Only writing is shut: what the peer
  // sent before (a reply's descriptors) stays readable here.
  if (ending != Ending::kClosedAfterCalls && liveness_ && ::getpid() == owner_pid_) {
    (void)::shutdown(liveness_.get(), SHUT_WR);
  }
  Notify();
  // Wake threads in WaitOnPeerWord by moving the peer's words they sleep
  // on. The only write this side ever makes to the peer's words, and only
  // once the channel is over for this side: the peer is dead, or this side
  // closed and no longer reads them for anything else. reply_seq moves by
  // 2^31: it cannot come to equal the seq a caller waits for, and a reply
  // that arrived just before stays recognizable (ClientChannel::WaitForReply).
  if (side_ == Side::kClient) {
    for (uint32_t i = 0; i < header_.slot_count; ++i) {
      slots_[i].reply_seq.fetch_add(1u << 31, std::memory_order_seq_cst);
      FutexWake(slots_[i].reply_seq, INT_MAX);
    }
  } else {
    client_words_->doorbell.fetch_add(1, std::memory_order_seq_cst);
    FutexWake(client_words_->doorbell, INT_MAX);
    // A thread waiting on the bell must learn of the end as well (the
    // client's death makes the socket readable too; a local end does not).
    RingBell();
  }
}

absl::Status Endpoint::WaitOnPeerWord(const FutexWord& word, uint32_t expected,
                                      absl::Time deadline) const {
  // `expected` was read before this check: an end that happened before that
  // read is seen here (Terminate sets the flag before it moves the word); a
  // later one has moved the word, so the futex wait returns at once.
  if (terminated()) return absl::OkStatus();
  return FutexWait(word, expected, deadline);
}

void Endpoint::PeerDied() {
  Terminate(PeerDeadError(
      side_ == Side::kClient ? "the server is gone (its process ended, or it closed the channel)"
                             : "the client is gone (its process ended, or it closed the channel)"));
  std::vector<std::pair<uint64_t, absl::AnyInvocable<void()>>> recipients;
  bool tell;
  {
    MutexLock lock(&mu_);
    // Closed here, the peer's hang-up only answers ours (Terminate shut
    // this end): nobody is told of a death. The recipients go all the
    // same, unrun, so that none keeps alive what it captured (its own
    // channel, say).
    tell = !closed_here_;
    peer_died_ = tell;
    recipients.swap(recipients_);
  }
  if (tell) {
    for (auto& [id, recipient] : recipients) recipient();
  }
}

absl::StatusOr<uint64_t> Endpoint::LinkToDeath(absl::AnyInvocable<void()> recipient) {
  MutexLock lock(&mu_);
  if (peer_died_ || closed_here_) return termination_;
  const uint64_t id = next_recipient_++;
  recipients_.emplace_back(id, std::move(recipient));
  return id;
}

absl::Status Endpoint::UnlinkToDeath(uint64_t id) {
  MutexLock lock(&mu_);
  for (auto it = recipients_.begin(); it != recipients_.end(); ++it) {
    if (it->first == id) {
      recipients_.erase(it);
      return absl::OkStatus();
    }
  }
  return absl::NotFoundError(
      absl::StrCat("no death link ", id, peer_died_ ? " (it already fired)" : ""));
}

namespace {
// Descriptor messages held for other calls before the peer counts as flooding.
constexpr size_t kMaxStashedFdMessages = 2 * channel_layout::kMaxSlots;
// Descriptors held so, in all: a few calls' worth, so that one hostile
// client cannot fill this process's descriptor table for everyone.
constexpr size_t kMaxStashedFds = 4 * kMaxFdsPerCall;
// Rings read in one go before the peer counts as flooding.
constexpr int kMaxQueuedRings = 4 * channel_layout::kMaxSlots;
}  // namespace

absl::StatusOr<PeerCredentials> Endpoint::ReceiveHello() {
  MutexLock lock(&fds_mu_);
  ReadHelloLocked();
  if (!hello_.has_value()) {
    return absl::DataLossError(
        "the client of an object reference called without introducing itself first");
  }
  return *hello_;
}

void Endpoint::ReadHelloLocked() {
  if (hello_.has_value()) return;
  absl::StatusOr<std::optional<ReceivedMessage>> message =
      TryReceiveMessage(liveness_.get(), sizeof(uint64_t));
  if (!message.ok()) {
    hello_ = absl::DataLossError(
        absl::StrCat("reading the client's hello: ", message.status().message()));
    return;
  }
  if (!message->has_value()) return;  // Not sent (yet): ReceiveHello says so.
  if (TagOf((**message).bytes) != kHelloTag || !(**message).fds.empty()) {
    // Whatever else the impostor queued (a call's descriptors) is closed now,
    // not held for the channel's life; bounded, as it may keep sending.
    for (size_t i = 0; i < kMaxStashedFdMessages + kMaxQueuedRings; ++i) {
      absl::StatusOr<std::optional<ReceivedMessage>> rest =
          TryReceiveMessage(liveness_.get(), sizeof(uint64_t));
      if (!rest.ok() || !rest->has_value()) break;
    }
    hello_ = absl::DataLossError(
        "the client of an object reference called without introducing itself first");
    return;
  }
  if (!(**message).sender.has_value()) {
    // Not the client's doing: the kernel records credentials for every
    // message sent while the receiving socket asks for them.
    hello_ = absl::DataLossError(
        "the client's hello carries no credentials: the server's liveness socket needs "
        "EnableSenderCredentials before the client sends it");
    return;
  }
  hello_ = *(**message).sender;
}

absl::Status Endpoint::SendFds(uint64_t tag, std::span<const int> fds, absl::Time deadline) const {
  const TagBytes bytes = BytesOfTag(tag);
  for (;;) {
    // Never blocking in the send itself: a peer that stops reading (a full
    // socket) must not hold this thread past its deadline.
    absl::StatusOr<bool> sent = TrySendMessage(liveness_.get(), bytes, fds);
    if (!sent.ok() || *sent) return sent.status();
    const int ms = PollTimeoutMs(deadline);
    if (ms == 0) {
      return absl::DeadlineExceededError(
          "the peer reads nothing from the channel's socket (it is full): the call's "
          "descriptors could not be sent before its deadline");
    }
    pollfd writable = {.fd = liveness_.get(), .events = POLLOUT, .revents = 0};
    (void)RetryOnEintr([&] { return ::poll(&writable, 1, ms); });
  }
}

absl::StatusOr<std::vector<UniqueFd>> Endpoint::TakeFds(uint64_t tag) {
  MutexLock lock(&fds_mu_);
  return TakeFdsLocked(tag);
}

absl::StatusOr<std::vector<UniqueFd>> Endpoint::TakeFdsLocked(uint64_t tag) {
  if (auto it = stashed_fds_.find(tag); it != stashed_fds_.end()) {
    std::vector<UniqueFd> fds = std::move(it->second);
    stashed_fds_.erase(it);
    stashed_fd_count_ -= fds.size();
    return fds;
  }
  int rings = 0;
  for (;;) {
    absl::StatusOr<std::optional<ReceivedMessage>> message =
        TryReceiveMessage(liveness_.get(), sizeof(uint64_t));
    if (!message.ok()) {
      return absl::DataLossError(
          absl::StrCat("receiving descriptors for a call: ", message.status().message()));
    }
    if (!message->has_value()) {
      return absl::DataLossError(
          tag == channel_layout::kArenaTag
              ? "the peer pointed into its arena before it sent the arena"
              : "the peer flagged a call as carrying file descriptors but sent none");
    }
    ReceivedMessage& received = **message;
    const std::optional<uint64_t> tagged = TagOf(received.bytes);
    if (tagged == channel_layout::kBellTag && received.fds.empty()) {
      // A client rings once per drain and thread at most (RingBell). Read
      // here, the rings count as heard as if a drain had read them.
      if (side_ == Side::kServer) MarkRingsHeardLocked();
      if (++rings > kMaxQueuedRings) {
        return absl::DataLossError("the peer floods the liveness socket with rings");
      }
      continue;
    }
    if (tagged == channel_layout::kBellTag) {
      return absl::DataLossError("a ring on the liveness socket carries descriptors");
    }
    if (!tagged.has_value() || received.fds.empty()) {
      return absl::DataLossError("malformed descriptor message on the liveness socket");
    }
    if (*tagged == tag) return std::move(received.fds);
    if (absl::Status kept = StashLocked(*tagged, std::move(received.fds)); !kept.ok()) return kept;
  }
}

absl::Status Endpoint::StashLocked(uint64_t tag, std::vector<UniqueFd> fds) {
  if (tag == channel_layout::kArenaTag) {
    // Mapped on the way rather than stashed: it is needed sooner or later,
    // and a stashed one would hold a descriptor for the channel's life.
    return MapPeerArenaLocked(std::move(fds));
  }
  if (stashed_fds_.size() >= kMaxStashedFdMessages || stashed_fds_.contains(tag) ||
      stashed_fd_count_ + fds.size() > kMaxStashedFds) {
    return absl::DataLossError("the peer sent descriptors no call asked for");
  }
  stashed_fd_count_ += fds.size();
  stashed_fds_.emplace(tag, std::move(fds));
  return absl::OkStatus();
}

void Endpoint::SetBellKick(absl::AnyInvocable<void() const> kick) {
  // Once: other threads may be calling it from here on.
  if (kick_set_.load(std::memory_order_acquire)) return;
  kick_ = std::move(kick);
  kick_set_.store(true, std::memory_order_release);
}

void Endpoint::RingBell() {
  if (side_ == Side::kServer) {
    // Only what this process set: bell_listeners, which the client can
    // write, never decides whether there is a kick to call.
    if (kick_set_.load(std::memory_order_acquire)) kick_();
    return;
  }
  // One unheard ring is enough: the server drains and then looks at every
  // slot, so a request published before this check is found by that look.
  auto& rings = client_words_->bell_rings;
  const uint32_t rung = rings.load(std::memory_order_seq_cst);
  if (rung != server_words_->bell_heard.load(std::memory_order_seq_cst)) return;
  rings.store(rung + 1, std::memory_order_seq_cst);
  // False (full): the socket holds unread messages, so a wake-up is
  // pending anyway.
  (void)TrySendMessage(liveness_.get(), BytesOfTag(channel_layout::kBellTag), {});
}

void Endpoint::DrainBell() {
  if (side_ != Side::kServer) return;
  absl::Status read;
  {
    MutexLock lock(&fds_mu_);
    read = ReadRingsLocked();
    MarkRingsHeardLocked();
  }
  // Outside fds_mu_: ending the channel kicks another thread.
  if (!read.ok()) Terminate(read);
}

void Endpoint::MarkRingsHeardLocked() {
  // After the reads, under fds_mu_: every ring read so far was sent after
  // its client counted it, so this load covers it, and heard only grows.
  // The caller looks at the slots after this (the fence orders the store
  // before those loads): a client that saw the old value and skipped its
  // ring published before that look.
  server_words_->bell_heard.store(client_words_->bell_rings.load(std::memory_order_seq_cst),
                                  std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

absl::Status Endpoint::ReadRingsLocked() {
  // The hello is the first message an introducing client sends.
  if (options_.hello_identity) {
    ReadHelloLocked();
    if (!hello_.has_value()) return absl::OkStatus();  // Nothing queued yet.
    if (!hello_->ok()) return hello_->status();
  }
  // Bounded: a client that rings without pause must not keep this thread.
  // What is left stays readable, and the next ring is an edge.
  for (int i = 0; i < kMaxQueuedRings; ++i) {
    std::byte head[sizeof(uint64_t)];
    absl::StatusOr<std::optional<PeekedMessage>> peeked = PeekMessage(liveness_.get(), head);
    if (!peeked.ok() || !peeked->has_value()) return absl::OkStatus();  // Ended, or empty.
    const std::optional<uint64_t> tag =
        (*peeked)->longer ? std::nullopt
                          : TagOf(std::span<const std::byte>(head, (*peeked)->length));
    if (tag == channel_layout::kBellTag && !(*peeked)->has_fds) {
      DiscardMessage(liveness_.get());
      continue;
    }
    if (tag == channel_layout::kArenaTag && (*peeked)->has_fds &&
        peer_arena_.load(std::memory_order_relaxed) == nullptr) {
      // Needed before any request is read; mapped, it holds no descriptor.
      absl::StatusOr<std::optional<ReceivedMessage>> arena =
          TryReceiveMessage(liveness_.get(), sizeof(uint64_t));
      if (!arena.ok() || !arena->has_value()) return absl::OkStatus();
      if (absl::Status mapped = MapPeerArenaLocked(std::move((**arena).fds)); !mapped.ok()) {
        return mapped;
      }
      continue;
    }
    // A call's descriptors, or anything else: left queued, not taken into
    // this process, for the call that asks for them (TakeFds judges them).
    return absl::OkStatus();
  }
  return absl::OkStatus();
}

void Endpoint::Notify() {
  events_.fetch_add(1, std::memory_order_seq_cst);
  FutexWake(events_, INT_MAX, FutexScope::kPrivate);
}

absl::Status Endpoint::Wait(const FutexWord& word, uint32_t expected, uint32_t events_seen,
                            absl::Time deadline) const {
  // Callers read `events_seen` before calling; an end that came before that
  // read is caught here, one after it changes the events word and wakes us.
  if (terminated()) return absl::OkStatus();
  const FutexWaitEntry entries[] = {
      {&word, expected, FutexScope::kShared},
      {&events_, events_seen, FutexScope::kPrivate},
  };
  absl::StatusOr<int> woken = FutexWaitAny(entries, deadline);
  return woken.ok() ? absl::OkStatus() : woken.status();
}

bool Endpoint::PeerOnAnotherCpu(uint32_t peer_activity) const {
  if (online_cpus_ < 2) return false;
  const int peer_cpu = channel_layout::ActivityCpuOf(peer_activity);
  return peer_cpu < 0 || peer_cpu != ::sched_getcpu();
}

void Endpoint::PublishActivity(ActivityState state) const {
  auto& word = side_ == Side::kClient ? client_words_->activity : server_words_->activity;
  const uint32_t value = channel_layout::EncodeActivity(state, ::sched_getcpu());
  // Skip the store when nothing changed, so a hot loop does not keep pulling
  // the cache line away from the peer that reads it.
  if (word.load(std::memory_order_relaxed) != value) word.store(value, std::memory_order_relaxed);
}

}  // namespace sluice::internal
