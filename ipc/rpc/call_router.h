// Nested and recursive calls, served by the waiting thread (Binder's
// transaction stack, without a kernel driver).
//
// Every synchronous call carries a call-chain id in its slot
// (CallHeader::chain_id). A thread that starts a call outside of any incoming
// call uses its own id; a thread serving a call hands that call's id on to
// every call it makes. While a thread waits for a reply it is registered
// with this process's CallRouter under its chain id. When a request whose
// chain id is registered arrives on any channel of this process, the pool
// thread that finds it does not serve it: it queues it for the waiting
// thread and wakes it, and the waiting thread serves it between two looks at
// its own reply. While it spins, the waiting thread also looks for requests
// of its chain on the pools' channels itself (NestedSource) and claims them
// without a pool thread in between. So in A -> B -> A (or A -> B -> C -> A)
// the call back into A runs on the very thread of A that is waiting, a
// single-threaded client can take callbacks during its own call, and
// recursion needs no extra threads.
//
// Pool threads that are themselves blocked in a call keep watching their
// pool's channels for requests of registered chains (ServerPool), so a pool
// of one thread cannot deadlock on a recursion either.
//
// A chain id is a routing hint, not a credential: a peer that forges one can
// only make its call run on another thread of the same process, which it
// could have reached anyway. Nesting deeper than kMaxNestingDepth on one
// thread is refused with RESOURCE_EXHAUSTED.
#ifndef SLUICE_IPC_RPC_CALL_ROUTER_H_
#define SLUICE_IPC_RPC_CALL_ROUTER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "ipc/base/mutex.h"
#include "ipc/channel/reply_waiter.h"
#include "ipc/channel/server_channel.h"
#include "ipc/channel/server_waiting.h"
#include "ipc/rpc/stub.h"
#include "ipc/sync/futex.h"

namespace sluice::rpc {

inline constexpr int kMaxNestingDepth = 64;

// A channel together with the stub that serves it.
struct ServedChannel {
  std::unique_ptr<ServerChannel> channel;
  std::shared_ptr<ServiceStub> stub;
  uint64_t death_link = 0;  // The owner's LinkToDeath on the channel (0: none).
  uint64_t id = 0;          // The owner's key for it (ServerPool: also its epoll key).
  // The owner's: told once why the channel ended, when the owner lets it go
  // (empty: nobody asked).
  absl::AnyInvocable<void(absl::Status why)> on_end;

  // The channel as a server waiting on many channels uses it.
  ServerWaiting waiting() const { return ServerWaiting(*channel); }
};

// A request taken off a channel, to be served (perhaps by another thread).
struct RoutedCall {
  IncomingCall call;
  std::shared_ptr<ServedChannel> target;  // Keeps the channel and stub alive.
};

// Serves `routed` on this thread as part of its chain; a malformed request
// closes its channel (the channel's owner notices on its next receive).
void ServeRouted(RoutedCall& routed);

class ThreadCalls;

// Where a thread waiting in a call looks, while it spins, for requests of its
// own chain (every ServerPool of the process is one): it claims them itself,
// as Binder hands a nested transaction straight to the waiting thread. A pool
// thread still routes what it finds (to a waiting thread that sleeps, or one
// that polls too late), but the fast path needs no third thread on a CPU:
// A -> B -> A on two CPUs is then two spinning threads, not three.
class NestedSource {
 public:
  virtual ~NestedSource() = default;
  // True if a request of `chain` seems pending (cheap: polled while spinning).
  virtual bool PendingFor(uint64_t chain) = 0;
  // Claims the pending requests of `chain` into `out`, serving none of them.
  virtual void TakeFor(uint64_t chain, absl::InlinedVector<RoutedCall, 2>& out) = 0;
  // Announces a poller (ServerWaiting::BeginPoll) on each channel it lets a
  // waiting thread poll, while `out` has room, and adds them to `out`. The
  // thread ends each poll (EndPoll) when it stops looking.
  virtual void AnnouncePoller(absl::InlinedVector<std::shared_ptr<ServedChannel>, 8>& out) = 0;
};

// What a pool thread blocked in a call does instead of a plain sleep: watch
// the pool's channels for nested calls too.
class BlockedSleeper {
 public:
  virtual ~BlockedSleeper() = default;
  // True if a request of a waiting chain seems pending (cheap; for spinning).
  virtual bool NestedPending() = 0;
  // Takes pending requests of waiting chains and posts them to their threads.
  virtual void RouteNested() = 0;
  virtual absl::Status SleepBlocked(ThreadCalls& thread, const FutexWord& reply_word,
                                    uint32_t unanswered, absl::Time deadline) = 0;
};

// One thread's part in call chains. Created on first use, per thread.
class ThreadCalls final : public ReplyWaiter {
 public:
  static ThreadCalls& Current();

  // The chain id calls from this thread carry now.
  uint64_t chain() const { return serving_chain_ != 0 ? serving_chain_ : own_chain_; }
  // Set for pool threads (ServerPool::Worker).
  void set_sleeper(BlockedSleeper* sleeper) { sleeper_ = sleeper; }
  // Outgoing calls this thread is in (CallRouter::Outgoing); a call it
  // serves meanwhile is nested in the handler that made the outgoing one.
  int calls_in_progress() const { return calls_in_progress_; }

  // Queues `routed` for this thread and wakes it if it sleeps. Called by
  // the router, also on the thread itself (it claimed a call of its chain).
  void Post(RoutedCall routed);
  const FutexWord& mailbox() const { return mailbox_; }

  // Around a sleep with the mailbox in its wait: Post makes the wake-up
  // syscall only while one is in progress (a spinning thread sees queued_
  // itself). mail() is the mailbox value to wait on.
  class MailboxSleep {
   public:
    explicit MailboxSleep(ThreadCalls& thread) : thread_(thread) {
      thread_.mailbox_sleeping_.store(true, std::memory_order_seq_cst);
      mail_ = thread_.mailbox_.load(std::memory_order_seq_cst);
    }
    ~MailboxSleep() { thread_.mailbox_sleeping_.store(false, std::memory_order_relaxed); }
    MailboxSleep(const MailboxSleep&) = delete;
    MailboxSleep& operator=(const MailboxSleep&) = delete;
    uint32_t mail() const { return mail_; }

   private:
    ThreadCalls& thread_;
    uint32_t mail_;
  };

  // ReplyWaiter:
  bool HasWork() override;
  void RunWork() override;
  // While it spins for a reply, a thread counts as a poller on the pools'
  // channels it looks at for its chain: a peer calling back into it then
  // skips waking a pool thread (which would only find the call taken, and
  // take a CPU from the two threads of the chain). A request for anybody
  // else on such a channel ends its poll there, which wakes a pool thread.
  void BeginSpin() override;
  void EndSpin() override;
  absl::Status Sleep(const FutexWord& reply_word, uint32_t unanswered,
                     absl::Time deadline) override;

  // Marks this thread as serving a call of `chain` (0: a call from outside
  // any chain, which starts a new one on the next outgoing call).
  class Serving {
   public:
    Serving(ThreadCalls& thread, uint64_t chain);
    ~Serving();
    Serving(const Serving&) = delete;
    Serving& operator=(const Serving&) = delete;
    // False if this thread is nested too deeply to take the call.
    bool ok() const { return ok_; }

   private:
    ThreadCalls& thread_;
    uint64_t saved_chain_;
    bool ok_;
  };

 private:
  ThreadCalls();
  // Routes what the pool's channels hold (pool threads) and serves the queue.
  void RunQueued();
  // HasWork while announced: a request of this chain on a polled channel;
  // ends the poll on a channel with a request for another.
  bool PollAnnounced();

  friend class CallRouter;

  // The chain of this thread's calls made outside any incoming call: new for
  // each such call, so an id a server once saw leads nowhere afterwards.
  uint64_t own_chain_;
  uint64_t chain_seed_;  // splitmix64 state, seeded once from getrandom.
  uint64_t serving_chain_ = 0;
  int depth_ = 0;
  int calls_in_progress_ = 0;
  BlockedSleeper* sleeper_ = nullptr;
  // The channels this thread counts as a poller on (BeginSpin .. EndSpin).
  absl::InlinedVector<std::shared_ptr<ServedChannel>, 8> polled_;
  FutexWord mailbox_{0};
  std::atomic<bool> mailbox_sleeping_{false};
  std::atomic<uint32_t> queued_{0};
  Mutex mu_;
  // Calls posted to this thread; queue_[next_] is served next. A vector that
  // starts over when drained keeps its storage, so a warm thread posts
  // without allocating (a std::deque frees and allocates a block every few
  // calls).
  std::vector<RoutedCall> queue_ ABSL_GUARDED_BY(mu_);
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;
};

// The process-wide table of threads waiting in a chain.
class CallRouter {
 public:
  static CallRouter& Get();

  // Routing is on while this process serves calls through a ServerPool;
  // a process that only calls out pays nothing for it. A waiting thread
  // polls `source` for requests of its chain until RemoveServer returns.
  void AddServer(NestedSource* source);
  void RemoveServer(NestedSource* source);
  bool enabled() const { return servers_.load(std::memory_order_acquire) > 0; }

  // True if some source holds a request of `chain` (ThreadCalls::HasWork).
  bool PendingFor(uint64_t chain);
  // NestedSource::AnnouncePoller on every source (skipped if another thread
  // holds the sources: the spin then polls without announcing).
  void AnnouncePoller(absl::InlinedVector<std::shared_ptr<ServedChannel>, 8>& out);
  // Claims the requests of `chain` from every source and delivers them to
  // the chain's waiting thread (or serves them here if none waits any more).
  void TakeFor(uint64_t chain);

  // True if a thread waits in `chain` now.
  bool IsWaiting(uint64_t chain);
  // Hands `routed` to the thread waiting in `chain`. False (and `routed`
  // untouched) if none is.
  bool Deliver(uint64_t chain, RoutedCall& routed);

  // Around one outgoing synchronous call: registers the calling thread
  // under its chain, and gives what the call needs to be part of it.
  class Outgoing {
   public:
    Outgoing();
    ~Outgoing();
    Outgoing(const Outgoing&) = delete;
    Outgoing& operator=(const Outgoing&) = delete;
    // The chain id for BeginCall and the call's header; 0 when routing is off.
    uint64_t chain_id() const { return chain_; }
    // The waiter for ClientChannel::Call: the calling thread, which serves
    // the calls nested in this one while it waits; null when routing is off.
    ReplyWaiter* waiter() const { return thread_; }

   private:
    ThreadCalls* thread_ = nullptr;
    uint64_t chain_ = 0;
  };

 private:
  void Register(uint64_t chain, ThreadCalls* thread);
  void Unregister(uint64_t chain, ThreadCalls* thread);

  std::atomic<int> servers_{0};
  std::atomic<int> waiting_{0};  // Entries in waiters_, read without mu_.
  // Guards sources_, and is held while they are polled so RemoveServer
  // waits for the pollers; never held while a call is served. A plain
  // std::mutex because spinning pollers only try_lock it (a contended lock
  // would put a spinning thread to sleep): if another thread is polling,
  // this look is skipped and the next one, or a pool thread, finds the call.
  std::mutex sources_mu_;
  absl::InlinedVector<NestedSource*, 4> sources_;  // Guarded by sources_mu_.
  Mutex mu_;
  // Per chain, every registration in order (one per call a thread waits
  // in); the newest gets the chain's requests. Usually one thread, nested.
  absl::flat_hash_map<uint64_t, absl::InlinedVector<ThreadCalls*, 4>> waiters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice::rpc

#endif  // SLUICE_IPC_RPC_CALL_ROUTER_H_
