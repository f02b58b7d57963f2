// ServerPool: a few threads serving many channels, like Binder's thread pool.
//
// Channels are added with the stub that serves them; the pool owns them
// until they end (client gone, malformed request, Shutdown). Idle threads
// sleep in one futex_waitv on up to 127 channels' doorbells at once, so an
// idle server uses no CPU and 100 connections need no 100 threads. Threads
// start on demand: when every thread is busy with a call, another starts, up
// to max_threads, so a long call on one channel does not stall the others
// while threads remain.
//
// Nested calls (call_router.h): a request that belongs to a call chain some
// thread of this process is waiting in is handed to that thread instead of
// being served here; a pool thread that is itself blocked in a call keeps
// watching its channels for such requests, so even a one-thread pool serves
// recursion (A -> B -> A -> ...) without deadlock.
//
// Thread safety: all methods are thread safe. Stub methods run on pool
// threads, possibly several at once (also for one channel).
#ifndef SLUICE_IPC_RPC_SERVER_POOL_H_
#define SLUICE_IPC_RPC_SERVER_POOL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "ipc/base/mutex.h"
#include "ipc/channel/channel.h"
#include "ipc/rpc/call_router.h"
#include "ipc/rpc/stub.h"
#include "ipc/sync/futex.h"

namespace sluice::rpc {

class ServerPool final : private NestedSource {
 public:
  struct Options {
    // Most threads the pool runs (Binder's setMaxThreads). At least 1.
    int max_threads = 4;
    // After answering a call a thread polls its channels this long before
    // sleeping, when the pool has few channels (see SpinPolicy).
    absl::Duration serve_spin = absl::Microseconds(150);
  };

  explicit ServerPool(Options options);
  ServerPool() : ServerPool(Options{}) {}
  ~ServerPool();
  ServerPool(const ServerPool&) = delete;
  ServerPool& operator=(const ServerPool&) = delete;

  // Serves `channel` with `stub` until the channel ends, then destroys it.
  // FAILED_PRECONDITION after Shutdown.
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
  // Changes Options::max_threads; running threads beyond it stay.
  void SetMaxThreads(int max_threads);

 private:
  using Entry = ServedChannel;
  using Snapshot = std::vector<std::shared_ptr<Entry>>;
  class WorkerSleeper;

  void Worker(size_t index);
  // The channels thread `index` sleeps on: its group of at most `per_wait`.
  static std::span<const std::shared_ptr<Entry>> GroupOf(const Snapshot& local, size_t index,
                                                         size_t per_wait);
  // Refreshes `local` if the channel set changed since `*generation`.
  void Refresh(Snapshot& local, uint64_t* generation);
  // Takes at most one call from the channels: served here, or handed to
  // the thread waiting in its chain.
  enum class Took : uint8_t { kNothing, kServed, kRouted };
  // Ends the spell of polling on `polled` (if any) once it claims a call.
  Took ServeOne(const Snapshot& local, Snapshot& polled);
  static void EndPolling(Snapshot& polled);
  // NestedSource: a thread waiting in `chain` claims its requests itself.
  bool PendingFor(uint64_t chain) override;
  void TakeFor(uint64_t chain, absl::InlinedVector<RoutedCall, 2>& out) override;
  void Remove(const std::shared_ptr<Entry>& entry);
  // Calls the entry's on_end, once.
  static void TellEnded(Entry& entry);
  void Changed();
  void MaybeAddThreadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  Mutex mu_;
  Snapshot entries_ ABSL_GUARDED_BY(mu_);
  int max_threads_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  size_t busy_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> generation_{0};
  // Private futex every sleeping thread also waits on: bumped when channels
  // come or go (death included) and on Shutdown.
  FutexWord changed_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace sluice::rpc

#endif  // SLUICE_IPC_RPC_SERVER_POOL_H_
