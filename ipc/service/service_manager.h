// ServiceManager: a process's connection to the service manager daemon
// (services/servicemanager): publish services by name, find them, and get
// connected channels.
//
//   server process                          client process
//   sm->Register("audio", on_connect)       sm->Lookup("audio") -> ServiceConnection
//   on_connect(IncomingConnection) ...      conn.channel->BeginCall/Call ...
//     conn.channel->Receive/Reply ...
//
// On Lookup the daemon creates the channel's memfd region and a liveness
// socket pair, and hands one side to each process; from then on the two talk
// through the region and the daemon is out of the data path. Identities
// (PeerCredentials) come from the daemon's SO_PEERCRED, never from the peer.
//
// Ownership and threads:
//   - A ServiceManager owns its socket to the daemon and one background
//     "reader" thread that reads replies and events from it. Every method is
//     thread safe and may be called from any thread except the reader thread
//     (i.e. not from a handler): those calls fail with FAILED_PRECONDITION
//     rather than deadlock.
//   - Handlers (on_connect, on_client_gone, name events) run on the reader
//     thread, one at a time. Keep them short: hand the channel to a worker.
//   - Channels use a PeerWatcher: the caller's (ServiceManagerOptions::watcher),
//     which must outlive them, or by default the process's, which does.
//   - If the daemon goes away (crash, restart), the reader thread reconnects
//     by itself with back-off (5 ms doubling to 250 ms) and replays what
//     this object owns: its registrations (so a ServiceHost's names come
//     back), its subscriptions (same ids, same handlers) and its pending
//     WaitFors (with what is left of their timeout). Channels already open
//     are untouched: they never go through the manager. Requests in flight
//     at the drop, other than WaitFor, fail UNAVAILABLE and are never
//     retried; while disconnected, new ones fail UNAVAILABLE at once (a
//     WaitFor waits for the reconnection instead). The HelloReply's epoch
//     tells a restart (new epoch) from a dropped connection (same epoch).
//     Connection ids are unique within one manager epoch.
//
// Errors (docs/servicemanager.md): NOT_FOUND unknown name; PERMISSION_DENIED
// refused by the daemon's policy; UNAVAILABLE no daemon / daemon gone;
// DEADLINE_EXCEEDED timed out; ALREADY_EXISTS name taken; INVALID_ARGUMENT
// bad name or geometry.
#ifndef SLUICE_IPC_SERVICE_SERVICE_MANAGER_H_
#define SLUICE_IPC_SERVICE_SERVICE_MANAGER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "flatbuffers/flatbuffers.h"
#include "ipc/base/mutex.h"
#include "ipc/base/unique_fd.h"
#include "ipc/channel/channel_options.h"
#include "ipc/channel/client_channel.h"
#include "ipc/channel/layout.h"
#include "ipc/channel/peer_watcher.h"
#include "ipc/channel/server_channel.h"
#include "ipc/socket/unix_socket.h"

namespace sluice {

struct ServiceManagerOptions {
  // Empty: DefaultServiceManagerSocketPath() (ipc/service/socket_path.h).
  std::string socket_path;
  // Watches the peers of every channel this ServiceManager creates. Null:
  // the process's (ProcessPeerWatcher), which outlives every channel, so
  // connections may outlive the ServiceManager.
  PeerWatcher* watcher = nullptr;
  // Bound on every request to the daemon other than WaitFor.
  absl::Duration request_timeout = absl::Seconds(10);
  // Reconnect (and replay) when the daemon goes away. False: every later
  // call fails UNAVAILABLE, as for a one-shot tool.
  bool reconnect = true;
  // Called on the reader thread when a replayed registration or
  // subscription is refused by the new manager (e.g. ALREADY_EXISTS: someone
  // else took the name while it was down). A refused registration is
  // dropped. `what` is e.g. "register 'audio'". Optional.
  std::function<void(absl::string_view what, const absl::Status& status)> on_replay_error = nullptr;
};

// A server's view of one new client.
struct IncomingConnection {
  std::string service;
  uint64_t connection_id = 0;
  PeerCredentials client;  // From the daemon's SO_PEERCRED.
  std::unique_ptr<ServerChannel> channel;
};
using ConnectionHandler = absl::AnyInvocable<void(IncomingConnection)>;
// The client process of `connection_id` hung up on the daemon (exited, or
// dropped its ServiceManager). The channel itself reports peer death too.
using ClientGoneHandler = absl::AnyInvocable<void(absl::string_view service, uint64_t connection_id,
                                                  const PeerCredentials& client)>;

struct RegisterOptions {
  // Geometry of the regions made for this service's connections; a client
  // may override it within the daemon's limits.
  channel_layout::Geometry geometry;
  SpinPolicy spin;
  ClientGoneHandler on_client_gone;  // Optional.
  // Clients whose large requests are read in place (others send them
  // sealed). The manager's policy file may narrow it per client (`trust`
  // lines): kEveryone leaves the choice to the file.
  TrustPolicy trust = TrustPolicy::kSameUser;
  // Largest request accepted; clients learn it and fail larger calls with
  // RESOURCE_EXHAUSTED before building them. The manager's policy file may
  // lower it (`limit` lines), never raise it.
  uint64_t max_request_size = ChannelOptions{}.max_message_size;
  // What the service serves, so `sluicectl describe`/`call` need no local
  // schema: the full interface name and sluice-idlc's embedded schema
  // (<stem>_schema.h: kBinarySchema, kStructuralHash; a generated
  // Interface's kSchema). ServiceHost::Publish fills them from the stub when
  // empty. Optional; the bytes are copied.
  std::string interface;
  std::span<const uint8_t> schema;
  uint64_t schema_hash = 0;
};

struct LookupOptions {
  // Overrides the server's geometry (the daemon enforces its limits).
  std::optional<channel_layout::Geometry> geometry;
  SpinPolicy spin;
  // Whether the server's large replies are read in place (else sealed).
  TrustPolicy trust = TrustPolicy::kSameUser;
  // Largest reply accepted.
  uint64_t max_reply_size = ChannelOptions{}.max_message_size;
  // What this client was built from (sluice-idlc's <stem>_schema.h). When
  // both sides registered one, the manager checks them against each other
  // and refuses an incompatible connection with FAILED_PRECONDITION naming
  // the method and field. Optional (Connect<Proxy> fills them from the
  // proxy's Interface::kSchema when empty); `interface` defaults to the
  // server's.
  std::string interface;
  std::span<const uint8_t> schema;
};

// A client's connected channel to a service.
struct ServiceConnection {
  std::unique_ptr<ClientChannel> channel;
  PeerCredentials server;  // The owner of the name, from the daemon's SO_PEERCRED.
  uint64_t connection_id = 0;
};

struct ServiceEntry {
  std::string name;
  PeerCredentials owner;
  uint64_t connections = 0;        // Live, as far as the daemon knows.
  uint64_t total_connections = 0;  // Every Lookup served for this registration.
  channel_layout::Geometry geometry;
};

struct ServiceDetails {
  ServiceEntry service;
  struct Connection {
    uint64_t connection_id = 0;
    PeerCredentials client;
    // What the manager's policy imposed on this connection when it was
    // made (a reload applies only to later ones): it did not trust this
    // client, whose large requests therefore arrive sealed whatever the
    // server registered with; its `limit` on requests (nullopt: none).
    bool policy_distrusts = false;
    std::optional<uint64_t> policy_max_request_size;
  };
  std::vector<Connection> connections;
  // What the manager's policy file imposes on the service's next
  // connections (only ever narrowing the server's own RegisterOptions,
  // which the manager does not know): its `limit` on requests (nullopt:
  // none) and the line of the `trust` setting that decides who may be read
  // in place (0: none). False `policy_reported`: a manager that predates
  // these, and the rest of them mean nothing.
  bool policy_reported = false;
  std::optional<uint64_t> policy_max_request_size;
  uint32_t policy_trust_line = 0;
};

// What a service registered as its interface (ServiceManager::Describe).
struct ServiceDescription {
  std::string name;
  std::string interface;
  std::string schema;  // A verified binary schema (.bfbs) declaring `interface`.
  uint64_t schema_hash = 0;
};

enum class NameChange { kAppeared, kDisappeared };
struct NameEvent {
  NameChange change = NameChange::kAppeared;
  std::string name;
  PeerCredentials owner;
  // kAppeared only: the name was registered before the subscription was
  // made, or before it was made again on a restarted manager; false for a
  // name that appeared since.
  bool existing = false;
};
using NameEventHandler = absl::AnyInvocable<void(const NameEvent&)>;
using SubscriptionId = uint64_t;

class ServiceManager {
 public:
  // Connects to the daemon and says hello. UNAVAILABLE if nothing listens at
  // the path, PERMISSION_DENIED if the socket is not ours to open.
  static absl::StatusOr<std::unique_ptr<ServiceManager>> Connect(
      ServiceManagerOptions options = {});
  ~ServiceManager();
  ServiceManager(const ServiceManager&) = delete;
  ServiceManager& operator=(const ServiceManager&) = delete;

  // Publishes `name`, owned by this connection until Unregister, destruction
  // or process death. `on_connect` runs for every Lookup of it.
  [[nodiscard]] absl::Status Register(absl::string_view name, ConnectionHandler on_connect,
                                      RegisterOptions options = {});
  [[nodiscard]] absl::Status Unregister(absl::string_view name);

  // A connected channel to the server owning `name`.
  absl::StatusOr<ServiceConnection> Lookup(absl::string_view name, LookupOptions options = {});

  // Returns OK once `name` is registered (at once if it is), or
  // DEADLINE_EXCEEDED after `timeout`. InfiniteDuration waits forever.
  [[nodiscard]] absl::Status WaitFor(absl::string_view name, absl::Duration timeout);

  // Every name starting with `prefix` this process may look up, sorted.
  absl::StatusOr<std::vector<ServiceEntry>> List(absl::string_view prefix = "");
  absl::StatusOr<ServiceDetails> Info(absl::string_view name);
  // The interface and schema `name` was registered with. NOT_FOUND if there
  // is no such service or it registered no schema; DATA_LOSS if the schema
  // the manager sent does not verify.
  absl::StatusOr<ServiceDescription> Describe(absl::string_view name);

  // Calls `handler` (on the reader thread) for every name starting with
  // `prefix` that this process may look up: first once for each such name
  // registered already (kAppeared, `existing` set), all before Subscribe
  // returns, then whenever one appears or disappears. After a manager
  // restart each name seen is reported kDisappeared when the manager goes,
  // and what the new one has is reported again as `existing`.
  absl::StatusOr<SubscriptionId> Subscribe(absl::string_view prefix, NameEventHandler handler);
  [[nodiscard]] absl::Status Unsubscribe(SubscriptionId id);

  const std::string& socket_path() const { return path_; }
  // The daemon's identity (SO_PEERCRED of our socket), as of the last
  // (re)connection.
  PeerCredentials manager() const;
  // The current manager's epoch (HelloReply.epoch; 0 from an older daemon).
  uint64_t manager_epoch() const;
  // How many times this object reconnected (to any manager), and how many
  // of those found a new epoch, i.e. a restarted manager.
  uint64_t reconnections() const;
  uint64_t manager_restarts() const;
  // OK while connected to the daemon; UNAVAILABLE while reconnecting or
  // after it hung up for good.
  absl::Status health() const;

 private:
  // A WaitFor carried across reconnections.
  struct WaitSpec {
    std::string name;
    absl::Time deadline;  // InfiniteFuture: forever.
  };
  struct Pending {
    bool done = false;
    absl::StatusOr<ReceivedMessage> result;
    std::optional<WaitSpec> wait;
  };
  struct Registration {
    ConnectionHandler on_connect;
    ClientGoneHandler on_client_gone;
    SpinPolicy spin;
    TrustPolicy trust = TrustPolicy::kSameUser;
    uint64_t max_request_size = 0;
    channel_layout::Geometry geometry;  // For replay, with the schema below.
    std::string interface;
    std::string schema;
    uint64_t schema_hash = 0;
    bool confirmed = false;  // The manager said OK; only these are replayed.
  };
  struct Subscription {
    std::string prefix;
    std::shared_ptr<NameEventHandler> handler;
    bool confirmed = false;
    // Names it has seen appear and not disappear, with their owners: told
    // kDisappeared when the manager goes away, since a new manager starts
    // empty and resends kAppeared for what it has.
    absl::flat_hash_map<std::string, PeerCredentials> present;
  };
  // One connection to a daemon, after its Hello.
  struct Session {
    std::shared_ptr<UniqueFd> socket;
    PeerCredentials creds;
    uint64_t epoch = 0;
  };
  static constexpr uint64_t kHelloRequestId = 1;

  static void BuildRegisterRequest(flatbuffers::FlatBufferBuilder& builder, uint64_t id,
                                   absl::string_view name, const Registration& registration);

  // Connects to `path` and says Hello, reading the reply itself (before any
  // reader thread uses the socket).
  static absl::StatusOr<Session> OpenSession(const std::string& path, uint64_t previous_epoch,
                                             absl::Duration timeout);
  ServiceManager(std::string path, Session session, PeerWatcher* watcher,
                 ServiceManagerOptions options);
  // Sends one request (whose Envelope carries `request_id`) and waits until
  // `deadline` for its reply. A non-OK status in the reply is returned as the
  // error.
  absl::StatusOr<ReceivedMessage> Request(std::span<const std::byte> bytes, uint64_t request_id,
                                          absl::Time deadline,
                                          std::optional<WaitSpec> wait = std::nullopt);
  uint64_t NextRequestId();
  absl::Status CheckNotReaderThread(absl::string_view what) const;
  void ReaderLoop();
  // Reads replies and events from `socket` until it fails; returns why.
  absl::Status ReadSession(int socket);
  // After a drop: fails requests in flight (not waits) and, unless stopping
  // or not reconnecting, reconnects with back-off and replays. False: stop.
  bool Reconnect(const absl::Status& why);
  // Re-sends registrations, subscriptions and waits on a new session.
  void Replay(int socket);
  void HandleEvent(ReceivedMessage message);
  // Answers a NewConnectionEvent: OK once its channel is open, else why not
  // (the manager passes that on to the client's Lookup). Reader thread only.
  void Acknowledge(uint64_t connection_id, const absl::Status& status);
  // Tells every subscription that each name it saw is gone (the manager that
  // held them is). Reader thread; handlers run without mu_.
  void ForgetPresentNames();
  void FailAllPending(const absl::Status& why, bool keep_waits) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  PeerWatcher* const watcher_;
  const absl::Duration request_timeout_;
  const bool reconnect_;
  std::function<void(absl::string_view, const absl::Status&)> on_replay_error_;
  // The socket the reader thread reads; reader thread only (Acknowledge).
  int reader_socket_ = -1;
  // Every message from the manager is received here first (reader thread
  // only), then copied out at its own size: one buffer of the largest
  // message's size, allocated and cleared per message, cost more than
  // everything else a NewConnectionEvent or LookupReply needs.
  // Uninitialised on purpose; service_wire::kMaxReplyBytes long.
  std::unique_ptr<std::byte[]> reader_buffer_;

  mutable Mutex mu_;
  CondVar answered_;     // Signalled when a Pending is done.
  CondVar wake_reader_;  // Signalled on stopping_, to cut a back-off short.
  // Null while disconnected. Shared so a sender keeps the descriptor alive
  // (and its number unreused) while the reader replaces it.
  std::shared_ptr<UniqueFd> socket_ ABSL_GUARDED_BY(mu_);
  PeerCredentials manager_creds_ ABSL_GUARDED_BY(mu_);
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reconnections_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t restarts_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_request_id_ ABSL_GUARDED_BY(mu_) = kHelloRequestId + 1;
  absl::flat_hash_map<uint64_t, Pending*> pending_ ABSL_GUARDED_BY(mu_);
  // Replayed requests whose replies the reader checks: id -> what.
  absl::flat_hash_map<uint64_t, std::string> replays_ ABSL_GUARDED_BY(mu_);
  // Handlers are shared so the reader thread can call one without holding mu_.
  absl::flat_hash_map<std::string, std::shared_ptr<Registration>> registrations_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<SubscriptionId, Subscription> subscriptions_ ABSL_GUARDED_BY(mu_);
  absl::Status health_ ABSL_GUARDED_BY(mu_);
  std::thread reader_;
};

}  // namespace sluice

#endif  // SLUICE_IPC_SERVICE_SERVICE_MANAGER_H_
