// ServiceManagerDaemon: the service manager's event loop, as a class that
// main() (services/servicemanager/main.cc) or a test constructs and runs.
//
// It is the wiring of four parts, each of which can be read (and tested)
// on its own:
//
//   SocketClaim        socket_claim.h   owning the socket path
//   SendQueue          send_queue.h     connection I/O: what waits for a peer
//   RequestDispatcher  dispatch.h       checks shared by every request
//   Registry           registry.h       services, records, waits, subscriptions
//
// and itself accepts connections, reads one message at a time from each,
// drops connections that say nothing (hello timeout) and closes connections
// the others condemn, then tells the Registry so it can undo what they did.
//
// Ownership: the daemon owns the listening socket, its lock file, every
// accepted connection and everything queued for them. It keeps no fd of any
// channel after handing it out.
//
// Threads: Run() is a single-threaded epoll loop; every member except Stop(),
// Reload() and stats() belongs to the thread inside Run().
#ifndef SLUICE_SERVICES_SERVICEMANAGER_DAEMON_H_
#define SLUICE_SERVICES_SERVICEMANAGER_DAEMON_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ipc/base/unique_fd.h"
#include "ipc/channel/layout.h"
#include "ipc/socket/unix_socket.h"
#include "services/servicemanager/dispatch.h"
#include "services/servicemanager/logger.h"
#include "services/servicemanager/outbox.h"
#include "services/servicemanager/policy.h"
#include "services/servicemanager/registry.h"
#include "services/servicemanager/send_queue.h"
#include "services/servicemanager/socket_claim.h"

namespace sluice {

struct DaemonOptions {
  std::string socket_path;
  // A listening AF_UNIX SOCK_SEQPACKET socket to serve instead of claiming
  // `socket_path` (socket activation, socket_activation.h); the daemon takes
  // it over and never unlinks its node. -1: claim `socket_path`.
  int listen_fd = -1;
  // Unset: Policy::Default(geteuid()).
  std::optional<Policy> policy;
  // If set, the policy is loaded from this file (overriding `policy`), and
  // Reload() re-reads it.
  std::string policy_path;
  // The socket node's mode. Access control is the policy's job (it sees
  // SO_PEERCRED), so the default lets every local user connect and be judged.
  mode_t socket_mode = 0666;
  // A connection that has not sent Hello by then is dropped.
  absl::Duration hello_timeout = absl::Seconds(10);
  size_t max_connections = 4096;
  Registry::Limits registry;
  SendQueue::Limits send_queue;
  RequestDispatcher::Limits requests;
  // Not owned; must outlive the daemon. Null: warnings and errors to stderr.
  const Logger* logger = nullptr;
};

class ServiceManagerDaemon {
 public:
  // Claims the socket (SocketClaim::Claim for the errors).
  static absl::StatusOr<std::unique_ptr<ServiceManagerDaemon>> Create(DaemonOptions options);
  ~ServiceManagerDaemon();
  ServiceManagerDaemon(const ServiceManagerDaemon&) = delete;
  ServiceManagerDaemon& operator=(const ServiceManagerDaemon&) = delete;

  // Serves until Stop(); then closes every connection and returns OK.
  [[nodiscard]] absl::Status Run();
  // Both thread safe and async-signal-safe (each writes an eventfd), so
  // SIGTERM/SIGHUP handlers may call them.
  void Stop();
  // Re-reads `policy_path` before the loop serves its next request. A file
  // that does not parse keeps the old policy; either outcome is logged.
  void Reload();

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
  struct Connection {
    explicit Connection(const SendQueue::Limits& limits) : out(limits) {}
    RequestDispatcher::Peer peer;
    UniqueFd fd;
    absl::Time hello_deadline;
    bool closing = false;   // Marked for close; sends are dropped.
    bool want_out = false;  // EPOLLOUT armed.
    SendQueue out;
  };
  // The Outbox the registry and dispatcher send through.
  class ConnectionOutbox : public Outbox {
   public:
    explicit ConnectionOutbox(ServiceManagerDaemon& daemon) : daemon_(daemon) {}
    bool Send(uint64_t id, OutgoingMessage message) override;

   private:
    ServiceManagerDaemon& daemon_;
  };

  ServiceManagerDaemon(DaemonOptions options, Policy policy, SocketClaim claim, UniqueFd epoll,
                       UniqueFd stop_event, UniqueFd reload_event);
  void ReloadPolicy();
  void LogPolicyWarnings() const;
  const Logger& log() const { return *logger_; }

  void AcceptAll();
  void ReadOne(Connection& conn);
  void Flush(Connection& conn);
  void SetWantOut(Connection& conn, bool want);
  // Never closes directly, only marks, so callers may keep iterating.
  void MarkForClose(Connection& conn, absl::string_view reason);
  void ProcessCloses();
  void CloseConnection(uint64_t id);
  void ExpireHellos(absl::Time now);
  int NextTimeoutMs(absl::Time now) const;
  void PublishStats();
  Connection* Find(uint64_t id);

  DaemonOptions options_;
  Policy policy_;
  std::unique_ptr<Logger> owned_logger_;
  const Logger* logger_;
  SocketClaim claim_;
  UniqueFd epoll_;
  UniqueFd stop_event_;
  UniqueFd reload_event_;
  UniqueFd reserve_fd_;  // Closed to make room when accept() hits EMFILE.
  // Every request is received here, one at a time (one loop thread): a
  // buffer per message of the largest request's size (a Register's schema)
  // cost a 260 KiB allocation and clearing for every few-byte request. Only
  // the received prefix is ever parsed, so what an earlier, longer message
  // left behind is never read. Uninitialised on purpose.
  std::unique_ptr<std::byte[]> receive_buffer_;
  ConnectionOutbox outbox_;
  Registry registry_;
  RequestDispatcher dispatcher_;

  uint64_t next_connection_id_ = 16;  // Below: listener and stop event.
  absl::flat_hash_map<uint64_t, std::unique_ptr<Connection>> connections_;
  std::set<std::pair<absl::Time, uint64_t>> hello_deadlines_;
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
