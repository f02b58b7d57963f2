#include "ipc/rpc/call_router.h"

#include <sys/random.h>

#include <algorithm>
#include <climits>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ipc/sync/spin.h"

namespace sluice::rpc {
namespace {

uint64_t RandomSeed() {
  uint64_t seed = 0;
  if (::getrandom(&seed, sizeof(seed), 0) != sizeof(seed)) {
    seed = reinterpret_cast<uintptr_t>(&seed) ^ static_cast<uint64_t>(::getpid()) << 40 ^
           static_cast<uint64_t>(MonotonicNanos());
  }
  return seed;
}

// splitmix64: a fresh, well-mixed 64-bit id per call without a syscall.
// Unique across processes with overwhelming odds; 0 means "no chain".
uint64_t NextChainId(uint64_t& state) {
  for (;;) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    if (z != 0) return z;
  }
}

// A queue served this far without draining moves its rest to the front.
constexpr size_t kCompactQueueAt = 64;

}  // namespace

void ServeRouted(RoutedCall& routed) {
  ServedChannel& target = *routed.target;
  ThreadCalls::Serving serving(ThreadCalls::Current(), routed.call.header().chain_id);
  if (!serving.ok()) {
    (void)routed.call.Fail(absl::ResourceExhaustedError(
        absl::StrCat("nested calls deeper than ", kMaxNestingDepth, " on one thread")));
    return;
  }
  // A handler reads its request from the thread's request buffer
  // (ThreadRequestBuffer, AcceptRequest) until it returns. A call served
  // while this thread waits in an outgoing call is nested in such a handler:
  // its request must not overwrite the outer one, so the outer buffer is
  // kept aside (moving it keeps its heap block; its inline bytes come back
  // to the same address) until the nested call is answered.
  // The caller as this call's channel knows it now (on an object channel,
  // only from its first call on), never a copy taken earlier.
  const CallContext context{routed.call.caller(), &routed.call};
  absl::Status handled;
  if (ThreadCalls::Current().calls_in_progress() > 0) {
    // Only here: an empty std::optional<MessageBuffer> on every call's
    // stack cost a 560-byte memset per call (perf).
    MessageBuffer outer(std::move(ThreadRequestBuffer()));
    handled = target.stub->Dispatch(routed.call, context);
    ThreadRequestBuffer() = std::move(outer);
  } else {
    handled = target.stub->Dispatch(routed.call, context);
  }
  if (absl::IsDataLoss(handled)) target.channel->Close(handled);
}

ThreadCalls& ThreadCalls::Current() {
  thread_local ThreadCalls calls;
  return calls;
}

ThreadCalls::ThreadCalls() : own_chain_(0), chain_seed_(RandomSeed()) {
  own_chain_ = NextChainId(chain_seed_);
}

ThreadCalls::Serving::Serving(ThreadCalls& thread, uint64_t chain)
    : thread_(thread), saved_chain_(thread.serving_chain_), ok_(thread.depth_ < kMaxNestingDepth) {
  ++thread_.depth_;
  thread_.serving_chain_ = chain;
}

ThreadCalls::Serving::~Serving() {
  --thread_.depth_;
  thread_.serving_chain_ = saved_chain_;
}

void ThreadCalls::Post(RoutedCall routed) {
  {
    MutexLock lock(&mu_);
    queue_.push_back(std::move(routed));
    queued_.fetch_add(1, std::memory_order_release);
  }
  // Against MailboxSleep: either it sees the new mailbox value (and so
  // queued_), or this sees it asleep.
  mailbox_.fetch_add(1, std::memory_order_seq_cst);
  if (mailbox_sleeping_.load(std::memory_order_seq_cst)) {
    FutexWake(mailbox_, 1, FutexScope::kPrivate);
  }
}

bool ThreadCalls::HasWork() {
  if (queued_.load(std::memory_order_acquire) != 0) return true;
  if (sleeper_ != nullptr && sleeper_->NestedPending()) return true;
  return polled_.empty() ? CallRouter::Get().PendingFor(chain()) : PollAnnounced();
}

bool ThreadCalls::PollAnnounced() {
  const uint64_t mine = chain();
  bool found = false;
  for (size_t i = 0; i < polled_.size();) {
    bool others = false;
    found = polled_[i]->waiting().ChainedRequestPending([&](uint64_t chain_id) {
      if (chain_id == mine) return true;
      others = true;
      return false;
    }) || found;
    if (others) {
      // Not ours to serve: a pool thread must hear of it.
      polled_[i]->waiting().EndPoll();
      polled_.erase(polled_.begin() + static_cast<std::ptrdiff_t>(i));
      continue;
    }
    ++i;
  }
  return found;
}

void ThreadCalls::BeginSpin() {
  if (chain() == 0 || !polled_.empty() || !CallRouter::Get().enabled()) return;
  CallRouter::Get().AnnouncePoller(polled_);
}

void ThreadCalls::EndSpin() {
  for (const auto& entry : polled_) entry->waiting().EndPoll();
  polled_.clear();
}

void ThreadCalls::RunWork() {
  // Requests of this thread's chain still on the channels: claim them here
  // rather than wait for a pool thread to see them (NestedSource), and only
  // then stop polling, so that the poll's end finds nothing of ours to wake
  // a pool thread for.
  CallRouter::Get().TakeFor(chain());
  EndSpin();
  RunQueued();
}

void ThreadCalls::RunQueued() {
  if (sleeper_ != nullptr) sleeper_->RouteNested();
  while (queued_.load(std::memory_order_acquire) != 0) {
    std::optional<RoutedCall> routed;
    {
      MutexLock lock(&mu_);
      if (next_ == queue_.size()) return;
      routed.emplace(std::move(queue_[next_++]));
      if (next_ == queue_.size()) {
        queue_.clear();
        next_ = 0;
      } else if (next_ >= kCompactQueueAt) {
        // Never drained for long: drop the served front.
        queue_.erase(queue_.begin(), queue_.begin() + static_cast<ptrdiff_t>(next_));
        next_ = 0;
      }
      queued_.fetch_sub(1, std::memory_order_acq_rel);
    }
    ServeRouted(*routed);
  }
}

absl::Status ThreadCalls::Sleep(const FutexWord& reply_word, uint32_t unanswered,
                                absl::Time deadline) {
  if (sleeper_ != nullptr) return sleeper_->SleepBlocked(*this, reply_word, unanswered, deadline);
  const MailboxSleep sleeping(*this);
  if (queued_.load(std::memory_order_acquire) != 0) return absl::OkStatus();
  const FutexWaitEntry entries[] = {
      {&reply_word, unanswered, FutexScope::kShared},
      {&mailbox_, sleeping.mail(), FutexScope::kPrivate},
  };
  absl::StatusOr<int> woken = FutexWaitAny(entries, deadline);
  return woken.ok() ? absl::OkStatus() : woken.status();
}

CallRouter& CallRouter::Get() {
  static CallRouter* router = new CallRouter();  // Never destroyed: threads may outlive main.
  return *router;
}

void CallRouter::AddServer(NestedSource* source) {
  std::lock_guard lock(sources_mu_);
  sources_.push_back(source);
  servers_.fetch_add(1, std::memory_order_acq_rel);
}

void CallRouter::RemoveServer(NestedSource* source) {
  std::lock_guard lock(sources_mu_);
  auto it = std::find(sources_.begin(), sources_.end(), source);
  if (it == sources_.end()) return;
  sources_.erase(it);
  servers_.fetch_sub(1, std::memory_order_acq_rel);
}

bool CallRouter::PendingFor(uint64_t chain) {
  if (chain == 0) return false;
  std::unique_lock lock(sources_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return false;
  for (NestedSource* source : sources_) {
    if (source->PendingFor(chain)) return true;
  }
  return false;
}

void CallRouter::AnnouncePoller(absl::InlinedVector<std::shared_ptr<ServedChannel>, 8>& out) {
  std::unique_lock lock(sources_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return;
  for (NestedSource* source : sources_) source->AnnouncePoller(out);
}

void CallRouter::TakeFor(uint64_t chain) {
  if (chain == 0) return;
  absl::InlinedVector<RoutedCall, 2> taken;
  {
    std::lock_guard lock(sources_mu_);
    for (NestedSource* source : sources_) source->TakeFor(chain, taken);
  }
  // Outside every lock: serving may nest, call out, or start a pool.
  for (RoutedCall& routed : taken) {
    if (!Deliver(chain, routed)) ServeRouted(routed);
  }
}

bool CallRouter::IsWaiting(uint64_t chain) {
  if (chain == 0 || waiting_.load(std::memory_order_acquire) == 0) return false;
  MutexLock lock(&mu_);
  return waiters_.contains(chain);
}

bool CallRouter::Deliver(uint64_t chain, RoutedCall& routed) {
  if (chain == 0 || waiting_.load(std::memory_order_acquire) == 0) return false;
  MutexLock lock(&mu_);
  auto it = waiters_.find(chain);
  if (it == waiters_.end()) return false;
  // Posting under mu_ keeps the thread registered (and its ThreadCalls
  // alive) until the call is queued; it drains its queue after it leaves.
  it->second.back()->Post(std::move(routed));
  return true;
}

void CallRouter::Register(uint64_t chain, ThreadCalls* thread) {
  MutexLock lock(&mu_);
  auto [it, inserted] = waiters_.try_emplace(chain);
  if (inserted) waiting_.fetch_add(1, std::memory_order_acq_rel);
  it->second.push_back(thread);
}

void CallRouter::Unregister(uint64_t chain, ThreadCalls* thread) {
  MutexLock lock(&mu_);
  auto it = waiters_.find(chain);
  if (it == waiters_.end()) return;
  auto& threads = it->second;
  for (size_t i = threads.size(); i-- > 0;) {
    if (threads[i] == thread) {
      threads.erase(threads.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
  }
  if (!threads.empty()) return;
  waiters_.erase(it);
  waiting_.fetch_sub(1, std::memory_order_acq_rel);
}

CallRouter::Outgoing::Outgoing() {
  CallRouter& router = Get();
  if (!router.enabled()) return;
  thread_ = &ThreadCalls::Current();
  // A call made outside any incoming call or call in progress starts a chain.
  if (thread_->serving_chain_ == 0 && thread_->calls_in_progress_ == 0) {
    thread_->own_chain_ = NextChainId(thread_->chain_seed_);
  }
  ++thread_->calls_in_progress_;
  chain_ = thread_->chain();
  router.Register(chain_, thread_);
}

CallRouter::Outgoing::~Outgoing() {
  if (thread_ == nullptr) return;
  Get().Unregister(chain_, thread_);
  // A request of this chain that was queued after the reply came (a late
  // or forged one) is still a request: serve it rather than drop it.
  thread_->RunQueued();
  --thread_->calls_in_progress_;
}

}  // namespace sluice::rpc
