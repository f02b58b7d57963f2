#include "ipc/rpc/server_pool.h"

#include <algorithm>
#include <climits>

#include "ipc/channel/endpoint.h"

namespace sluice::rpc {
namespace {
// futex_waitv takes 128 words; one is the pool's own.
constexpr size_t kChannelsPerWait = 127;
}  // namespace

ServerPool::ServerPool(Options options)
    : options_{std::max(options.max_threads, 1), options.serve_spin} {}

ServerPool::~ServerPool() { Shutdown(); }

absl::Status ServerPool::Add(std::unique_ptr<ServerChannel> channel,
                             std::shared_ptr<ServiceStub> stub) {
  if (channel == nullptr || stub == nullptr) {
    return absl::InvalidArgumentError("ServerPool::Add needs a channel and a stub");
  }
  auto entry = std::make_shared<Entry>();
  entry->context = CallContext{channel->peer()};
  entry->channel = std::move(channel);
  entry->stub = std::move(stub);
  // The peer's death must wake a sleeping thread so it drops the channel.
  if (auto linked = entry->channel->LinkToDeath([this] { Changed(); }); !linked.ok()) {
    return linked.status();
  }
  {
    MutexLock lock(&mu_);
    if (stopping_) return absl::FailedPreconditionError("ServerPool is shut down");
    entries_.push_back(std::move(entry));
    generation_.fetch_add(1, std::memory_order_release);
    // Each thread watches one group of channels; make sure every group has one.
    const size_t groups = (entries_.size() + kChannelsPerWait - 1) / kChannelsPerWait;
    while (threads_.size() < std::max<size_t>(groups, 1) &&
           threads_.size() < static_cast<size_t>(options_.max_threads)) {
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
  if (busy_ >= threads_.size() && threads_.size() < static_cast<size_t>(options_.max_threads) &&
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
  Changed();
}

bool ServerPool::ServeOne(const Snapshot& local) {
  for (const std::shared_ptr<Entry>& entry : local) {
    absl::StatusOr<std::optional<IncomingCall>> call = entry->channel->TryReceive();
    if (!call.ok()) {
      Remove(entry);
      continue;
    }
    if (!call->has_value()) continue;
    {
      MutexLock lock(&mu_);
      ++busy_;
      MaybeAddThreadLocked();
    }
    absl::Status handled = entry->stub->Dispatch(**call, entry->context);
    call->reset();
    if (absl::IsDataLoss(handled)) {
      entry->channel->Close(handled);
      Remove(entry);
    }
    MutexLock lock(&mu_);
    --busy_;
    return true;
  }
  return false;
}

void ServerPool::Worker(size_t index) {
  Snapshot local;
  uint64_t generation = ~uint64_t{0};
  std::vector<FutexWaitEntry> waits;
  std::vector<ServerChannel*> sleeping;
  int64_t last_served_ns = 0;
  while (!stop_.load(std::memory_order_acquire)) {
    const uint32_t changed = changed_.load(std::memory_order_seq_cst);
    Refresh(local, &generation);
    if (ServeOne(local)) {
      last_served_ns = internal::MonotonicNanos();
      continue;
    }
    // Shortly after a call the next one is likely close: poll a little.
    if (local.size() <= 8 && internal::MonotonicNanos() - last_served_ns <
                                 absl::ToInt64Nanoseconds(options_.serve_spin)) {
      internal::CpuRelax();
      continue;
    }
    // Sleep on this thread's group of channels, plus the pool's own word.
    const size_t groups =
        std::max<size_t>(1, (local.size() + kChannelsPerWait - 1) / kChannelsPerWait);
    const size_t group = index % groups;
    waits.clear();
    sleeping.clear();
    for (size_t i = group * kChannelsPerWait;
         i < local.size() && sleeping.size() < kChannelsPerWait; ++i) {
      ServerChannel* channel = local[i]->channel.get();
      waits.push_back({&channel->doorbell(), channel->BeginSleep(), FutexScope::kShared});
      sleeping.push_back(channel);
    }
    // Requests published before the announcements are found by this scan;
    // later ones change a doorbell (or wake us).
    bool found = ServeOne(local);
    if (!found) {
      waits.push_back({&changed_, changed, FutexScope::kPrivate});
      (void)FutexWaitAny(waits, absl::InfiniteFuture());
    }
    for (ServerChannel* channel : sleeping) channel->EndSleep();
    if (found) last_served_ns = internal::MonotonicNanos();
  }
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
  for (const auto& entry : entries) entry->channel->Close();
  stop_.store(true, std::memory_order_release);
  Changed();
  for (std::thread& thread : threads) thread.join();
  MutexLock lock(&mu_);
  entries_.clear();
}

size_t ServerPool::channel_count() {
  MutexLock lock(&mu_);
  return entries_.size();
}

size_t ServerPool::thread_count() {
  MutexLock lock(&mu_);
  return threads_.size();
}

}  // namespace sluice::rpc
