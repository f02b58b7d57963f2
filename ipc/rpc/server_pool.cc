#include "ipc/rpc/server_pool.h"

#include <algorithm>
#include <climits>

#include "ipc/channel/endpoint.h"

namespace sluice::rpc {
namespace {
// futex_waitv takes 128 words: one is the pool's own, and a thread blocked
// in a call also waits on its reply and its mailbox. Idle and blocked
// threads watch the same groups, so every channel has a watcher either way.
constexpr size_t kChannelsPerWait = 125;
constexpr size_t kChannelsPerBlockedWait = kChannelsPerWait;
// Polling for nested calls while spinning is cheap only for a few channels.
constexpr size_t kMaxChannelsPolled = 8;
}  // namespace

// Lets a worker blocked in an outgoing call (inside a stub method) pick up
// the nested calls that arrive on its group of channels.
class ServerPool::WorkerSleeper final : public BlockedSleeper {
 public:
  WorkerSleeper(ServerPool& pool, size_t index) : pool_(pool), index_(index) {}

  bool NestedPending() override {
    pool_.Refresh(local_, &generation_);
    auto group = GroupOf(local_, index_, kChannelsPerBlockedWait);
    if (group.size() > kMaxChannelsPolled) return false;
    for (const auto& entry : group) {
      if (entry->channel->NestedRequestPending(IsWaiting)) return true;
    }
    return false;
  }

  void RouteNested() override {
    pool_.Refresh(local_, &generation_);
    // Take first, serve after: serving may block and nest, which refreshes
    // local_ again.
    std::vector<RoutedCall> taken;
    for (const auto& entry : GroupOf(local_, index_, kChannelsPerBlockedWait)) {
      for (;;) {
        absl::StatusOr<std::optional<IncomingCall>> call =
            entry->channel->TryReceiveNested(IsWaiting);
        if (!call.ok() || !call->has_value()) break;  // The free threads drop dead channels.
        taken.push_back(RoutedCall{**std::move(call), entry});
      }
    }
    for (RoutedCall& routed : taken) {
      // The chain's waiter may have left since: the call is served here.
      if (!CallRouter::Get().Deliver(routed.call.header().chain_id, routed)) ServeRouted(routed);
    }
  }

  absl::Status SleepBlocked(ThreadCalls& thread, const FutexWord& reply_word, uint32_t unanswered,
                            absl::Time deadline) override {
    const uint32_t mail = thread.mailbox().load(std::memory_order_seq_cst);
    const uint32_t changed = pool_.changed_.load(std::memory_order_seq_cst);
    pool_.Refresh(local_, &generation_);
    // Keep the entries alive while their doorbells are in the wait.
    Snapshot group(GroupOf(local_, index_, kChannelsPerBlockedWait).begin(),
                   GroupOf(local_, index_, kChannelsPerBlockedWait).end());
    std::vector<FutexWaitEntry> waits = {
        {&reply_word, unanswered, FutexScope::kShared},
        {&thread.mailbox(), mail, FutexScope::kPrivate},
        {&pool_.changed_, changed, FutexScope::kPrivate},
    };
    constexpr size_t kFirstDoorbell = 3;
    for (const auto& entry : group) {
      waits.push_back(
          {&entry->channel->doorbell(), entry->channel->BeginSleep(), FutexScope::kShared});
    }
    // Requests published before the announcements are found now; later ones
    // move a doorbell.
    bool pending = false;
    for (const auto& entry : group) {
      pending = pending || entry->channel->NestedRequestPending(IsWaiting);
    }
    absl::Status result = absl::OkStatus();
    const bool sleep = !pending && !thread.HasWork();
    if (sleep) {
      absl::StatusOr<int> woken = FutexWaitAny(waits, deadline);
      if (!woken.ok()) result = woken.status();
    }
    for (size_t i = 0; i < group.size(); ++i) {
      ServerChannel& channel = *group[i]->channel;
      channel.EndSleep();
      // A client wakes one sleeper per request, and this thread was one of
      // them although it takes only requests of waiting chains. If its
      // doorbell rang for another request (an ordinary call, a oneway), the
      // wake was meant for a free thread sleeping on the same doorbell: hand
      // it on, or that request waits until some thread happens to look.
      if (sleep &&
          channel.doorbell().load(std::memory_order_seq_cst) !=
              waits[kFirstDoorbell + i].expected &&
          (!channel.NestedRequestPending(IsWaiting) ||
           channel.NestedRequestPending(IsNotWaiting))) {
        FutexWake(channel.doorbell(), INT_MAX, FutexScope::kShared);
      }
    }
    // Whatever woke us, route what is there; the caller then runs its work.
    RouteNested();
    return result;
  }

 private:
  static bool IsWaiting(uint64_t context) { return CallRouter::Get().IsWaiting(context); }
  static bool IsNotWaiting(uint64_t context) { return !CallRouter::Get().IsWaiting(context); }

  ServerPool& pool_;
  const size_t index_;
  Snapshot local_;
  uint64_t generation_ = ~uint64_t{0};
};

ServerPool::ServerPool(Options options)
    : options_{std::max(options.max_threads, 1), options.serve_spin},
      max_threads_(options_.max_threads) {
  CallRouter::Get().AddServer(this);
}

ServerPool::~ServerPool() {
  // First: from here on no waiting thread polls this pool's channels.
  CallRouter::Get().RemoveServer(this);
  Shutdown();
}

bool ServerPool::PendingFor(uint64_t chain) {
  MutexLock lock(&mu_);
  if (entries_.size() > kMaxChannelsPolled) return false;
  for (const auto& entry : entries_) {
    if (entry->channel->NestedRequestPending(
            [chain](uint64_t context) { return context == chain; })) {
      return true;
    }
  }
  return false;
}

void ServerPool::TakeFor(uint64_t chain, absl::InlinedVector<RoutedCall, 2>& out) {
  absl::InlinedVector<std::shared_ptr<Entry>, kMaxChannelsPolled> entries;
  {
    MutexLock lock(&mu_);
    if (entries_.size() > kMaxChannelsPolled) return;
    entries.assign(entries_.begin(), entries_.end());
  }
  for (const auto& entry : entries) {
    for (;;) {
      absl::StatusOr<std::optional<IncomingCall>> call =
          entry->channel->TryReceiveNested([chain](uint64_t context) { return context == chain; });
      if (!call.ok() || !call->has_value()) break;  // The pool threads drop dead channels.
      out.push_back(RoutedCall{**std::move(call), entry});
    }
  }
}

std::span<const std::shared_ptr<ServerPool::Entry>> ServerPool::GroupOf(const Snapshot& local,
                                                                        size_t index,
                                                                        size_t per_wait) {
  const size_t groups = std::max<size_t>(1, (local.size() + per_wait - 1) / per_wait);
  const size_t begin = std::min(local.size(), (index % groups) * per_wait);
  const size_t end = std::min(local.size(), begin + per_wait);
  return std::span<const std::shared_ptr<Entry>>(local).subspan(begin, end - begin);
}

absl::Status ServerPool::Add(std::unique_ptr<ServerChannel> channel,
                             std::shared_ptr<ServiceStub> stub,
                             absl::AnyInvocable<void(absl::Status why)> on_end) {
  if (channel == nullptr || stub == nullptr) {
    return absl::InvalidArgumentError("ServerPool::Add needs a channel and a stub");
  }
  auto entry = std::make_shared<Entry>();
  entry->channel = std::move(channel);
  entry->stub = std::move(stub);
  entry->on_end = std::move(on_end);
  // The peer's death must wake a sleeping thread so it drops the channel.
  // Unlinked when the pool lets the channel go (Remove, Shutdown): the entry
  // may outlive the pool in a queued nested call.
  absl::StatusOr<uint64_t> linked = entry->channel->LinkToDeath([this] { Changed(); });
  if (!linked.ok()) return linked.status();
  entry->death_link = *linked;
  {
    MutexLock lock(&mu_);
    if (stopping_) {
      (void)entry->channel->UnlinkToDeath(entry->death_link);
      return absl::FailedPreconditionError("ServerPool is shut down");
    }
    entries_.push_back(std::move(entry));
    generation_.fetch_add(1, std::memory_order_release);
    // Each thread watches one group of channels; make sure every group has one.
    const size_t groups = (entries_.size() + kChannelsPerWait - 1) / kChannelsPerWait;
    while (threads_.size() < std::max<size_t>(groups, 1) &&
           threads_.size() < static_cast<size_t>(max_threads_)) {
      threads_.emplace_back([this, index = threads_.size()] { Worker(index); });
    }
  }
  Changed();
  return absl::OkStatus();
}

void ServerPool::Changed() {
  changed_.fetch_add(1, std::memory_order_seq_cst);
  FutexWake(changed_, INT_MAX, FutexScope::kPrivate);
}

void ServerPool::MaybeAddThreadLocked() {
  if (busy_ >= threads_.size() && threads_.size() < static_cast<size_t>(max_threads_) &&
      !stopping_) {
    threads_.emplace_back([this, index = threads_.size()] { Worker(index); });
  }
}

void ServerPool::Refresh(Snapshot& local, uint64_t* generation) {
  const uint64_t now = generation_.load(std::memory_order_acquire);
  if (now == *generation) return;
  MutexLock lock(&mu_);
  // assign() reuses the vector's capacity: no allocation in the steady state.
  local.assign(entries_.begin(), entries_.end());
  *generation = generation_.load(std::memory_order_relaxed);
}

void ServerPool::Remove(const std::shared_ptr<Entry>& entry) {
  {
    MutexLock lock(&mu_);
    auto it = std::find(entries_.begin(), entries_.end(), entry);
    if (it == entries_.end()) return;
    entries_.erase(it);
    generation_.fetch_add(1, std::memory_order_release);
  }
  // NOT_FOUND once it fired: nothing left to undo then.
  (void)entry->channel->UnlinkToDeath(entry->death_link);
  Changed();
  TellEnded(*entry);
}

void ServerPool::TellEnded(Entry& entry) {
  absl::AnyInvocable<void(absl::Status)> on_end = std::move(entry.on_end);
  if (on_end) on_end(entry.channel->health());
}

void ServerPool::EndPolling(Snapshot& polled) {
  for (const auto& entry : polled) entry->channel->EndPoll();
  polled.clear();
}

ServerPool::Took ServerPool::ServeOne(const Snapshot& local, Snapshot& polled) {
  for (const std::shared_ptr<Entry>& entry : local) {
    absl::StatusOr<std::optional<IncomingCall>> call = entry->channel->TryReceive();
    if (!call.ok()) {
      Remove(entry);
      continue;
    }
    if (!call->has_value()) continue;
    // Busy from here on: clients must wake a sleeper for their next request.
    EndPolling(polled);
    RoutedCall routed{**std::move(call), entry};
    // A call back into a chain a thread of ours waits in goes to that thread.
    if (!routed.call.oneway() && CallRouter::Get().Deliver(routed.call.header().chain_id, routed)) {
      return Took::kRouted;
    }
    {
      MutexLock lock(&mu_);
      ++busy_;
      MaybeAddThreadLocked();
    }
    ServeRouted(routed);
    if (!entry->channel->health().ok()) Remove(entry);
    MutexLock lock(&mu_);
    --busy_;
    return Took::kServed;
  }
  return Took::kNothing;
}

void ServerPool::Worker(size_t index) {
  WorkerSleeper sleeper(*this, index);
  ThreadCalls::Current().set_sleeper(&sleeper);
  Snapshot local;
  uint64_t generation = ~uint64_t{0};
  std::vector<FutexWaitEntry> waits;
  std::vector<ServerChannel*> sleeping;
  int64_t last_served_ns = 0;
  // The channels this thread announced it polls (BeginPoll), while it spins.
  Snapshot polled;
  while (!stop_.load(std::memory_order_acquire)) {
    const uint32_t changed = changed_.load(std::memory_order_seq_cst);
    Refresh(local, &generation);
    // Only a call served here starts a spin: after routing one to a waiting
    // thread, that thread polls for the next request of its chain itself
    // (NestedSource), and a spinning router would only take a CPU from it.
    const Took took = ServeOne(local, polled);
    if (took == Took::kServed) last_served_ns = internal::MonotonicNanos();
    if (took != Took::kNothing) continue;
    // Shortly after a call the next one is likely close: poll a little.
    if (local.size() <= 8 && internal::MonotonicNanos() - last_served_ns <
                                 absl::ToInt64Nanoseconds(options_.serve_spin)) {
      // Announced, so that clients do not wake idle threads for requests
      // this one is about to take: on two CPUs a woken thread preempts a
      // spinning one.
      if (polled.empty()) {
        polled = local;
        for (const auto& entry : polled) entry->channel->BeginPoll();
      }
      internal::CpuRelax();
      continue;
    }
    EndPolling(polled);
    // Sleep on this thread's group of channels, plus the pool's own word.
    waits.clear();
    sleeping.clear();
    for (const auto& entry : GroupOf(local, index, kChannelsPerWait)) {
      ServerChannel* channel = entry->channel.get();
      waits.push_back({&channel->doorbell(), channel->BeginSleep(), FutexScope::kShared});
      sleeping.push_back(channel);
    }
    // Requests published before the announcements are found by this scan;
    // later ones change a doorbell (or wake us).
    const Took found = ServeOne(local, polled);
    if (found == Took::kNothing) {
      waits.push_back({&changed_, changed, FutexScope::kPrivate});
      (void)FutexWaitAny(waits, absl::InfiniteFuture());
    }
    for (ServerChannel* channel : sleeping) channel->EndSleep();
    if (found == Took::kServed) last_served_ns = internal::MonotonicNanos();
  }
  EndPolling(polled);
  ThreadCalls::Current().set_sleeper(nullptr);
}

void ServerPool::Shutdown() {
  std::vector<std::thread> threads;
  Snapshot entries;
  {
    MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    threads.swap(threads_);
    entries = entries_;
  }
  for (const auto& entry : entries) {
    entry->channel->Close();
    (void)entry->channel->UnlinkToDeath(entry->death_link);
  }
  stop_.store(true, std::memory_order_release);
  Changed();
  for (std::thread& thread : threads) thread.join();
  // The threads are gone: no Remove runs now, so each entry is told here or
  // was told there.
  Snapshot ended;
  {
    MutexLock lock(&mu_);
    ended.swap(entries_);
  }
  for (const auto& entry : ended) TellEnded(*entry);
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
  return threads_.size();
}

}  // namespace sluice::rpc
