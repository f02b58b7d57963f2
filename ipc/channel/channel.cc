#include "ipc/channel/channel.h"

#include <fcntl.h>

#include <climits>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "ipc/base/errno_status.h"
#include "ipc/base/errors.h"

namespace sluice {

using channel_layout::ActivityState;
using channel_layout::kArenaAlignment;
using channel_layout::kSlotFlagOneway;
using internal::Endpoint;

namespace {

// Longest error message carried back from a server; longer ones are cut.
constexpr uint64_t kMaxErrorMessage = 4096;

bool Contains(std::span<const std::byte> outer, std::span<const std::byte> inner) {
  if (inner.empty()) return true;
  const auto* begin = outer.data();
  const auto* end = outer.data() + outer.size();
  return inner.data() >= begin && inner.data() <= end &&
         inner.size() <= static_cast<size_t>(end - inner.data());
}

bool RangeInArena(uint64_t offset, uint64_t length, uint64_t arena_size) {
  return offset <= arena_size && length <= arena_size - offset;
}

int LowestBit(uint64_t bits) { return __builtin_ctzll(bits); }

// A memfd for one message too large for an arena (or for the peer's trust):
// filled here, then sealed immutable before the peer gets it.
absl::StatusOr<Region> CreateSpill(uint64_t capacity) {
  return Region::Create("sluice-message", std::max<uint64_t>(capacity, 1), /*prefault=*/true);
}

// Maps a spilled message received from the peer: it must be sealed so that
// nobody can write it, and hold [offset, offset + length).
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

// Appends `fds` to `out` after checking each is open; the limit is one
// SCM_RIGHTS message's.
absl::Status AppendFds(std::span<const int> fds, std::vector<int>& out) {
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

}  // namespace

absl::StatusOr<Region> CreateChannelRegion(const channel_layout::Geometry& geometry) {
  auto header = channel_layout::PlanRegion(geometry);
  if (!header.ok()) return header.status();
  auto region = Region::Create("sluice-channel", header->region_size);
  if (!region.ok()) return region.status();
  // Region rounds up to whole pages; the plan already did.
  std::memcpy(region->data(), &*header, sizeof(*header));
  return region;
}

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
      data_(other.data_),
      fds_(std::move(other.fds_)),
      spill_(std::move(other.spill_)) {}

Reply& Reply::operator=(Reply&& other) noexcept {
  if (this != &other) {
    ReleaseSlot();
    channel_ = std::exchange(other.channel_, nullptr);
    slot_ = other.slot_;
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

void ClientChannel::Close() { endpoint_->Terminate(absl::CancelledError("client channel closed")); }

bool ClientChannel::TryReserveLocked(uint64_t capacity, bool in_arena, uint64_t chain_id,
                                     uint32_t* slot, std::optional<uint64_t>* block,
                                     uint32_t* seq) {
  if (free_slots_ == 0) ReclaimDetachedLocked();
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
    shared.reply_released_seq.store(slots_[i].seq, std::memory_order_release);
    detached_slots_ &= ~(uint64_t{1} << i);
    ReleaseSlotLocked(i);
  }
}

void ClientChannel::ReleaseSlotLocked(uint32_t slot) {
  FreeBlockLocked(slot);
  slots_[slot].use = SlotUse::kFree;
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
  WakeLocalWaiters();
}

absl::StatusOr<uint32_t> ClientChannel::Publish(OutgoingCall& call,
                                                std::span<const std::byte> message, bool oneway) {
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
    absl::Status sent = endpoint_->SendFds(channel_layout::FdTag(i, seq), call.fds_);
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
  shared.flags.store((oneway ? kSlotFlagOneway : 0) |
                         (has_fds ? channel_layout::kSlotFlagHasFds : 0) |
                         (spilled ? channel_layout::kSlotFlagSpilled : 0),
                     std::memory_order_relaxed);
  shared.request_seq.store(seq, std::memory_order_release);

  endpoint_->PublishActivity(ActivityState::kRunning);
  auto& client_words = endpoint_->client_words();
  client_words.doorbell.fetch_add(1, std::memory_order_seq_cst);
  // No wake-up while a server thread polls: it takes the request, and one
  // that stops polling re-checks (ServerChannel::EndPoll).
  const auto& server_words = endpoint_->server_words();
  if (server_words.pollers.load(std::memory_order_seq_cst) == 0) {
    if (server_words.sleepers.load(std::memory_order_seq_cst) > 0) {
      FutexWake(client_words.doorbell, 1);
    }
    if (server_words.bell_listeners.load(std::memory_order_seq_cst) > 0) endpoint_->RingBell();
  }
  return seq;
}

absl::Status ClientChannel::Send(OutgoingCall call, std::span<const std::byte> message) {
  return Publish(call, message, /*oneway=*/true).status();
}

absl::StatusOr<Reply> ClientChannel::Call(OutgoingCall call, std::span<const std::byte> message,
                                          absl::Time deadline) {
  const uint32_t slot = call.slot_;
  absl::StatusOr<uint32_t> seq = Publish(call, message, /*oneway=*/false);
  if (!seq.ok()) return seq.status();
  if (absl::Status waited = WaitForReply(slot, *seq, deadline); !waited.ok()) {
    // The server may still be reading the request: leave the slot to be
    // reclaimed once it answers.
    MutexLock lock(&mu_);
    slots_[slot].use = SlotUse::kDetached;
    slots_[slot].abandoned = true;
    detached_slots_ |= uint64_t{1} << slot;
    return waited;
  }
  return TakeReply(slot);
}

namespace {
thread_local ReplyWaiter* t_reply_waiter = nullptr;
}  // namespace

ReplyWaiter* ThreadReplyWaiter() { return t_reply_waiter; }
void SetThreadReplyWaiter(ReplyWaiter* waiter) { t_reply_waiter = waiter; }

absl::Status ClientChannel::WaitForReply(uint32_t slot, uint32_t seq, absl::Time deadline) {
  channel_layout::Slot& shared = endpoint_->slot(slot);
  // When the channel ends, Endpoint::Terminate moves reply_seq by 2^31 to
  // wake us; a reply that had arrived by then reads as seq ^ 2^31 and still
  // counts (the server answered before it died).
  const uint32_t answered_then_ended = seq ^ (1u << 31);
  auto answered = [&] {
    const uint32_t value = shared.reply_seq.load(std::memory_order_acquire);
    return value == seq || value == answered_then_ended;
  };
  // Nested calls (the server calling back into this process within this
  // call) arrive as work for the waiter while we wait.
  ReplyWaiter* const waiter = t_reply_waiter;
  auto ready = [&] { return answered() || (waiter != nullptr && waiter->HasWork()); };
  const auto& spin = endpoint_->options().spin;
  absl::Status result = absl::OkStatus();
  for (;;) {
    // Spinning publishes nothing: a store to our words here would pull their
    // cache line away from the server, which polls the doorbell beside it.
    if (spin.call_spin > absl::ZeroDuration() &&
        endpoint_->PeerOnAnotherCpu(
            endpoint_->server_words().activity.load(std::memory_order_relaxed))) {
      (void)endpoint_->Spin(ready, spin.call_spin);
    }
    if (answered()) return absl::OkStatus();
    if (waiter != nullptr && waiter->HasWork()) {
      waiter->RunWork();
      continue;
    }
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
    // Woken for nested work: run it, then wait again (spinning first, as
    // the reply may follow the nested call closely).
  }
}

absl::StatusOr<Reply> ClientChannel::TakeReply(uint32_t slot) {
  channel_layout::Slot& shared = endpoint_->slot(slot);
  const uint32_t code = shared.status_code.load(std::memory_order_relaxed);
  const uint64_t offset = shared.reply_offset.load(std::memory_order_relaxed);
  const uint64_t length = shared.reply_length.load(std::memory_order_relaxed);
  const uint64_t flags = shared.reply_flags.load(std::memory_order_relaxed);
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
  return Reply(this, slot, data, std::move(fds), std::move(spill));
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
      return reserved_;
    }
  }
  absl::StatusOr<Region> spill = CreateSpill(capacity);
  if (!spill.ok()) return spill.status();
  reply_spill_ = *std::move(spill);
  reserved_ = std::span<std::byte>(reply_spill_->data(), static_cast<size_t>(capacity));
  return reserved_;
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

void ServerChannel::Close(absl::Status why) { endpoint_->Terminate(std::move(why)); }

absl::StatusOr<IncomingCall> ServerChannel::Receive(absl::Time deadline) {
  auto& client_words = endpoint_->client_words();
  auto& server_words = endpoint_->server_words();
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
    const int64_t spin_until = PollUntilNanos();
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

bool ServerChannel::AnyRequestPending() const {
  const uint32_t n = endpoint_->header().slot_count;
  const bool oneway_busy = oneway_busy_.load(std::memory_order_relaxed);
  for (uint32_t i = 0; i < n; ++i) {
    const channel_layout::Slot& slot = endpoint_->slot(i);
    if (slot.request_seq.load(std::memory_order_acquire) ==
        claimed_seq_[i].load(std::memory_order_relaxed)) {
      continue;
    }
    // A oneway queued behind the one in service cannot be taken yet; its
    // completion wakes a sleeper (Complete), so do not spin on it.
    if (oneway_busy && (slot.flags.load(std::memory_order_relaxed) & kSlotFlagOneway) != 0) {
      continue;
    }
    return true;
  }
  return false;
}

bool ServerChannel::Unclaimed() const {
  const uint32_t n = endpoint_->header().slot_count;
  for (uint32_t i = 0; i < n; ++i) {
    if (endpoint_->slot(i).request_seq.load(std::memory_order_acquire) !=
        claimed_seq_[i].load(std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

bool ServerChannel::NestedRequestPending(absl::FunctionRef<bool(uint64_t chain_id)> accept) const {
  // An ended channel's slots may still look pending; nobody can take them.
  if (endpoint_->terminated()) return false;
  const uint32_t n = endpoint_->header().slot_count;
  for (uint32_t i = 0; i < n; ++i) {
    const channel_layout::Slot& slot = endpoint_->slot(i);
    if (slot.request_seq.load(std::memory_order_acquire) ==
            claimed_seq_[i].load(std::memory_order_relaxed) ||
        (slot.flags.load(std::memory_order_relaxed) & kSlotFlagOneway) != 0) {
      continue;
    }
    if (accept(slot.chain_id.load(std::memory_order_relaxed))) return true;
  }
  return false;
}

absl::StatusOr<std::optional<IncomingCall>> ServerChannel::TryReceive() {
  if (absl::Status health = endpoint_->health(); !health.ok()) return health;
  MutexLock lock(&mu_);
  std::optional<IncomingCall> call;
  if (absl::Status claimed = TryClaimLocked(&call); !claimed.ok()) return claimed;
  // Tells the caller we run, so it may spin for the reply (see Receive).
  if (call.has_value()) endpoint_->PublishActivity(ActivityState::kRunning);
  return call;
}

absl::StatusOr<std::optional<IncomingCall>> ServerChannel::TryReceiveNested(
    absl::FunctionRef<bool(uint64_t chain_id)> accept) {
  if (absl::Status health = endpoint_->health(); !health.ok()) return health;
  MutexLock lock(&mu_);
  std::optional<IncomingCall> call;
  if (absl::Status claimed = TryClaimLocked(&call, &accept); !claimed.ok()) return claimed;
  // Tells the caller we run, so it may spin for the reply (see Receive).
  if (call.has_value()) endpoint_->PublishActivity(ActivityState::kRunning);
  return call;
}

uint32_t ServerChannel::BeginSleep() {
  endpoint_->PublishActivity(ActivityState::kSleeping);
  endpoint_->server_words().sleepers.fetch_add(1, std::memory_order_seq_cst);
  return endpoint_->client_words().doorbell.load(std::memory_order_seq_cst);
}

void ServerChannel::EndSleep() {
  endpoint_->server_words().sleepers.fetch_sub(1, std::memory_order_seq_cst);
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
  if (server_words.bell_listeners.load(std::memory_order_seq_cst) > 0) endpoint_->RingBell();
}

void ServerChannel::ListenOnBell() {
  endpoint_->server_words().bell_listeners.store(1, std::memory_order_seq_cst);
}

absl::Status ServerChannel::TryClaimLocked(std::optional<IncomingCall>* call,
                                           absl::FunctionRef<bool(uint64_t)>* accept) {
  const uint32_t n = endpoint_->header().slot_count;
  for (uint32_t k = 0; k < n; ++k) {
    const uint32_t i = (scan_start_ + k) % n;
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
    scan_start_ = (i + 1) % n;
    const CallHeader header{shared.interface_id.load(std::memory_order_relaxed),
                            shared.method.load(std::memory_order_relaxed), chain_id};
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
    if (sent.ok()) sent = endpoint_->SendFds(channel_layout::FdTag(i, call.seq_), raw);
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
  shared.status_code.store(static_cast<uint32_t>(code), std::memory_order_relaxed);
  shared.reply_offset.store(offset, std::memory_order_relaxed);
  shared.reply_length.store(length, std::memory_order_relaxed);
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
