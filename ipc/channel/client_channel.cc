#include "ipc/channel/client_channel.h"

#include <climits>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "ipc/base/errors.h"

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

namespace {

int LowestBit(uint64_t bits) { return __builtin_ctzll(bits); }

// Unread reply words kept for the upper layer (TakeUnreadReplyWords).
constexpr size_t kMaxUnreadReplyWords = 4096;
// The largest spilled request whose filling is announced to the server
// (ActivityState::kBuilding): about what the default build_spin covers.
constexpr uint64_t kMaxAnnouncedSpill = uint64_t{256} << 10;

}  // namespace

// ---------------------------------------------------------------------------
// OutgoingCall / Reply

OutgoingCall::OutgoingCall(OutgoingCall&& other) noexcept
    : channel_(std::exchange(other.channel_, nullptr)),
      slot_(other.slot_),
      seq_(other.seq_),
      buffer_(other.buffer_),
      spill_(std::move(other.spill_)),
      header_(other.header_),
      fds_(std::move(other.fds_)) {}

OutgoingCall& OutgoingCall::operator=(OutgoingCall&& other) noexcept {
  if (this != &other) {
    if (channel_ != nullptr) channel_->ReleaseUnsent(slot_);
    channel_ = std::exchange(other.channel_, nullptr);
    slot_ = other.slot_;
    seq_ = other.seq_;
    buffer_ = other.buffer_;
    spill_ = std::move(other.spill_);
    header_ = other.header_;
    fds_ = std::move(other.fds_);
  }
  return *this;
}

OutgoingCall::~OutgoingCall() {
  if (channel_ != nullptr) channel_->ReleaseUnsent(slot_);
}

absl::Status OutgoingCall::AttachFds(std::span<const int> fds) { return AppendFds(fds, fds_); }

Reply::Reply(Reply&& other) noexcept
    : channel_(std::exchange(other.channel_, nullptr)),
      slot_(other.slot_),
      word_(other.word_),
      data_(other.data_),
      fds_(std::move(other.fds_)),
      spill_(std::move(other.spill_)) {}

Reply& Reply::operator=(Reply&& other) noexcept {
  if (this != &other) {
    ReleaseSlot();
    channel_ = std::exchange(other.channel_, nullptr);
    slot_ = other.slot_;
    word_ = other.word_;
    data_ = other.data_;
    fds_ = std::move(other.fds_);
    spill_ = std::move(other.spill_);
  }
  return *this;
}

Reply::~Reply() { ReleaseSlot(); }

void Reply::ReleaseSlot() {
  if (channel_ == nullptr) return;
  std::exchange(channel_, nullptr)->ReleaseReply(slot_);
  if (!spill_.has_value()) data_ = {};
}

// ---------------------------------------------------------------------------
// ClientChannel

absl::StatusOr<std::unique_ptr<ClientChannel>> ClientChannel::Open(Region region, UniqueFd liveness,
                                                                   PeerWatcher& watcher,
                                                                   const ChannelOptions& options) {
  auto endpoint = Endpoint::Open(Endpoint::Side::kClient, std::move(region), std::move(liveness),
                                 watcher, options);
  if (!endpoint.ok()) return endpoint.status();
  return std::unique_ptr<ClientChannel>(new ClientChannel(*std::move(endpoint)));
}

ClientChannel::ClientChannel(std::unique_ptr<Endpoint> endpoint)
    : endpoint_(std::move(endpoint)),
      arena_(endpoint_->own_arena_size(), kArenaAlignment, endpoint_->header().slot_count) {
  const uint32_t n = endpoint_->header().slot_count;
  free_slots_ = n == 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1;
  detached_slots_ = 0;
  // A fresh region has every seq at 0, but start from what is there so a
  // channel stays consistent whatever the creator left in it.
  for (uint32_t i = 0; i < n; ++i) {
    slots_[i].seq = endpoint_->slot(i).request_seq.load(std::memory_order_relaxed);
  }
}

ClientChannel::~ClientChannel() { Close(); }

void ClientChannel::Close() {
  endpoint_->Terminate(absl::CancelledError("client channel closed"),
                       internal::Endpoint::Ending::kClosed);
}

bool ClientChannel::TryReserveLocked(uint64_t capacity, bool in_arena, uint64_t chain_id,
                                     uint32_t* slot, std::optional<uint64_t>* block,
                                     uint32_t* seq) {
  // Abandoned calls are reclaimed as soon as they are answered, not only
  // when slots run out: their replies' words are for the upper layer to
  // settle (TakeUnreadReplyWords).
  if (free_slots_ == 0 || abandoned_slots_ != 0) ReclaimDetachedLocked();
  if (free_slots_ == 0) return false;
  std::optional<uint64_t> offset;
  if (in_arena) {
    offset = arena_.Allocate(capacity);
    if (!offset && detached_slots_ != 0) {
      ReclaimDetachedLocked();
      offset = arena_.Allocate(capacity);
    }
  }
  *slot = static_cast<uint32_t>(LowestBit(free_slots_));
  free_slots_ &= ~(uint64_t{1} << *slot);
  SlotState& state = slots_[*slot];
  state.use = SlotUse::kReserved;
  state.has_block = offset.has_value();
  state.block = offset.value_or(0);
  state.chain_id = chain_id;
  *block = offset;
  *seq = state.seq + 1;
  return true;
}

void ClientChannel::FreeBlockLocked(uint32_t slot) {
  SlotState& state = slots_[slot];
  if (!state.has_block) return;
  arena_.Free(state.block);
  state.has_block = false;
}

void ClientChannel::ReclaimDetachedLocked() {
  for (uint64_t bits = detached_slots_; bits != 0; bits &= bits - 1) {
    const uint32_t i = static_cast<uint32_t>(LowestBit(bits));
    channel_layout::Slot& shared = endpoint_->slot(i);
    if (shared.reply_seq.load(std::memory_order_acquire) != slots_[i].seq) continue;
    // The server is done with the request; whatever reply it left is unread.
    if (slots_[i].abandoned && shared.status_code.load(std::memory_order_relaxed) == 0) {
      const uint64_t word = shared.reply_word.load(std::memory_order_relaxed);
      // Bounded: a server that lends on every late reply holds no more open
      // than it allows itself; past this the words are dropped, and what
      // they stand for ends with the channel.
      if (word != 0 && unread_words_.size() < kMaxUnreadReplyWords) {
        unread_words_.push_back(word);
        has_unread_words_.store(true, std::memory_order_release);
      }
    }
    shared.reply_released_seq.store(slots_[i].seq, std::memory_order_release);
    detached_slots_ &= ~(uint64_t{1} << i);
    ReleaseSlotLocked(i);
  }
}

std::vector<uint64_t> ClientChannel::TakeUnreadReplyWords() {
  MutexLock lock(&mu_);
  has_unread_words_.store(false, std::memory_order_relaxed);
  return std::exchange(unread_words_, {});
}

void ClientChannel::ReleaseSlotLocked(uint32_t slot) {
  FreeBlockLocked(slot);
  slots_[slot].use = SlotUse::kFree;
  if (slots_[slot].abandoned) --abandoned_slots_;
  slots_[slot].abandoned = false;
  free_slots_ |= uint64_t{1} << slot;
}

ClientChannel::Stats ClientChannel::stats() const {
  MutexLock lock(&mu_);
  Stats stats{.slots = slot_count()};
  for (uint32_t i = 0; i < stats.slots; ++i) {
    if (slots_[i].use == SlotUse::kFree) continue;
    ++stats.in_use;
    // An abandoned call the server has since answered frees its slot at the
    // next reservation; it holds nothing up.
    if (slots_[i].abandoned &&
        endpoint_->slot(i).reply_seq.load(std::memory_order_acquire) != slots_[i].seq) {
      ++stats.abandoned;
    }
  }
  return stats;
}

absl::Status ClientChannel::health() const {
  if (absl::Status health = endpoint_->health(); !health.ok()) return health;
  const Stats now = stats();
  if (now.abandoned < now.slots) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "all ", now.slots,
      " slots are held by calls the server has not answered although their callers gave up at "
      "their deadlines (a handler that does not return?); no call can start until it answers "
      "one"));
}

void ClientChannel::WakeLocalWaiters() {
  if (local_waiters_.load(std::memory_order_seq_cst) > 0) endpoint_->Notify();
}

bool ClientChannel::ChainHoldsEverySlotLocked(uint64_t chain_id) const {
  if (chain_id == 0 || free_slots_ != 0) return false;
  for (uint32_t i = 0; i < slot_count(); ++i) {
    if (slots_[i].use == SlotUse::kDetached || slots_[i].chain_id != chain_id) return false;
  }
  return true;
}

absl::StatusOr<OutgoingCall> ClientChannel::BeginCall(uint64_t capacity, absl::Time deadline,
                                                      uint64_t chain_id) {
  if (const uint64_t limit = max_request_size(); capacity > limit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request of ", capacity, " bytes exceeds the server's limit of ", limit, " bytes"));
  }
  const bool in_arena = endpoint_->MayBuildInOwnArena(capacity);
  uint32_t slot = 0;
  std::optional<uint64_t> block;
  uint32_t seq = 0;
  auto& client_words = endpoint_->client_words();
  auto& server_words = endpoint_->server_words();
  for (;;) {
    if (absl::Status health = endpoint_->health(); !health.ok()) return health;
    {
      MutexLock lock(&mu_);
      if (TryReserveLocked(capacity, in_arena, chain_id, &slot, &block, &seq)) break;
    }
    // Everything is taken. Announce ourselves, then look once more before
    // sleeping: a release that missed the announcement is seen by this look.
    local_waiters_.fetch_add(1, std::memory_order_seq_cst);
    client_words.resource_waiters.fetch_add(1, std::memory_order_seq_cst);
    const uint32_t completions = server_words.completions.load(std::memory_order_seq_cst);
    const uint32_t events = endpoint_->events();
    bool reserved;
    uint32_t busy_slots;
    {
      MutexLock lock(&mu_);
      reserved = TryReserveLocked(capacity, in_arena, chain_id, &slot, &block, &seq);
      busy_slots = slot_count() - static_cast<uint32_t>(__builtin_popcountll(free_slots_));
      if (!reserved && ChainHoldsEverySlotLocked(chain_id)) {
        client_words.resource_waiters.fetch_sub(1, std::memory_order_seq_cst);
        local_waiters_.fetch_sub(1, std::memory_order_seq_cst);
        return absl::ResourceExhaustedError(absl::StrCat(
            "this call chain already holds all ", slot_count(),
            " slots of the channel (calls nested deeper through it than it has slots)"));
      }
    }
    absl::Status waited = absl::OkStatus();
    if (!reserved)
      waited = endpoint_->Wait(server_words.completions, completions, events, deadline);
    client_words.resource_waiters.fetch_sub(1, std::memory_order_seq_cst);
    local_waiters_.fetch_sub(1, std::memory_order_seq_cst);
    if (reserved) break;
    if (absl::IsDeadlineExceeded(waited)) {
      const uint32_t abandoned = stats().abandoned;
      return absl::DeadlineExceededError(absl::StrCat(
          "no free slot for a ", capacity, "-byte request before the deadline: ", busy_slots,
          " of ", slot_count(), " slots busy",
          abandoned == 0 ? ""
                         : absl::StrCat(", ", abandoned,
                                        " of them by calls abandoned at their deadline that the "
                                        "server has not answered")));
    }
    if (!waited.ok()) return waited;
  }
  if (block.has_value()) {
    return OutgoingCall(
        this, slot, seq,
        std::span<std::byte>(endpoint_->own_arena() + *block, static_cast<size_t>(capacity)),
        std::nullopt);
  }
  // Filling a memfd's fresh pages takes longer than a server thread polls
  // after an answer (3-5 us a page on these machines): say so, so that it
  // polls on (SpinPolicy::build_spin), and wake a sleeping one now, on
  // another CPU, so that its wake-up overlaps the filling instead of
  // following it (a wake-up that finds nothing costs only that thread's
  // time). Past kMaxAnnouncedSpill the filling outlasts build_spin anyway,
  // and the wake-up is a few percent of the call.
  // (Threads waiting on the bell never poll for a build: no ring.)
  if (capacity <= kMaxAnnouncedSpill) {
    endpoint_->PublishActivity(ActivityState::kBuilding);
    if (endpoint_->PeerOnAnotherCpu(
            endpoint_->server_words().activity.load(std::memory_order_relaxed))) {
      WakeServer(/*ring=*/false);
    }
  }
  absl::StatusOr<Region> spill = CreateSpill(capacity);
  if (!spill.ok()) {
    ReleaseUnsent(slot);
    return spill.status();
  }
  const std::span<std::byte> buffer(spill->data(), static_cast<size_t>(capacity));
  return OutgoingCall(this, slot, seq, buffer, *std::move(spill));
}

void ClientChannel::ReleaseUnsent(uint32_t slot) {
  {
    MutexLock lock(&mu_);
    ReleaseSlotLocked(slot);
  }
  // A call dropped (or failed to send) while it was being filled is built no
  // more: the server must not poll after its next answer for it.
  if (channel_layout::ActivityStateOf(endpoint_->client_words().activity.load(
          std::memory_order_relaxed)) == ActivityState::kBuilding) {
    endpoint_->PublishActivity(ActivityState::kRunning);
  }
  WakeLocalWaiters();
}

absl::StatusOr<uint32_t> ClientChannel::Publish(OutgoingCall& call,
                                                std::span<const std::byte> message, bool oneway,
                                                absl::Time deadline) {
  if (call.channel_ != this) {
    return absl::InvalidArgumentError("call was not begun on this channel");
  }
  if (!Contains(call.buffer_, message)) {
    return absl::InvalidArgumentError("message must lie inside the call's buffer");
  }
  if (absl::Status health = endpoint_->health(); !health.ok()) return health;
  const uint32_t i = call.slot_;
  channel_layout::Slot& shared = endpoint_->slot(i);
  const uint32_t seq = call.seq_;
  // An empty message may carry any pointer (even null): it then sits at the
  // buffer's start.
  const uint64_t offset_in_buffer =
      message.empty() ? 0 : static_cast<uint64_t>(message.data() - call.buffer_.data());
  const bool spilled = call.spill_.has_value();
  if (spilled) {
    // Nobody may write the message once the server can see it, us included.
    if (absl::Status sealed = call.spill_->SealImmutable(); !sealed.ok()) return sealed;
    call.buffer_ = {};
    call.fds_.push_back(call.spill_->fd());
  }
  // Descriptors go first, so the server finds them queued once it sees the
  // request. On failure the call still owns its slot.
  if (!call.fds_.empty()) {
    absl::Status sent = endpoint_->SendFds(channel_layout::FdTag(i, seq), call.fds_, deadline);
    if (spilled) {
      call.fds_.pop_back();
      call.spill_.reset();  // The server holds its own descriptor now.
    }
    if (!sent.ok()) return sent;
  }
  {
    MutexLock lock(&mu_);
    SlotState& state = slots_[i];
    state.seq = seq;
    state.use = oneway ? SlotUse::kDetached : SlotUse::kSync;
    if (oneway) {
      shared.oneway_seq.store(next_oneway_seq_++, std::memory_order_relaxed);
      detached_slots_ |= uint64_t{1} << i;
    }
    shared.request_offset.store((spilled ? 0 : state.block) + offset_in_buffer,
                                std::memory_order_relaxed);
  }
  const bool has_fds = !call.fds_.empty() || spilled;
  call.channel_ = nullptr;  // The slot is in flight now; the call no longer owns it.
  shared.request_length.store(message.size(), std::memory_order_relaxed);
  shared.interface_id.store(call.header_.interface_id, std::memory_order_relaxed);
  shared.method.store(call.header_.method, std::memory_order_relaxed);
  shared.chain_id.store(call.header_.chain_id, std::memory_order_relaxed);
  const bool has_word = call.header_.word != 0;
  if (has_word) shared.request_word.store(call.header_.word, std::memory_order_relaxed);
  shared.flags.store((oneway ? kSlotFlagOneway : 0) |
                         (has_fds ? channel_layout::kSlotFlagHasFds : 0) |
                         (spilled ? channel_layout::kSlotFlagSpilled : 0) |
                         (has_word ? channel_layout::kSlotFlagHasWord : 0),
                     std::memory_order_relaxed);
  shared.request_seq.store(seq, std::memory_order_release);

  endpoint_->PublishActivity(ActivityState::kRunning);
  endpoint_->client_words().doorbell.fetch_add(1, std::memory_order_seq_cst);
  WakeServer(/*ring=*/true);
  return seq;
}

void ClientChannel::WakeServer(bool ring) {
  // No wake-up while a server thread polls: it takes the request, and one
  // that stops polling re-checks (ServerChannel::EndPoll).
  const auto& server_words = endpoint_->server_words();
  if (server_words.pollers.load(std::memory_order_seq_cst) != 0) return;
  if (server_words.sleepers.load(std::memory_order_seq_cst) > 0) {
    FutexWake(endpoint_->client_words().doorbell, 1);
  }
  if (ring && server_words.bell_listeners.load(std::memory_order_seq_cst) > 0) {
    endpoint_->RingBell();
  }
}

absl::Status ClientChannel::Send(OutgoingCall call, std::span<const std::byte> message) {
  return Publish(call, message, /*oneway=*/true, absl::Now() + internal::kDescriptorSendBound)
      .status();
}

absl::StatusOr<Reply> ClientChannel::Call(OutgoingCall call, std::span<const std::byte> message,
                                          absl::Time deadline, ReplyWaiter* waiter) {
  const uint32_t slot = call.slot_;
  absl::StatusOr<uint32_t> seq = Publish(call, message, /*oneway=*/false, deadline);
  if (!seq.ok()) return seq.status();
  if (absl::Status waited = WaitForReply(slot, *seq, deadline, waiter); !waited.ok()) {
    // The server may still be reading the request: leave the slot to be
    // reclaimed once it answers.
    MutexLock lock(&mu_);
    slots_[slot].use = SlotUse::kDetached;
    slots_[slot].abandoned = true;
    ++abandoned_slots_;
    detached_slots_ |= uint64_t{1} << slot;
    return waited;
  }
  return TakeReply(slot);
}

absl::Status ClientChannel::WaitForReply(uint32_t slot, uint32_t seq, absl::Time deadline,
                                         ReplyWaiter* waiter) {
  channel_layout::Slot& shared = endpoint_->slot(slot);
  // When the channel ends, Endpoint::Terminate moves reply_seq by 2^31 to
  // wake us; a reply that had arrived by then reads as seq ^ 2^31 and still
  // counts (the server answered before it died).
  const uint32_t answered_then_ended = seq ^ (1u << 31);
  auto answered = [&] {
    const uint32_t value = shared.reply_seq.load(std::memory_order_acquire);
    return value == seq || value == answered_then_ended;
  };
  // The waiter may be given work while we wait (the RPC layer's: calls
  // back into this process within this one).
  auto ready = [&] { return answered() || (waiter != nullptr && waiter->HasWork()); };
  const auto& spin = endpoint_->options().spin;
  absl::Status result = absl::OkStatus();
  for (;;) {
    // Spinning publishes nothing: a store to our settled line here would
    // pull it away from the server, which reads it on every call.
    if (spin.call_spin > absl::ZeroDuration() &&
        endpoint_->PeerOnAnotherCpu(
            endpoint_->server_words().activity.load(std::memory_order_relaxed))) {
      if (waiter != nullptr) waiter->BeginSpin();
      (void)endpoint_->Spin(ready, spin.call_spin);
    }
    if (answered()) {
      if (waiter != nullptr) waiter->EndSpin();
      return absl::OkStatus();
    }
    if (waiter != nullptr && waiter->HasWork()) {
      waiter->RunWork();
      waiter->EndSpin();
      continue;
    }
    if (waiter != nullptr) waiter->EndSpin();
    endpoint_->PublishActivity(ActivityState::kSleeping);
    for (;;) {
      if (answered()) break;
      if (waiter != nullptr && waiter->HasWork()) break;
      if (absl::Status health = endpoint_->health(); !health.ok()) {
        result = health;
        break;
      }
      shared.reply_waiters.fetch_add(1, std::memory_order_seq_cst);
      const uint32_t current = shared.reply_seq.load(std::memory_order_seq_cst);
      absl::Status waited = absl::OkStatus();
      if (current != seq) {
        waited = waiter != nullptr ? (endpoint_->terminated()
                                          ? absl::OkStatus()
                                          : waiter->Sleep(shared.reply_seq, current, deadline))
                                   : endpoint_->WaitOnPeerWord(shared.reply_seq, current, deadline);
      }
      shared.reply_waiters.fetch_sub(1, std::memory_order_seq_cst);
      if (absl::IsDeadlineExceeded(waited) && !answered()) {
        result = absl::DeadlineExceededError("no reply from the server before the deadline");
        break;
      }
      if (!waited.ok() && !absl::IsDeadlineExceeded(waited)) {
        result = waited;
        break;
      }
    }
    endpoint_->PublishActivity(ActivityState::kRunning);
    if (!result.ok() || answered()) return result;
    // Woken for the waiter's work: run it, then wait again (spinning
    // first, as the reply may follow that work closely).
  }
}

absl::StatusOr<Reply> ClientChannel::TakeReply(uint32_t slot) {
  channel_layout::Slot& shared = endpoint_->slot(slot);
  const uint32_t code = shared.status_code.load(std::memory_order_relaxed);
  const uint64_t offset = shared.reply_offset.load(std::memory_order_relaxed);
  const uint64_t length = shared.reply_length.load(std::memory_order_relaxed);
  const uint64_t flags = shared.reply_flags.load(std::memory_order_relaxed);
  const uint64_t word = code == 0 ? shared.reply_word.load(std::memory_order_relaxed) : 0;
  uint32_t seq;
  {
    // The server has answered, so it reads the request no more: its arena
    // space is free now, even while the reply is kept.
    MutexLock lock(&mu_);
    seq = slots_[slot].seq;
    FreeBlockLocked(slot);
  }
  WakeLocalWaiters();
  auto malformed = [&](absl::Status why) {
    endpoint_->Terminate(why);
    ReleaseReply(slot);
    return why;
  };
  if (code > static_cast<uint32_t>(absl::StatusCode::kUnauthenticated)) {
    return malformed(
        absl::DataLossError(absl::StrCat("server replied with unknown status code ", code)));
  }
  if ((flags & ~channel_layout::kKnownReplyFlags) != 0) {
    return malformed(
        absl::DataLossError(absl::StrCat("server reply has unknown flags 0x", absl::Hex(flags))));
  }
  const bool spilled = (flags & channel_layout::kReplyFlagSpilled) != 0;
  std::vector<UniqueFd> fds;
  if ((flags & channel_layout::kReplyFlagHasFds) != 0) {
    absl::StatusOr<std::vector<UniqueFd>> received =
        endpoint_->TakeFds(channel_layout::FdTag(slot, seq));
    if (!received.ok()) return malformed(received.status());
    fds = *std::move(received);
  }
  std::optional<Region> spill;
  std::span<const std::byte> data;
  if (spilled) {
    if (fds.empty()) {
      return malformed(absl::DataLossError("server reply is flagged spilled but has no memfd"));
    }
    UniqueFd memfd = std::move(fds.back());
    fds.pop_back();
    absl::StatusOr<Region> mapped = MapSpill(std::move(memfd), offset, length, "server reply");
    if (!mapped.ok()) return malformed(mapped.status());
    spill = *std::move(mapped);
    data = std::span<const std::byte>(spill->data() + offset, static_cast<size_t>(length));
  } else {
    absl::StatusOr<std::span<const std::byte>> in_arena =
        endpoint_->PeerMessage(offset, length, "server reply", slot);
    if (!in_arena.ok()) return malformed(in_arena.status());
    data = *in_arena;
  }
  if (code == 0 && length > endpoint_->options().max_message_size) {
    return malformed(absl::DataLossError(absl::StrCat("server sent a ", length,
                                                      "-byte reply; this client accepts at most ",
                                                      endpoint_->options().max_message_size)));
  }
  if (code != 0) {
    const size_t shown = static_cast<size_t>(std::min<uint64_t>(length, kMaxErrorMessage));
    absl::Status error(static_cast<absl::StatusCode>(code),
                       absl::string_view(reinterpret_cast<const char*>(data.data()), shown));
    ReleaseReply(slot);
    return error;
  }
  return Reply(this, slot, data, std::move(fds), std::move(spill), word);
}

void ClientChannel::ReleaseReply(uint32_t slot) {
  {
    MutexLock lock(&mu_);
    // Lets the server reuse the reply's space before this slot carries its
    // next call (it also frees it then).
    endpoint_->slot(slot).reply_released_seq.store(slots_[slot].seq, std::memory_order_release);
    ReleaseSlotLocked(slot);
  }
  WakeLocalWaiters();
}

}  // namespace sluice
