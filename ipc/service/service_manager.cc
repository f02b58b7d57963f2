#include "ipc/service/service_manager.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "flatbuffers/reflection_generated.h"
#include "ipc/base/errno_status.h"
#include "ipc/base/status_macros.h"
#include "ipc/service/socket_path.h"
#include "ipc/service/wire.h"

namespace sluice {
namespace {

namespace wire = ::sluice::servicemanager::wire;
using service_wire::Bytes;
using service_wire::View;

// Regions the daemon sends must at least hold a header page; the channel
// layer validates the rest.
constexpr uint64_t kMinRegionSize = 4096;

absl::Status WithContext(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  absl::Status out(status.code(), absl::StrCat(context, ": ", status.message()));
  status.ForEachPayload(
      [&](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

absl::StatusOr<UniqueFd> ConnectSocket(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("service manager socket path '", path,
                                                   "' is longer than ", sizeof(addr.sun_path) - 1,
                                                   " bytes"));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoStatus("socket(AF_UNIX, SOCK_SEQPACKET)", errno);
  if (RetryOnEintr([&] {
        return ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
      }) != 0) {
    const int error = errno;
    if (error == ENOENT || error == ECONNREFUSED || error == ENOTDIR) {
      return absl::UnavailableError(absl::StrCat("no service manager listening on ", path, " (",
                                                 strerrorname_np(error), ")"));
    }
    return ErrnoStatus(absl::StrCat("connect(", path, ")"), error);
  }
  return fd;
}

ServiceEntry EntryFromWire(const wire::ServiceInfo& info) {
  ServiceEntry entry;
  entry.name = std::string(View(info.name()));
  entry.owner = service_wire::CredentialsFromWire(info.owner());
  entry.connections = info.connections();
  entry.total_connections = info.total_connections();
  entry.geometry = service_wire::MergeGeometry({}, info.geometry());
  return entry;
}

// The envelope of a reply the reader thread already verified.
const wire::Envelope* EnvelopeOf(const ReceivedMessage& message) {
  return wire::GetEnvelope(message.bytes.data());
}

thread_local const ServiceManager* reader_thread_of = nullptr;

}  // namespace

absl::StatusOr<ServiceManager::Session> ServiceManager::OpenSession(const std::string& path,
                                                                    uint64_t previous_epoch,
                                                                    absl::Duration timeout) {
  SLUICE_ASSIGN_OR_RETURN(UniqueFd socket, ConnectSocket(path));
  Session session;
  SLUICE_ASSIGN_OR_RETURN(session.creds, GetPeerCredentials(socket.get()));
  flatbuffers::FlatBufferBuilder builder(64);
  auto hello =
      wire::CreateHelloRequest(builder, static_cast<uint32_t>(wire::ProtocolVersion::kCurrent),
                               /*acknowledges_connections=*/true, previous_epoch);
  service_wire::FinishEnvelope(builder, kHelloRequestId, absl::OkStatus(), wire::Body::HelloRequest,
                               hello.Union());
  const absl::Status sent = SendMessage(socket.get(), Bytes(builder));
  if (!sent.ok()) return absl::UnavailableError(sent.message());
  // Nothing else arrives before the Hello's reply on a new connection.
  pollfd readable{socket.get(), POLLIN, 0};
  const int64_t timeout_ms = std::max<int64_t>(0, absl::ToInt64Milliseconds(timeout));
  if (RetryOnEintr([&] {
        return ::poll(&readable, 1, static_cast<int>(std::min<int64_t>(timeout_ms, 1 << 30)));
      }) == 0) {
    return absl::DeadlineExceededError("the service manager did not answer Hello in time");
  }
  SLUICE_ASSIGN_OR_RETURN(ReceivedMessage reply,
                          ReceiveMessage(socket.get(), service_wire::kMaxReplyBytes));
  SLUICE_ASSIGN_OR_RETURN(const wire::Envelope* envelope,
                          service_wire::VerifyEnvelope(reply.bytes));
  SLUICE_RETURN_IF_ERROR(service_wire::StatusFromWire(envelope->status()));
  const auto* hello_reply = envelope->body_as_HelloReply();
  if (envelope->request_id() != kHelloRequestId || hello_reply == nullptr) {
    return absl::DataLossError("the service manager's answer to Hello is not a HelloReply");
  }
  session.epoch = hello_reply->epoch();
  session.socket = std::make_shared<UniqueFd>(std::move(socket));
  return session;
}

absl::StatusOr<std::unique_ptr<ServiceManager>> ServiceManager::Connect(
    ServiceManagerOptions options) {
  std::string path = options.socket_path;
  if (path.empty()) {
    SLUICE_ASSIGN_OR_RETURN(path, DefaultServiceManagerSocketPath());
  }
  auto session = OpenSession(path, /*previous_epoch=*/0, options.request_timeout);
  if (!session.ok()) {
    return WithContext(session.status(), absl::StrCat("hello to service manager at ", path));
  }
  PeerWatcher* watcher = options.watcher != nullptr ? options.watcher : &ProcessPeerWatcher();
  return std::unique_ptr<ServiceManager>(
      new ServiceManager(std::move(path), *std::move(session), watcher, std::move(options)));
}

ServiceManager::ServiceManager(std::string path, Session session, PeerWatcher* watcher,
                               ServiceManagerOptions options)
    : path_(std::move(path)),
      watcher_(watcher),
      request_timeout_(options.request_timeout),
      reconnect_(options.reconnect),
      on_replay_error_(std::move(options.on_replay_error)),
      reader_buffer_(std::make_unique_for_overwrite<std::byte[]>(service_wire::kMaxReplyBytes)) {
  {
    MutexLock lock(&mu_);
    socket_ = std::move(session.socket);
    manager_creds_ = session.creds;
    epoch_ = session.epoch;
  }
  reader_ = std::thread([this] { ReaderLoop(); });
}

ServiceManager::~ServiceManager() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    // Wakes the reader's blocking recvmsg with end-of-stream.
    if (socket_ != nullptr) ::shutdown(socket_->get(), SHUT_RDWR);
    wake_reader_.SignalAll();
  }
  reader_.join();
}

absl::Status ServiceManager::health() const {
  MutexLock lock(&mu_);
  return health_;
}

PeerCredentials ServiceManager::manager() const {
  MutexLock lock(&mu_);
  return manager_creds_;
}

uint64_t ServiceManager::manager_epoch() const {
  MutexLock lock(&mu_);
  return epoch_;
}

uint64_t ServiceManager::reconnections() const {
  MutexLock lock(&mu_);
  return reconnections_;
}

uint64_t ServiceManager::manager_restarts() const {
  MutexLock lock(&mu_);
  return restarts_;
}

uint64_t ServiceManager::NextRequestId() {
  MutexLock lock(&mu_);
  return next_request_id_++;
}

absl::Status ServiceManager::CheckNotReaderThread(absl::string_view what) const {
  if (reader_thread_of == this) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " called from a ServiceManager handler: it would wait for the thread running it"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ReceivedMessage> ServiceManager::Request(std::span<const std::byte> bytes,
                                                        uint64_t request_id, absl::Time deadline,
                                                        std::optional<WaitSpec> wait) {
  Pending pending;
  pending.wait = std::move(wait);
  std::shared_ptr<UniqueFd> socket;
  {
    MutexLock lock(&mu_);
    socket = socket_;
    // While reconnecting, a wait is parked (Replay sends it); anything else
    // fails at once rather than hang on a manager that may not come back.
    if (socket == nullptr && !pending.wait.has_value()) return health_;
    if (stopping_) return absl::CancelledError("the ServiceManager is being destroyed");
    pending_.emplace(request_id, &pending);
  }
  if (socket != nullptr) {
    if (absl::Status sent = SendMessage(socket->get(), bytes);
        !sent.ok() && !pending.wait.has_value()) {
      absl::Status gone = absl::UnavailableError(
          absl::StrCat("service manager at ", path_, " went away: ", sent.message()));
      MutexLock lock(&mu_);
      pending_.erase(request_id);
      // The reader thread may not have seen the hang-up yet; say so at once.
      if (socket_ == socket && health_.ok()) health_ = gone;
      return gone;
    }
    // A wait whose send failed stays parked: the reader reconnects and
    // Replay sends it again.
  }
  MutexLock lock(&mu_);
  if (!answered_.WaitUntil(&mu_, &pending.done, deadline)) {
    pending_.erase(request_id);
    return absl::DeadlineExceededError(
        absl::StrCat("service manager at ", path_, " did not answer in time"));
  }
  if (!pending.result.ok()) return pending.result.status();
  SLUICE_RETURN_IF_ERROR(service_wire::StatusFromWire(EnvelopeOf(*pending.result)->status()));
  return std::move(pending.result);
}

void ServiceManager::FailAllPending(const absl::Status& why, bool keep_waits) {
  health_ = why;
  for (auto it = pending_.begin(); it != pending_.end();) {
    Pending* pending = it->second;
    if (keep_waits && pending->wait.has_value()) {
      ++it;
      continue;
    }
    pending->result = why;
    pending->done = true;
    pending_.erase(it++);
  }
  replays_.clear();
  answered_.SignalAll();
}

void ServiceManager::ReaderLoop() {
  reader_thread_of = this;
  for (;;) {
    std::shared_ptr<UniqueFd> socket;
    {
      MutexLock lock(&mu_);
      socket = socket_;
    }
    reader_socket_ = socket->get();
    const absl::Status why = ReadSession(socket->get());
    socket.reset();
    if (!Reconnect(why)) return;
  }
}

bool ServiceManager::Reconnect(const absl::Status& why) {
  {
    MutexLock lock(&mu_);
    socket_ = nullptr;  // Closes it once no sender holds it.
    if (stopping_ || !reconnect_) {
      FailAllPending(why, /*keep_waits=*/false);
      return false;
    }
    FailAllPending(absl::UnavailableError(absl::StrCat(why.message(), "; reconnecting")),
                   /*keep_waits=*/true);
  }
  ForgetPresentNames();
  // Back-off: the first attempt soon (a restart takes milliseconds), then
  // slower, so a manager that stays away costs almost nothing.
  absl::Duration backoff = absl::Milliseconds(5);
  for (;;) {
    uint64_t previous_epoch;
    {
      MutexLock lock(&mu_);
      wake_reader_.WaitUntil(&mu_, &stopping_, absl::Now() + backoff);
      if (stopping_) {
        FailAllPending(absl::CancelledError("the ServiceManager is being destroyed"),
                       /*keep_waits=*/false);
        return false;
      }
      previous_epoch = epoch_;
    }
    backoff = std::min(backoff * 2, absl::Milliseconds(250));
    // Short, so a destructor never waits long for a manager that hangs.
    auto session = OpenSession(path_, previous_epoch, std::min(request_timeout_, absl::Seconds(1)));
    if (!session.ok()) continue;
    const int fd = session->socket->get();
    {
      MutexLock lock(&mu_);
      if (stopping_) return false;
      ++reconnections_;
      if (session->epoch != epoch_) ++restarts_;
      epoch_ = session->epoch;
      manager_creds_ = session->creds;
      socket_ = session->socket;
      health_ = absl::OkStatus();
    }
    reader_socket_ = fd;
    Replay(fd);
    return true;
  }
}

void ServiceManager::ForgetPresentNames() {
  std::vector<std::pair<std::shared_ptr<NameEventHandler>, NameEvent>> events;
  {
    MutexLock lock(&mu_);
    for (auto& [id, subscription] : subscriptions_) {
      for (auto& [name, owner] : subscription.present) {
        events.push_back({subscription.handler, NameEvent{NameChange::kDisappeared, name, owner}});
      }
      subscription.present.clear();
    }
  }
  for (auto& [handler, event] : events) (*handler)(event);
}

void ServiceManager::Replay(int socket) {
  struct Message {
    uint64_t id;
    std::string what;
    flatbuffers::FlatBufferBuilder builder{128};
  };
  std::vector<std::unique_ptr<Message>> messages;
  const absl::Time now = absl::Now();
  {
    MutexLock lock(&mu_);
    for (const auto& [name, registration] : registrations_) {
      if (!registration->confirmed) continue;
      auto m = std::make_unique<Message>();
      m->id = next_request_id_++;
      m->what = absl::StrCat("register '", name, "'");
      BuildRegisterRequest(m->builder, m->id, name, *registration);
      replays_.emplace(m->id, m->what);
      messages.push_back(std::move(m));
    }
    for (const auto& [id, subscription] : subscriptions_) {
      if (!subscription.confirmed) continue;
      auto m = std::make_unique<Message>();
      m->id = next_request_id_++;
      m->what = absl::StrCat("subscribe '", subscription.prefix, "'");
      auto body = wire::CreateSubscribeRequest(
          m->builder, m->builder.CreateString(subscription.prefix), id, /*existing=*/true);
      service_wire::FinishEnvelope(m->builder, m->id, absl::OkStatus(),
                                   wire::Body::SubscribeRequest, body.Union());
      replays_.emplace(m->id, m->what);
      messages.push_back(std::move(m));
    }
    // Parked waits go again, under their own ids, with what is left of
    // their timeout; their callers are still waiting for those ids.
    for (auto& [id, pending] : pending_) {
      if (!pending->wait.has_value()) continue;
      const WaitSpec& wait = *pending->wait;
      const int64_t timeout_ms =
          wait.deadline == absl::InfiniteFuture()
              ? -1
              : std::max<int64_t>(0, absl::ToInt64Milliseconds(wait.deadline - now));
      auto m = std::make_unique<Message>();
      m->id = id;
      auto body =
          wire::CreateWaitRequest(m->builder, m->builder.CreateString(wait.name), timeout_ms);
      service_wire::FinishEnvelope(m->builder, m->id, absl::OkStatus(), wire::Body::WaitRequest,
                                   body.Union());
      messages.push_back(std::move(m));
    }
  }
  // A failure here means this session is already gone; the reader sees it
  // next and reconnects again.
  for (const auto& m : messages) (void)SendMessage(socket, Bytes(m->builder));
}

absl::Status ServiceManager::ReadSession(int socket) {
  for (;;) {
    // Lost descriptors (this process is at RLIMIT_NOFILE) cost only the
    // message that carried them, never the connection to the manager.
    auto received = ReceiveMessageInto(socket, {reader_buffer_.get(), service_wire::kMaxReplyBytes},
                                       LostFds::kKeepMessage);
    if (!received.ok()) {
      return absl::UnavailableError(absl::StrCat("connection to the service manager at ", path_,
                                                 " is closed: ", received.status().message()));
    }
    // Its own bytes, cut to size: a reply outlives the next receive.
    std::optional<ReceivedMessage> message(std::in_place);
    message->bytes.assign(received->bytes.begin(), received->bytes.end());
    message->fds = std::move(received->fds);
    const bool fds_lost = received->fds_lost;
    auto envelope = service_wire::VerifyEnvelope(message->bytes);
    if (!envelope.ok()) {
      // The daemon is trusted to speak the protocol; if it does not, nothing
      // it says can be believed any more: drop the connection (and, if
      // reconnecting, start over with a clean slate).
      ::shutdown(socket, SHUT_RDWR);
      return absl::DataLossError(
          absl::StrCat("service manager at ", path_,
                       " sent a malformed message: ", envelope.status().message()));
    }
    const uint64_t id = (*envelope)->request_id();
    const absl::Status lost_fds = absl::ResourceExhaustedError(
        "out of file descriptors: the descriptors the service manager sent did not arrive "
        "(RLIMIT_NOFILE)");
    if (id == 0) {
      if (fds_lost) {
        // Refuse that one connection, so its client's Lookup fails with the
        // reason instead of getting a channel nobody serves.
        if (const auto* event = (*envelope)->body_as_NewConnectionEvent()) {
          Acknowledge(event->connection_id(), lost_fds);
        }
        continue;
      }
      HandleEvent(*std::move(message));
      continue;
    }
    std::string replayed;
    {
      MutexLock lock(&mu_);
      if (auto replay = replays_.find(id); replay != replays_.end()) {
        replayed = std::move(replay->second);
        replays_.erase(replay);
      } else {
        auto it = pending_.find(id);
        if (it == pending_.end()) continue;  // Its caller timed out; the fds close here.
        if (fds_lost) {
          it->second->result = lost_fds;
        } else {
          it->second->result = *std::move(message);
        }
        it->second->done = true;
        pending_.erase(it);
        answered_.SignalAll();
        continue;
      }
    }
    // A replayed request's reply: only a refusal needs doing anything.
    const absl::Status status = service_wire::StatusFromWire((*envelope)->status());
    if (status.ok()) continue;
    if (absl::StartsWith(replayed, "register '")) {
      const std::string name = replayed.substr(10, replayed.size() - 11);
      MutexLock lock(&mu_);
      registrations_.erase(name);
    }
    if (on_replay_error_) on_replay_error_(replayed, status);
  }
}

void ServiceManager::HandleEvent(ReceivedMessage message) {
  const wire::Envelope* envelope = EnvelopeOf(message);
  // A verified union may still have no value: an event without its table
  // names nobody to deliver it to, so it is dropped (with any fds it carried,
  // which hangs up a half-made channel on its other side).
  if (envelope->body() == nullptr) return;
  switch (envelope->body_type()) {
    case wire::Body::NewConnectionEvent: {
      const auto* event = envelope->body_as_NewConnectionEvent();
      std::shared_ptr<Registration> registration;
      {
        MutexLock lock(&mu_);
        auto it = registrations_.find(View(event->name()));
        if (it != registrations_.end()) registration = it->second;
      }
      // Every outcome is acknowledged: the manager holds the client's
      // LookupReply until then. Refused, the fds close here and the client's
      // Lookup fails with the reason.
      if (registration == nullptr) {
        return Acknowledge(event->connection_id(),
                           absl::NotFoundError(absl::StrCat("this process no longer serves '",
                                                            View(event->name()), "'")));
      }
      if (message.fds.size() != 2) {
        return Acknowledge(event->connection_id(),
                           absl::DataLossError("the new connection came without its descriptors"));
      }
      auto region = Region::Adopt(std::move(message.fds[0]), kMinRegionSize, Region::kMaxSize);
      if (!region.ok()) return Acknowledge(event->connection_id(), region.status());
      ChannelOptions options;
      options.spin = registration->spin;
      options.peer = service_wire::CredentialsFromWire(event->client());
      // The manager's policy narrows the registration's choices, never
      // widens them; the channel publishes the result for the client.
      options.trust_peer = Trusts(registration->trust, options.peer) && !event->distrust_client();
      options.max_message_size = registration->max_request_size;
      if (event->max_request_size() != 0) {
        options.max_message_size = std::min(options.max_message_size, event->max_request_size());
      }
      auto channel =
          ServerChannel::Open(*std::move(region), std::move(message.fds[1]), *watcher_, options);
      if (!channel.ok()) return Acknowledge(event->connection_id(), channel.status());
      Acknowledge(event->connection_id(), absl::OkStatus());
      IncomingConnection connection;
      connection.service = std::string(View(event->name()));
      connection.connection_id = event->connection_id();
      connection.client = options.peer;
      connection.channel = *std::move(channel);
      registration->on_connect(std::move(connection));
      return;
    }
    case wire::Body::ClientGoneEvent: {
      const auto* event = envelope->body_as_ClientGoneEvent();
      std::shared_ptr<Registration> registration;
      {
        MutexLock lock(&mu_);
        auto it = registrations_.find(View(event->name()));
        if (it != registrations_.end()) registration = it->second;
      }
      if (registration == nullptr || !registration->on_client_gone) return;
      const PeerCredentials client = service_wire::CredentialsFromWire(event->client());
      // One event lists every connection of that client (older managers
      // sent one event per connection, in connection_id alone).
      if (event->connection_ids() == nullptr || event->connection_ids()->size() == 0) {
        registration->on_client_gone(View(event->name()), event->connection_id(), client);
        return;
      }
      for (uint64_t connection_id : *event->connection_ids()) {
        registration->on_client_gone(View(event->name()), connection_id, client);
      }
      return;
    }
    case wire::Body::NameEvent: {
      const auto* event = envelope->body_as_NameEvent();
      NameEvent out;
      out.change = event->change() == wire::NameChange::kDisappeared ? NameChange::kDisappeared
                                                                     : NameChange::kAppeared;
      out.name = std::string(View(event->name()));
      out.owner = service_wire::CredentialsFromWire(event->owner());
      out.existing = event->existing();
      std::shared_ptr<NameEventHandler> handler;
      {
        MutexLock lock(&mu_);
        auto it = subscriptions_.find(event->subscription_id());
        if (it == subscriptions_.end()) return;
        handler = it->second.handler;
        if (out.change == NameChange::kAppeared) {
          it->second.present[out.name] = out.owner;
        } else {
          it->second.present.erase(out.name);
        }
      }
      (*handler)(out);
      return;
    }
    default:
      return;  // Unknown events from a newer daemon are ignored.
  }
}

void ServiceManager::Acknowledge(uint64_t connection_id, const absl::Status& status) {
  flatbuffers::FlatBufferBuilder builder(128);
  flatbuffers::Offset<wire::Status> wire_status;
  if (!status.ok()) {
    // Bounded, so the ack stays well inside the manager's request limit.
    const absl::string_view message = status.message().substr(0, 1024);
    wire_status = wire::CreateStatus(builder, static_cast<int>(status.code()),
                                     builder.CreateString(message.data(), message.size()));
  }
  auto body = wire::CreateConnectionAck(builder, connection_id, wire_status);
  service_wire::FinishEnvelope(builder, 0, absl::OkStatus(), wire::Body::ConnectionAck,
                               body.Union());
  // A failure means the manager is gone, which the reader sees next.
  (void)SendMessage(reader_socket_, Bytes(builder));
}

void ServiceManager::BuildRegisterRequest(flatbuffers::FlatBufferBuilder& builder, uint64_t id,
                                          absl::string_view name,
                                          const Registration& registration) {
  flatbuffers::Offset<flatbuffers::String> interface;
  flatbuffers::Offset<flatbuffers::Vector<uint8_t>> schema;
  if (!registration.schema.empty()) {
    interface = builder.CreateString(registration.interface);
    schema = builder.CreateVector(reinterpret_cast<const uint8_t*>(registration.schema.data()),
                                  registration.schema.size());
  }
  auto body =
      wire::CreateRegisterRequest(builder, builder.CreateString(name.data(), name.size()),
                                  service_wire::GeometryToWire(builder, registration.geometry),
                                  interface, schema, registration.schema_hash);
  service_wire::FinishEnvelope(builder, id, absl::OkStatus(), wire::Body::RegisterRequest,
                               body.Union());
}

absl::StatusOr<ServiceDescription> ServiceManager::Describe(absl::string_view name) {
  SLUICE_RETURN_IF_ERROR(CheckNotReaderThread("Describe"));
  const uint64_t id = NextRequestId();
  flatbuffers::FlatBufferBuilder builder(128);
  auto body = wire::CreateDescribeRequest(builder, builder.CreateString(name.data(), name.size()));
  service_wire::FinishEnvelope(builder, id, absl::OkStatus(), wire::Body::DescribeRequest,
                               body.Union());
  SLUICE_ASSIGN_OR_RETURN(ReceivedMessage reply,
                          Request(Bytes(builder), id, absl::Now() + request_timeout_));
  const auto* describe = EnvelopeOf(reply)->body_as_DescribeReply();
  if (describe == nullptr || describe->schema() == nullptr) {
    return absl::DataLossError("service manager's Describe reply has no schema");
  }
  // The manager checked the schema at registration, but it is one more
  // process's bytes: verify before anyone walks them.
  flatbuffers::Verifier verifier(describe->schema()->data(), describe->schema()->size(),
                                 /*max_depth=*/64, /*max_tables=*/1000000);
  if (!reflection::VerifySchemaBuffer(verifier)) {
    return absl::DataLossError(absl::StrCat("the schema of '", name, "' does not verify"));
  }
  ServiceDescription out;
  out.name = std::string(View(describe->name()));
  out.interface = std::string(View(describe->interface()));
  out.schema.assign(reinterpret_cast<const char*>(describe->schema()->data()),
                    describe->schema()->size());
  out.schema_hash = describe->schema_hash();
  return out;
}

absl::Status ServiceManager::Register(absl::string_view name, ConnectionHandler on_connect,
                                      RegisterOptions options) {
  SLUICE_RETURN_IF_ERROR(CheckNotReaderThread("Register"));
  SLUICE_RETURN_IF_ERROR(service_wire::ValidateName(name));
  auto registration = std::make_shared<Registration>();
  registration->on_connect = std::move(on_connect);
  registration->on_client_gone = std::move(options.on_client_gone);
  registration->spin = options.spin;
  registration->trust = options.trust;
  registration->max_request_size = options.max_request_size;
  registration->geometry = options.geometry;
  registration->interface = std::move(options.interface);
  registration->schema.assign(reinterpret_cast<const char*>(options.schema.data()),
                              options.schema.size());
  registration->schema_hash = options.schema_hash;
  uint64_t id;
  {
    // The handler goes in before the request: the first NewConnectionEvent
    // can arrive right behind the reply, before this thread wakes up.
    MutexLock lock(&mu_);
    if (!registrations_.try_emplace(std::string(name), registration).second) {
      return absl::AlreadyExistsError(
          absl::StrCat("service '", name, "' is already registered by this process"));
    }
    id = next_request_id_++;
  }
  flatbuffers::FlatBufferBuilder builder(128 + registration->schema.size());
  BuildRegisterRequest(builder, id, name, *registration);
  auto reply = Request(Bytes(builder), id, absl::Now() + request_timeout_);
  MutexLock lock(&mu_);
  if (!reply.ok()) {
    registrations_.erase(name);
    return reply.status();
  }
  registration->confirmed = true;  // From now on, replayed after a reconnection.
  return absl::OkStatus();
}

absl::Status ServiceManager::Unregister(absl::string_view name) {
  SLUICE_RETURN_IF_ERROR(CheckNotReaderThread("Unregister"));
  const uint64_t id = NextRequestId();
  flatbuffers::FlatBufferBuilder builder(128);
  auto body =
      wire::CreateUnregisterRequest(builder, builder.CreateString(name.data(), name.size()));
  service_wire::FinishEnvelope(builder, id, absl::OkStatus(), wire::Body::UnregisterRequest,
                               body.Union());
  auto reply = Request(Bytes(builder), id, absl::Now() + request_timeout_);
  MutexLock lock(&mu_);
  // Disconnected, no manager holds the name and it will not be replayed:
  // that is what Unregister asked for.
  if (!reply.ok() && socket_ != nullptr) return reply.status();
  registrations_.erase(name);
  return absl::OkStatus();
}

absl::StatusOr<ServiceConnection> ServiceManager::Lookup(absl::string_view name,
                                                         LookupOptions options) {
  SLUICE_RETURN_IF_ERROR(CheckNotReaderThread("Lookup"));
  const uint64_t id = NextRequestId();
  flatbuffers::FlatBufferBuilder builder(128);
  flatbuffers::Offset<wire::Geometry> geometry;
  if (options.geometry.has_value()) {
    geometry = service_wire::GeometryToWire(builder, *options.geometry);
  }
  flatbuffers::Offset<flatbuffers::String> interface;
  flatbuffers::Offset<flatbuffers::Vector<uint8_t>> schema;
  if (!options.schema.empty()) {
    interface = builder.CreateString(options.interface);
    schema = builder.CreateVector(options.schema.data(), options.schema.size());
  }
  auto body = wire::CreateLookupRequest(builder, builder.CreateString(name.data(), name.size()),
                                        geometry, interface, schema);
  service_wire::FinishEnvelope(builder, id, absl::OkStatus(), wire::Body::LookupRequest,
                               body.Union());
  SLUICE_ASSIGN_OR_RETURN(ReceivedMessage reply,
                          Request(Bytes(builder), id, absl::Now() + request_timeout_));
  const auto* lookup = EnvelopeOf(reply)->body_as_LookupReply();
  if (lookup == nullptr || reply.fds.size() != 2) {
    return absl::DataLossError(absl::StrCat("service manager's reply to Lookup('", name,
                                            "') lacks the channel descriptors"));
  }
  SLUICE_ASSIGN_OR_RETURN(Region region,
                          Region::Adopt(std::move(reply.fds[0]), kMinRegionSize, Region::kMaxSize));
  ChannelOptions channel_options;
  channel_options.spin = options.spin;
  channel_options.peer = service_wire::CredentialsFromWire(lookup->server());
  channel_options.trust_peer = Trusts(options.trust, channel_options.peer);
  channel_options.max_message_size = options.max_reply_size;
  ServiceConnection out;
  out.server = channel_options.peer;
  out.connection_id = lookup->connection_id();
  SLUICE_ASSIGN_OR_RETURN(
      out.channel,
      ClientChannel::Open(std::move(region), std::move(reply.fds[1]), *watcher_, channel_options));
  return out;
}

absl::Status ServiceManager::WaitFor(absl::string_view name, absl::Duration timeout) {
  SLUICE_RETURN_IF_ERROR(CheckNotReaderThread("WaitFor"));
  const uint64_t id = NextRequestId();
  const bool forever = timeout == absl::InfiniteDuration();
  const int64_t timeout_ms =
      forever ? -1 : std::max<int64_t>(0, absl::ToInt64Milliseconds(timeout));
  flatbuffers::FlatBufferBuilder builder(128);
  auto body =
      wire::CreateWaitRequest(builder, builder.CreateString(name.data(), name.size()), timeout_ms);
  service_wire::FinishEnvelope(builder, id, absl::OkStatus(), wire::Body::WaitRequest,
                               body.Union());
  // The daemon answers at the deadline; the slack covers its scheduling so
  // the daemon's DEADLINE_EXCEEDED (with the name) is what the caller sees.
  const absl::Time deadline =
      forever ? absl::InfiniteFuture() : absl::Now() + timeout + request_timeout_;
  // The wait's own deadline (no slack) is what Replay shortens it to.
  const absl::Time wait_deadline =
      forever ? absl::InfiniteFuture() : absl::Now() + absl::Milliseconds(timeout_ms);
  auto reply = Request(Bytes(builder), id, deadline, WaitSpec{std::string(name), wait_deadline});
  return reply.status();
}

absl::StatusOr<std::vector<ServiceEntry>> ServiceManager::List(absl::string_view prefix) {
  SLUICE_RETURN_IF_ERROR(CheckNotReaderThread("List"));
  std::vector<ServiceEntry> out;
  std::string start_after;
  for (;;) {
    const uint64_t id = NextRequestId();
    flatbuffers::FlatBufferBuilder builder(256);
    auto body = wire::CreateListRequest(builder, builder.CreateString(prefix.data(), prefix.size()),
                                        builder.CreateString(start_after), 0);
    service_wire::FinishEnvelope(builder, id, absl::OkStatus(), wire::Body::ListRequest,
                                 body.Union());
    SLUICE_ASSIGN_OR_RETURN(ReceivedMessage reply,
                            Request(Bytes(builder), id, absl::Now() + request_timeout_));
    const auto* list = EnvelopeOf(reply)->body_as_ListReply();
    if (list == nullptr) return absl::DataLossError("service manager's List reply has no body");
    size_t added = 0;
    if (list->services() != nullptr) {
      for (const wire::ServiceInfo* info : *list->services()) {
        ServiceEntry entry = EntryFromWire(*info);
        // Pages must move forward, or a buggy daemon could loop us forever.
        if (entry.name <= start_after && !start_after.empty()) {
          return absl::DataLossError("service manager's List pages are out of order");
        }
        out.push_back(std::move(entry));
        ++added;
      }
    }
    if (!list->more() || added == 0) return out;
    start_after = out.back().name;
  }
}

absl::StatusOr<ServiceDetails> ServiceManager::Info(absl::string_view name) {
  SLUICE_RETURN_IF_ERROR(CheckNotReaderThread("Info"));
  const uint64_t id = NextRequestId();
  flatbuffers::FlatBufferBuilder builder(128);
  auto body = wire::CreateInfoRequest(builder, builder.CreateString(name.data(), name.size()));
  service_wire::FinishEnvelope(builder, id, absl::OkStatus(), wire::Body::InfoRequest,
                               body.Union());
  SLUICE_ASSIGN_OR_RETURN(ReceivedMessage reply,
                          Request(Bytes(builder), id, absl::Now() + request_timeout_));
  const auto* info = EnvelopeOf(reply)->body_as_InfoReply();
  if (info == nullptr || info->service() == nullptr) {
    return absl::DataLossError("service manager's Info reply has no body");
  }
  ServiceDetails out;
  out.service = EntryFromWire(*info->service());
  if (info->connections() != nullptr) {
    for (const wire::ConnectionInfo* c : *info->connections()) {
      ServiceDetails::Connection& connection = out.connections.emplace_back();
      connection.connection_id = c->connection_id();
      connection.client = service_wire::CredentialsFromWire(c->client());
      connection.policy_distrusts = c->policy_distrusts();
      if (c->policy_max_request_size() != 0) {
        connection.policy_max_request_size = c->policy_max_request_size();
      }
    }
  }
  out.policy_reported = info->policy_reported();
  if (info->policy_max_request_size() != 0) {
    out.policy_max_request_size = info->policy_max_request_size();
  }
  out.policy_trust_line = info->policy_trust_line();
  return out;
}

absl::StatusOr<SubscriptionId> ServiceManager::Subscribe(absl::string_view prefix,
                                                         NameEventHandler handler) {
  SLUICE_RETURN_IF_ERROR(CheckNotReaderThread("Subscribe"));
  SLUICE_RETURN_IF_ERROR(service_wire::ValidatePrefix(prefix));
  uint64_t id;
  {
    MutexLock lock(&mu_);
    id = next_request_id_++;
    // Request ids are unique per connection, so they double as subscription
    // ids; the handler is in place before any event can name it.
    subscriptions_.emplace(id, Subscription{std::string(prefix),
                                            std::make_shared<NameEventHandler>(std::move(handler)),
                                            /*confirmed=*/false,
                                            {}});
  }
  flatbuffers::FlatBufferBuilder builder(128);
  auto body = wire::CreateSubscribeRequest(
      builder, builder.CreateString(prefix.data(), prefix.size()), id, /*existing=*/true);
  service_wire::FinishEnvelope(builder, id, absl::OkStatus(), wire::Body::SubscribeRequest,
                               body.Union());
  auto reply = Request(Bytes(builder), id, absl::Now() + request_timeout_);
  MutexLock lock(&mu_);
  if (!reply.ok()) {
    subscriptions_.erase(id);
    return reply.status();
  }
  if (auto it = subscriptions_.find(id); it != subscriptions_.end()) it->second.confirmed = true;
  return id;
}

absl::Status ServiceManager::Unsubscribe(SubscriptionId subscription) {
  SLUICE_RETURN_IF_ERROR(CheckNotReaderThread("Unsubscribe"));
  const uint64_t id = NextRequestId();
  flatbuffers::FlatBufferBuilder builder(64);
  auto body = wire::CreateUnsubscribeRequest(builder, subscription);
  service_wire::FinishEnvelope(builder, id, absl::OkStatus(), wire::Body::UnsubscribeRequest,
                               body.Union());
  auto reply = Request(Bytes(builder), id, absl::Now() + request_timeout_);
  MutexLock lock(&mu_);
  subscriptions_.erase(subscription);
  // Disconnected: no manager has it, and it will not be replayed.
  if (!reply.ok() && socket_ == nullptr) return absl::OkStatus();
  return reply.status();
}

}  // namespace sluice
