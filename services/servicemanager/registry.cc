#include "services/servicemanager/registry.h"

#include <algorithm>
#include <span>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace sluice {
namespace {

namespace wire = ::sluice::servicemanager::wire;

// Connection ids per ClientGoneEvent, so each stays far below kMaxReplyBytes.
constexpr size_t kIdsPerClientGoneEvent = 4096;

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

std::string Describe(const PeerCredentials& creds) {
  return absl::StrCat("pid ", creds.pid, " uid ", creds.uid, " gid ", creds.gid);
}

Registry::Registry(Limits limits, Outbox& outbox, const Policy& policy,
                   MaterialFactory make_material, const Logger& log)
    : limits_(limits),
      outbox_(outbox),
      policy_(policy),
      make_material_(std::move(make_material)),
      log_(log) {}

Registry::Client* Registry::FindClient(uint64_t connection) {
  auto it = clients_.find(connection);
  return it == clients_.end() ? nullptr : &it->second;
}

void Registry::Reply(uint64_t connection, uint64_t request_id, const absl::Status& status) {
  outbox_.Send(connection, StatusReply(request_id, status));
}

void Registry::AddClient(uint64_t connection, const PeerCredentials& creds, bool acks_connections) {
  Client& client = clients_[connection];
  client.creds = creds;
  client.acks_connections = acks_connections;
}

void Registry::RemoveClient(uint64_t connection) {
  auto it = clients_.find(connection);
  if (it == clients_.end()) return;
  Client client = std::move(it->second);
  clients_.erase(it);
  subscribers_.erase(connection);
  for (uint64_t wait_id : client.waits) DropWait(wait_id);
  // Look-ups it was still to accept fail now (RemoveService below finds only
  // those of names it still owned).
  for (uint64_t record_id : client.unacked) {
    FailPendingLookup(record_id, "went away before accepting the connection");
  }
  for (const std::string& name : client.names) RemoveService(name, "owner connection closed");
  // Tell servers that this client is gone: one event per (server, name)
  // listing every connection, so a client that made thousands of look-ups
  // costs each server one message, not a burst that would swamp its queue.
  std::map<std::pair<uint64_t, std::string>, std::vector<uint64_t>> gone;
  for (uint64_t record_id : client.client_records) {
    auto record = records_.find(record_id);
    if (record == records_.end()) continue;
    gone[{record->second.server, record->second.name}].push_back(record_id);
    ForgetRecord(record_id);
  }
  const wire::Credentials creds = service_wire::CredentialsToWire(client.creds);
  for (const auto& [key, ids] : gone) {
    for (size_t first = 0; first < ids.size(); first += kIdsPerClientGoneEvent) {
      const std::span<const uint64_t> chunk = std::span<const uint64_t>(ids).subspan(
          first, std::min(kIdsPerClientGoneEvent, ids.size() - first));
      flatbuffers::FlatBufferBuilder builder(64 + 8 * chunk.size());
      auto body =
          wire::CreateClientGoneEvent(builder, builder.CreateString(key.second), chunk.front(),
                                      &creds, builder.CreateVector(chunk.data(), chunk.size()));
      service_wire::FinishEnvelope(builder, 0, absl::OkStatus(), wire::Body::ClientGoneEvent,
                                   body.Union());
      outbox_.Send(key.first, Encode(builder));
    }
  }
}

void Registry::Register(uint64_t connection, uint64_t request_id, const std::string& name,
                        const channel_layout::Geometry& geometry, ServiceSchema schema) {
  Client* client = FindClient(connection);
  if (client == nullptr) return;
  if (auto it = services_.find(name); it != services_.end()) {
    return Reply(
        connection, request_id,
        absl::AlreadyExistsError(absl::StrCat("service '", name, "' is already registered by ",
                                              Describe(it->second.owner_creds))));
  }
  if (client->names.size() >= limits_.names_per_connection) {
    return Reply(connection, request_id,
                 absl::ResourceExhaustedError(
                     absl::StrCat("cannot register '", name, "': this connection already owns ",
                                  client->names.size(), " names (the limit)")));
  }
  Service& service = services_[name];
  service.name = name;
  service.owner = connection;
  service.owner_creds = client->creds;
  service.geometry = geometry;
  service.schema = std::move(schema);
  client->names.push_back(name);
  log_.Info("registered '", name, "' for ", Describe(client->creds));
  Reply(connection, request_id, absl::OkStatus());
  AnswerWaitsFor(name);
  NotifyName(service, /*appeared=*/true);
}

void Registry::AnswerWaitsFor(const std::string& name) {
  auto it = waits_by_name_.find(name);
  if (it == waits_by_name_.end()) return;
  std::vector<uint64_t> ids = std::move(it->second);
  waits_by_name_.erase(it);
  for (uint64_t wait_id : ids) {
    auto wait = waits_.find(wait_id);
    if (wait == waits_.end()) continue;
    PendingWait answered = std::move(wait->second);
    waits_.erase(wait);
    wait_deadlines_.erase({answered.deadline, wait_id});
    if (Client* waiter = FindClient(answered.connection)) waiter->waits.erase(wait_id);
    Reply(answered.connection, answered.request_id, absl::OkStatus());
  }
}

void Registry::Unregister(uint64_t connection, uint64_t request_id, const std::string& name) {
  Client* client = FindClient(connection);
  if (client == nullptr) return;
  auto it = services_.find(name);
  if (it == services_.end()) {
    return Reply(connection, request_id,
                 absl::NotFoundError(absl::StrCat("no service named '", name, "'")));
  }
  if (it->second.owner != connection) {
    return Reply(connection, request_id,
                 absl::PermissionDeniedError(absl::StrCat("service '", name, "' is owned by ",
                                                          Describe(it->second.owner_creds),
                                                          ", not by this connection")));
  }
  std::erase(client->names, name);
  RemoveService(name, "unregistered");
  Reply(connection, request_id, absl::OkStatus());
}

absl::StatusOr<channel_layout::Geometry> Registry::GeometryOf(const std::string& name) const {
  auto it = services_.find(name);
  if (it == services_.end()) {
    return absl::NotFoundError(absl::StrCat("no service named '", name, "'"));
  }
  return it->second.geometry;
}

const ServiceSchema* Registry::SchemaOf(const std::string& name) const {
  auto it = services_.find(name);
  return it == services_.end() ? nullptr : &it->second.schema;
}

void Registry::Lookup(uint64_t connection, uint64_t request_id, const std::string& name,
                      const channel_layout::Geometry& geometry) {
  Client* client = FindClient(connection);
  if (client == nullptr) return;
  auto it = services_.find(name);
  if (it == services_.end()) {
    return Reply(connection, request_id,
                 absl::NotFoundError(absl::StrCat("no service named '", name, "'")));
  }
  Service& service = it->second;
  Client* server = FindClient(service.owner);
  if (server == nullptr) {
    return Reply(connection, request_id,
                 absl::UnavailableError(absl::StrCat("the owner of '", name, "' is gone")));
  }
  if (server->acks_connections && server->unacked.size() >= limits_.unacked_connections) {
    return Reply(connection, request_id,
                 absl::ResourceExhaustedError(absl::StrCat(
                     "the owner of '", name, "' (", Describe(service.owner_creds), ") has ",
                     server->unacked.size(), " connections it has not yet accepted")));
  }
  absl::StatusOr<ChannelMaterial> material = make_material_(geometry);
  if (!material.ok()) {
    log_.Error("cannot set up a connection to '", name, "': ", material.status().message());
    return Reply(connection, request_id, material.status());
  }
  const uint64_t record_id = next_record_id_++;
  // Read from the policy now, so a reload applies to every connection made
  // after it and to none made before.
  const uint64_t policy_limit = policy_.MaxRequestSize(name).value_or(0);
  const bool policy_distrusts = !policy_.MayTrust(name, client->creds);
  {
    flatbuffers::FlatBufferBuilder builder(128);
    const wire::Credentials creds = service_wire::CredentialsToWire(client->creds);
    auto body =
        wire::CreateNewConnectionEvent(builder, builder.CreateString(name), record_id, &creds,
                                       material->region_size, policy_limit, policy_distrusts);
    service_wire::FinishEnvelope(builder, 0, absl::OkStatus(), wire::Body::NewConnectionEvent,
                                 body.Union());
    if (!outbox_.Send(service.owner, Encode(builder, std::move(material->server_fds)))) {
      return Reply(connection, request_id,
                   absl::UnavailableError(absl::StrCat("the owner of '", name, "' is gone")));
    }
  }
  if (server->acks_connections) {
    // Answered when the server has the channel open: a server that died, or
    // ran out of descriptors, never hands the client a dead channel.
    server->unacked.insert(record_id);
    pending_lookups_.emplace(
        record_id, PendingLookup{connection, service.owner, request_id, name, service.owner_creds,
                                 material->region_size, std::move(material->client_fds)});
  } else {
    SendLookupReply(connection, request_id, record_id, service.owner_creds, material->region_size,
                    std::move(material->client_fds));
  }
  ++service.total_connections;
  service.records.insert(record_id);
  records_.emplace(record_id, Record{name, service.owner, connection, client->creds, policy_limit,
                                     policy_distrusts});
  client->client_records.push_back(record_id);
  // Bound what a long-lived client can make us remember.
  while (client->client_records.size() > limits_.records_per_client) {
    const uint64_t oldest = client->client_records.front();
    client->client_records.pop_front();
    ForgetRecord(oldest);
  }
  log_.Debug("connection ", record_id, " to '", name, "' for ", Describe(client->creds));
}

void Registry::SendLookupReply(uint64_t client, uint64_t request_id, uint64_t record_id,
                               const PeerCredentials& server, uint64_t region_size,
                               std::vector<UniqueFd> fds) {
  flatbuffers::FlatBufferBuilder builder(128);
  const wire::Credentials owner = service_wire::CredentialsToWire(server);
  auto body = wire::CreateLookupReply(builder, record_id, &owner, region_size);
  service_wire::FinishEnvelope(builder, request_id, absl::OkStatus(), wire::Body::LookupReply,
                               body.Union());
  outbox_.Send(client, Encode(builder, std::move(fds)));
}

void Registry::AcknowledgeConnection(uint64_t connection, uint64_t record_id,
                                     const absl::Status& status) {
  auto it = pending_lookups_.find(record_id);
  if (it == pending_lookups_.end() || it->second.server != connection) return;
  PendingLookup pending = std::move(it->second);
  pending_lookups_.erase(it);
  if (Client* server = FindClient(connection)) server->unacked.erase(record_id);
  if (!status.ok()) {
    log_.Warning("'", pending.name, "' (", Describe(pending.server_creds), ") refused connection ",
                 record_id, ": ", status.message());
    ForgetRecord(record_id);
    return Reply(
        pending.client, pending.request_id,
        absl::Status(status.code(),
                     absl::StrCat("'", pending.name, "' (server ", Describe(pending.server_creds),
                                  ") refused the connection: ", status.message())));
  }
  SendLookupReply(pending.client, pending.request_id, record_id, pending.server_creds,
                  pending.region_size, std::move(pending.fds));
}

void Registry::FailPendingLookup(uint64_t record_id, absl::string_view why) {
  auto it = pending_lookups_.find(record_id);
  if (it == pending_lookups_.end()) return;
  PendingLookup pending = std::move(it->second);
  pending_lookups_.erase(it);
  if (Client* server = FindClient(pending.server)) server->unacked.erase(record_id);
  Reply(pending.client, pending.request_id,
        absl::UnavailableError(absl::StrCat("the owner of '", pending.name, "' (",
                                            Describe(pending.server_creds), ") ", why)));
}

void Registry::ForgetRecord(uint64_t record_id) {
  FailPendingLookup(record_id, "did not accept the connection before it was forgotten");
  auto it = records_.find(record_id);
  if (it == records_.end()) return;
  if (auto service = services_.find(it->second.name);
      service != services_.end() && service->second.owner == it->second.server) {
    service->second.records.erase(record_id);
  }
  records_.erase(it);
}

void Registry::Wait(uint64_t connection, uint64_t request_id, const std::string& name,
                    int64_t timeout_ms, absl::Time now) {
  Client* client = FindClient(connection);
  if (client == nullptr) return;
  if (services_.contains(name)) return Reply(connection, request_id, absl::OkStatus());
  if (timeout_ms == 0) {
    return Reply(
        connection, request_id,
        absl::DeadlineExceededError(absl::StrCat("service '", name, "' is not registered")));
  }
  if (client->waits.size() >= limits_.waits_per_connection) {
    return Reply(connection, request_id,
                 absl::ResourceExhaustedError(absl::StrCat("cannot wait for '", name,
                                                           "': ", client->waits.size(),
                                                           " waits already pending on this "
                                                           "connection")));
  }
  const uint64_t wait_id = next_wait_id_++;
  PendingWait wait{connection, request_id, name,
                   timeout_ms < 0 ? absl::InfiniteFuture() : now + absl::Milliseconds(timeout_ms)};
  if (wait.deadline != absl::InfiniteFuture()) wait_deadlines_.emplace(wait.deadline, wait_id);
  waits_by_name_[name].push_back(wait_id);
  client->waits.insert(wait_id);
  waits_.emplace(wait_id, std::move(wait));
}

void Registry::DropWait(uint64_t wait_id) {
  auto wait = waits_.find(wait_id);
  if (wait == waits_.end()) return;
  wait_deadlines_.erase({wait->second.deadline, wait_id});
  if (auto by_name = waits_by_name_.find(wait->second.name); by_name != waits_by_name_.end()) {
    std::erase(by_name->second, wait_id);
    if (by_name->second.empty()) waits_by_name_.erase(by_name);
  }
  waits_.erase(wait);
}

void Registry::ExpireWaits(absl::Time now) {
  while (!wait_deadlines_.empty() && wait_deadlines_.begin()->first <= now) {
    const uint64_t wait_id = wait_deadlines_.begin()->second;
    auto it = waits_.find(wait_id);
    if (it == waits_.end()) {
      wait_deadlines_.erase(wait_deadlines_.begin());
      continue;
    }
    const PendingWait wait = it->second;
    DropWait(wait_id);
    if (Client* client = FindClient(wait.connection)) client->waits.erase(wait_id);
    Reply(wait.connection, wait.request_id,
          absl::DeadlineExceededError(
              absl::StrCat("service '", wait.name, "' did not appear in time")));
  }
}

absl::Time Registry::NextDeadline() const {
  return wait_deadlines_.empty() ? absl::InfiniteFuture() : wait_deadlines_.begin()->first;
}

void Registry::List(uint64_t connection, uint64_t request_id, const std::string& prefix,
                    const std::string& start_after, uint32_t limit) {
  Client* client = FindClient(connection);
  if (client == nullptr) return;
  if (limit == 0 || limit > service_wire::kMaxListPage) limit = service_wire::kMaxListPage;
  flatbuffers::FlatBufferBuilder builder(1024);
  std::vector<flatbuffers::Offset<wire::ServiceInfo>> entries;
  auto it = start_after.empty() || start_after < prefix ? services_.lower_bound(prefix)
                                                        : services_.upper_bound(start_after);
  bool more = false;
  for (; it != services_.end() && absl::StartsWith(it->first, prefix); ++it) {
    // List shows only what the caller could look up; denials are not logged
    // here since nobody asked for those names.
    if (!policy_.Allows(Policy::Action::kLookup, it->first, client->creds)) continue;
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
  outbox_.Send(connection, Encode(builder));
}

void Registry::Info(uint64_t connection, uint64_t request_id, const std::string& name) {
  auto it = services_.find(name);
  if (it == services_.end()) {
    return Reply(connection, request_id,
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
    connections.push_back(wire::CreateConnectionInfo(builder, record_id, &client,
                                                     record->second.policy_distrusts,
                                                     record->second.policy_max_request_size));
  }
  auto connections_offset = builder.CreateVector(connections);
  auto info = ServiceInfoToWire(builder, s.name, s.owner_creds, s.records.size(),
                                s.total_connections, s.geometry);
  auto body =
      wire::CreateInfoReply(builder, info, connections_offset,
                            policy_.MaxRequestSize(s.name).value_or(0), policy_.TrustLine(s.name),
                            /*policy_reported=*/true);
  service_wire::FinishEnvelope(builder, request_id, absl::OkStatus(), wire::Body::InfoReply,
                               body.Union());
  outbox_.Send(connection, Encode(builder));
}

void Registry::DescribeService(uint64_t connection, uint64_t request_id, const std::string& name) {
  auto it = services_.find(name);
  if (it == services_.end()) {
    return Reply(connection, request_id,
                 absl::NotFoundError(absl::StrCat("no service named '", name, "'")));
  }
  const ServiceSchema& schema = it->second.schema;
  if (schema.bfbs.empty()) {
    return Reply(
        connection, request_id,
        absl::NotFoundError(absl::StrCat("service '", name, "' was registered without a schema")));
  }
  flatbuffers::FlatBufferBuilder builder(schema.bfbs.size() + 256);
  auto bytes = builder.CreateVector(reinterpret_cast<const uint8_t*>(schema.bfbs.data()),
                                    schema.bfbs.size());
  auto body = wire::CreateDescribeReply(builder, builder.CreateString(name),
                                        builder.CreateString(schema.interface), bytes, schema.hash);
  service_wire::FinishEnvelope(builder, request_id, absl::OkStatus(), wire::Body::DescribeReply,
                               body.Union());
  outbox_.Send(connection, Encode(builder));
}

void Registry::Subscribe(uint64_t connection, uint64_t request_id, const std::string& prefix,
                         uint64_t subscription_id, bool existing) {
  Client* client = FindClient(connection);
  if (client == nullptr) return;
  if (client->subscriptions.size() >= limits_.subscriptions_per_connection) {
    return Reply(connection, request_id,
                 absl::ResourceExhaustedError(absl::StrCat("this connection already has ",
                                                           client->subscriptions.size(),
                                                           " subscriptions (the limit)")));
  }
  for (const Subscription& s : client->subscriptions) {
    if (s.id == subscription_id) {
      return Reply(
          connection, request_id,
          absl::AlreadyExistsError(absl::StrCat("subscription ", subscription_id, " exists")));
    }
  }
  client->subscriptions.push_back({subscription_id, prefix});
  subscribers_.insert(connection);
  // The snapshot goes before the reply: the client's reader hands events to
  // the handler in order, so once Subscribe() has its reply the handler has
  // seen every name that was there. Changes after this point are ordinary
  // events, so no name is reported twice.
  if (existing) {
    for (auto it = services_.lower_bound(prefix);
         it != services_.end() && absl::StartsWith(it->first, prefix); ++it) {
      if (!policy_.Allows(Policy::Action::kLookup, it->first, client->creds)) continue;
      SendNameEvent(connection, subscription_id, it->second, /*appeared=*/true,
                    /*existing=*/true);
    }
  }
  Reply(connection, request_id, absl::OkStatus());
}

void Registry::SendNameEvent(uint64_t connection, uint64_t subscription_id, const Service& service,
                             bool appeared, bool existing) {
  flatbuffers::FlatBufferBuilder builder(128);
  const wire::Credentials owner = service_wire::CredentialsToWire(service.owner_creds);
  auto body =
      wire::CreateNameEvent(builder, subscription_id,
                            appeared ? wire::NameChange::kAppeared : wire::NameChange::kDisappeared,
                            builder.CreateString(service.name), &owner, existing);
  service_wire::FinishEnvelope(builder, 0, absl::OkStatus(), wire::Body::NameEvent, body.Union());
  outbox_.Send(connection, Encode(builder));
}

void Registry::Unsubscribe(uint64_t connection, uint64_t request_id, uint64_t subscription_id) {
  Client* client = FindClient(connection);
  if (client == nullptr) return;
  auto it = std::find_if(client->subscriptions.begin(), client->subscriptions.end(),
                         [&](const Subscription& s) { return s.id == subscription_id; });
  if (it == client->subscriptions.end()) {
    return Reply(connection, request_id,
                 absl::NotFoundError(absl::StrCat("no subscription ", subscription_id)));
  }
  client->subscriptions.erase(it);
  if (client->subscriptions.empty()) subscribers_.erase(connection);
  Reply(connection, request_id, absl::OkStatus());
}

void Registry::NotifyName(const Service& service, bool appeared) {
  for (uint64_t id : subscribers_) {
    Client* client = FindClient(id);
    if (client == nullptr) continue;
    for (const Subscription& s : client->subscriptions) {
      if (!absl::StartsWith(service.name, s.prefix)) continue;
      if (!policy_.Allows(Policy::Action::kLookup, service.name, client->creds)) continue;
      SendNameEvent(id, s.id, service, appeared, /*existing=*/false);
    }
  }
}

void Registry::RemoveService(const std::string& name, absl::string_view why) {
  auto it = services_.find(name);
  if (it == services_.end()) return;
  Service service = std::move(it->second);
  services_.erase(it);
  // The channels themselves see the owner's death through their liveness
  // sockets; here we only forget them.
  for (uint64_t record_id : service.records) {
    FailPendingLookup(record_id,
                      absl::StrCat("went away (", why, ") before accepting the connection"));
    records_.erase(record_id);
  }
  log_.Info("'", name, "' freed (", why, ")");
  NotifyName(service, /*appeared=*/false);
}

Registry::Counts Registry::counts() const {
  Counts c;
  c.clients = clients_.size();
  c.services = services_.size();
  c.records = records_.size();
  c.pending_lookups = pending_lookups_.size();
  c.waits = waits_.size();
  for (const auto& [id, client] : clients_) c.subscriptions += client.subscriptions.size();
  return c;
}

}  // namespace sluice
