#include "ipc/rpc/server_pool.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <deque>
#include <optional>

#include "absl/strings/str_cat.h"
#include "ipc/base/errno_status.h"
#include "ipc/base/poll_timeout.h"
#include "ipc/channel/endpoint.h"
#include "ipc/channel/server_waiting.h"

namespace sluice::rpc {
namespace {
// Polling for requests (nested ones included) while spinning is cheap only
// for a few channels.
constexpr size_t kMaxChannelsPolled = 8;
// The epoll keys of ServerPool::stop_fd_ and of its kicks' eventfd;
// channels' keys start at 1 and never reach these.
constexpr uint64_t kStopKey = 0;
constexpr uint64_t kKickKey = ~uint64_t{0};
}  // namespace

// A channel's wake-ups for another of the pool's threads, on bells: a
// queue of channel ids and an eventfd (a semaphore) in the pool's epoll set
// that counts them, so each kick wakes one waiting thread for one look.
class ServerPool::Kicks {
 public:
  static absl::StatusOr<std::shared_ptr<Kicks>> Create() {
    UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE));
    if (!fd) return ErrnoStatus("eventfd for a pool's wake-ups on bells", errno);
    return std::make_shared<Kicks>(std::move(fd));
  }
  explicit Kicks(UniqueFd fd) : fd_(std::move(fd)) {}

  int fd() const { return fd_.get(); }

  void Kick(uint64_t id) {
    {
      MutexLock lock(&mu_);
      ids_.push_back(id);
    }
    const uint64_t one = 1;
    (void)!::write(fd_.get(), &one, sizeof(one));
  }

  // The channel one kick is for, once the eventfd turned readable; nullopt
  // when another thread took it first.
  std::optional<uint64_t> Take() {
    uint64_t count = 0;
    if (::read(fd_.get(), &count, sizeof(count)) != sizeof(count)) return std::nullopt;
    MutexLock lock(&mu_);
    // Never empty here: every count was written after its id was queued.
    if (ids_.empty()) return std::nullopt;
    const uint64_t id = ids_.front();
    ids_.pop_front();
    return id;
  }

 private:
  UniqueFd fd_;
  Mutex mu_;
  std::deque<uint64_t> ids_ ABSL_GUARDED_BY(mu_);
};

// Lets a worker blocked in an outgoing call (inside a stub method) pick up
// the nested calls that arrive on the pool's channels.
class ServerPool::WorkerSleeper final : public BlockedSleeper {
 public:
  explicit WorkerSleeper(ServerPool& pool) : pool_(pool) {}

  bool NestedPending() override {
    pool_.Refresh(local_, &generation_);
    if (local_.size() > kMaxChannelsPolled) return false;
    for (const auto& entry : local_) {
      if (entry->waiting().ChainedRequestPending(IsWaiting)) return true;
    }
    return false;
  }

  void RouteNested() override {
    pool_.Refresh(local_, &generation_);
    // Take first, serve after: serving may block and nest, which refreshes
    // local_ again.
    std::vector<RoutedCall> taken;
    for (const auto& entry : local_) {
      for (;;) {
        absl::StatusOr<std::optional<IncomingCall>> call =
            entry->waiting().TryReceiveChained(IsWaiting);
        if (!call.ok() || !call->has_value()) break;  // The free threads drop dead channels.
        taken.push_back(RoutedCall{**std::move(call), entry});
      }
    }
    pool_.progress_.fetch_add(taken.size(), std::memory_order_relaxed);
    for (RoutedCall& routed : taken) {
      // The chain's waiter may have left since: the call is served here.
      if (!CallRouter::Get().Deliver(routed.call.header().chain_id, routed)) ServeRouted(routed);
    }
  }

  // Lets go of the channels of the last snapshot; the next blocked call
  // takes a new one.
  void Forget() {
    local_.clear();
    generation_ = ~uint64_t{0};
  }

  absl::Status SleepBlocked(ThreadCalls& thread, const FutexWord& reply_word, uint32_t unanswered,
                            absl::Time deadline) override {
    const ThreadCalls::MailboxSleep sleeping(thread);
    const uint32_t changed = pool_.changed_.load(std::memory_order_seq_cst);
    pool_.Refresh(local_, &generation_);
    // Keep the entries alive while their doorbells are in the wait. On
    // bells local_ is empty: an idle thread routes nested calls here.
    const Snapshot group = local_;
    std::vector<FutexWaitEntry> waits = {
        {&reply_word, unanswered, FutexScope::kShared},
        {&thread.mailbox(), sleeping.mail(), FutexScope::kPrivate},
        {&pool_.changed_, changed, FutexScope::kPrivate},
    };
    constexpr size_t kFirstDoorbell = 3;
    for (const auto& entry : group) {
      waits.push_back(
          {&entry->waiting().doorbell(), entry->waiting().BeginSleep(), FutexScope::kShared});
    }
    // Requests published before the announcements are found now; later ones
    // move a doorbell.
    bool pending = false;
    for (const auto& entry : group) {
      pending = pending || entry->waiting().ChainedRequestPending(IsWaiting);
    }
    absl::Status result = absl::OkStatus();
    const bool sleep = !pending && !thread.HasWork();
    if (sleep) {
      absl::StatusOr<int> woken = FutexWaitAny(waits, deadline);
      if (!woken.ok()) result = woken.status();
    }
    for (size_t i = 0; i < group.size(); ++i) {
      ServerWaiting channel = group[i]->waiting();
      channel.EndSleep();
      // A client wakes one sleeper per request, and this thread was one of
      // them although it takes only requests of waiting chains. If its
      // doorbell rang for another request (an ordinary call, a oneway), the
      // wake was meant for a free thread sleeping on the same doorbell: hand
      // it on, or that request waits until some thread happens to look.
      if (sleep &&
          channel.doorbell().load(std::memory_order_seq_cst) !=
              waits[kFirstDoorbell + i].expected &&
          (!channel.ChainedRequestPending(IsWaiting) ||
           channel.ChainedRequestPending(IsNotWaiting))) {
        FutexWake(channel.doorbell(), INT_MAX, FutexScope::kShared);
      }
    }
    // Whatever woke us, route what is there; the caller then runs its work.
    RouteNested();
    return result;
  }

 private:
  static bool IsWaiting(uint64_t chain_id) { return CallRouter::Get().IsWaiting(chain_id); }
  static bool IsNotWaiting(uint64_t chain_id) { return !CallRouter::Get().IsWaiting(chain_id); }

  ServerPool& pool_;
  Snapshot local_;
  uint64_t generation_ = ~uint64_t{0};
};

ServerPool::ServerPool(Options options)
    : options_{std::max(options.max_threads, 1),
               std::max({options.thread_cap, options.max_threads, 1}), options.stall_after,
               options.idle_exit, std::move(options.after_stop_check_for_testing)},
      max_threads_(options_.max_threads) {
  CallRouter::Get().AddServer(this);
}

ServerPool::~ServerPool() {
  // First: from here on no waiting thread polls this pool's channels.
  CallRouter::Get().RemoveServer(this);
  Shutdown();
}

bool ServerPool::PendingFor(uint64_t chain) {
  // Polled in a spin: never wait for the pool's threads (nor make them wait
  // long). A look skipped is taken on the next turn of the spin.
  if (!mu_.TryLock()) return false;
  bool pending = false;
  if (entries_.size() <= kMaxChannelsPolled) {
    for (const auto& [id, entry] : entries_) {
      if (entry->waiting().ChainedRequestPending(
              [chain](uint64_t chain_id) { return chain_id == chain; })) {
        pending = true;
        break;
      }
    }
  }
  mu_.Unlock();
  return pending;
}

void ServerPool::AnnouncePoller(absl::InlinedVector<std::shared_ptr<ServedChannel>, 8>& out) {
  if (!mu_.TryLock()) return;
  if (entries_.size() <= kMaxChannelsPolled) {
    for (const auto& [id, entry] : entries_) {
      if (out.size() == out.capacity()) break;  // Never allocates: the spin goes on without.
      entry->waiting().BeginPoll();
      out.push_back(entry);
    }
  }
  mu_.Unlock();
}

void ServerPool::TakeFor(uint64_t chain, absl::InlinedVector<RoutedCall, 2>& out) {
  absl::InlinedVector<std::shared_ptr<ServedChannel>, kMaxChannelsPolled> entries;
  {
    MutexLock lock(&mu_);
    if (entries_.size() > kMaxChannelsPolled) return;
    for (const auto& [id, entry] : entries_) entries.push_back(entry);
  }
  for (const auto& entry : entries) {
    for (;;) {
      absl::StatusOr<std::optional<IncomingCall>> call = entry->waiting().TryReceiveChained(
          [chain](uint64_t chain_id) { return chain_id == chain; });
      if (!call.ok() || !call->has_value()) break;  // The pool threads drop dead channels.
      out.push_back(RoutedCall{**std::move(call), entry});
      progress_.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

absl::Status ServerPool::Add(std::unique_ptr<ServerChannel> channel,
                             std::shared_ptr<ServiceStub> stub,
                             absl::AnyInvocable<void(absl::Status why)> on_end) {
  if (channel == nullptr || stub == nullptr) {
    return absl::InvalidArgumentError("ServerPool::Add needs a channel and a stub");
  }
  auto entry = std::make_shared<ServedChannel>();
  entry->channel = std::move(channel);
  entry->stub = std::move(stub);
  entry->on_end = std::move(on_end);
  // The peer's death must wake a sleeping thread so it drops the channel
  // (on bells, the end rings the channel's bell itself). Unlinked when the
  // pool lets the channel go (Remove, Shutdown): the entry may outlive the
  // pool in a queued nested call.
  absl::StatusOr<uint64_t> linked = entry->channel->LinkToDeath([this] { Changed(); });
  if (!linked.ok()) return linked.status();
  entry->death_link = *linked;
  {
    MutexLock lock(&mu_);
    entry->id = next_id_++;
    absl::Status added = absl::OkStatus();
    if (stopping_) {
      added = absl::FailedPreconditionError("ServerPool is shut down");
    } else if (bells()) {
      added = WatchBellLocked(*entry);
    } else if (entries_.size() + 1 > kChannelsPerWait) {
      added = SwitchToBellsLocked();
      if (added.ok()) added = WatchBellLocked(*entry);
    }
    if (!added.ok()) {
      (void)entry->channel->UnlinkToDeath(entry->death_link);
      return added;
    }
    entries_.emplace(entry->id, entry);
    generation_.fetch_add(1, std::memory_order_release);
    if (live_ == 0) StartThreadLocked();
    if (!watchdog_.joinable()) watchdog_ = std::thread([this] { Watchdog(); });
  }
  // A request published before the channel was watched is found by the
  // next look: a sleeping thread's (woken now) or, on bells, whichever
  // thread takes this ring.
  if (bells()) entry->waiting().RingBell();
  Changed();
  return absl::OkStatus();
}

absl::Status ServerPool::SwitchToBellsLocked() {
  // Made once: a switch that failed part way (a full descriptor table, say)
  // is tried again by the next Add, with the same set, eventfds and kicks,
  // which the channels watched so far already hold.
  if (!epoll_) {
    UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll) return ErrnoStatus("epoll_create1 for a pool's bells", errno);
    UniqueFd stop_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop_fd) return ErrnoStatus("eventfd for a pool's shutdown", errno);
    // Level-triggered and never read: once Shutdown writes it, it wakes every
    // thread that waits, each time.
    epoll_event stop = {.events = EPOLLIN, .data = {.u64 = kStopKey}};
    if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, stop_fd.get(), &stop) != 0) {
      return ErrnoStatus("epoll_ctl adding a pool's shutdown eventfd", errno);
    }
    absl::StatusOr<std::shared_ptr<Kicks>> kicks = Kicks::Create();
    if (!kicks.ok()) return kicks.status();
    // Level-triggered: readable while kicks are untaken.
    epoll_event kick = {.events = EPOLLIN, .data = {.u64 = kKickKey}};
    if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, (*kicks)->fd(), &kick) != 0) {
      return ErrnoStatus("epoll_ctl adding a pool's wake-up eventfd", errno);
    }
    epoll_ = std::move(epoll);
    stop_fd_ = std::move(stop_fd);
    kicks_ = *std::move(kicks);
  }
  for (const auto& [id, entry] : entries_) {
    if (absl::Status watched = WatchBellLocked(*entry); !watched.ok()) return watched;
  }
  bells_.store(true, std::memory_order_release);
  // Every channel rings once, so that a request whose client saw neither a
  // doorbell sleeper nor a bell listener is found (sleepers wake through
  // changed_ and no longer wait on doorbells).
  for (const auto& [id, entry] : entries_) entry->waiting().RingBell();
  return absl::OkStatus();
}

absl::Status ServerPool::WatchBellLocked(ServedChannel& entry) {
  // Listening first: a request published from here on rings the bell.
  entry.waiting().ListenOnBell([kicks = kicks_, id = entry.id] { kicks->Kick(id); });
  // The socket also turns readable when the client sends descriptors (read
  // on the way by DrainBell) or goes (RDHUP).
  epoll_event event = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data = {.u64 = entry.id}};
  // EEXIST: watched by a switch that failed after it (tried again now).
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, entry.waiting().bell(), &event) != 0 &&
      errno != EEXIST) {
    const int error = errno;
    return absl::ResourceExhaustedError(
        absl::StrCat("watching one more channel's bell (", entries_.size(),
                     " watched): ", ErrnoStatus("epoll_ctl", error).message()));
  }
  return absl::OkStatus();
}

void ServerPool::Changed() {
  changed_.fetch_add(1, std::memory_order_seq_cst);
  FutexWake(changed_, INT_MAX, FutexScope::kPrivate);
}

void ServerPool::StartThreadLocked() {
  auto thread = std::make_unique<Thread>();
  Thread* self = thread.get();
  self->thread = std::thread([this, self] { Worker(self); });
  threads_.push_back(std::move(thread));
  const size_t live = live_.fetch_add(1, std::memory_order_acq_rel) + 1;
  peak_ = std::max(peak_, live);
}

void ServerPool::MaybeAddThreadLocked() {
  if (stopping_ || busy_ < live_) return;
  // Ended threads are joined here (at once: they have returned) so that a
  // pool that grows and shrinks does not keep them.
  std::erase_if(threads_, [](const std::unique_ptr<Thread>& t) {
    if (!t->done.load(std::memory_order_acquire)) return false;
    t->thread.join();
    return true;
  });
  // Past max_threads only the watchdog starts threads.
  if (live_ < static_cast<size_t>(max_threads_)) StartThreadLocked();
}

bool ServerPool::RetireLocked(Thread* self) {
  if (stopping_ || live_ <= static_cast<size_t>(max_threads_)) return false;
  --live_;
  self->done.store(true, std::memory_order_release);
  return true;
}

bool ServerPool::Refresh(Snapshot& local, uint64_t* generation) {
  if (bells()) {
    // Nothing scans every channel on bells (there may be thousands).
    local.clear();
    return false;
  }
  const uint64_t now = generation_.load(std::memory_order_acquire);
  if (now == *generation) return false;
  // Before mu_: this may drop the last reference to a channel, and its
  // stub's destructor may do anything, take locks ranked before mu_ too.
  local.clear();  // Keeps the capacity: no allocation in the steady state.
  MutexLock lock(&mu_);
  for (const auto& [id, entry] : entries_) local.push_back(entry);
  *generation = generation_.load(std::memory_order_relaxed);
  return true;
}

void ServerPool::Remove(const std::shared_ptr<ServedChannel>& entry) {
  {
    MutexLock lock(&mu_);
    auto it = entries_.find(entry->id);
    if (it == entries_.end() || it->second != entry) return;
    entries_.erase(it);
    generation_.fetch_add(1, std::memory_order_release);
    if (bells()) (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, entry->waiting().bell(), nullptr);
  }
  // NOT_FOUND once it fired: nothing left to undo then.
  (void)entry->channel->UnlinkToDeath(entry->death_link);
  Changed();
  TellEnded(*entry);
}

void ServerPool::TellEnded(ServedChannel& entry) {
  absl::AnyInvocable<void(absl::Status)> on_end = std::move(entry.on_end);
  if (on_end) on_end(entry.channel->health());
}

void ServerPool::EndPolling(Snapshot& polled) {
  for (const auto& entry : polled) entry->waiting().EndPoll();
  polled.clear();
}

ServerPool::Took ServerPool::ServeFrom(const std::shared_ptr<ServedChannel>& entry,
                                       Snapshot& polled) {
  // Most looks find nothing (a polling thread makes them all the time):
  // those cost a few loads instead of the channel's lock. An ended channel
  // is still taken below, to be dropped.
  if (!entry->waiting().Unclaimed() && entry->channel->health().ok()) return Took::kNothing;
  absl::StatusOr<std::optional<IncomingCall>> call = entry->waiting().TryReceive();
  if (!call.ok()) {
    Remove(entry);
    return Took::kNothing;
  }
  if (!call->has_value()) return Took::kNothing;
  // Busy from here on: clients must wake a sleeper for their next request.
  EndPolling(polled);
  // On bells one ring brought this thread; more requests of the channel
  // need another thread each.
  if (bells() && entry->waiting().RequestPending()) entry->waiting().RingBell();
  progress_.fetch_add(1, std::memory_order_relaxed);
  RoutedCall routed{**std::move(call), entry};
  // A call back into a chain a thread of ours waits in goes to that thread.
  if (!routed.call.oneway() && CallRouter::Get().Deliver(routed.call.header().chain_id, routed)) {
    return Took::kRouted;
  }
  if (busy_.fetch_add(1, std::memory_order_acq_rel) + 1 >= live_.load(std::memory_order_acquire)) {
    MutexLock lock(&mu_);
    MaybeAddThreadLocked();
  }
  if (watchdog_idle_.load(std::memory_order_relaxed)) {
    watchdog_idle_.store(false, std::memory_order_relaxed);
    watchdog_word_.fetch_add(1, std::memory_order_seq_cst);
    FutexWake(watchdog_word_, 1, FutexScope::kPrivate);
  }
  // This thread looks at the channels again as soon as the handler
  // returns (on bells it goes back to epoll instead). Only a sync call's
  // client waits for the answer, to ask again at once.
  if (!bells() && !routed.call.oneway()) routed.call.set_announce_poll_with_reply(true);
  ServeRouted(routed);
  routed.call.set_announce_poll_with_reply(false);
  // Ended by the next look's claim, or when this thread stops looking.
  if (routed.call.poll_announced()) polled.push_back(entry);
  if (!entry->channel->health().ok()) Remove(entry);
  progress_.fetch_add(1, std::memory_order_relaxed);
  busy_.fetch_sub(1, std::memory_order_acq_rel);
  return Took::kServed;
}

ServerPool::Took ServerPool::ServeOne(const Snapshot& local, Snapshot& polled, size_t* next) {
  const size_t n = local.size();
  size_t i = n == 0 ? 0 : *next % n;
  for (size_t looked = 0; looked < n; ++looked) {
    const Took took = ServeFrom(local[i], polled);
    if (++i == n) i = 0;
    if (took != Took::kNothing) {
      *next = i;
      return took;
    }
  }
  return Took::kNothing;
}

void ServerPool::Watchdog() {
  uint64_t progress_seen = ~uint64_t{0};
  absl::Time last_busy = absl::Now();
  for (;;) {
    // Read before stop_, as in Worker: Shutdown sets stop_, then bumps it.
    const uint32_t word = watchdog_word_.load(std::memory_order_seq_cst);
    if (stop_.load(std::memory_order_acquire)) break;
    bool idle_long;
    {
      MutexLock lock(&mu_);
      const absl::Time now = absl::Now();
      if (busy_ > 0) last_busy = now;
      // Stalled: every thread busy for a whole tick, and not one call
      // started or ended meanwhile.
      const uint64_t progress = progress_.load(std::memory_order_relaxed);
      if (busy_ > 0 && busy_ >= live_ && progress == progress_seen && !stopping_ &&
          live_ < static_cast<size_t>(options_.thread_cap)) {
        ++stalls_;
        StartThreadLocked();
      }
      progress_seen = progress;
      idle_long = busy_ == 0 && now - last_busy > options_.idle_exit;
      // Announced before the last look: a call that starts after it wakes us.
      if (idle_long) watchdog_idle_.store(true, std::memory_order_seq_cst);
    }
    (void)FutexWait(watchdog_word_, word,
                    idle_long ? absl::InfiniteFuture() : absl::Now() + options_.stall_after,
                    FutexScope::kPrivate);
    if (idle_long) last_busy = absl::Now();
  }
}

bool ServerPool::SleepOnDoorbells(const Snapshot& local, Snapshot& polled, size_t* next,
                                  std::vector<FutexWaitEntry>& waits, uint32_t changed,
                                  absl::Time deadline) {
  waits.clear();  // The caller's vector keeps its capacity: no allocation per sleep.
  for (const auto& entry : local) {
    waits.push_back(
        {&entry->waiting().doorbell(), entry->waiting().BeginSleep(), FutexScope::kShared});
  }
  // Requests published before the announcements are found by this scan;
  // later ones change a doorbell (or wake us).
  const Took found = ServeOne(local, polled, next);
  bool timed_out = false;
  if (found == Took::kNothing) {
    waits.push_back({&changed_, changed, FutexScope::kPrivate});
    absl::StatusOr<int> woken = FutexWaitAny(waits, deadline);
    timed_out = absl::IsDeadlineExceeded(woken.status());
  }
  for (const auto& entry : local) entry->waiting().EndSleep();
  return !timed_out;
}

bool ServerPool::WaitOnBells(absl::Time deadline) {
  epoll_event event;
  const int n = ::epoll_wait(epoll_.get(), &event, 1, PollTimeoutMs(deadline));
  if (n == 0) return absl::Now() < deadline;
  if (n < 0 || event.data.u64 == kStopKey) return true;  // EINTR, or Shutdown.
  const uint64_t key = event.data.u64;
  const bool kicked = key == kKickKey;
  std::optional<uint64_t> id = kicked ? kicks_->Take() : std::optional<uint64_t>(key);
  if (!id.has_value()) return true;  // Another thread took the kick.
  std::shared_ptr<ServedChannel> entry;
  {
    MutexLock lock(&mu_);
    auto it = entries_.find(*id);
    if (it == entries_.end()) return true;  // Removed since it rang.
    entry = it->second;
  }
  // Before looking: a request published after the drain rings again. A
  // kick says nothing about the socket, which its own edge drains.
  if (!kicked) entry->waiting().DrainBell();
  Snapshot polled;
  (void)ServeFrom(entry, polled);
  return true;
}

int64_t ServerPool::BuildPollUntil(const Snapshot& local) {
  if (local.size() > kMaxChannelsPolled) return 0;
  int64_t until = 0;
  for (const auto& entry : local) until = std::max(until, entry->waiting().BuildPollUntilNanos());
  return until;
}

void ServerPool::Worker(Thread* self) {
  WorkerSleeper sleeper(*this);
  ThreadCalls::Current().set_sleeper(&sleeper);
  Snapshot local;
  uint64_t generation = ~uint64_t{0};
  // The channels this thread announced it polls (BeginPoll), while it spins.
  Snapshot polled;
  std::vector<FutexWaitEntry> waits;
  size_t next = 0;  // Where the next scan of `local` starts (ServeOne).
  int64_t poll_until = 0;
  uint32_t polls = 0;
  // Whether this thread has asked for a client filling a spilled request
  // (BuildPollUntil) since its last answer or wake-up: only once, as the
  // client's announcement is a hint it may never act on.
  bool build_polled = false;
  // Threads beyond max_threads wait for a while only (then may retire).
  const auto sleep_deadline = [this] {
    MutexLock lock(&mu_);
    return live_ > static_cast<size_t>(max_threads_) ? absl::Now() + options_.idle_exit
                                                     : absl::InfiniteFuture();
  };
  for (;;) {
    // The word this thread may sleep on is read before stop_: a Shutdown
    // after the check below has bumped it since, so the sleep returns at
    // once. Read after the check, it could already hold Shutdown's bump, and
    // the thread would sleep on it with nothing left to wake it (feed_server
    // once hung so in Shutdown after its last client had gone).
    const uint32_t changed = changed_.load(std::memory_order_seq_cst);
    if (stop_.load(std::memory_order_acquire)) break;
    if (options_.after_stop_check_for_testing) options_.after_stop_check_for_testing();
    bool woke;
    if (bells()) {
      // Snapshots from before the switch would keep ended channels alive.
      EndPolling(polled);
      local.clear();
      sleeper.Forget();
      woke = WaitOnBells(sleep_deadline());
    } else {
      // The sleeper's snapshot is from this thread's last blocked call: it
      // must not keep a channel the pool dropped since (its client would
      // learn of the end only when the channel is destroyed).
      if (Refresh(local, &generation)) sleeper.Forget();
      // Sized with the channel set rather than at the first poll: a warm
      // thread may start polling only later (once its client runs on
      // another CPU), and a call must not allocate then.
      if (polled.capacity() < local.size() + 1) polled.reserve(local.size() + 1);
      // Only a call served here starts a spin: after routing one to a
      // waiting thread, that thread polls for the next request of its chain
      // itself (NestedSource), and a spinning router would only take a CPU
      // from it.
      const Took took = ServeOne(local, polled, &next);
      // Only the channel just answered can have moved the window (each
      // channel's lasts serve_spin from its own last answer), so it is the
      // only one asked, once per call; the rest of the window is what
      // earlier answers left. Its client on this CPU ends the window: that
      // client needs this CPU to read the reply and ask again.
      if (took == Took::kServed) {
        const int64_t until =
            local.size() <= kMaxChannelsPolled
                ? local[(next + local.size() - 1) % local.size()]->waiting().PollUntilNanos()
                : 0;
        poll_until = until == 0 ? 0 : std::max(poll_until, until);
        build_polled = false;
      }
      if (took != Took::kNothing) continue;
      // The clock is read every 16th look only: a read costs about as much
      // as a look at a channel here, and a request is found sooner.
      if (poll_until != 0 && ((++polls & 15) != 0 || internal::MonotonicNanos() < poll_until)) {
        // Announced, so that clients do not wake idle threads for requests
        // this one is about to take: on two CPUs a woken thread preempts a
        // spinning one.
        // `polled` may hold one channel already, announced by the last
        // answer (ServeFrom); announced twice, it is ended twice.
        if (polled.size() < local.size()) {
          for (const auto& entry : local) {
            entry->waiting().BeginPoll();
            polled.push_back(entry);
          }
        }
        internal::CpuRelax();
        continue;
      }
      if (!std::exchange(build_polled, true)) {
        if (const int64_t until = BuildPollUntil(local); until != 0) {
          poll_until = until;
          continue;
        }
      }
      EndPolling(polled);
      poll_until = 0;
      woke = SleepOnDoorbells(local, polled, &next, waits, changed, sleep_deadline());
      build_polled = false;
    }
    if (!woke) {
      MutexLock lock(&mu_);
      if (RetireLocked(self)) break;
    }
  }
  EndPolling(polled);
  ThreadCalls::Current().set_sleeper(nullptr);
  if (!self->done.load(std::memory_order_acquire)) {
    MutexLock lock(&mu_);
    if (!self->done.load(std::memory_order_relaxed)) {
      --live_;
      self->done.store(true, std::memory_order_release);
    }
  }
}

void ServerPool::Shutdown() {
  std::vector<std::unique_ptr<Thread>> threads;
  Snapshot entries;
  {
    MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    threads.swap(threads_);
    for (const auto& [id, entry] : entries_) entries.push_back(entry);
  }
  for (const auto& entry : entries) {
    // The handlers still running answer before their channels go.
    entry->channel->CloseAfterCalls();
    (void)entry->channel->UnlinkToDeath(entry->death_link);
  }
  // In this order: a thread that reads its wake word after the bump sees stop_.
  stop_.store(true, std::memory_order_release);
  Changed();
  watchdog_word_.fetch_add(1, std::memory_order_seq_cst);
  FutexWake(watchdog_word_, INT_MAX, FutexScope::kPrivate);
  std::thread watchdog;
  {
    MutexLock lock(&mu_);
    watchdog.swap(watchdog_);
  }
  if (watchdog.joinable()) watchdog.join();
  if (bells()) {
    const uint64_t one = 1;
    (void)!::write(stop_fd_.get(), &one, sizeof(one));
  }
  for (auto& thread : threads) thread->thread.join();
  // The threads are gone: no Remove runs now, so each entry is told here or
  // was told there.
  absl::flat_hash_map<uint64_t, std::shared_ptr<ServedChannel>> ended;
  {
    MutexLock lock(&mu_);
    ended.swap(entries_);
  }
  for (const auto& [id, entry] : ended) TellEnded(*entry);
}

size_t ServerPool::channel_count() {
  MutexLock lock(&mu_);
  return entries_.size();
}

void ServerPool::SetMaxThreads(int max_threads) {
  MutexLock lock(&mu_);
  max_threads_ = std::max(max_threads, 1);
}

size_t ServerPool::thread_count() {
  MutexLock lock(&mu_);
  return live_;
}

ServerPool::Stats ServerPool::stats() {
  MutexLock lock(&mu_);
  return Stats{.channels = entries_.size(),
               .threads = live_,
               .busy_threads = busy_,
               .peak_threads = peak_,
               .stalls = stalls_,
               .on_bells = bells()};
}

}  // namespace sluice::rpc
