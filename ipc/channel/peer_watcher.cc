#include "ipc/channel/peer_watcher.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "ipc/base/errno_status.h"

namespace sluice {
namespace {
// The stop eventfd is registered under this id; real ids start at 1.
constexpr uint64_t kStopId = 0;
}  // namespace

absl::StatusOr<std::unique_ptr<PeerWatcher>> PeerWatcher::Create() {
  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll) return ErrnoStatus("epoll_create1", errno);
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop) return ErrnoStatus("eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kStopId;
  if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, stop.get(), &ev) != 0) {
    return ErrnoStatus("epoll_ctl(ADD, stop eventfd)", errno);
  }
  return std::unique_ptr<PeerWatcher>(new PeerWatcher(std::move(epoll), std::move(stop)));
}

PeerWatcher::PeerWatcher(UniqueFd epoll, UniqueFd stop_event)
    : epoll_(std::move(epoll)), stop_event_(std::move(stop_event)) {
  thread_ = std::thread([this] { Run(); });
}

PeerWatcher::~PeerWatcher() {
  const uint64_t one = 1;
  // A failed write cannot happen on a non-full eventfd we own.
  (void)!::write(stop_event_.get(), &one, sizeof(one));
  thread_.join();
}

absl::StatusOr<PeerWatcher::WatchId> PeerWatcher::Watch(int fd, FdKind kind,
                                                        absl::AnyInvocable<void()> on_death) {
  MutexLock lock(&mu_);
  const WatchId id = next_id_++;
  epoll_event ev{};
  // One shot: a dead peer is reported once, then the fd is disarmed.
  ev.events = EPOLLONESHOT | (kind == FdKind::kSocket ? EPOLLRDHUP : EPOLLIN);
  ev.data.u64 = id;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    return ErrnoStatus("epoll_ctl(ADD, liveness fd)", errno);
  }
  callbacks_.emplace(id, std::move(on_death));
  fds_.emplace(id, fd);
  return id;
}

void PeerWatcher::Unwatch(WatchId id) {
  MutexLock lock(&mu_);
  if (auto it = fds_.find(id); it != fds_.end()) {
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second, nullptr);
    fds_.erase(it);
    callbacks_.erase(id);
  }
  // A callback that unwatches itself (destroying its channel) must not wait
  // for itself; any other thread waits until it has returned.
  if (id != 0 && std::this_thread::get_id() != thread_.get_id()) {
    callback_done_.Wait(&mu_, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return running_ != id; });
  }
}

void PeerWatcher::Run() {
  epoll_event events[32];
  for (;;) {
    const int n = RetryOnEintr([&] { return ::epoll_wait(epoll_.get(), events, 32, -1); });
    if (n < 0) return;  // Only EBADF/EINVAL, i.e. a bug; nothing left to watch.
    for (int i = 0; i < n; ++i) {
      const WatchId id = events[i].data.u64;
      if (id == kStopId) return;
      absl::AnyInvocable<void()> callback;
      {
        MutexLock lock(&mu_);
        auto it = callbacks_.find(id);
        if (it == callbacks_.end()) continue;  // Unwatched after the event fired.
        callback = std::move(it->second);
        callbacks_.erase(it);
        if (auto fd = fds_.find(id); fd != fds_.end()) {
          ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd->second, nullptr);
          fds_.erase(fd);
        }
        running_ = id;
      }
      // Unlocked, so that the callback may Watch and Unwatch.
      callback();
      callback = nullptr;  // Its captures go before Unwatch callers go on.
      MutexLock lock(&mu_);
      running_ = 0;
      callback_done_.SignalAll();
    }
  }
}

PeerWatcher& ProcessPeerWatcher() {
  // Leaked on purpose: channels may be dropped by static destructors or by
  // threads still running at exit.
  static PeerWatcher* watcher = [] {
    absl::StatusOr<std::unique_ptr<PeerWatcher>> created = PeerWatcher::Create();
    if (!created.ok()) {
      std::fprintf(stderr, "sluice: cannot create the process peer watcher: %s\n",
                   created.status().ToString().c_str());
      std::abort();
    }
    return created->release();
  }();
  return *watcher;
}

}  // namespace sluice
