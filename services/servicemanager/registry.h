// Registry: what the service manager knows, with no sockets in it.
//
//   services      name -> owner connection, owner credentials, geometry
//   records       one per channel handed out (for Info and client-gone events)
//   pending       look-ups whose reply waits for the server's ConnectionAck
//   waits         WaitFor requests not yet answered, by name and deadline
//   subscriptions name-event subscriptions, per connection
//
// Every state change hangs off a connection id, so RemoveClient(id) undoes
// everything that connection did, whatever the reason it closed. Messages
// (replies and events) go to an Outbox by connection id; channel material
// comes from an injected factory. So the registry runs in a unit test with a
// fake outbox and no daemon.
//
// Inputs are trusted: the RequestDispatcher has already validated names and
// geometry and checked the policy. The policy is still consulted here for
// what List and name events may show. One thread (the daemon's loop).
#ifndef SLUICE_SERVICES_SERVICEMANAGER_REGISTRY_H_
#define SLUICE_SERVICES_SERVICEMANAGER_REGISTRY_H_

#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ipc/channel/layout.h"
#include "ipc/socket/unix_socket.h"
#include "services/servicemanager/channel_material.h"
#include "services/servicemanager/logger.h"
#include "services/servicemanager/outbox.h"
#include "services/servicemanager/policy.h"

namespace sluice {

// What a registration says it serves (all empty: it did not say).
struct ServiceSchema {
  std::string interface;  // Full service name, e.g. "example.kv.KeyValueStore".
  std::string bfbs;       // Verified reflection schema declaring `interface`.
  uint64_t hash = 0;      // sluice-idlc's structural hash.
};

class Registry {
 public:
  struct Limits {
    size_t names_per_connection = 4096;
    size_t waits_per_connection = 256;
    size_t subscriptions_per_connection = 64;
    // Connection records kept per client connection (for Info and
    // client-gone events); the oldest is forgotten beyond this.
    size_t records_per_client = 4096;
    // Look-ups of one server it has not yet acknowledged; beyond this a
    // Lookup fails RESOURCE_EXHAUSTED.
    size_t unacked_connections = 256;
  };
  using MaterialFactory =
      absl::AnyInvocable<absl::StatusOr<ChannelMaterial>(const channel_layout::Geometry&)>;

  // `outbox`, `policy` and `log` must outlive the registry; `policy` may be
  // reassigned (reload) between calls.
  Registry(Limits limits, Outbox& outbox, const Policy& policy, MaterialFactory make_material,
           const Logger& log);

  // A connection that said Hello. `acks_connections`: it answers every
  // NewConnectionEvent with a ConnectionAck.
  void AddClient(uint64_t connection, const PeerCredentials& creds, bool acks_connections);
  // Undoes everything `connection` did: frees its names (subscribers are
  // told), fails look-ups waiting on it, drops its waits and subscriptions,
  // and tells each server it used that its connections are gone. Unknown
  // ids are ignored.
  void RemoveClient(uint64_t connection);

  // Each request below is answered exactly once on `connection` with
  // `request_id`, now or later (a Lookup waiting for an ack, a Wait).
  void Register(uint64_t connection, uint64_t request_id, const std::string& name,
                const channel_layout::Geometry& geometry, ServiceSchema schema = {});
  // The schema `name` registered with; NOT_FOUND if none or no schema.
  void DescribeService(uint64_t connection, uint64_t request_id, const std::string& name);
  void Unregister(uint64_t connection, uint64_t request_id, const std::string& name);
  // The registration's geometry, into which a client's override merges.
  // NOT_FOUND naming the service if there is none.
  absl::StatusOr<channel_layout::Geometry> GeometryOf(const std::string& name) const;
  // The schema `name` registered with (empty if none), or null if there is
  // no such service. Valid until the next call that changes the registry.
  const ServiceSchema* SchemaOf(const std::string& name) const;
  void Lookup(uint64_t connection, uint64_t request_id, const std::string& name,
              const channel_layout::Geometry& geometry);
  // timeout_ms: 0 polls, < 0 waits forever.
  void Wait(uint64_t connection, uint64_t request_id, const std::string& name, int64_t timeout_ms,
            absl::Time now);
  void List(uint64_t connection, uint64_t request_id, const std::string& prefix,
            const std::string& start_after, uint32_t limit);
  void Info(uint64_t connection, uint64_t request_id, const std::string& name);
  // `existing`: first send kAppeared, flagged existing, for every matching
  // name already registered (that the client may look up), then the reply.
  void Subscribe(uint64_t connection, uint64_t request_id, const std::string& prefix,
                 uint64_t subscription_id, bool existing);
  void Unsubscribe(uint64_t connection, uint64_t request_id, uint64_t subscription_id);
  // A server's answer to the NewConnectionEvent of `record_id`. Acks for
  // records that are not pending on this server are ignored.
  void AcknowledgeConnection(uint64_t connection, uint64_t record_id, const absl::Status& status);

  // Answers waits whose deadline is at or before `now` with DEADLINE_EXCEEDED.
  void ExpireWaits(absl::Time now);
  // The earliest wait deadline, or InfiniteFuture.
  absl::Time NextDeadline() const;

  struct Counts {
    size_t clients = 0;
    size_t services = 0;
    size_t records = 0;
    size_t pending_lookups = 0;
    size_t waits = 0;
    size_t subscriptions = 0;
  };
  Counts counts() const;

 private:
  struct Subscription {
    uint64_t id;
    std::string prefix;
  };
  struct Client {
    PeerCredentials creds;
    bool acks_connections = false;
    std::vector<std::string> names;  // Owned registrations.
    std::vector<Subscription> subscriptions;
    std::deque<uint64_t> client_records;  // Oldest first; may hold stale ids.
    absl::flat_hash_set<uint64_t> waits;
    absl::flat_hash_set<uint64_t> unacked;  // As a server: pending record ids.
  };
  struct Service {
    std::string name;
    uint64_t owner = 0;
    PeerCredentials owner_creds;
    channel_layout::Geometry geometry;
    ServiceSchema schema;
    uint64_t total_connections = 0;
    std::set<uint64_t> records;
  };
  // One channel handed out.
  struct Record {
    std::string name;
    uint64_t server = 0;
    uint64_t client = 0;
    PeerCredentials client_creds;
    // What the policy imposed when the connection was made (a reload applies
    // only to later ones): its `limit` (0: none) and whether a `trust` line
    // left this client out.
    uint64_t policy_max_request_size = 0;
    bool policy_distrusts = false;
  };
  // A look-up whose reply waits for the server's ConnectionAck; holds the
  // client's half of the channel until then.
  struct PendingLookup {
    uint64_t client = 0;
    uint64_t server = 0;
    uint64_t request_id = 0;
    std::string name;
    PeerCredentials server_creds;
    uint64_t region_size = 0;
    std::vector<UniqueFd> fds;
  };
  struct PendingWait {
    uint64_t connection = 0;
    uint64_t request_id = 0;
    std::string name;
    absl::Time deadline;
  };

  Client* FindClient(uint64_t connection);
  void Reply(uint64_t connection, uint64_t request_id, const absl::Status& status);
  void SendLookupReply(uint64_t client, uint64_t request_id, uint64_t record_id,
                       const PeerCredentials& server, uint64_t region_size,
                       std::vector<UniqueFd> fds);
  // Fails the look-up waiting on `record_id`, if any, UNAVAILABLE: "the
  // owner of 'NAME' (pid …) <why>".
  void FailPendingLookup(uint64_t record_id, absl::string_view why);
  void ForgetRecord(uint64_t record_id);
  void RemoveService(const std::string& name, absl::string_view why);
  void NotifyName(const Service& service, bool appeared);
  void SendNameEvent(uint64_t connection, uint64_t subscription_id, const Service& service,
                     bool appeared, bool existing);
  void AnswerWaitsFor(const std::string& name);
  void DropWait(uint64_t wait_id);

  const Limits limits_;
  Outbox& outbox_;
  const Policy& policy_;
  MaterialFactory make_material_;
  const Logger& log_;

  uint64_t next_record_id_ = 1;
  uint64_t next_wait_id_ = 1;
  absl::flat_hash_map<uint64_t, Client> clients_;
  std::map<std::string, Service> services_;  // Sorted, for List pages.
  absl::flat_hash_map<uint64_t, Record> records_;
  absl::flat_hash_map<uint64_t, PendingLookup> pending_lookups_;  // By record id.
  absl::flat_hash_map<uint64_t, PendingWait> waits_;
  absl::flat_hash_map<std::string, std::vector<uint64_t>> waits_by_name_;
  std::set<std::pair<absl::Time, uint64_t>> wait_deadlines_;
  absl::flat_hash_set<uint64_t> subscribers_;
};

// "pid N uid N gid N", for log lines and messages.
std::string Describe(const PeerCredentials& creds);

}  // namespace sluice

#endif  // SLUICE_SERVICES_SERVICEMANAGER_REGISTRY_H_
