#include "ipc/host/service_host.h"

#include "ipc/rpc/object.h"

namespace sluice {

ServiceHost::ServiceHost(ServiceManager& manager, Options options)
    : manager_(&manager),
      pool_({.max_threads = options.max_threads, .thread_cap = options.thread_cap}) {}

ServiceHost::~ServiceHost() { Shutdown(); }

absl::Status ServiceHost::Publish(std::shared_ptr<rpc::ServiceStub> stub, absl::string_view name,
                                  RegisterOptions options) {
  if (stub == nullptr) return absl::InvalidArgumentError("Publish: null stub");
  const std::string service(name.empty() ? stub->service_name() : name);
  if (options.schema.empty()) {
    const rpc::InterfaceSchema own = stub->schema();
    options.schema = own.binary;
    options.schema_hash = own.structural_hash;
    if (options.interface.empty() && !own.binary.empty()) {
      options.interface = std::string(stub->service_name());
    }
  }
  {
    MutexLock lock(&mu_);
    if (shut_down_) return absl::FailedPreconditionError("ServiceHost is shut down");
  }
  // The handler runs on the service manager's reader thread; Add only queues
  // the channel for the pool. A refused channel is dropped, which hangs up
  // on its client.
  absl::Status registered = manager_->Register(
      service,
      // Each connection gets the object protocol of its own (object.h):
      // clients may pass their proxy on to a third process, and pass us
      // their objects by handle.
      [this, stub](IncomingConnection connection) {
        (void)pool_.Add(std::move(connection.channel), rpc::ServeWithObjectProtocol(stub));
      },
      std::move(options));
  if (!registered.ok()) return registered;
  MutexLock lock(&mu_);
  names_.push_back(service);
  return absl::OkStatus();
}

void ServiceHost::Shutdown() {
  std::vector<std::string> names;
  {
    MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    names.swap(names_);
  }
  for (const std::string& name : names) (void)manager_->Unregister(name);
  pool_.Shutdown();
}

}  // namespace sluice
