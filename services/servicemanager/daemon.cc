#include "services/servicemanager/daemon.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "ipc/base/errno_status.h"
#include "ipc/base/status_macros.h"
#include "ipc/channel/channel.h"

namespace sluice {
namespace {

namespace wire = ::sluice::servicemanager::wire;
using service_wire::View;

constexpr uint64_t kListenerId = 1;
constexpr uint64_t kStopId = 2;
constexpr int kMaxEvents = 64;
constexpr int kAcceptBatch = 64;

std::string Describe(const PeerCredentials& creds) {
  return absl::StrCat("pid ", creds.pid, " uid ", creds.uid, " gid ", creds.gid);
}

std::string ParentDir(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// The directory holding the socket must not let anyone else swap the socket
// for their own: owned by us or root, and not writable by others unless
// sticky (like /tmp). Created (mode 0755) if missing.
absl::Status PrepareDirectory(const std::string& dir) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) return ErrnoStatus(absl::StrCat("lstat(", dir, ")"), errno);
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoStatus(absl::StrCat("mkdir(", dir, ")"), errno);
    }
    if (::lstat(dir.c_str(), &st) != 0) {
      return ErrnoStatus(absl::StrCat("lstat(", dir, ")"), errno);
    }
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(dir, " is not a directory"));
  }
  if (st.st_uid != ::geteuid() && st.st_uid != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("socket directory ", dir, " is owned by uid ", st.st_uid));
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("socket directory ", dir, " is writable by others and not sticky"));
  }
  return absl::OkStatus();
}

bool SomeoneListens(const sockaddr_un& addr) {
  UniqueFd probe(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!probe) return false;
  return RetryOnEintr([&] {
           return ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
         }) == 0 ||
         errno == EAGAIN;  // Backlog full: alive, just busy.
}

enum class SendResult { kSent, kWouldBlock, kFailed };

// The daemon sends at most two descriptors per message (region, liveness).
constexpr size_t kMaxSendFds = 2;

// Like SendMessage (ipc/socket), but non-blocking and telling "would block"
// apart from failure, which the shared helper's Status cannot.
SendResult TrySend(int fd, std::span<const std::byte> bytes, const std::vector<UniqueFd>& fds) {
  if (fds.size() > kMaxSendFds) return SendResult::kFailed;
  iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  union {
    cmsghdr header;
    char buffer[CMSG_SPACE(sizeof(int) * kMaxSendFds)];
  } control;
  if (!fds.empty()) {
    std::memset(control.buffer, 0, sizeof(control.buffer));
    int raw[kMaxSendFds] = {};
    for (size_t i = 0; i < fds.size(); ++i) raw[i] = fds[i].get();
    control.header.cmsg_level = SOL_SOCKET;
    control.header.cmsg_type = SCM_RIGHTS;
    control.header.cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(control.buffer + CMSG_LEN(0), raw, sizeof(int) * fds.size());
    msg.msg_control = control.buffer;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
  }
  const ssize_t sent =
      RetryOnEintr([&] { return ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT); });
  if (sent >= 0)
    return static_cast<size_t>(sent) == bytes.size() ? SendResult::kSent : SendResult::kFailed;
  return (errno == EAGAIN || errno == EWOULDBLOCK) ? SendResult::kWouldBlock : SendResult::kFailed;
}

flatbuffers::Offset<wire::ServiceInfo> ServiceInfoToWire(flatbuffers::FlatBufferBuilder& builder,
                                                         const std::string& name,
                                                         const PeerCredentials& owner,
                                                         uint64_t connections, uint64_t total,
                                                         const channel_layout::Geometry& geometry) {
  const wire::Credentials creds = service_wire::CredentialsToWire(owner);
  auto name_offset = builder.CreateString(name);
  auto geometry_offset = service_wire::GeometryToWire(builder, geometry);
  return wire::CreateServiceInfo(builder, name_offset, &creds, connections, total, geometry_offset);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServiceManagerDaemon>> ServiceManagerDaemon::Create(
    DaemonOptions options) {
  const std::string& path = options.socket_path;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "socket path '", path, "' is empty or longer than ", sizeof(addr.sun_path) - 1, " bytes"));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  SLUICE_RETURN_IF_ERROR(PrepareDirectory(ParentDir(path)));

  // The lock decides who owns the path: a crashed daemon's lock is released
  // by the kernel, a live one's is not. The socket probe below also covers a
  // daemon started without the lock file (e.g. an older build).
  const std::string lock_path = absl::StrCat(path, ".lock");
  UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock) return ErrnoStatus(absl::StrCat("open(", lock_path, ")"), errno);
  if (RetryOnEintr([&] { return ::flock(lock.get(), LOCK_EX | LOCK_NB); }) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::AlreadyExistsError(
          absl::StrCat("another service manager is running on ", path, " (holds ", lock_path, ")"));
    }
    return ErrnoStatus(absl::StrCat("flock(", lock_path, ")"), errno);
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " exists and is not a socket; refusing to replace it"));
    }
    if (SomeoneListens(addr)) {
      return absl::AlreadyExistsError(
          absl::StrCat("a live service manager is listening on ", path));
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus(absl::StrCat("unlink(stale socket ", path, ")"), errno);
    }
  } else if (errno != ENOENT) {
    return ErrnoStatus(absl::StrCat("lstat(", path, ")"), errno);
  }

  UniqueFd listener(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listener) return ErrnoStatus("socket(AF_UNIX, SOCK_SEQPACKET)", errno);
  // Bind under a tight umask so the node never exists with looser rights
  // than asked for, then widen it to the configured mode.
  const mode_t old_umask = ::umask(0177);
  const int bound = ::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  const int bind_errno = errno;
  ::umask(old_umask);
  if (bound != 0) return ErrnoStatus(absl::StrCat("bind(", path, ")"), bind_errno);
  if (::chmod(path.c_str(), options.socket_mode) != 0) {
    return ErrnoStatus(absl::StrCat("chmod(", path, ")"), errno);
  }
  if (::lstat(path.c_str(), &st) != 0) return ErrnoStatus(absl::StrCat("lstat(", path, ")"), errno);
  if (::listen(listener.get(), SOMAXCONN) != 0) {
    return ErrnoStatus(absl::StrCat("listen(", path, ")"), errno);
  }
  const std::string pid_text = absl::StrCat(::getpid(), "\n");
  if (::ftruncate(lock.get(), 0) == 0) (void)!::write(lock.get(), pid_text.data(), pid_text.size());

  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll) return ErrnoStatus("epoll_create1", errno);
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop) return ErrnoStatus("eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenerId;
  if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, listener.get(), &ev) != 0) {
    return ErrnoStatus("epoll_ctl(ADD, listener)", errno);
  }
  ev.data.u64 = kStopId;
  if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, stop.get(), &ev) != 0) {
    return ErrnoStatus("epoll_ctl(ADD, stop)", errno);
  }
  Policy policy = options.policy.has_value() ? *options.policy : Policy::Default(::geteuid());
  return std::unique_ptr<ServiceManagerDaemon>(
      new ServiceManagerDaemon(std::move(options), std::move(policy), std::move(listener),
                               std::move(lock), std::move(epoll), std::move(stop), st.st_ino));
}

ServiceManagerDaemon::ServiceManagerDaemon(DaemonOptions options, Policy policy, UniqueFd listener,
                                           UniqueFd lock, UniqueFd epoll, UniqueFd stop_event,
                                           ino_t socket_inode)
    : options_(std::move(options)),
      policy_(std::move(policy)),
      listener_(std::move(listener)),
      lock_(std::move(lock)),
      epoll_(std::move(epoll)),
      stop_event_(std::move(stop_event)),
      reserve_fd_(::open("/dev/null", O_RDONLY | O_CLOEXEC)),
      socket_inode_(socket_inode) {
  if (options_.logger == nullptr) owned_logger_ = std::make_unique<Logger>(Logger::Level::kWarning);
  logger_ = options_.logger != nullptr ? options_.logger : owned_logger_.get();
  log().Info("listening on ", options_.socket_path, " (policy: ", policy_.source(), ")");
}

ServiceManagerDaemon::~ServiceManagerDaemon() {
  // Remove the node only if it is still the one we bound: a successor may
  // already have replaced it.
  struct stat st;
  if (::lstat(options_.socket_path.c_str(), &st) == 0 && st.st_ino == socket_inode_) {
    ::unlink(options_.socket_path.c_str());
  }
}

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
  size_t subscriptions = 0, queued = 0;
  for (const auto& [id, conn] : connections_) {
    subscriptions += conn->subscriptions.size();
    queued += conn->out.size();
  }
  stat_connections_ = connections_.size();
  stat_services_ = services_.size();
  stat_records_ = records_.size();
  stat_waits_ = waits_.size();
  stat_subscriptions_ = subscriptions;
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
    for (int i = 0; i < n; ++i) {
      const uint64_t id = events[i].data.u64;
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
    ExpireDeadlines(absl::Now());
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
  absl::Time next = absl::InfiniteFuture();
  if (!wait_deadlines_.empty()) next = std::min(next, wait_deadlines_.begin()->first);
  if (!hello_deadlines_.empty()) next = std::min(next, hello_deadlines_.begin()->first);
  if (next == absl::InfiniteFuture()) return -1;
  if (next <= now) return 0;
  // Round up, so we never wake just before a deadline and spin.
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(next - now) + 1, 1 << 30));
}

void ServiceManagerDaemon::ExpireDeadlines(absl::Time now) {
  while (!hello_deadlines_.empty() && hello_deadlines_.begin()->first <= now) {
    const uint64_t id = hello_deadlines_.begin()->second;
    hello_deadlines_.erase(hello_deadlines_.begin());
    if (Connection* conn = Find(id)) MarkForClose(*conn, "sent no Hello in time");
  }
  while (!wait_deadlines_.empty() && wait_deadlines_.begin()->first <= now) {
    const uint64_t wait_id = wait_deadlines_.begin()->second;
    wait_deadlines_.erase(wait_deadlines_.begin());
    auto it = waits_.find(wait_id);
    if (it == waits_.end()) continue;
    Wait wait = std::move(it->second);
    waits_.erase(it);
    if (Connection* conn = Find(wait.connection)) {
      conn->waits.erase(wait_id);
      ReplyStatus(*conn, wait.request_id,
                  absl::DeadlineExceededError(
                      absl::StrCat("service '", wait.name, "' did not appear in time")));
    }
  }
}

void ServiceManagerDaemon::AcceptAll() {
  for (int i = 0; i < kAcceptBatch; ++i) {
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      const int error = errno;
      if (error == EAGAIN || error == EINTR || error == ECONNABORTED) return;
      if ((error == EMFILE || error == ENFILE) && reserve_fd_) {
        // Out of descriptors: free the reserve to take the connection off the
        // backlog and refuse it, rather than spin on a readable listener.
        reserve_fd_.reset();
        UniqueFd doomed(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
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
    auto conn = std::make_unique<Connection>();
    conn->id = next_connection_id_++;
    conn->fd = std::move(fd);
    conn->creds = *creds;
    conn->hello_deadline = absl::Now() + options_.hello_timeout;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = conn->id;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, conn->fd.get(), &ev) != 0) {
      log().Error(ErrnoStatus("epoll_ctl(ADD, connection)", errno).message());
      continue;
    }
    hello_deadlines_.emplace(conn->hello_deadline, conn->id);
    ++accepted_;
    log().Debug("connection ", conn->id, " from ", Describe(conn->creds));
    connections_.emplace(conn->id, std::move(conn));
  }
}

void ServiceManagerDaemon::ReadOne(Connection& conn) {
  auto message = ReceiveMessage(conn.fd.get(), service_wire::kMaxRequestBytes);
  if (!message.ok()) {
    if (message.status().code() == absl::StatusCode::kDataLoss) {
      log().Warning("dropping connection from ", Describe(conn.creds), ": ",
                    message.status().message());
    }
    MarkForClose(conn, message.status().message());
    return;
  }
  if (!message->fds.empty()) {
    log().Warning("dropping connection from ", Describe(conn.creds),
                  ": request carried file descriptors");
    MarkForClose(conn, "request carried file descriptors");
    return;
  }
  auto envelope = service_wire::VerifyEnvelope(message->bytes);
  // Request id 0 is for answers to events (ConnectionAck), never requests.
  if (!envelope.ok() ||
      ((*envelope)->request_id() == 0) != ((*envelope)->body_type() == wire::Body::ConnectionAck)) {
    // Malformed input closes the connection (docs/error-handling.md): after
    // garbage we cannot trust where the next message starts to make sense.
    log().Warning("dropping connection from ", Describe(conn.creds), ": malformed request (",
                  message->bytes.size(), " bytes)");
    MarkForClose(conn, "malformed request");
    return;
  }
  HandleRequest(conn, **envelope);
}

void ServiceManagerDaemon::HandleRequest(Connection& conn, const wire::Envelope& envelope) {
  const uint64_t id = envelope.request_id();
  if (!conn.hello) {
    const auto* hello = envelope.body_as_HelloRequest();
    if (hello == nullptr) {
      ReplyStatus(conn, id, absl::FailedPreconditionError("the first request must be Hello"));
      MarkForClose(conn, "first request was not Hello");
      return;
    }
    if (hello->protocol_version() != static_cast<uint32_t>(wire::ProtocolVersion::kCurrent)) {
      ReplyStatus(conn, id,
                  absl::FailedPreconditionError(absl::StrCat(
                      "protocol version ", hello->protocol_version(), " is not supported (want ",
                      static_cast<uint32_t>(wire::ProtocolVersion::kCurrent), ")")));
      MarkForClose(conn, "protocol version mismatch");
      return;
    }
    conn.hello = true;
    conn.acks_connections = hello->acknowledges_connections();
    hello_deadlines_.erase({conn.hello_deadline, conn.id});
    flatbuffers::FlatBufferBuilder builder(64);
    auto body = wire::CreateHelloReply(
        builder, static_cast<uint32_t>(wire::ProtocolVersion::kCurrent), ::getpid());
    service_wire::FinishEnvelope(builder, id, absl::OkStatus(), wire::Body::HelloReply,
                                 body.Union());
    Send(conn, builder);
    return;
  }
  // The verifier accepts a union whose value is absent (a null table is a
  // valid FlatBuffer), so a body_type naming a request says nothing about
  // whether its table is there. Such a request is malformed, not a request
  // with default fields: every handler below may assume its table exists.
  if (envelope.body_type() != wire::Body::NONE && envelope.body() == nullptr) {
    log().Warning("dropping connection from ", Describe(conn.creds), ": request kind ",
                  static_cast<int>(envelope.body_type()), " without a body");
    ReplyStatus(
        conn, id,
        absl::DataLossError(absl::StrCat("request kind ", static_cast<int>(envelope.body_type()),
                                         " has no body; closing the connection")));
    MarkForClose(conn, "request without a body");
    return;
  }
  switch (envelope.body_type()) {
    case wire::Body::RegisterRequest:
      return HandleRegister(conn, id, *envelope.body_as_RegisterRequest());
    case wire::Body::UnregisterRequest:
      return HandleUnregister(conn, id, *envelope.body_as_UnregisterRequest());
    case wire::Body::LookupRequest:
      return HandleLookup(conn, id, *envelope.body_as_LookupRequest());
    case wire::Body::WaitRequest:
      return HandleWait(conn, id, *envelope.body_as_WaitRequest());
    case wire::Body::ListRequest:
      return HandleList(conn, id, *envelope.body_as_ListRequest());
    case wire::Body::InfoRequest:
      return HandleInfo(conn, id, *envelope.body_as_InfoRequest());
    case wire::Body::SubscribeRequest:
      return HandleSubscribe(conn, id, *envelope.body_as_SubscribeRequest());
    case wire::Body::ConnectionAck:
      return HandleConnectionAck(conn, *envelope.body_as_ConnectionAck());
    case wire::Body::UnsubscribeRequest: {
      const uint64_t sub = envelope.body_as_UnsubscribeRequest()->subscription_id();
      auto it = std::find_if(conn.subscriptions.begin(), conn.subscriptions.end(),
                             [&](const Subscription& s) { return s.id == sub; });
      if (it == conn.subscriptions.end()) {
        return ReplyStatus(conn, id, absl::NotFoundError(absl::StrCat("no subscription ", sub)));
      }
      conn.subscriptions.erase(it);
      if (conn.subscriptions.empty()) subscribers_.erase(conn.id);
      return ReplyStatus(conn, id, absl::OkStatus());
    }
    default:
      return ReplyStatus(conn, id,
                         absl::UnimplementedError(
                             absl::StrCat("request kind ", static_cast<int>(envelope.body_type()),
                                          " is not a request this manager serves")));
  }
}

absl::Status ServiceManagerDaemon::Check(Policy::Action action, absl::string_view name,
                                         const Connection& conn) {
  if (policy_.Allows(action, name, conn.creds)) return absl::OkStatus();
  log().Warning("denied: ", ActionName(action), " of '", name, "' by ", Describe(conn.creds),
                " (policy: ", policy_.source(), ")");
  return absl::PermissionDeniedError(absl::StrCat("uid ", conn.creds.uid, " gid ", conn.creds.gid,
                                                  " may not ", ActionName(action), " '", name,
                                                  "' (service manager policy)"));
}

void ServiceManagerDaemon::HandleRegister(Connection& conn, uint64_t request_id,
                                          const wire::RegisterRequest& request) {
  const std::string name(View(request.name()));
  if (absl::Status valid = service_wire::ValidateName(name); !valid.ok()) {
    return ReplyStatus(conn, request_id, valid);
  }
  if (absl::Status allowed = Check(Policy::Action::kRegister, name, conn); !allowed.ok()) {
    return ReplyStatus(conn, request_id, allowed);
  }
  if (auto it = services_.find(name); it != services_.end()) {
    return ReplyStatus(
        conn, request_id,
        absl::AlreadyExistsError(absl::StrCat("service '", name, "' is already registered by ",
                                              Describe(it->second.owner_creds))));
  }
  if (conn.names.size() >= options_.max_names_per_connection) {
    return ReplyStatus(conn, request_id,
                       absl::ResourceExhaustedError(absl::StrCat(
                           "cannot register '", name, "': this connection already owns ",
                           conn.names.size(), " names (the limit)")));
  }
  const channel_layout::Geometry geometry =
      service_wire::MergeGeometry(options_.default_geometry, request.geometry());
  auto plan = channel_layout::PlanRegion(geometry);
  if (!plan.ok()) {
    return ReplyStatus(conn, request_id,
                       absl::InvalidArgumentError(absl::StrCat("bad geometry for '", name,
                                                               "': ", plan.status().message())));
  }
  if (plan->region_size > options_.max_region_size) {
    return ReplyStatus(conn, request_id,
                       absl::InvalidArgumentError(absl::StrCat(
                           "geometry for '", name, "' needs a ", plan->region_size,
                           "-byte region; the manager's limit is ", options_.max_region_size)));
  }
  Service& service = services_[name];
  service.name = name;
  service.owner = conn.id;
  service.owner_creds = conn.creds;
  service.geometry = geometry;
  conn.names.push_back(name);
  log().Info("registered '", name, "' for ", Describe(conn.creds));
  ReplyStatus(conn, request_id, absl::OkStatus());

  if (auto it = waits_by_name_.find(name); it != waits_by_name_.end()) {
    std::vector<uint64_t> ids = std::move(it->second);
    waits_by_name_.erase(it);
    for (uint64_t wait_id : ids) {
      auto wait = waits_.find(wait_id);
      if (wait == waits_.end()) continue;
      wait_deadlines_.erase({wait->second.deadline, wait_id});
      if (Connection* waiter = Find(wait->second.connection)) {
        waiter->waits.erase(wait_id);
        ReplyStatus(*waiter, wait->second.request_id, absl::OkStatus());
      }
      waits_.erase(wait);
    }
  }
  NotifyName(service, /*appeared=*/true);
}

void ServiceManagerDaemon::HandleUnregister(Connection& conn, uint64_t request_id,
                                            const wire::UnregisterRequest& request) {
  const std::string name(View(request.name()));
  auto it = services_.find(name);
  if (it == services_.end()) {
    return ReplyStatus(conn, request_id,
                       absl::NotFoundError(absl::StrCat("no service named '", name, "'")));
  }
  if (it->second.owner != conn.id) {
    return ReplyStatus(conn, request_id,
                       absl::PermissionDeniedError(absl::StrCat("service '", name, "' is owned by ",
                                                                Describe(it->second.owner_creds),
                                                                ", not by this connection")));
  }
  conn.names.erase(std::find(conn.names.begin(), conn.names.end(), name));
  RemoveService(name, "unregistered");
  ReplyStatus(conn, request_id, absl::OkStatus());
}

void ServiceManagerDaemon::HandleLookup(Connection& conn, uint64_t request_id,
                                        const wire::LookupRequest& request) {
  const std::string name(View(request.name()));
  if (absl::Status valid = service_wire::ValidateName(name); !valid.ok()) {
    return ReplyStatus(conn, request_id, valid);
  }
  if (absl::Status allowed = Check(Policy::Action::kLookup, name, conn); !allowed.ok()) {
    return ReplyStatus(conn, request_id, allowed);
  }
  auto it = services_.find(name);
  if (it == services_.end()) {
    return ReplyStatus(conn, request_id,
                       absl::NotFoundError(absl::StrCat("no service named '", name, "'")));
  }
  Service& service = it->second;
  Connection* server = Find(service.owner);
  if (server == nullptr || server->closing) {
    return ReplyStatus(conn, request_id,
                       absl::UnavailableError(absl::StrCat("the owner of '", name, "' is gone")));
  }
  if (server->acks_connections && server->unacked.size() >= options_.max_unacked_connections) {
    return ReplyStatus(conn, request_id,
                       absl::ResourceExhaustedError(absl::StrCat(
                           "the owner of '", name, "' (", Describe(service.owner_creds), ") has ",
                           server->unacked.size(), " connections it has not yet accepted")));
  }
  const channel_layout::Geometry geometry =
      service_wire::MergeGeometry(service.geometry, request.geometry());
  auto plan = channel_layout::PlanRegion(geometry);
  if (!plan.ok()) {
    return ReplyStatus(conn, request_id,
                       absl::InvalidArgumentError(absl::StrCat("bad geometry for '", name,
                                                               "': ", plan.status().message())));
  }
  if (plan->region_size > options_.max_region_size) {
    return ReplyStatus(conn, request_id,
                       absl::InvalidArgumentError(absl::StrCat(
                           "geometry for '", name, "' needs a ", plan->region_size,
                           "-byte region; the manager's limit is ", options_.max_region_size)));
  }
  auto region = CreateChannelRegion(geometry);
  if (!region.ok()) {
    log().Error("cannot create a region for '", name, "': ", region.status().message());
    return ReplyStatus(conn, request_id, region.status());
  }
  auto server_region_fd = region->DuplicateFd();
  auto pair = SeqPacketPair();
  if (!server_region_fd.ok() || !pair.ok()) {
    const absl::Status error = !server_region_fd.ok() ? server_region_fd.status() : pair.status();
    log().Error("cannot set up a connection to '", name, "': ", error.message());
    return ReplyStatus(conn, request_id, error);
  }
  auto client_region_fd = region->DuplicateFd();
  if (!client_region_fd.ok()) return ReplyStatus(conn, request_id, client_region_fd.status());
  const uint64_t region_size = region->size();

  const uint64_t record_id = next_record_id_++;
  {
    flatbuffers::FlatBufferBuilder builder(128);
    const wire::Credentials client = service_wire::CredentialsToWire(conn.creds);
    auto body = wire::CreateNewConnectionEvent(builder, builder.CreateString(name), record_id,
                                               &client, region_size);
    service_wire::FinishEnvelope(builder, 0, absl::OkStatus(), wire::Body::NewConnectionEvent,
                                 body.Union());
    std::vector<UniqueFd> fds;
    fds.push_back(*std::move(server_region_fd));
    fds.push_back(std::move(pair->second));
    Send(*server, builder, std::move(fds));
  }
  if (server->closing) {
    return ReplyStatus(conn, request_id,
                       absl::UnavailableError(absl::StrCat("the owner of '", name, "' is gone")));
  }
  std::vector<UniqueFd> client_fds;
  client_fds.push_back(*std::move(client_region_fd));
  client_fds.push_back(std::move(pair->first));
  if (server->acks_connections) {
    // Answered when the server has the channel open: a server that died, or
    // ran out of descriptors, never hands the client a dead channel.
    server->unacked.insert(record_id);
    pending_lookups_.emplace(
        record_id, PendingLookup{conn.id, server->id, request_id, name, service.owner_creds,
                                 region_size, std::move(client_fds)});
  } else {
    SendLookupReply(conn, request_id, record_id, service.owner_creds, region_size,
                    std::move(client_fds));
  }
  ++service.total_connections;
  service.records.insert(record_id);
  records_.emplace(record_id, Record{name, server->id, conn.id, conn.creds});
  conn.client_records.push_back(record_id);
  // Bound what a long-lived client can make us remember.
  while (conn.client_records.size() > options_.max_records_per_client) {
    const uint64_t oldest = conn.client_records.front();
    conn.client_records.pop_front();
    ForgetRecord(oldest);
  }
  log().Debug("connection ", record_id, " to '", name, "' for ", Describe(conn.creds));
}

void ServiceManagerDaemon::SendLookupReply(Connection& client, uint64_t request_id,
                                           uint64_t record_id, const PeerCredentials& server,
                                           uint64_t region_size, std::vector<UniqueFd> fds) {
  flatbuffers::FlatBufferBuilder builder(128);
  const wire::Credentials owner = service_wire::CredentialsToWire(server);
  auto body = wire::CreateLookupReply(builder, record_id, &owner, region_size);
  service_wire::FinishEnvelope(builder, request_id, absl::OkStatus(), wire::Body::LookupReply,
                               body.Union());
  Send(client, builder, std::move(fds));
}

void ServiceManagerDaemon::HandleConnectionAck(Connection& conn, const wire::ConnectionAck& ack) {
  auto it = pending_lookups_.find(ack.connection_id());
  // Not pending (its client already left) or not this server's: nothing to
  // do, and nothing to answer (acks get no reply).
  if (it == pending_lookups_.end() || it->second.server != conn.id) return;
  const uint64_t record_id = it->first;
  PendingLookup pending = std::move(it->second);
  pending_lookups_.erase(it);
  conn.unacked.erase(record_id);
  const absl::Status accepted = service_wire::StatusFromWire(ack.status());
  if (!accepted.ok()) {
    log().Warning("'", pending.name, "' (", Describe(conn.creds), ") refused connection ",
                  record_id, ": ", accepted.message());
    ForgetRecord(record_id);
  }
  Connection* client = Find(pending.client);
  if (client == nullptr || client->closing) return;  // Its fds close here.
  if (!accepted.ok()) {
    return ReplyStatus(
        *client, pending.request_id,
        absl::Status(accepted.code(),
                     absl::StrCat("'", pending.name, "' (server ", Describe(pending.server_creds),
                                  ") refused the connection: ", accepted.message())));
  }
  SendLookupReply(*client, pending.request_id, record_id, pending.server_creds, pending.region_size,
                  std::move(pending.fds));
}

void ServiceManagerDaemon::FailPendingLookup(uint64_t record_id, const absl::Status& why) {
  auto it = pending_lookups_.find(record_id);
  if (it == pending_lookups_.end()) return;
  PendingLookup pending = std::move(it->second);
  pending_lookups_.erase(it);
  if (Connection* server = Find(pending.server)) server->unacked.erase(record_id);
  if (Connection* client = Find(pending.client)) {
    ReplyStatus(*client, pending.request_id, why);
  }
}

void ServiceManagerDaemon::ForgetRecord(uint64_t record_id) {
  FailPendingLookup(record_id,
                    absl::UnavailableError("the connection was forgotten before it was accepted"));
  auto it = records_.find(record_id);
  if (it == records_.end()) return;
  if (auto service = services_.find(it->second.name);
      service != services_.end() && service->second.owner == it->second.server) {
    service->second.records.erase(record_id);
  }
  records_.erase(it);
}

void ServiceManagerDaemon::HandleWait(Connection& conn, uint64_t request_id,
                                      const wire::WaitRequest& request) {
  const std::string name(View(request.name()));
  if (absl::Status valid = service_wire::ValidateName(name); !valid.ok()) {
    return ReplyStatus(conn, request_id, valid);
  }
  if (absl::Status allowed = Check(Policy::Action::kLookup, name, conn); !allowed.ok()) {
    return ReplyStatus(conn, request_id, allowed);
  }
  if (services_.contains(name)) return ReplyStatus(conn, request_id, absl::OkStatus());
  const int64_t timeout_ms = request.timeout_ms();
  if (timeout_ms == 0) {
    return ReplyStatus(
        conn, request_id,
        absl::DeadlineExceededError(absl::StrCat("service '", name, "' is not registered")));
  }
  if (conn.waits.size() >= options_.max_waits_per_connection) {
    return ReplyStatus(conn, request_id,
                       absl::ResourceExhaustedError(
                           absl::StrCat("cannot wait for '", name, "': ", conn.waits.size(),
                                        " waits already pending on this connection")));
  }
  const uint64_t wait_id = next_wait_id_++;
  Wait wait{conn.id, request_id, name,
            timeout_ms < 0 ? absl::InfiniteFuture() : absl::Now() + absl::Milliseconds(timeout_ms)};
  if (wait.deadline != absl::InfiniteFuture()) wait_deadlines_.emplace(wait.deadline, wait_id);
  waits_by_name_[name].push_back(wait_id);
  conn.waits.insert(wait_id);
  waits_.emplace(wait_id, std::move(wait));
}

void ServiceManagerDaemon::HandleList(Connection& conn, uint64_t request_id,
                                      const wire::ListRequest& request) {
  const std::string prefix(View(request.prefix()));
  const std::string start_after(View(request.start_after()));
  uint32_t limit = request.limit();
  if (limit == 0 || limit > service_wire::kMaxListPage) limit = service_wire::kMaxListPage;
  flatbuffers::FlatBufferBuilder builder(1024);
  std::vector<flatbuffers::Offset<wire::ServiceInfo>> entries;
  auto it = start_after.empty() || start_after < prefix ? services_.lower_bound(prefix)
                                                        : services_.upper_bound(start_after);
  bool more = false;
  for (; it != services_.end() && absl::StartsWith(it->first, prefix); ++it) {
    // List shows only what the caller could look up; denials are not logged
    // here since nobody asked for those names.
    if (!policy_.Allows(Policy::Action::kLookup, it->first, conn.creds)) continue;
    if (entries.size() == limit) {
      more = true;
      break;
    }
    const Service& s = it->second;
    entries.push_back(ServiceInfoToWire(builder, s.name, s.owner_creds, s.records.size(),
                                        s.total_connections, s.geometry));
  }
  auto body = wire::CreateListReply(builder, builder.CreateVector(entries), more);
  service_wire::FinishEnvelope(builder, request_id, absl::OkStatus(), wire::Body::ListReply,
                               body.Union());
  Send(conn, builder);
}

void ServiceManagerDaemon::HandleInfo(Connection& conn, uint64_t request_id,
                                      const wire::InfoRequest& request) {
  const std::string name(View(request.name()));
  if (absl::Status valid = service_wire::ValidateName(name); !valid.ok()) {
    return ReplyStatus(conn, request_id, valid);
  }
  if (absl::Status allowed = Check(Policy::Action::kLookup, name, conn); !allowed.ok()) {
    return ReplyStatus(conn, request_id, allowed);
  }
  auto it = services_.find(name);
  if (it == services_.end()) {
    return ReplyStatus(conn, request_id,
                       absl::NotFoundError(absl::StrCat("no service named '", name, "'")));
  }
  const Service& s = it->second;
  flatbuffers::FlatBufferBuilder builder(1024);
  std::vector<flatbuffers::Offset<wire::ConnectionInfo>> connections;
  for (uint64_t record_id : s.records) {
    if (connections.size() == service_wire::kMaxInfoConnections) break;
    auto record = records_.find(record_id);
    if (record == records_.end()) continue;
    const wire::Credentials client = service_wire::CredentialsToWire(record->second.client_creds);
    connections.push_back(wire::CreateConnectionInfo(builder, record_id, &client));
  }
  auto connections_offset = builder.CreateVector(connections);
  auto info = ServiceInfoToWire(builder, s.name, s.owner_creds, s.records.size(),
                                s.total_connections, s.geometry);
  auto body = wire::CreateInfoReply(builder, info, connections_offset);
  service_wire::FinishEnvelope(builder, request_id, absl::OkStatus(), wire::Body::InfoReply,
                               body.Union());
  Send(conn, builder);
}

void ServiceManagerDaemon::HandleSubscribe(Connection& conn, uint64_t request_id,
                                           const wire::SubscribeRequest& request) {
  const std::string prefix(View(request.prefix()));
  if (absl::Status valid = service_wire::ValidatePrefix(prefix); !valid.ok()) {
    return ReplyStatus(conn, request_id, valid);
  }
  const uint64_t sub = request.subscription_id();
  if (conn.subscriptions.size() >= options_.max_subscriptions_per_connection) {
    return ReplyStatus(conn, request_id,
                       absl::ResourceExhaustedError(absl::StrCat("this connection already has ",
                                                                 conn.subscriptions.size(),
                                                                 " subscriptions (the limit)")));
  }
  for (const Subscription& s : conn.subscriptions) {
    if (s.id == sub) {
      return ReplyStatus(conn, request_id,
                         absl::AlreadyExistsError(absl::StrCat("subscription ", sub, " exists")));
    }
  }
  conn.subscriptions.push_back({sub, prefix});
  subscribers_.insert(conn.id);
  ReplyStatus(conn, request_id, absl::OkStatus());
}

void ServiceManagerDaemon::NotifyName(const Service& service, bool appeared) {
  for (uint64_t id : subscribers_) {
    Connection* conn = Find(id);
    if (conn == nullptr || conn->closing) continue;
    for (const Subscription& s : conn->subscriptions) {
      if (!absl::StartsWith(service.name, s.prefix)) continue;
      if (!policy_.Allows(Policy::Action::kLookup, service.name, conn->creds)) continue;
      flatbuffers::FlatBufferBuilder builder(128);
      const wire::Credentials owner = service_wire::CredentialsToWire(service.owner_creds);
      auto body = wire::CreateNameEvent(
          builder, s.id, appeared ? wire::NameChange::kAppeared : wire::NameChange::kDisappeared,
          builder.CreateString(service.name), &owner);
      service_wire::FinishEnvelope(builder, 0, absl::OkStatus(), wire::Body::NameEvent,
                                   body.Union());
      Send(*conn, builder);
    }
  }
}

void ServiceManagerDaemon::RemoveService(const std::string& name, absl::string_view why) {
  auto it = services_.find(name);
  if (it == services_.end()) return;
  Service service = std::move(it->second);
  services_.erase(it);
  // The channels themselves see the owner's death through their liveness
  // sockets; here we only forget them.
  for (uint64_t record_id : service.records) {
    FailPendingLookup(
        record_id, absl::UnavailableError(absl::StrCat("the owner of '", name, "' went away (", why,
                                                       ") before accepting the connection")));
    records_.erase(record_id);
  }
  log().Info("'", name, "' freed (", why, ")");
  NotifyName(service, /*appeared=*/false);
}

void ServiceManagerDaemon::ReplyStatus(Connection& conn, uint64_t request_id,
                                       const absl::Status& status) {
  flatbuffers::FlatBufferBuilder builder(128);
  service_wire::FinishEnvelope(builder, request_id, status, wire::Body::NONE, 0);
  Send(conn, builder);
}

void ServiceManagerDaemon::Send(Connection& conn, const flatbuffers::FlatBufferBuilder& builder,
                                std::vector<UniqueFd> fds) {
  if (conn.closing) return;
  const std::span<const std::byte> bytes = service_wire::Bytes(builder);
  if (conn.out.empty()) {
    switch (TrySend(conn.fd.get(), bytes, fds)) {
      case SendResult::kSent:
        return;
      case SendResult::kFailed:
        MarkForClose(conn, "send failed");
        return;
      case SendResult::kWouldBlock:
        break;
    }
  }
  const absl::Time now = absl::Now();
  if (conn.out.empty()) conn.last_drained = now;
  if (conn.queued_bytes + bytes.size() > options_.max_queued_bytes ||
      now - conn.last_drained > options_.stall_timeout) {
    log().Warning("dropping connection from ", Describe(conn.creds), ": ", conn.out.size(),
                  " messages (", conn.queued_bytes, " bytes) queued and it has read none for ",
                  absl::FormatDuration(now - conn.last_drained));
    MarkForClose(conn, "not reading");
    return;
  }
  conn.queued_bytes += bytes.size();
  conn.out.push_back({std::vector<std::byte>(bytes.begin(), bytes.end()), std::move(fds)});
  SetWantOut(conn, true);
}

void ServiceManagerDaemon::Flush(Connection& conn) {
  while (!conn.out.empty()) {
    Outgoing& next = conn.out.front();
    switch (TrySend(conn.fd.get(), next.bytes, next.fds)) {
      case SendResult::kSent:
        conn.queued_bytes -= next.bytes.size();
        conn.out.pop_front();
        conn.last_drained = absl::Now();
        continue;
      case SendResult::kWouldBlock:
        return;
      case SendResult::kFailed:
        MarkForClose(conn, "send failed");
        return;
    }
  }
  SetWantOut(conn, false);
}

void ServiceManagerDaemon::SetWantOut(Connection& conn, bool want) {
  if (conn.want_out == want) return;
  epoll_event ev{};
  ev.events = want ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
  ev.data.u64 = conn.id;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, conn.fd.get(), &ev) != 0) {
    MarkForClose(conn, "epoll_ctl(MOD) failed");
    return;
  }
  conn.want_out = want;
}

void ServiceManagerDaemon::MarkForClose(Connection& conn, absl::string_view reason) {
  if (conn.closing) return;
  conn.closing = true;
  to_close_.emplace_back(conn.id, std::string(reason));
}

void ServiceManagerDaemon::ProcessCloses() {
  // Closing one connection can doom others (a failed client-gone send), so
  // loop until the list stays empty.
  while (!to_close_.empty()) {
    auto batch = std::move(to_close_);
    to_close_.clear();
    for (const auto& [id, reason] : batch) {
      if (Connection* conn = Find(id)) {
        log().Debug("closing connection ", id, " (", Describe(conn->creds), "): ", reason);
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
  if (!conn->hello) hello_deadlines_.erase({conn->hello_deadline, id});
  subscribers_.erase(id);
  for (uint64_t wait_id : conn->waits) {
    auto wait = waits_.find(wait_id);
    if (wait == waits_.end()) continue;
    wait_deadlines_.erase({wait->second.deadline, wait_id});
    if (auto by_name = waits_by_name_.find(wait->second.name); by_name != waits_by_name_.end()) {
      std::erase(by_name->second, wait_id);
      if (by_name->second.empty()) waits_by_name_.erase(by_name);
    }
    waits_.erase(wait);
  }
  // Look-ups it was still to accept fail now (ForgetRecord/RemoveService
  // below only find those of names it owned at the end).
  for (uint64_t record_id : std::vector<uint64_t>(conn->unacked.begin(), conn->unacked.end())) {
    FailPendingLookup(
        record_id, absl::UnavailableError("the server went away before accepting the connection"));
  }
  for (const std::string& name : conn->names) RemoveService(name, "owner connection closed");
  // Tell servers that this client is gone: one event per (server, name)
  // listing every connection, so a client that made thousands of look-ups
  // costs each server one message, not a burst that would swamp its queue.
  std::map<std::pair<uint64_t, std::string>, std::vector<uint64_t>> gone;
  for (uint64_t record_id : conn->client_records) {
    auto record = records_.find(record_id);
    if (record == records_.end()) continue;
    gone[{record->second.server, record->second.name}].push_back(record_id);
    ForgetRecord(record_id);
  }
  const wire::Credentials client = service_wire::CredentialsToWire(conn->creds);
  // Ids per event, so each stays far below kMaxReplyBytes.
  constexpr size_t kIdsPerEvent = 4096;
  for (const auto& [key, ids] : gone) {
    Connection* server = Find(key.first);
    if (server == nullptr) continue;
    for (size_t first = 0; first < ids.size(); first += kIdsPerEvent) {
      const std::span<const uint64_t> chunk =
          std::span<const uint64_t>(ids).subspan(first, std::min(kIdsPerEvent, ids.size() - first));
      flatbuffers::FlatBufferBuilder builder(64 + 8 * chunk.size());
      auto body =
          wire::CreateClientGoneEvent(builder, builder.CreateString(key.second), chunk.front(),
                                      &client, builder.CreateVector(chunk.data(), chunk.size()));
      service_wire::FinishEnvelope(builder, 0, absl::OkStatus(), wire::Body::ClientGoneEvent,
                                   body.Union());
      Send(*server, builder);
    }
  }
  // conn (its fd and anything still queued, descriptors included) goes here.
}

}  // namespace sluice
