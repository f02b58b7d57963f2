#include "services/servicemanager/daemon.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ipc/base/errno_status.h"
#include "ipc/base/status_macros.h"
#include "services/servicemanager/channel_material.h"

namespace sluice {
namespace {

constexpr uint64_t kListenerId = 1;
constexpr uint64_t kStopId = 2;
constexpr uint64_t kReloadId = 3;
constexpr int kMaxEvents = 64;
constexpr int kAcceptBatch = 64;

// Random and non-zero: a restarted manager (even with the same pid, in a
// new container) never looks like the one before.
uint64_t NewEpoch() {
  uint64_t epoch = 0;
  while (epoch == 0) {
    if (::getrandom(&epoch, sizeof(epoch), 0) != sizeof(epoch)) {
      epoch = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())) ^ ::getpid();
    }
  }
  return epoch;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServiceManagerDaemon>> ServiceManagerDaemon::Create(
    DaemonOptions options) {
  absl::StatusOr<SocketClaim> claimed =
      options.listen_fd >= 0 ? SocketClaim::Adopt(UniqueFd(options.listen_fd))
                             : SocketClaim::Claim(options.socket_path, options.socket_mode);
  SLUICE_ASSIGN_OR_RETURN(SocketClaim claim, std::move(claimed));
  if (options.socket_path.empty()) options.socket_path = claim.path();
  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll) return ErrnoStatus("epoll_create1", errno);
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop) return ErrnoStatus("eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenerId;
  if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, claim.listener(), &ev) != 0) {
    return ErrnoStatus("epoll_ctl(ADD, listener)", errno);
  }
  ev.data.u64 = kStopId;
  if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, stop.get(), &ev) != 0) {
    return ErrnoStatus("epoll_ctl(ADD, stop)", errno);
  }
  UniqueFd reload(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!reload) return ErrnoStatus("eventfd", errno);
  ev.data.u64 = kReloadId;
  if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, reload.get(), &ev) != 0) {
    return ErrnoStatus("epoll_ctl(ADD, reload)", errno);
  }
  std::optional<Policy> policy = std::move(options.policy);
  if (!options.policy_path.empty()) {
    SLUICE_ASSIGN_OR_RETURN(policy, Policy::Load(options.policy_path, ::geteuid()));
  }
  if (!policy.has_value()) policy = Policy::Default(::geteuid());
  return std::unique_ptr<ServiceManagerDaemon>(
      new ServiceManagerDaemon(std::move(options), *std::move(policy), std::move(claim),
                               std::move(epoll), std::move(stop), std::move(reload)));
}

ServiceManagerDaemon::ServiceManagerDaemon(DaemonOptions options, Policy policy, SocketClaim claim,
                                           UniqueFd epoll, UniqueFd stop_event,
                                           UniqueFd reload_event)
    : options_(std::move(options)),
      policy_(std::move(policy)),
      owned_logger_(options_.logger == nullptr ? std::make_unique<Logger>(Logger::Level::kWarning)
                                               : nullptr),
      logger_(options_.logger != nullptr ? options_.logger : owned_logger_.get()),
      claim_(std::move(claim)),
      epoll_(std::move(epoll)),
      stop_event_(std::move(stop_event)),
      reload_event_(std::move(reload_event)),
      reserve_fd_(::open("/dev/null", O_RDONLY | O_CLOEXEC)),
      receive_buffer_(std::make_unique_for_overwrite<std::byte[]>(service_wire::kMaxRequestBytes)),
      outbox_(*this),
      registry_(options_.registry, outbox_, policy_, CreateChannelMaterial, *logger_),
      dispatcher_(options_.requests, NewEpoch(), policy_, registry_, outbox_, *logger_) {
  log().Info("listening on ", options_.socket_path, " (policy: ", policy_.source(), ")");
  LogPolicyWarnings();
}

void ServiceManagerDaemon::LogPolicyWarnings() const {
  for (const std::string& warning : policy_.Lint()) {
    log().Warning(policy_.source(), ": ", warning);
  }
}

void ServiceManagerDaemon::Reload() {
  const uint64_t one = 1;
  (void)!::write(reload_event_.get(), &one, sizeof(one));
}

void ServiceManagerDaemon::ReloadPolicy() {
  uint64_t count;
  (void)!::read(reload_event_.get(), &count, sizeof(count));
  if (options_.policy_path.empty()) {
    log().Info("reload requested, but the policy is not from a file; nothing to do");
    return;
  }
  absl::StatusOr<Policy> policy = Policy::Load(options_.policy_path, ::geteuid());
  if (!policy.ok()) {
    // The message names the file, the line and the reason.
    log().Error("policy reload failed, keeping the old policy: ", policy.status().message());
    return;
  }
  // The registry and dispatcher hold references to policy_: they see the
  // new rules from the next request on.
  policy_ = *std::move(policy);
  log().Info("policy reloaded from ", policy_.source(), " (", policy_.rule_count(), " rules)");
  LogPolicyWarnings();
}

ServiceManagerDaemon::~ServiceManagerDaemon() = default;

void ServiceManagerDaemon::Stop() {
  const uint64_t one = 1;
  (void)!::write(stop_event_.get(), &one, sizeof(one));
}

ServiceManagerDaemon::Stats ServiceManagerDaemon::stats() const {
  Stats s;
  s.connections = stat_connections_.load();
  s.services = stat_services_.load();
  s.records = stat_records_.load();
  s.waits = stat_waits_.load();
  s.subscriptions = stat_subscriptions_.load();
  s.queued_messages = stat_queued_.load();
  s.accepted = stat_accepted_.load();
  s.rejected = stat_rejected_.load();
  return s;
}

void ServiceManagerDaemon::PublishStats() {
  size_t queued = 0;
  for (const auto& [id, conn] : connections_) queued += conn->out.size();
  const Registry::Counts counts = registry_.counts();
  stat_connections_ = connections_.size();
  stat_services_ = counts.services;
  stat_records_ = counts.records;
  stat_waits_ = counts.waits;
  stat_subscriptions_ = counts.subscriptions;
  stat_queued_ = queued;
  stat_accepted_ = accepted_;
  stat_rejected_ = rejected_;
}

absl::Status ServiceManagerDaemon::Run() {
  epoll_event events[kMaxEvents];
  PublishStats();
  for (;;) {
    const int timeout = NextTimeoutMs(absl::Now());
    const int n = ::epoll_wait(epoll_.get(), events, kMaxEvents, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("epoll_wait", errno);
    }
    bool stop = false;
    // A reload signalled before a request arrived must apply to it, even
    // when both come back from the same epoll_wait.
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 == kReloadId) ReloadPolicy();
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t id = events[i].data.u64;
      if (id == kReloadId) continue;
      if (id == kStopId) {
        stop = true;
        continue;
      }
      if (id == kListenerId) {
        AcceptAll();
        continue;
      }
      Connection* conn = Find(id);
      if (conn == nullptr || conn->closing) continue;
      if ((events[i].events & EPOLLOUT) != 0) Flush(*conn);
      if (conn->closing) continue;
      if ((events[i].events & EPOLLIN) != 0) {
        ReadOne(*conn);
      } else if ((events[i].events & (EPOLLHUP | EPOLLERR)) != 0) {
        MarkForClose(*conn, "hung up");
      }
    }
    ProcessCloses();
    const absl::Time now = absl::Now();
    ExpireHellos(now);
    registry_.ExpireWaits(now);
    ProcessCloses();
    PublishStats();
    if (stop) break;
  }
  log().Info("stopping: closing ", connections_.size(), " connections");
  std::vector<uint64_t> ids;
  for (const auto& [id, conn] : connections_) ids.push_back(id);
  for (uint64_t id : ids) {
    if (Connection* conn = Find(id)) MarkForClose(*conn, "manager stopping");
  }
  ProcessCloses();
  PublishStats();
  return absl::OkStatus();
}

ServiceManagerDaemon::Connection* ServiceManagerDaemon::Find(uint64_t id) {
  auto it = connections_.find(id);
  return it == connections_.end() ? nullptr : it->second.get();
}

int ServiceManagerDaemon::NextTimeoutMs(absl::Time now) const {
  absl::Time next = registry_.NextDeadline();
  if (!hello_deadlines_.empty()) next = std::min(next, hello_deadlines_.begin()->first);
  if (next == absl::InfiniteFuture()) return -1;
  if (next <= now) return 0;
  // Round up, so we never wake just before a deadline and spin.
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(next - now) + 1, 1 << 30));
}

void ServiceManagerDaemon::ExpireHellos(absl::Time now) {
  while (!hello_deadlines_.empty() && hello_deadlines_.begin()->first <= now) {
    const uint64_t id = hello_deadlines_.begin()->second;
    hello_deadlines_.erase(hello_deadlines_.begin());
    if (Connection* conn = Find(id)) MarkForClose(*conn, "sent no Hello in time");
  }
}

void ServiceManagerDaemon::AcceptAll() {
  for (int i = 0; i < kAcceptBatch; ++i) {
    UniqueFd fd(::accept4(claim_.listener(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      const int error = errno;
      if (error == EAGAIN || error == EINTR || error == ECONNABORTED) return;
      if ((error == EMFILE || error == ENFILE) && reserve_fd_) {
        // Out of descriptors: free the reserve to take the connection off the
        // backlog and refuse it, rather than spin on a readable listener.
        reserve_fd_.reset();
        UniqueFd doomed(::accept4(claim_.listener(), nullptr, nullptr, SOCK_CLOEXEC));
        doomed.reset();
        reserve_fd_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        ++rejected_;
        const absl::Time now = absl::Now();
        if (now - last_reject_log_ > absl::Seconds(1)) {
          last_reject_log_ = now;
          log().Warning("out of file descriptors; refusing connections (", rejected_,
                        " refused so far)");
        }
        continue;
      }
      log().Error("accept4: ", ErrnoStatus("accept4", error).message());
      return;
    }
    if (connections_.size() >= options_.max_connections) {
      ++rejected_;
      const absl::Time now = absl::Now();
      if (now - last_reject_log_ > absl::Seconds(1)) {
        last_reject_log_ = now;
        log().Warning("connection limit (", options_.max_connections, ") reached; refusing (",
                      rejected_, " refused so far)");
      }
      continue;  // fd closes here.
    }
    auto creds = GetPeerCredentials(fd.get());
    if (!creds.ok()) {
      log().Warning("dropping connection without credentials: ", creds.status().message());
      continue;
    }
    auto conn = std::make_unique<Connection>(options_.send_queue);
    conn->peer.id = next_connection_id_++;
    conn->peer.creds = *creds;
    conn->fd = std::move(fd);
    conn->hello_deadline = absl::Now() + options_.hello_timeout;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = conn->peer.id;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, conn->fd.get(), &ev) != 0) {
      log().Error(ErrnoStatus("epoll_ctl(ADD, connection)", errno).message());
      continue;
    }
    hello_deadlines_.emplace(conn->hello_deadline, conn->peer.id);
    ++accepted_;
    log().Debug("connection ", conn->peer.id, " from ", Describe(conn->peer.creds));
    connections_.emplace(conn->peer.id, std::move(conn));
  }
}

void ServiceManagerDaemon::ReadOne(Connection& conn) {
  auto message =
      ReceiveMessageInto(conn.fd.get(), {receive_buffer_.get(), service_wire::kMaxRequestBytes});
  if (!message.ok()) {
    if (message.status().code() == absl::StatusCode::kDataLoss) {
      log().Warning("dropping connection from ", Describe(conn.peer.creds), ": ",
                    message.status().message());
    }
    MarkForClose(conn, message.status().message());
    return;
  }
  const bool had_said_hello = conn.peer.said_hello;
  if (absl::Status handled =
          dispatcher_.Handle(conn.peer, message->bytes, message->fds.size(), absl::Now());
      !handled.ok()) {
    log().Warning("dropping connection from ", Describe(conn.peer.creds), ": ", handled.message());
    MarkForClose(conn, handled.message());
    return;
  }
  if (!had_said_hello && conn.peer.said_hello) {
    hello_deadlines_.erase({conn.hello_deadline, conn.peer.id});
  }
}

bool ServiceManagerDaemon::ConnectionOutbox::Send(uint64_t id, OutgoingMessage message) {
  Connection* conn = daemon_.Find(id);
  if (conn == nullptr || conn->closing) return false;
  const absl::Time now = absl::Now();
  switch (conn->out.Send(conn->fd.get(), std::move(message), now)) {
    case SendQueue::Result::kDone:
      return true;
    case SendQueue::Result::kPending:
      daemon_.SetWantOut(*conn, true);
      return !conn->closing;
    case SendQueue::Result::kOverflow:
      daemon_.log().Warning("dropping connection from ", Describe(conn->peer.creds), ": ",
                            conn->out.DescribeOverflow(now));
      daemon_.MarkForClose(*conn, "not reading");
      return false;
    case SendQueue::Result::kFailed:
      daemon_.MarkForClose(*conn, "send failed");
      return false;
  }
  return false;
}

void ServiceManagerDaemon::Flush(Connection& conn) {
  switch (conn.out.Flush(conn.fd.get(), absl::Now())) {
    case SendQueue::Result::kDone:
      SetWantOut(conn, false);
      return;
    case SendQueue::Result::kPending:
      return;
    case SendQueue::Result::kOverflow:
    case SendQueue::Result::kFailed:
      MarkForClose(conn, "send failed");
      return;
  }
}

void ServiceManagerDaemon::SetWantOut(Connection& conn, bool want) {
  if (conn.want_out == want) return;
  epoll_event ev{};
  ev.events = want ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
  ev.data.u64 = conn.peer.id;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, conn.fd.get(), &ev) != 0) {
    MarkForClose(conn, "epoll_ctl(MOD) failed");
    return;
  }
  conn.want_out = want;
}

void ServiceManagerDaemon::MarkForClose(Connection& conn, absl::string_view reason) {
  if (conn.closing) return;
  conn.closing = true;
  to_close_.emplace_back(conn.peer.id, std::string(reason));
}

void ServiceManagerDaemon::ProcessCloses() {
  // Closing one connection can doom others (a failed client-gone send), so
  // loop until the list stays empty.
  while (!to_close_.empty()) {
    auto batch = std::move(to_close_);
    to_close_.clear();
    for (const auto& [id, reason] : batch) {
      if (Connection* conn = Find(id)) {
        log().Debug("closing connection ", id, " (", Describe(conn->peer.creds), "): ", reason);
      }
      CloseConnection(id);
    }
  }
}

void ServiceManagerDaemon::CloseConnection(uint64_t id) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;
  std::unique_ptr<Connection> conn = std::move(it->second);
  connections_.erase(it);
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, conn->fd.get(), nullptr);
  if (!conn->peer.said_hello) hello_deadlines_.erase({conn->hello_deadline, id});
  // Gone from connections_ first, so nothing the registry sends while
  // undoing this connection's state is queued for it.
  registry_.RemoveClient(id);
  // conn (its fd and anything still queued, descriptors included) goes here.
}

}  // namespace sluice
