// ServiceManagerDaemon: the service manager itself, as a class that main()
// (services/servicemanager/main.cc) or a test constructs and runs.
//
// It listens on a Unix SOCK_SEQPACKET socket and serves the protocol in
// idl/servicemanager.fbs (docs/servicemanager.md): names registered by
// server connections, look-ups that hand both sides a fresh channel region
// plus a liveness socket pair, waits, listings and name notifications.
//
// Ownership: the daemon owns the listening socket, its lock file, every
// accepted connection and everything queued for them. It keeps no fd of any
// channel after handing it out. All state is freed when its connection
// closes, whatever the reason (hang-up, crash, garbage, overflow).
//
// Threads: Run() is a single-threaded epoll loop; every member except Stop()
// and stats() belongs to the thread inside Run(). Stop() is thread safe and
// async-signal-safe (it writes an eventfd), so a signal handler may call it.
#ifndef SLUICE_SERVICES_SERVICEMANAGER_DAEMON_H_
#define SLUICE_SERVICES_SERVICEMANAGER_DAEMON_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "flatbuffers/flatbuffers.h"
#include "ipc/base/unique_fd.h"
#include "ipc/channel/layout.h"
#include "ipc/service/wire.h"
#include "ipc/socket/unix_socket.h"
#include "services/servicemanager/logger.h"
#include "services/servicemanager/policy.h"

namespace sluice {

struct DaemonOptions {
  std::string socket_path;
  // Unset: Policy::Default(geteuid()).
  std::optional<Policy> policy;
  // The socket node's mode. Access control is the policy's job (it sees
  // SO_PEERCRED), so the default lets every local user connect and be judged.
  mode_t socket_mode = 0666;
  // A connection that has not sent Hello by then is dropped.
  absl::Duration hello_timeout = absl::Seconds(10);
  size_t max_connections = 4096;
  size_t max_names_per_connection = 4096;
  size_t max_waits_per_connection = 256;
  size_t max_subscriptions_per_connection = 64;
  // Connection records kept per client connection (for Info and client-gone
  // events); the oldest is forgotten beyond this.
  size_t max_records_per_client = 4096;
  // A peer is dropped when what waits for it to read passes this many bytes
  // (a memory bound no reading peer comes near: events are ~100 bytes), or
  // when it has not taken a single message for `stall_timeout` while some
  // wait. A peer that reads, however far behind a burst, is never dropped.
  size_t max_queued_bytes = size_t{8} << 20;
  absl::Duration stall_timeout = absl::Seconds(10);
  // Look-ups of one server that it has not yet acknowledged; beyond this a
  // Lookup fails RESOURCE_EXHAUSTED (back-pressure on clients, not a reason
  // to drop the server).
  size_t max_unacked_connections = 256;
  channel_layout::Geometry default_geometry;
  // Largest channel region a registration or look-up may ask for.
  uint64_t max_region_size = uint64_t{256} << 20;
  // Not owned; must outlive the daemon. Null: warnings and errors to stderr.
  const Logger* logger = nullptr;
};

class ServiceManagerDaemon {
 public:
  // Binds the socket. ALREADY_EXISTS if a live daemon owns the path;
  // FAILED_PRECONDITION if the path or its directory is unsafe to use. A
  // stale socket (nobody listening, lock not held) is replaced.
  static absl::StatusOr<std::unique_ptr<ServiceManagerDaemon>> Create(DaemonOptions options);
  ~ServiceManagerDaemon();
  ServiceManagerDaemon(const ServiceManagerDaemon&) = delete;
  ServiceManagerDaemon& operator=(const ServiceManagerDaemon&) = delete;

  // Serves until Stop(); then closes every connection and returns OK.
  [[nodiscard]] absl::Status Run();
  void Stop();

  struct Stats {
    size_t connections = 0;
    size_t services = 0;
    size_t records = 0;
    size_t waits = 0;
    size_t subscriptions = 0;
    size_t queued_messages = 0;
    uint64_t accepted = 0;
    uint64_t rejected = 0;  // Refused at accept (limit or fd exhaustion).
  };
  // A snapshot as of the end of the loop's last iteration. Thread safe.
  Stats stats() const;
  const std::string& socket_path() const { return options_.socket_path; }

 private:
  struct Outgoing {
    std::vector<std::byte> bytes;
    std::vector<UniqueFd> fds;
  };
  struct Subscription {
    uint64_t id;
    std::string prefix;
  };
  struct Connection {
    uint64_t id = 0;
    UniqueFd fd;
    PeerCredentials creds;
    bool hello = false;
    absl::Time hello_deadline;
    bool closing = false;   // Marked for close; sends are dropped.
    bool want_out = false;  // EPOLLOUT armed.
    // Said so in Hello: look-ups of its names wait for its ConnectionAck.
    bool acks_connections = false;
    std::deque<Outgoing> out;
    size_t queued_bytes = 0;  // Sum of out[i].bytes.size().
    absl::Time last_drained;  // When `out` was last empty or last shrank.
    // As a server: records whose NewConnectionEvent it has not answered.
    absl::flat_hash_set<uint64_t> unacked;
    std::vector<std::string> names;  // Owned registrations.
    std::vector<Subscription> subscriptions;
    std::deque<uint64_t> client_records;  // Oldest first; may hold stale ids.
    absl::flat_hash_set<uint64_t> waits;
  };
  struct Service {
    std::string name;
    uint64_t owner = 0;
    PeerCredentials owner_creds;
    channel_layout::Geometry geometry;
    uint64_t total_connections = 0;
    std::set<uint64_t> records;
  };
  // One channel handed out, remembered for Info and client-gone events.
  struct Record {
    std::string name;
    uint64_t server = 0;
    uint64_t client = 0;
    PeerCredentials client_creds;
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
  struct Wait {
    uint64_t connection = 0;
    uint64_t request_id = 0;
    std::string name;
    absl::Time deadline;
  };

  ServiceManagerDaemon(DaemonOptions options, Policy policy, UniqueFd listener, UniqueFd lock,
                       UniqueFd epoll, UniqueFd stop_event, ino_t socket_inode);
  const Logger& log() const { return *logger_; }

  void AcceptAll();
  void ReadOne(Connection& conn);
  void HandleRequest(Connection& conn, const service_wire::wire::Envelope& envelope);
  void HandleRegister(Connection& conn, uint64_t request_id,
                      const service_wire::wire::RegisterRequest& request);
  void HandleUnregister(Connection& conn, uint64_t request_id,
                        const service_wire::wire::UnregisterRequest& request);
  void HandleLookup(Connection& conn, uint64_t request_id,
                    const service_wire::wire::LookupRequest& request);
  void HandleWait(Connection& conn, uint64_t request_id,
                  const service_wire::wire::WaitRequest& request);
  void HandleList(Connection& conn, uint64_t request_id,
                  const service_wire::wire::ListRequest& request);
  void HandleInfo(Connection& conn, uint64_t request_id,
                  const service_wire::wire::InfoRequest& request);
  void HandleSubscribe(Connection& conn, uint64_t request_id,
                       const service_wire::wire::SubscribeRequest& request);
  void HandleConnectionAck(Connection& conn, const service_wire::wire::ConnectionAck& ack);
  void SendLookupReply(Connection& client, uint64_t request_id, uint64_t record_id,
                       const PeerCredentials& server, uint64_t region_size,
                       std::vector<UniqueFd> fds);
  // Answers the look-up waiting on `record_id` (if any) with `why`.
  void FailPendingLookup(uint64_t record_id, const absl::Status& why);

  // PERMISSION_DENIED (logged) unless the policy allows it.
  absl::Status Check(Policy::Action action, absl::string_view name, const Connection& conn);
  void ReplyStatus(Connection& conn, uint64_t request_id, const absl::Status& status);
  // Queues `builder`'s message (and `fds`) for `conn`; never closes it
  // directly, only marks it for close, so callers may keep iterating.
  void Send(Connection& conn, const flatbuffers::FlatBufferBuilder& builder,
            std::vector<UniqueFd> fds = {});
  void Flush(Connection& conn);
  void SetWantOut(Connection& conn, bool want);
  void MarkForClose(Connection& conn, absl::string_view reason);
  void ProcessCloses();
  void CloseConnection(uint64_t id);
  void RemoveService(const std::string& name, absl::string_view why);
  void ForgetRecord(uint64_t record_id);
  void NotifyName(const Service& service, bool appeared);
  void ExpireDeadlines(absl::Time now);
  int NextTimeoutMs(absl::Time now) const;
  void PublishStats();
  Connection* Find(uint64_t id);

  DaemonOptions options_;
  Policy policy_;
  std::unique_ptr<Logger> owned_logger_;
  const Logger* logger_;
  UniqueFd listener_;
  UniqueFd lock_;
  UniqueFd epoll_;
  UniqueFd stop_event_;
  UniqueFd reserve_fd_;  // Closed to make room when accept() hits EMFILE.
  ino_t socket_inode_;

  uint64_t next_connection_id_ = 16;  // Below: listener and stop event.
  uint64_t next_record_id_ = 1;
  uint64_t next_wait_id_ = 1;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Connection>> connections_;
  std::map<std::string, Service> services_;  // Sorted, for List pages.
  absl::flat_hash_map<uint64_t, Record> records_;
  absl::flat_hash_map<uint64_t, PendingLookup> pending_lookups_;  // By record id.
  absl::flat_hash_map<uint64_t, Wait> waits_;
  absl::flat_hash_map<std::string, std::vector<uint64_t>> waits_by_name_;
  std::set<std::pair<absl::Time, uint64_t>> wait_deadlines_;
  std::set<std::pair<absl::Time, uint64_t>> hello_deadlines_;
  absl::flat_hash_set<uint64_t> subscribers_;
  std::vector<std::pair<uint64_t, std::string>> to_close_;
  uint64_t accepted_ = 0;
  uint64_t rejected_ = 0;
  absl::Time last_reject_log_ = absl::InfinitePast();

  mutable std::atomic<size_t> stat_connections_{0}, stat_services_{0}, stat_records_{0},
      stat_waits_{0}, stat_subscriptions_{0}, stat_queued_{0};
  std::atomic<uint64_t> stat_accepted_{0}, stat_rejected_{0};
};

}  // namespace sluice

#endif  // SLUICE_SERVICES_SERVICEMANAGER_DAEMON_H_
