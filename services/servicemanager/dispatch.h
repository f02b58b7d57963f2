// RequestDispatcher: turns one message from a manager connection into a
// Registry call, after the checks every request shares.
//
//   bytes --verify--> Envelope --Hello?--> body present? --kind-->
//     CheckName (name rules + policy, once for every named request)
//     CheckGeometry (PlanRegion + size limit, once for Register and Lookup)
//     --> Registry
//
// Everything about a message that is malformed (bytes that do not verify,
// descriptors attached, a request id 0, a body_type without a body, no Hello
// first) is decided here, and answered by closing the connection. Nothing a
// peer sends can reach a CHECK or a null dereference past this class.
//
// One thread (the daemon's loop). Constructible in tests and fuzzers with a
// fake Outbox.
#ifndef SLUICE_SERVICES_SERVICEMANAGER_DISPATCH_H_
#define SLUICE_SERVICES_SERVICEMANAGER_DISPATCH_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "ipc/channel/layout.h"
#include "ipc/service/wire.h"
#include "ipc/socket/unix_socket.h"
#include "services/servicemanager/logger.h"
#include "services/servicemanager/outbox.h"
#include "services/servicemanager/policy.h"
#include "services/servicemanager/registry.h"

namespace sluice {

class RequestDispatcher {
 public:
  struct Limits {
    // Fields a registration leaves zero take these.
    channel_layout::Geometry default_geometry;
    // Largest channel region a registration or look-up may ask for.
    uint64_t max_region_size = uint64_t{256} << 20;
  };
  // What the dispatcher knows of one connection.
  struct Peer {
    uint64_t id = 0;
    PeerCredentials creds;
    bool said_hello = false;  // Set by Handle when the Hello is accepted.
  };

  // All references must outlive the dispatcher; `policy` may be reassigned
  // (reload) between calls.
  // `epoch` is this manager's identity in every HelloReply (see
  // idl/servicemanager.fbs): random and non-zero, new at every start.
  RequestDispatcher(Limits limits, uint64_t epoch, const Policy& policy, Registry& registry,
                    Outbox& outbox, const Logger& log);

  // Handles one received message: `bytes` (only what arrived; nothing past
  // them is read) and how many descriptors came with it. A non-OK status
  // means the connection must be closed (the message says why, for the log);
  // any reply has been sent.
  [[nodiscard]] absl::Status Handle(Peer& peer, std::span<const std::byte> bytes, size_t fd_count,
                                    absl::Time now);

 private:
  absl::Status HandleHello(Peer& peer, uint64_t request_id, const service_wire::wire::Envelope&);
  // The one name check: the name rules, then (if `action` is set) the
  // policy. A denial is logged. INVALID_ARGUMENT or PERMISSION_DENIED.
  absl::Status CheckName(const Peer& peer, absl::string_view name,
                         std::optional<Policy::Action> action) const;
  // A registration's schema: within kMaxSchemaBytes, a reflection schema
  // that verifies and declares `interface`. INVALID_ARGUMENT otherwise.
  absl::StatusOr<ServiceSchema> CheckSchema(
      absl::string_view name, const service_wire::wire::RegisterRequest& request) const;
  // A client's schema against the server's (compatibility.h): OK when
  // either side sent none; INVALID_ARGUMENT for bytes that are no schema;
  // FAILED_PRECONDITION naming service, method and field otherwise.
  absl::Status CheckClientSchema(const std::string& name,
                                 const service_wire::wire::LookupRequest& request) const;
  // The one geometry check: a plannable region within the size limit.
  absl::Status CheckGeometry(absl::string_view name,
                             const channel_layout::Geometry& geometry) const;
  void Reply(const Peer& peer, uint64_t request_id, const absl::Status& status);

  const Limits limits_;
  const uint64_t epoch_;
  const Policy& policy_;
  Registry& registry_;
  Outbox& outbox_;
  const Logger& log_;
};

}  // namespace sluice

#endif  // SLUICE_SERVICES_SERVICEMANAGER_DISPATCH_H_
