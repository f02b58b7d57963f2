// ServiceHost and Connect<Proxy>: the glue between generated code and the
// service manager, so that publishing and using a service are one call each.
//
//   // server
//   auto manager = sluice::ServiceManager::Connect();
//   sluice::ServiceHost host(**manager);
//   host.Publish(std::make_shared<MyKeyValueStore>());   // name: the interface's full name
//
//   // client
//   auto kv = sluice::Connect<example::kv::KeyValueStoreProxy>(**manager);
//   auto reply = (*kv)->Get("key");
//
// Threads: each connection is served by one thread of the host (created
// when a client connects, gone when it leaves). A process-wide pool that
// needs no thread per connection is ROADMAP §1 "Threading".
#ifndef SLUICE_IPC_HOST_SERVICE_HOST_H_
#define SLUICE_IPC_HOST_SERVICE_HOST_H_

#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "ipc/base/mutex.h"
#include "ipc/rpc/stub.h"
#include "ipc/service/service_manager.h"

namespace sluice {

class ServiceHost {
 public:
  // `manager` must outlive the host.
  explicit ServiceHost(ServiceManager& manager) : manager_(&manager) {}
  ~ServiceHost();
  ServiceHost(const ServiceHost&) = delete;
  ServiceHost& operator=(const ServiceHost&) = delete;

  // Registers `stub` under `name` (empty: the interface's full name, e.g.
  // "example.kv.KeyValueStore") and serves every client that looks it up.
  // Errors are the service manager's (ALREADY_EXISTS, PERMISSION_DENIED, ...).
  [[nodiscard]] absl::Status Publish(std::shared_ptr<rpc::ServiceStub> stub,
                                     absl::string_view name = {}, RegisterOptions options = {});

  // Unregisters every name, closes every connection and joins its thread.
  void Shutdown();

  // Connections being served now.
  size_t active_connections();

 private:
  struct Served {
    std::unique_ptr<ServerChannel> channel;
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  void ServeConnection(std::shared_ptr<rpc::ServiceStub> stub, IncomingConnection connection);
  void ReapLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  ServiceManager* manager_;
  Mutex mu_;
  std::vector<std::string> names_ ABSL_GUARDED_BY(mu_);
  std::vector<Served> served_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

// A proxy together with the connection it calls through.
template <typename Proxy>
class Connection {
 public:
  Connection(Connection&&) noexcept = default;
  Connection& operator=(Connection&&) noexcept = default;

  Proxy* operator->() { return &proxy_; }
  Proxy& proxy() { return proxy_; }
  ClientChannel& channel() { return *connection_.channel; }
  // The server process, as the service manager saw it.
  const PeerCredentials& server() const { return connection_.server; }

 private:
  template <typename P>
  friend absl::StatusOr<Connection<P>> Connect(ServiceManager&, absl::string_view, LookupOptions);
  explicit Connection(ServiceConnection connection)
      : connection_(std::move(connection)), proxy_(*connection_.channel) {}

  ServiceConnection connection_;
  Proxy proxy_;
};

// Looks up `name` (empty: the interface's full name) and returns a typed
// proxy to it. NOT_FOUND if nobody serves the name.
template <typename Proxy>
absl::StatusOr<Connection<Proxy>> Connect(ServiceManager& manager, absl::string_view name = {},
                                          LookupOptions options = {}) {
  absl::StatusOr<ServiceConnection> connection =
      manager.Lookup(name.empty() ? Proxy::Interface::kName : name, std::move(options));
  if (!connection.ok()) return connection.status();
  return Connection<Proxy>(*std::move(connection));
}

}  // namespace sluice

#endif  // SLUICE_IPC_HOST_SERVICE_HOST_H_
