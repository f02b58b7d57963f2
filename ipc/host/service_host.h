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
// Threads: every connection of every published service is served by one
// rpc::ServerPool (max_threads, started on demand, growing up to thread_cap
// while handlers stay busy), so a host with many clients needs no thread
// per client.
#ifndef SLUICE_IPC_HOST_SERVICE_HOST_H_
#define SLUICE_IPC_HOST_SERVICE_HOST_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "ipc/base/mutex.h"
#include "ipc/rpc/object.h"
#include "ipc/rpc/server_pool.h"
#include "ipc/rpc/stub.h"
#include "ipc/service/service_manager.h"

namespace sluice {

class ServiceHost {
 public:
  struct Options {
    // Threads serving calls, for all services of this host together.
    int max_threads = 4;
    // The most threads ever, when handlers stay busy (rpc::ServerPool).
    int thread_cap = rpc::ServerPool::Options{}.thread_cap;
  };

  // `manager` must outlive the host.
  explicit ServiceHost(ServiceManager& manager, Options options);
  explicit ServiceHost(ServiceManager& manager) : ServiceHost(manager, Options{}) {}
  ~ServiceHost();
  ServiceHost(const ServiceHost&) = delete;
  ServiceHost& operator=(const ServiceHost&) = delete;

  // Registers `stub` under `name` (empty: the interface's full name, e.g.
  // "example.kv.KeyValueStore") and serves every client that looks it up.
  // The stub's schema goes with the name unless `options` has one, so
  // `sluicectl describe` and `call` need no local .fbs.
  // Errors are the service manager's (ALREADY_EXISTS, PERMISSION_DENIED, ...).
  [[nodiscard]] absl::Status Publish(std::shared_ptr<rpc::ServiceStub> stub,
                                     absl::string_view name = {}, RegisterOptions options = {});

  // Unregisters every name and ends every connection. Idempotent.
  void Shutdown();

  // Connections being served now.
  size_t active_connections() { return pool_.channel_count(); }
  size_t thread_count() { return pool_.thread_count(); }
  rpc::ServerPool::Stats stats() { return pool_.stats(); }

 private:
  ServiceManager* manager_;
  rpc::ServerPool pool_;
  Mutex mu_;
  std::vector<std::string> names_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

// A proxy together with the connection it calls through. Local objects
// passed in its calls (sync or oneway) are lent by handle over the connection's
// reverse channel (rpc::ExportLink), opened at the first one. The channel
// stays open while anything made from it lives: the Responses of its calls,
// and the objects its replies lent by handle.
template <typename Proxy>
class Connection {
 public:
  Connection(Connection&&) noexcept = default;
  Connection& operator=(Connection&&) noexcept = default;

  Proxy* operator->() { return &proxy_; }
  Proxy& proxy() { return proxy_; }
  ClientChannel& channel() { return *channel_; }
  // The server process, as the service manager saw it.
  const PeerCredentials& server() const { return server_; }

 private:
  template <typename P>
  friend absl::StatusOr<Connection<P>> Connect(ServiceManager&, absl::string_view, LookupOptions);
  explicit Connection(ServiceConnection connection)
      : server_(connection.server),
        channel_(std::move(connection.channel)),
        proxy_(rpc::ProxyTarget{.channel = channel_.get(),
                                .owner = channel_,
                                .handle = 0,
                                .reference = nullptr,
                                .exports = rpc::ExportLink::Create(channel_.get(), channel_)}) {}

  PeerCredentials server_;
  std::shared_ptr<ClientChannel> channel_;
  Proxy proxy_;
};

// Looks up `name` (empty: the interface's full name) and returns a typed
// proxy to it. NOT_FOUND if nobody serves the name; FAILED_PRECONDITION,
// naming the method and field, if the server's schema is incompatible with
// the one this proxy was generated from (sent unless `options` has one).
template <typename Proxy>
absl::StatusOr<Connection<Proxy>> Connect(ServiceManager& manager, absl::string_view name = {},
                                          LookupOptions options = {}) {
  if (options.schema.empty()) {
    options.schema = Proxy::Interface::kSchema.binary;
    if (options.interface.empty()) options.interface = std::string(Proxy::Interface::kName);
  }
  absl::StatusOr<ServiceConnection> connection =
      manager.Lookup(name.empty() ? Proxy::Interface::kName : name, std::move(options));
  if (!connection.ok()) return connection.status();
  return Connection<Proxy>(*std::move(connection));
}

}  // namespace sluice

#endif  // SLUICE_IPC_HOST_SERVICE_HOST_H_
