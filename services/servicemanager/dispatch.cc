#include "services/servicemanager/dispatch.h"

#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "flatbuffers/reflection.h"
#include "ipc/base/status_macros.h"
#include "services/servicemanager/compatibility.h"

namespace sluice {
namespace {

namespace wire = ::sluice::servicemanager::wire;
using service_wire::View;

}  // namespace

RequestDispatcher::RequestDispatcher(Limits limits, uint64_t epoch, const Policy& policy,
                                     Registry& registry, Outbox& outbox, const Logger& log)
    : limits_(limits),
      epoch_(epoch),
      policy_(policy),
      registry_(registry),
      outbox_(outbox),
      log_(log) {}

void RequestDispatcher::Reply(const Peer& peer, uint64_t request_id, const absl::Status& status) {
  outbox_.Send(peer.id, StatusReply(request_id, status));
}

absl::Status RequestDispatcher::CheckName(const Peer& peer, absl::string_view name,
                                          std::optional<Policy::Action> action) const {
  SLUICE_RETURN_IF_ERROR(service_wire::ValidateName(name));
  if (!action.has_value() || policy_.Allows(*action, name, peer.creds)) return absl::OkStatus();
  log_.Warning("denied: ", ActionName(*action), " of '", name, "' by ", Describe(peer.creds),
               " (policy: ", policy_.source(), ")");
  return absl::PermissionDeniedError(absl::StrCat("uid ", peer.creds.uid, " gid ", peer.creds.gid,
                                                  " may not ", ActionName(*action), " '", name,
                                                  "' (service manager policy)"));
}

absl::StatusOr<ServiceSchema> RequestDispatcher::CheckSchema(
    absl::string_view name, const wire::RegisterRequest& request) const {
  ServiceSchema out;
  if (request.schema() == nullptr || request.schema()->size() == 0) return out;
  auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("schema of '", name, "': ", why));
  };
  if (request.schema()->size() > service_wire::kMaxSchemaBytes) {
    return invalid(absl::StrCat(request.schema()->size(), " bytes; the limit is ",
                                service_wire::kMaxSchemaBytes));
  }
  flatbuffers::Verifier verifier(request.schema()->data(), request.schema()->size(),
                                 /*max_depth=*/64, /*max_tables=*/1000000);
  if (!reflection::VerifySchemaBuffer(verifier)) return invalid("not a binary schema (.bfbs)");
  out.interface = std::string(View(request.interface()));
  const reflection::Schema* schema = reflection::GetSchema(request.schema()->data());
  bool declared = false;
  if (schema->services() != nullptr) {
    for (const reflection::Service* service : *schema->services()) {
      if (service->name() != nullptr &&
          absl::string_view(service->name()->c_str(), service->name()->size()) == out.interface) {
        declared = true;
      }
    }
  }
  if (!declared) {
    return invalid(absl::StrCat("declares no service '", out.interface.substr(0, 255), "'"));
  }
  out.bfbs.assign(reinterpret_cast<const char*>(request.schema()->data()),
                  request.schema()->size());
  out.hash = request.schema_hash();
  return out;
}

absl::Status RequestDispatcher::CheckClientSchema(const std::string& name,
                                                  const wire::LookupRequest& request) const {
  const ServiceSchema* server = registry_.SchemaOf(name);
  if (request.schema() == nullptr || request.schema()->size() == 0 || server == nullptr ||
      server->bfbs.empty()) {
    return absl::OkStatus();  // Nothing to compare: checked per call, as before.
  }
  flatbuffers::Verifier verifier(request.schema()->data(), request.schema()->size(),
                                 /*max_depth=*/64, /*max_tables=*/1000000);
  if (request.schema()->size() > service_wire::kMaxSchemaBytes ||
      !reflection::VerifySchemaBuffer(verifier)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the schema sent to look up '", name, "' is not a binary schema (.bfbs)"));
  }
  const std::string interface = request.interface() != nullptr && request.interface()->size() != 0
                                    ? std::string(View(request.interface()))
                                    : server->interface;
  if (interface != server->interface) {
    return absl::FailedPreconditionError(absl::StrCat("'", name, "' serves ", server->interface,
                                                      ", not ", interface.substr(0, 255)));
  }
  absl::Status compatible =
      CheckCompatible(*reflection::GetSchema(server->bfbs.data()),
                      *reflection::GetSchema(request.schema()->data()), interface);
  if (compatible.ok()) return compatible;
  return absl::FailedPreconditionError(
      absl::StrCat("cannot connect to '", name,
                   "': the client's schema is incompatible: ", compatible.message()));
}

absl::Status RequestDispatcher::CheckGeometry(absl::string_view name,
                                              const channel_layout::Geometry& geometry) const {
  auto plan = channel_layout::PlanRegion(geometry);
  if (!plan.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad geometry for '", name, "': ", plan.status().message()));
  }
  if (channel_layout::ChannelBytes(*plan) > limits_.max_region_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("geometry for '", name, "' needs ", channel_layout::ChannelBytes(*plan),
                     " bytes of regions (control and both arenas); the manager's limit is ",
                     limits_.max_region_size));
  }
  return absl::OkStatus();
}

absl::Status RequestDispatcher::Handle(Peer& peer, std::span<const std::byte> bytes,
                                       size_t fd_count, absl::Time now) {
  if (fd_count != 0) return absl::DataLossError("request carried file descriptors");
  auto verified = service_wire::VerifyEnvelope(bytes);
  if (!verified.ok()) {
    // Malformed input closes the connection (docs/error-handling.md): after
    // garbage we cannot trust where the next message starts to make sense.
    return absl::DataLossError(absl::StrCat("malformed request (", bytes.size(), " bytes)"));
  }
  const wire::Envelope& envelope = **verified;
  const uint64_t id = envelope.request_id();
  // Request id 0 is for answers to events (ConnectionAck), never requests.
  if ((id == 0) != (envelope.body_type() == wire::Body::ConnectionAck)) {
    return absl::DataLossError("request id 0 on a request, or non-zero on an acknowledgement");
  }
  if (!peer.said_hello) return HandleHello(peer, id, envelope);
  // The verifier accepts a union whose value is absent (a null table is a
  // valid FlatBuffer), so a body_type naming a request says nothing about
  // whether its table is there. Such a request is malformed, not a request
  // with default fields: everything below may assume its table exists.
  if (envelope.body_type() != wire::Body::NONE && envelope.body() == nullptr) {
    const std::string why =
        absl::StrCat("request kind ", static_cast<int>(envelope.body_type()), " has no body");
    Reply(peer, id, absl::DataLossError(absl::StrCat(why, "; closing the connection")));
    return absl::DataLossError(why);
  }
  switch (envelope.body_type()) {
    case wire::Body::RegisterRequest: {
      const auto& request = *envelope.body_as_RegisterRequest();
      const std::string name(View(request.name()));
      const channel_layout::Geometry geometry =
          service_wire::MergeGeometry(limits_.default_geometry, request.geometry());
      absl::Status ok = CheckName(peer, name, Policy::Action::kRegister);
      if (ok.ok()) ok = CheckGeometry(name, geometry);
      absl::StatusOr<ServiceSchema> schema = ServiceSchema{};
      if (ok.ok()) schema = CheckSchema(name, request);
      if (ok.ok()) ok = schema.status();
      if (!ok.ok()) {
        Reply(peer, id, ok);
        return absl::OkStatus();
      }
      registry_.Register(peer.id, id, name, geometry, *std::move(schema));
      return absl::OkStatus();
    }
    case wire::Body::UnregisterRequest: {
      const std::string name(View(envelope.body_as_UnregisterRequest()->name()));
      // Ownership, not the policy, decides who may unregister.
      if (absl::Status ok = CheckName(peer, name, std::nullopt); !ok.ok()) {
        Reply(peer, id, ok);
        return absl::OkStatus();
      }
      registry_.Unregister(peer.id, id, name);
      return absl::OkStatus();
    }
    case wire::Body::LookupRequest: {
      const auto& request = *envelope.body_as_LookupRequest();
      const std::string name(View(request.name()));
      absl::Status ok = CheckName(peer, name, Policy::Action::kLookup);
      absl::StatusOr<channel_layout::Geometry> registered = channel_layout::Geometry{};
      if (ok.ok()) registered = registry_.GeometryOf(name);
      if (ok.ok()) ok = registered.status();
      const channel_layout::Geometry geometry =
          registered.ok() ? service_wire::MergeGeometry(*registered, request.geometry())
                          : channel_layout::Geometry{};
      if (ok.ok()) ok = CheckGeometry(name, geometry);
      if (ok.ok()) ok = CheckClientSchema(name, request);
      if (!ok.ok()) {
        Reply(peer, id, ok);
        return absl::OkStatus();
      }
      registry_.Lookup(peer.id, id, name, geometry);
      return absl::OkStatus();
    }
    case wire::Body::WaitRequest: {
      const auto& request = *envelope.body_as_WaitRequest();
      const std::string name(View(request.name()));
      if (absl::Status ok = CheckName(peer, name, Policy::Action::kLookup); !ok.ok()) {
        Reply(peer, id, ok);
        return absl::OkStatus();
      }
      registry_.Wait(peer.id, id, name, request.timeout_ms(), now);
      return absl::OkStatus();
    }
    case wire::Body::ListRequest: {
      const auto& request = *envelope.body_as_ListRequest();
      registry_.List(peer.id, id, std::string(View(request.prefix())),
                     std::string(View(request.start_after())), request.limit());
      return absl::OkStatus();
    }
    case wire::Body::InfoRequest: {
      const std::string name(View(envelope.body_as_InfoRequest()->name()));
      if (absl::Status ok = CheckName(peer, name, Policy::Action::kLookup); !ok.ok()) {
        Reply(peer, id, ok);
        return absl::OkStatus();
      }
      registry_.Info(peer.id, id, name);
      return absl::OkStatus();
    }
    case wire::Body::DescribeRequest: {
      const std::string name(View(envelope.body_as_DescribeRequest()->name()));
      if (absl::Status ok = CheckName(peer, name, Policy::Action::kLookup); !ok.ok()) {
        Reply(peer, id, ok);
        return absl::OkStatus();
      }
      registry_.DescribeService(peer.id, id, name);
      return absl::OkStatus();
    }
    case wire::Body::SubscribeRequest: {
      const auto& request = *envelope.body_as_SubscribeRequest();
      const std::string prefix(View(request.prefix()));
      if (absl::Status ok = service_wire::ValidatePrefix(prefix); !ok.ok()) {
        Reply(peer, id, ok);
        return absl::OkStatus();
      }
      registry_.Subscribe(peer.id, id, prefix, request.subscription_id(), request.existing());
      return absl::OkStatus();
    }
    case wire::Body::UnsubscribeRequest:
      registry_.Unsubscribe(peer.id, id, envelope.body_as_UnsubscribeRequest()->subscription_id());
      return absl::OkStatus();
    case wire::Body::ConnectionAck: {
      const auto& ack = *envelope.body_as_ConnectionAck();
      registry_.AcknowledgeConnection(peer.id, ack.connection_id(),
                                      service_wire::StatusFromWire(ack.status()));
      return absl::OkStatus();  // Acks get no reply.
    }
    default:
      Reply(peer, id,
            absl::UnimplementedError(absl::StrCat("request kind ",
                                                  static_cast<int>(envelope.body_type()),
                                                  " is not a request this manager serves")));
      return absl::OkStatus();
  }
}

absl::Status RequestDispatcher::HandleHello(Peer& peer, uint64_t request_id,
                                            const wire::Envelope& envelope) {
  const auto* hello = envelope.body_as_HelloRequest();
  if (hello == nullptr) {
    Reply(peer, request_id, absl::FailedPreconditionError("the first request must be Hello"));
    return absl::FailedPreconditionError("first request was not Hello");
  }
  const uint32_t want = static_cast<uint32_t>(wire::ProtocolVersion::kCurrent);
  if (hello->protocol_version() != want) {
    Reply(peer, request_id,
          absl::FailedPreconditionError(absl::StrCat("protocol version ", hello->protocol_version(),
                                                     " is not supported (want ", want, ")")));
    return absl::FailedPreconditionError("protocol version mismatch");
  }
  peer.said_hello = true;
  registry_.AddClient(peer.id, peer.creds, hello->acknowledges_connections());
  if (hello->previous_epoch() != 0) {
    log_.Debug(Describe(peer.creds),
               hello->previous_epoch() == epoch_ ? " reconnected" : " is back after a restart");
  }
  flatbuffers::FlatBufferBuilder builder(64);
  auto body = wire::CreateHelloReply(builder, want, ::getpid(), epoch_);
  service_wire::FinishEnvelope(builder, request_id, absl::OkStatus(), wire::Body::HelloReply,
                               body.Union());
  outbox_.Send(peer.id, Encode(builder));
  return absl::OkStatus();
}

}  // namespace sluice
