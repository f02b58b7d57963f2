// PeerWatcher: one thread that learns, within microseconds, that a peer
// process has died, and tells whoever asked.
//
// A channel's blocked or spinning threads cannot see a peer's death in the
// shared words (a dead process writes nothing), so each channel registers a
// "liveness" descriptor here: a socket whose other end only the peer holds
// (the kernel hangs it up when the peer exits, SIGKILL included), or a pidfd
// of the peer (readable once it exits). The watcher's thread sleeps in
// epoll_wait, so watching costs nothing while everyone is alive, and one
// thread serves every channel of the process.
//
// Ownership: created by the program (main wires it into its channels) and
// must outlive every registration. Thread safe.
#ifndef SLUICE_IPC_CHANNEL_PEER_WATCHER_H_
#define SLUICE_IPC_CHANNEL_PEER_WATCHER_H_

#include <cstdint>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "ipc/base/mutex.h"
#include "ipc/base/unique_fd.h"

namespace sluice {

class PeerWatcher {
 public:
  enum class FdKind : uint8_t {
    kSocket,  // Dead when hung up (peer closed or exited).
    kPidfd,   // Dead when readable (process exited).
  };
  using WatchId = uint64_t;

  static absl::StatusOr<std::unique_ptr<PeerWatcher>> Create();
  ~PeerWatcher();
  PeerWatcher(const PeerWatcher&) = delete;
  PeerWatcher& operator=(const PeerWatcher&) = delete;

  // Runs `on_death` once, on the watcher thread, when `fd` reports the peer
  // gone. `fd` stays owned by the caller and must stay open until Unwatch.
  // `on_death` must be quick; it may Watch and Unwatch (its own id too, so
  // it may destroy the channel it watches for).
  absl::StatusOr<WatchId> Watch(int fd, FdKind kind, absl::AnyInvocable<void()> on_death);

  // Stops watching. When it returns, `on_death` is not running (unless this
  // is its own thread) and never will.
  void Unwatch(WatchId id);

 private:
  PeerWatcher(UniqueFd epoll, UniqueFd stop_event);
  void Run();

  UniqueFd epoll_;
  UniqueFd stop_event_;
  Mutex mu_;
  // The id whose callback runs now (0: none), so Unwatch can wait it out.
  WatchId running_ ABSL_GUARDED_BY(mu_) = 0;
  CondVar callback_done_;
  WatchId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<WatchId, absl::AnyInvocable<void()>> callbacks_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<WatchId, int> fds_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// The watcher of this process, made at first use and never destroyed:
// channels that may outlive whatever made them (object references, service
// connections kept by the objects their replies lent) are watched by it.
PeerWatcher& ProcessPeerWatcher();

}  // namespace sluice

#endif  // SLUICE_IPC_CHANNEL_PEER_WATCHER_H_
