#include "ipc/channel/server_channel.h"

#include <fcntl.h>

#include <climits>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "ipc/base/errno_status.h"
#include "ipc/base/errors.h"
#include "ipc/sync/spin.h"

namespace sluice {

using channel_layout::ActivityState;
using channel_layout::kArenaAlignment;
using channel_layout::kSlotFlagOneway;
using internal::AppendFds;
using internal::Contains;
using internal::CreateSpill;
using internal::Endpoint;
using internal::kMaxErrorMessage;
using internal::MapSpill;

// ---------------------------------------------------------------------------
// IncomingCall

IncomingCall::IncomingCall(ServerChannel* channel, uint32_t slot, uint32_t seq,
                           std::span<const std::byte> request, const CallHeader& header,
                           bool oneway, std::vector<UniqueFd> fds,
                           std::optional<Region> request_spill)
    : channel_(channel),
      caller_(&channel->peer()),
      slot_(slot),
      seq_(seq),
      request_(request),
      header_(header),
      oneway_(oneway),
      fds_(std::move(fds)),
      request_spill_(std::move(request_spill)) {}

IncomingCall::IncomingCall(IncomingCall&& other) noexcept
    : channel_(std::exchange(other.channel_, nullptr)),
      caller_(other.caller_),
      slot_(other.slot_),
      seq_(other.seq_),
      request_(other.request_),
      header_(other.header_),
      oneway_(other.oneway_),
      reply_word_(other.reply_word_),
      reply_word_sent_(other.reply_word_sent_),
      has_reservation_(std::exchange(other.has_reservation_, false)),
      reservation_(other.reservation_),
      reply_spill_(std::move(other.reply_spill_)),
      reserved_(other.reserved_),
      fds_(std::move(other.fds_)),
      reply_fds_(std::move(other.reply_fds_)),
      request_spill_(std::move(other.request_spill_)) {}

IncomingCall& IncomingCall::operator=(IncomingCall&& other) noexcept {
  if (this != &other) {
    Abandon();
    channel_ = std::exchange(other.channel_, nullptr);
    caller_ = other.caller_;
    slot_ = other.slot_;
    seq_ = other.seq_;
    request_ = other.request_;
    header_ = other.header_;
    oneway_ = other.oneway_;
    reply_word_ = other.reply_word_;
    reply_word_sent_ = other.reply_word_sent_;
    // An earlier answer's announced poll (poll_announced_) is still owed.
    announce_poll_ = false;
    has_reservation_ = std::exchange(other.has_reservation_, false);
    reservation_ = other.reservation_;
    reply_spill_ = std::move(other.reply_spill_);
    reserved_ = other.reserved_;
    fds_ = std::move(other.fds_);
    reply_fds_ = std::move(other.reply_fds_);
    request_spill_ = std::move(other.request_spill_);
  }
  return *this;
}

IncomingCall::~IncomingCall() { Abandon(); }

void IncomingCall::Abandon() {
  if (channel_ == nullptr) return;
  if (oneway_) {
    (void)Reply({});
  } else {
    (void)Fail(absl::InternalError("the server dropped the call without answering it"));
  }
}

absl::Status IncomingCall::AttachReplyFds(std::span<const int> fds) {
  if (channel_ == nullptr) return absl::FailedPreconditionError("call already answered");
  if (oneway_) return absl::FailedPreconditionError("a oneway call has no reply");
  std::vector<int> checked;
  for (const UniqueFd& fd : reply_fds_) checked.push_back(fd.get());
  if (absl::Status ok = AppendFds(fds, checked); !ok.ok()) return ok;
  for (int fd : fds) {
    UniqueFd copy(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!copy) return ErrnoStatus(absl::StrCat("fcntl(", fd, ", F_DUPFD_CLOEXEC)"), errno);
    reply_fds_.push_back(std::move(copy));
  }
  return absl::OkStatus();
}

void IncomingCall::DropReservation() {
  if (has_reservation_) {
    MutexLock lock(&channel_->mu_);
    channel_->arena_.Free(reservation_);
  }
  has_reservation_ = false;
  reply_spill_.reset();
  reserved_ = {};
}

absl::StatusOr<std::span<std::byte>> IncomingCall::ReserveReply(uint64_t capacity) {
  if (channel_ == nullptr) return absl::FailedPreconditionError("call already answered");
  if (oneway_) return absl::FailedPreconditionError("a oneway call has no reply");
  Endpoint& endpoint = *channel_->endpoint_;
  if (const uint64_t limit = endpoint.PeerMaxMessageSize(); capacity > limit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "reply of ", capacity, " bytes exceeds the client's limit of ", limit, " bytes"));
  }
  DropReservation();
  // As in BeginCall: a full arena spills instead of failing.
  if (endpoint.MayBuildInOwnArena(capacity)) {
    std::optional<uint64_t> offset;
    {
      MutexLock lock(&channel_->mu_);
      offset = channel_->AllocateReplyLocked(capacity);
    }
    if (offset.has_value()) {
      has_reservation_ = true;
      reservation_ = *offset;
      reserved_ =
          std::span<std::byte>(endpoint.own_arena() + *offset, static_cast<size_t>(capacity));
      // A builder writes from the end down, and a small reply fits the last
      // two lines, which the client read when this block last carried a
      // reply: their first stores waited for them (perf), now the handler
      // runs meanwhile.
      const std::byte* end = reserved_.data() + reserved_.size();
      if (capacity > 0) PrefetchForWrite(end - 1);
      if (capacity > channel_layout::kCacheLine) {
        PrefetchForWrite(end - 1 - channel_layout::kCacheLine);
      }
      return reserved_;
    }
  }
  absl::StatusOr<Region> spill = CreateSpill(capacity);
  if (!spill.ok()) return spill.status();
  reply_spill_ = *std::move(spill);
  reserved_ = std::span<std::byte>(reply_spill_->data(), static_cast<size_t>(capacity));
  return reserved_;
}

uint32_t IncomingCall::client_features() const {
  if (channel_ == nullptr) return 0;
  return channel_->endpoint_->client_words().features.load(std::memory_order_acquire);
}

void IncomingCall::AnnounceServerFeatures(uint32_t bits) {
  if (channel_ != nullptr) channel_->AnnounceFeatures(bits);
}

void ServerChannel::AnnounceFeatures(uint32_t bits) {
  auto& features = endpoint_->server_words().features;
  if ((features.load(std::memory_order_relaxed) & bits) != bits) {
    features.fetch_or(bits, std::memory_order_release);
  }
}

absl::Status IncomingCall::Reply(std::span<const std::byte> message) {
  if (channel_ == nullptr) return absl::FailedPreconditionError("call already answered");
  if (!message.empty() && (reserved_.empty() || !Contains(reserved_, message))) {
    return absl::InvalidArgumentError("reply message must lie inside the reserved reply space");
  }
  const uint64_t base = has_reservation_ ? reservation_ : 0;
  const uint64_t offset =
      message.empty() ? 0 : base + static_cast<uint64_t>(message.data() - reserved_.data());
  return channel_->Complete(*this, absl::StatusCode::kOk, offset, message.size());
}

absl::Status IncomingCall::Fail(const absl::Status& error) {
  if (channel_ == nullptr) return absl::FailedPreconditionError("call already answered");
  if (error.ok()) return absl::InvalidArgumentError("Fail() needs an error status");
  if (oneway_) return channel_->Complete(*this, absl::StatusCode::kOk, 0, 0);
  const absl::string_view text = error.message();
  const uint64_t length = std::min<uint64_t>(text.size(), kMaxErrorMessage);
  uint64_t offset = 0;
  uint64_t written = 0;
  if (length > 0 && ReserveReply(length).ok()) {
    std::memcpy(reserved_.data(), text.data(), static_cast<size_t>(length));
    offset = has_reservation_ ? reservation_ : 0;
    written = length;
  }
  // Codes outside the canonical set would be refused by the client as
  // malformed; send them as UNKNOWN, as abseil itself does.
  const absl::StatusCode code =
      error.raw_code() > static_cast<int>(absl::StatusCode::kUnauthenticated)
          ? absl::StatusCode::kUnknown
          : error.code();
  return channel_->Complete(*this, code, offset, written);
}

// ---------------------------------------------------------------------------
// ServerChannel

absl::StatusOr<std::unique_ptr<ServerChannel>> ServerChannel::Open(Region region, UniqueFd liveness,
                                                                   PeerWatcher& watcher,
                                                                   const ChannelOptions& options) {
  auto endpoint = Endpoint::Open(Endpoint::Side::kServer, std::move(region), std::move(liveness),
                                 watcher, options);
  if (!endpoint.ok()) return endpoint.status();
  return std::unique_ptr<ServerChannel>(new ServerChannel(*std::move(endpoint)));
}

namespace {
// Until a hello names the client: whoever the creator vouched for, else
// nobody (never the all-zero identity, which reads as root).
PeerCredentials PeerBeforeHello(const ChannelOptions& options) {
  const PeerCredentials& peer = options.peer;
  if (!options.hello_identity || peer.pid != 0 || peer.uid != 0 || peer.gid != 0) return peer;
  return PeerCredentials{0, static_cast<uid_t>(-1), static_cast<gid_t>(-1)};
}
}  // namespace

ServerChannel::ServerChannel(std::unique_ptr<Endpoint> endpoint)
    : endpoint_(std::move(endpoint)),
      peer_(PeerBeforeHello(endpoint_->options())),
      awaiting_hello_(endpoint_->options().hello_identity),
      arena_(endpoint_->own_arena_size(), kArenaAlignment,
             // One answered block per slot plus one reservation per slot.
             2 * endpoint_->header().slot_count,
             // Replies are trimmed to their tail once answered (see Complete).
             ArenaAllocator::Placement::kHigh) {
  for (uint32_t i = 0; i < endpoint_->header().slot_count; ++i) {
    slots_[i].served_seq = endpoint_->slot(i).reply_seq.load(std::memory_order_relaxed);
    claimed_seq_[i].store(slots_[i].served_seq, std::memory_order_relaxed);
  }
}

ServerChannel::~ServerChannel() { Close(); }

void ServerChannel::Close(absl::Status why) {
  endpoint_->Terminate(std::move(why), internal::Endpoint::Ending::kClosed);
}

void ServerChannel::CloseAfterCalls() {
  endpoint_->Terminate(absl::CancelledError("server channel closed"),
                       internal::Endpoint::Ending::kClosedAfterCalls);
}

absl::StatusOr<IncomingCall> ServerChannel::Receive(absl::Time deadline) {
  auto& client_words = endpoint_->client_words();
  auto& server_words = endpoint_->server_words();
  bool build_polled = false;  // Asked since the last wake-up (BuildPollUntilNanos).
  for (;;) {
    if (absl::Status health = endpoint_->health(); !health.ok()) return health;
    {
      MutexLock lock(&mu_);
      std::optional<IncomingCall> call;
      if (absl::Status claimed = TryClaimLocked(&call); !claimed.ok()) return claimed;
      if (call.has_value()) {
        endpoint_->PublishActivity(ActivityState::kRunning);
        return *std::move(call);
      }
    }
    // Nothing pending. Right after answering a call, and while the client
    // runs on another CPU, the next request is likely microseconds away.
    // The spin polls the slots themselves, not the doorbell: the client's
    // doorbell increment then stays in its own cache instead of bouncing.
    int64_t spin_until = PollUntilNanos();
    if (internal::MonotonicNanos() >= spin_until && !std::exchange(build_polled, true)) {
      spin_until = BuildPollUntilNanos();
    }
    if (internal::MonotonicNanos() < spin_until) {
      const absl::Duration budget = absl::Nanoseconds(spin_until - internal::MonotonicNanos());
      BeginPoll();
      const bool found = endpoint_->Spin([&] { return AnyRequestPending(); }, budget);
      EndPoll();
      if (found) continue;
    }
    // Sleep: announce, snapshot the doorbell, look once more, then wait for
    // the doorbell to move (a request published after the snapshot) or a wake.
    endpoint_->PublishActivity(ActivityState::kSleeping);
    server_words.sleepers.fetch_add(1, std::memory_order_seq_cst);
    const uint32_t doorbell = client_words.doorbell.load(std::memory_order_seq_cst);
    absl::Status waited = absl::OkStatus();
    if (!AnyRequestPending()) {
      waited = endpoint_->WaitOnPeerWord(client_words.doorbell, doorbell, deadline);
    }
    server_words.sleepers.fetch_sub(1, std::memory_order_seq_cst);
    build_polled = false;
    if (absl::IsDeadlineExceeded(waited)) {
      return absl::DeadlineExceededError("no request before the deadline");
    }
    if (!waited.ok()) return waited;
  }
}

int64_t ServerChannel::PollUntilNanos() const {
  const absl::Duration spin = endpoint_->options().spin.serve_spin;
  if (spin <= absl::ZeroDuration() ||
      !endpoint_->PeerOnAnotherCpu(
          endpoint_->client_words().activity.load(std::memory_order_relaxed))) {
    return 0;
  }
  return last_completion_ns_.load(std::memory_order_relaxed) + absl::ToInt64Nanoseconds(spin);
}

int64_t ServerChannel::BuildPollUntilNanos() {
  const absl::Duration spin = endpoint_->options().spin.build_spin;
  const uint32_t activity = endpoint_->client_words().activity.load(std::memory_order_relaxed);
  if (spin <= absl::ZeroDuration() ||
      channel_layout::ActivityStateOf(activity) != ActivityState::kBuilding ||
      channel_layout::ActivityCpuOf(activity) < 0 || !endpoint_->PeerOnAnotherCpu(activity)) {
    return 0;
  }
  // Once per answer on this channel, whichever thread asks: the word is the
  // client's to set, and a client that set it and then woke us over and
  // over must not keep our threads polling for requests it never sends.
  const int64_t answered = last_completion_ns_.load(std::memory_order_relaxed);
  int64_t granted = build_poll_granted_after_.load(std::memory_order_relaxed);
  if (granted == answered || !build_poll_granted_after_.compare_exchange_strong(
                                 granted, answered, std::memory_order_relaxed)) {
    return 0;
  }
  return internal::MonotonicNanos() + absl::ToInt64Nanoseconds(spin);
}

bool ServerChannel::AnyRequestPending(bool with_queued_oneways) const {
  const uint32_t n = endpoint_->header().slot_count;
  const bool skip_oneways = !with_queued_oneways && oneway_busy_.load(std::memory_order_relaxed);
  for (uint32_t i = 0; i < n; ++i) {
    const channel_layout::Slot& slot = endpoint_->slot(i);
    if (slot.request_seq.load(std::memory_order_acquire) ==
        claimed_seq_[i].load(std::memory_order_relaxed)) {
      continue;
    }
    // A oneway queued behind the one in service cannot be taken yet; its
    // completion wakes a sleeper (Complete), so do not spin on it.
    if (skip_oneways && (slot.flags.load(std::memory_order_relaxed) & kSlotFlagOneway) != 0) {
      continue;
    }
    return true;
  }
  return false;
}

void ServerChannel::BeginPoll() {
  endpoint_->server_words().pollers.fetch_add(1, std::memory_order_seq_cst);
}

void ServerChannel::EndPoll() {
  auto& server_words = endpoint_->server_words();
  server_words.pollers.fetch_sub(1, std::memory_order_seq_cst);
  // A client that saw this poller skipped its wake-up: if its request is
  // still pending, wake a sleeper for it (the announce-recheck pattern of
  // the sleepers, with the roles turned). With no thread waiting there is
  // nobody to wake, and the slots need no look: a thread that starts waiting
  // after this announces itself first and then looks at them itself. That
  // is every call of a one-thread pool, which ends its poll on each channel
  // whenever it takes a call.
  if (server_words.sleepers.load(std::memory_order_seq_cst) == 0 &&
      server_words.bell_listeners.load(std::memory_order_seq_cst) == 0) {
    return;
  }
  if (AnyRequestPending()) WakeAnotherServerThread();
}

void ServerChannel::WakeAnotherServerThread() {
  const auto& server_words = endpoint_->server_words();
  if (server_words.sleepers.load(std::memory_order_seq_cst) > 0) {
    FutexWake(endpoint_->client_words().doorbell, 1);
  }
  // Whether there is a bell to ring is this side's own state, not a word
  // the client can write.
  endpoint_->RingBell();
}

absl::Status ServerChannel::TryClaimLocked(std::optional<IncomingCall>* call,
                                           absl::FunctionRef<bool(uint64_t)>* accept) {
  const uint32_t n = endpoint_->header().slot_count;
  // From scan_start_ round to it, wrapping by a compare, not a `%` (a
  // division per slot looked at; a client reuses its lowest slots, so the
  // scan usually goes nearly all the way round).
  uint32_t i = scan_start_ < n ? scan_start_ : 0;
  for (uint32_t k = 0; k < n; ++k, i = i + 1 == n ? 0 : i + 1) {
    SlotState& state = slots_[i];
    channel_layout::Slot& shared = endpoint_->slot(i);
    const uint32_t seq = shared.request_seq.load(std::memory_order_acquire);
    if (seq == state.served_seq) continue;
    if (state.busy) {
      // The client read the answer and asked again before the answering
      // thread freed the slot: that thread must hand this request on.
      state.passed_over = true;
      continue;
    }
    const uint32_t flags = shared.flags.load(std::memory_order_relaxed);
    if ((flags & ~channel_layout::kKnownSlotFlags) != 0) {
      absl::Status bad = absl::DataLossError(
          absl::StrCat("client request in slot ", i, " has unknown flags 0x", absl::Hex(flags)));
      endpoint_->Terminate(bad);
      return bad;
    }
    const bool oneway = (flags & kSlotFlagOneway) != 0;
    // The chain is read once: the id used to route is the id handed on.
    const uint64_t chain_id = shared.chain_id.load(std::memory_order_relaxed);
    if (accept != nullptr && (oneway || !(*accept)(chain_id))) continue;
    if (oneway) {
      if (oneway_in_service_ ||
          shared.oneway_seq.load(std::memory_order_relaxed) != next_oneway_seq_) {
        oneway_deferred_ = true;
        continue;
      }
    }
    if (awaiting_hello_) {
      // The client sent its hello before its first request: it is queued.
      absl::StatusOr<PeerCredentials> hello = endpoint_->ReceiveHello();
      if (!hello.ok()) {
        endpoint_->Terminate(hello.status());
        return hello.status();
      }
      peer_ = *hello;
      awaiting_hello_ = false;
    }
    const uint64_t offset = shared.request_offset.load(std::memory_order_relaxed);
    const uint64_t length = shared.request_length.load(std::memory_order_relaxed);
    std::vector<UniqueFd> fds;
    if ((flags & channel_layout::kSlotFlagHasFds) != 0) {
      absl::StatusOr<std::vector<UniqueFd>> received =
          endpoint_->TakeFds(channel_layout::FdTag(i, seq));
      if (!received.ok()) {
        endpoint_->Terminate(received.status());
        return received.status();
      }
      fds = *std::move(received);
    }
    std::optional<Region> spill;
    absl::StatusOr<std::span<const std::byte>> request =
        LocateRequestLocked(i, flags, offset, length, fds, spill);
    if (!request.ok()) {
      endpoint_->Terminate(request.status());
      return request.status();
    }
    // A new call on this slot means the client is done with the old reply.
    FreeReplyBlockLocked(i);
    state.busy = true;
    state.served_seq = seq;
    claimed_seq_[i].store(seq, std::memory_order_relaxed);
    if (oneway) {
      oneway_in_service_ = true;
      oneway_busy_.store(true, std::memory_order_relaxed);
    }
    scan_start_ = i + 1 == n ? 0 : i + 1;
    const CallHeader header{shared.interface_id.load(std::memory_order_relaxed),
                            shared.method.load(std::memory_order_relaxed), chain_id,
                            (flags & channel_layout::kSlotFlagHasWord) != 0
                                ? shared.request_word.load(std::memory_order_relaxed)
                                : 0};
    call->emplace(
        IncomingCall(this, i, seq, *request, header, oneway, std::move(fds), std::move(spill)));
    return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::span<const std::byte>> ServerChannel::LocateRequestLocked(
    uint32_t slot, uint32_t flags, uint64_t offset, uint64_t length, std::vector<UniqueFd>& fds,
    std::optional<Region>& spill) {
  const uint64_t limit = endpoint_->options().max_message_size;
  if (length > limit) {
    return absl::DataLossError(absl::StrCat("client request in slot ", slot, " has ", length,
                                            " bytes; this server accepts at most ", limit,
                                            " (it published the limit)"));
  }
  if ((flags & channel_layout::kSlotFlagSpilled) != 0) {
    if (fds.empty()) {
      return absl::DataLossError(
          absl::StrCat("client request in slot ", slot, " is flagged spilled but has no memfd"));
    }
    UniqueFd memfd = std::move(fds.back());
    fds.pop_back();
    absl::StatusOr<Region> mapped =
        MapSpill(std::move(memfd), offset, length, absl::StrCat("client request in slot ", slot));
    if (!mapped.ok()) return mapped.status();
    spill = *std::move(mapped);
    return std::span<const std::byte>(spill->data() + offset, static_cast<size_t>(length));
  }
  return endpoint_->PeerMessage(offset, length, "client request", slot);
}

void ServerChannel::FreeReplyBlockLocked(uint32_t slot) {
  SlotState& state = slots_[slot];
  if (!state.has_reply_block) return;
  arena_.Free(state.reply_block);
  state.has_reply_block = false;
}

std::optional<uint64_t> ServerChannel::AllocateReplyLocked(uint64_t capacity) {
  if (auto offset = arena_.Allocate(capacity)) return *offset;
  // Take back the space of replies the client has finished reading.
  for (uint32_t i = 0; i < endpoint_->header().slot_count; ++i) {
    SlotState& state = slots_[i];
    if (state.has_reply_block &&
        endpoint_->slot(i).reply_released_seq.load(std::memory_order_acquire) == state.reply_seq) {
      FreeReplyBlockLocked(i);
    }
  }
  return arena_.Allocate(capacity);
}

absl::Status ServerChannel::Complete(IncomingCall& call, absl::StatusCode code, uint64_t offset,
                                     uint64_t length) {
  const uint32_t i = call.slot_;
  channel_layout::Slot& shared = endpoint_->slot(i);
  uint64_t reply_flags = 0;
  const bool spilled = call.reply_spill_.has_value() && length > 0;
  const bool user_fds = !call.reply_fds_.empty() && !call.oneway_ && code == absl::StatusCode::kOk;
  if (spilled || user_fds) {
    // Before the reply is published, as for requests (see Publish). A
    // spilled reply is sealed first: the client must never see it change.
    std::vector<int> raw;
    if (user_fds) {
      for (const UniqueFd& fd : call.reply_fds_) raw.push_back(fd.get());
    }
    absl::Status sent = spilled ? call.reply_spill_->SealImmutable() : absl::OkStatus();
    if (sent.ok() && spilled) raw.push_back(call.reply_spill_->fd());
    if (sent.ok()) {
      sent = endpoint_->SendFds(channel_layout::FdTag(i, call.seq_), raw,
                                absl::Now() + internal::kDescriptorSendBound);
    }
    if (sent.ok()) {
      reply_flags = channel_layout::kReplyFlagHasFds |
                    (spilled ? channel_layout::kReplyFlagSpilled : uint64_t{0});
    } else {
      code = absl::StatusCode::kInternal;
      length = 0;
    }
  }
  call.reply_spill_.reset();
  shared.reply_flags.store(reply_flags, std::memory_order_relaxed);
  call.reply_word_sent_ = code == absl::StatusCode::kOk && call.reply_word_ != 0;
  shared.reply_word.store(call.reply_word_sent_ ? call.reply_word_ : 0, std::memory_order_relaxed);
  shared.status_code.store(static_cast<uint32_t>(code), std::memory_order_relaxed);
  shared.reply_offset.store(offset, std::memory_order_relaxed);
  shared.reply_length.store(length, std::memory_order_relaxed);
  if (std::exchange(call.announce_poll_, false)) {
    BeginPoll();
    call.poll_announced_ = true;
  }
  shared.reply_seq.store(call.seq_, std::memory_order_seq_cst);
  if (shared.reply_waiters.load(std::memory_order_seq_cst) > 0) {
    FutexWake(shared.reply_seq, INT_MAX);
  }
  if (reply_published_for_testing_) reply_published_for_testing_();
  auto& server_words = endpoint_->server_words();
  if (endpoint_->client_words().resource_waiters.load(std::memory_order_seq_cst) > 0) {
    server_words.completions.fetch_add(1, std::memory_order_seq_cst);
    FutexWake(server_words.completions, INT_MAX);
  }
  bool wake_deferred = false;
  bool passed_over = false;
  {
    MutexLock lock(&mu_);
    SlotState& state = slots_[i];
    state.busy = false;
    passed_over = std::exchange(state.passed_over, false);
    if (call.has_reservation_) {
      if (length == 0) {
        // Nothing of the block was sent.
        arena_.Free(call.reservation_);
      } else {
        // Keep only what the reply occupies (FlatBuffers build at the end of
        // the reservation): the client may hold it for a while.
        const uint64_t kept = arena_.Shrink(call.reservation_, offset, length)
                                  ? offset / kArenaAlignment * kArenaAlignment
                                  : call.reservation_;
        state.has_reply_block = true;
        state.reply_block = kept;
        state.reply_seq = call.seq_;
      }
    }
    if (call.oneway_) {
      ++next_oneway_seq_;
      oneway_in_service_ = false;
      oneway_busy_.store(false, std::memory_order_relaxed);
      wake_deferred = std::exchange(oneway_deferred_, false);
    }
  }
  call.channel_ = nullptr;
  call.has_reservation_ = false;
  last_completion_ns_.store(internal::MonotonicNanos(), std::memory_order_relaxed);
  // A request passed over because its slot was still busy here was woken
  // for already: another thread must look again. (A pool thread on bells
  // goes back to waiting without looking at this channel again, so the
  // request would wait for a ring that never comes.)
  if (wake_deferred || passed_over) WakeAnotherServerThread();
  return endpoint_->health();
}

}  // namespace sluice
