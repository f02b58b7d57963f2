// ServerPool: a few threads serving many channels, like Binder's thread pool,
// and the only way calls are served (ServiceHost and ObjectHost use one).
//
// Channels are added with the stub that serves them; the pool owns them
// until they end (client gone, malformed request, Shutdown).
//
// Waiting. Idle threads sleep in one futex_waitv on every channel's doorbell
// while the pool has at most kChannelsPerWait channels (the fast path: a
// client's FUTEX_WAKE reaches a sleeping thread directly). With more, the
// pool switches to the channels' bells (server_waiting.h): every channel's bell
// socket joins one epoll set that all idle threads wait in, so any number of
// channels is watched by a bounded number of threads, and no channel is ever
// without a thread that will wake for it. The switch is one way: a pool that
// once held that many channels keeps waiting on bells.
//
// Looking. A thread looks at its channels in turn, each look starting past
// the channel it last took a call from, so that busy channels are served
// one call each in turn and none waits behind another's stream of calls.
//
// Polling. After answering a call a thread polls its channels instead of
// sleeping only while the pool has a few channels, within
// SpinPolicy::serve_spin (ChannelOptions, set per service through
// RegisterOptions) of an answer, and while the client it just answered last
// ran on another CPU. On that client's CPU, polling would only keep the
// client from running.
//
// Threads. A thread starts whenever every running thread is busy with a call,
// up to Options::max_threads. Past that, busy or hung handlers must not stop
// the pool from serving other channels: a watchdog thread (one per pool,
// ticking every Options::stall_after only while calls run) starts one more
// thread whenever every thread stayed busy for a whole tick without a call
// starting or ending, up to Options::thread_cap (Stats::stalls counts
// these). Threads beyond max_threads end after Options::idle_exit without a
// call.
//
// Nested calls (call_router.h): a request that belongs to a call chain some
// thread of this process is waiting in is handed to that thread instead of
// being served here; a pool thread that is itself blocked in a call keeps
// watching the doorbells for such requests, so even a one-thread pool serves
// recursion (A -> B -> A -> ...) without deadlock. On bells, a blocked thread
// watches no doorbells; an idle thread (the pool grows to keep one) routes
// nested requests to it.
//
// Thread safety: all methods are thread safe. Stub methods run on pool
// threads, possibly several at once (also for one channel).
#ifndef SLUICE_IPC_RPC_SERVER_POOL_H_
#define SLUICE_IPC_RPC_SERVER_POOL_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "ipc/base/mutex.h"
#include "ipc/base/unique_fd.h"
#include "ipc/channel/server_channel.h"
#include "ipc/rpc/call_router.h"
#include "ipc/rpc/stub.h"
#include "ipc/sync/futex.h"

namespace sluice::rpc {

class ServerPool final : private NestedSource {
 public:
  // A thread blocked in a call waits on its reply, its mailbox and the
  // pool's own word besides the doorbells, all in one futex_waitv.
  static constexpr size_t kChannelsPerWait = kMaxFutexWaitEntries - 3;

  struct Options {
    // Threads the pool runs for calls (Binder's setMaxThreads). At least 1.
    int max_threads = 4;
    // Never more threads than this, stalled or not. At least max_threads.
    int thread_cap = 64;
    // Every thread busy this long: the pool grows past max_threads.
    absl::Duration stall_after = absl::Milliseconds(20);
    // A thread beyond max_threads ends after this long without a call.
    absl::Duration idle_exit = absl::Seconds(1);
    // Tests only: run on a worker each time it has seen that the pool is not
    // shut down, before it looks for work or sleeps, so that a test can stop
    // the pool at that very moment.
    std::function<void()> after_stop_check_for_testing = nullptr;
  };

  struct Stats {
    size_t channels = 0;
    size_t threads = 0;
    size_t busy_threads = 0;  // Serving a call (or blocked in one it makes).
    size_t peak_threads = 0;
    uint64_t stalls = 0;    // Threads started past max_threads because all were busy.
    bool on_bells = false;  // Waiting through epoll on the channels' bells.
  };

  explicit ServerPool(Options options);
  ServerPool() : ServerPool(Options{}) {}
  ~ServerPool();
  ServerPool(const ServerPool&) = delete;
  ServerPool& operator=(const ServerPool&) = delete;

  // Serves `channel` with `stub` until the channel ends, then destroys it.
  // FAILED_PRECONDITION after Shutdown; RESOURCE_EXHAUSTED if the kernel
  // refuses to watch one more bell.
  absl::Status Add(std::unique_ptr<ServerChannel> channel, std::shared_ptr<ServiceStub> stub) {
    return Add(std::move(channel), std::move(stub), nullptr);
  }
  // As above, and calls `on_end` once, when the pool drops the channel, with
  // why it ended (the channel's health()): IsPeerDead when the client went
  // away, DATA_LOSS after a malformed request, CANCELLED on Shutdown. Runs
  // on a pool thread, or on the thread in Shutdown; it must not call
  // Shutdown. Never called when Add fails.
  absl::Status Add(std::unique_ptr<ServerChannel> channel, std::shared_ptr<ServiceStub> stub,
                   absl::AnyInvocable<void(absl::Status why)> on_end);

  // Closes every channel and joins every thread. Idempotent.
  void Shutdown();

  size_t channel_count();
  size_t thread_count();
  Stats stats();
  // Changes Options::max_threads; running threads beyond it stay.
  void SetMaxThreads(int max_threads);

 private:
  using Snapshot = std::vector<std::shared_ptr<ServedChannel>>;
  class WorkerSleeper;
  struct Thread {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  void Worker(Thread* self);
  // The pool's watchdog thread: every stall_after while calls run, starts a
  // thread if every thread was busy the whole time and none made progress
  // (a call started or ended). Sleeps without ticking once the pool has been
  // idle for idle_exit, until the next call.
  void Watchdog();
  // One futex_waitv on every doorbell (plus the pool's word), after one more
  // look. False when it timed out (`deadline`).
  bool SleepOnDoorbells(const Snapshot& local, Snapshot& polled, size_t* next,
                        std::vector<FutexWaitEntry>& waits, uint32_t changed, absl::Time deadline);
  // One epoll_wait on the bells; serves what it finds. False on timeout.
  bool WaitOnBells(absl::Time deadline);
  // Refreshes `local` if the channel set changed since `*generation`; true
  // if it did. Empty on bells: nothing then scans every channel.
  bool Refresh(Snapshot& local, uint64_t* generation);
  // Takes at most one call from `entry`: served here, or handed to the
  // thread waiting in its chain. Ends the spell of polling on `polled` (if
  // any) once it claims a call.
  enum class Took : uint8_t { kNothing, kServed, kRouted };
  Took ServeFrom(const std::shared_ptr<ServedChannel>& entry, Snapshot& polled);
  // Looks at the channels in turn from `*next` (this thread's cursor), and
  // leaves it just past the one it took a call from: each scan starts where
  // the last one found work, so no channel is always looked at last.
  Took ServeOne(const Snapshot& local, Snapshot& polled, size_t* next);
  static void EndPolling(Snapshot& polled);
  // The latest of the channels' BuildPollUntilNanos (0 when none says to
  // poll, or there are more channels than a thread polls).
  static int64_t BuildPollUntil(const Snapshot& local);
  // NestedSource: a thread waiting in `chain` claims its requests itself.
  bool PendingFor(uint64_t chain) override;
  void TakeFor(uint64_t chain, absl::InlinedVector<RoutedCall, 2>& out) override;
  void AnnouncePoller(absl::InlinedVector<std::shared_ptr<ServedChannel>, 8>& out) override;
  void Remove(const std::shared_ptr<ServedChannel>& entry);
  // Calls the entry's on_end, once.
  static void TellEnded(ServedChannel& entry);
  void Changed();
  absl::Status WatchBellLocked(ServedChannel& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SwitchToBellsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartThreadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeAddThreadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A thread beyond max_threads that idled for idle_exit: true if it may end.
  bool RetireLocked(Thread* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool bells() const { return bells_.load(std::memory_order_acquire); }

  const Options options_;
  Mutex mu_;
  absl::flat_hash_map<uint64_t, std::shared_ptr<ServedChannel>> entries_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int max_threads_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Thread>> threads_ ABSL_GUARDED_BY(mu_);
  // Threads not ended: changed under mu_, read without it too.
  std::atomic<size_t> live_{0};
  // Threads serving a call. Counted without mu_: a call takes the lock only
  // when it makes every thread busy (then a thread may have to start).
  std::atomic<size_t> busy_{0};
  size_t peak_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t stalls_ ABSL_GUARDED_BY(mu_) = 0;
  // Calls taken (served here or routed to a waiting thread, nested ones
  // included) plus calls ended: the watchdog's measure of progress.
  std::atomic<uint64_t> progress_{0};
  std::thread watchdog_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> generation_{0};
  // Private futex every sleeping thread also waits on: bumped when channels
  // come or go (death included) and on Shutdown, after stop_ is set. A worker
  // reads it before it checks stop_ (Worker).
  FutexWord changed_{0};
  // Private futex the watchdog sleeps on: bumped by Shutdown and, while it
  // sleeps without ticking (watchdog_idle_), by the next call.
  FutexWord watchdog_word_{0};
  std::atomic<bool> watchdog_idle_{false};
  std::atomic<bool> stop_{false};
  // Set once (under mu_) when the pool switches to bells; epoll_ and
  // stop_fd_ exist from then on.
  std::atomic<bool> bells_{false};
  UniqueFd epoll_;
  UniqueFd stop_fd_;  // An eventfd in epoll_, made readable by Shutdown.
  // On bells, the wake-ups the pool passes to its own threads (a channel's
  // RingBell on this side): which channels to look at, counted by an
  // eventfd in epoll_. Shared with the channels, which may outlive the pool.
  class Kicks;
  std::shared_ptr<Kicks> kicks_;
};

}  // namespace sluice::rpc

#endif  // SLUICE_IPC_RPC_SERVER_POOL_H_
