#include "ipc/host/service_host.h"

#include "absl/strings/str_cat.h"

namespace sluice {

ServiceHost::~ServiceHost() { Shutdown(); }

absl::Status ServiceHost::Publish(std::shared_ptr<rpc::ServiceStub> stub, absl::string_view name,
                                  RegisterOptions options) {
  if (stub == nullptr) return absl::InvalidArgumentError("Publish: null stub");
  const std::string service(name.empty() ? stub->service_name() : name);
  {
    MutexLock lock(&mu_);
    if (shut_down_) return absl::FailedPreconditionError("ServiceHost is shut down");
  }
  absl::Status registered = manager_->Register(
      service,
      [this, stub](IncomingConnection connection) { ServeConnection(stub, std::move(connection)); },
      std::move(options));
  if (!registered.ok()) return registered;
  MutexLock lock(&mu_);
  names_.push_back(service);
  return absl::OkStatus();
}

// Runs on the service manager's reader thread: hand the channel to a thread
// of its own and return at once.
void ServiceHost::ServeConnection(std::shared_ptr<rpc::ServiceStub> stub,
                                  IncomingConnection connection) {
  MutexLock lock(&mu_);
  ReapLocked();
  if (shut_down_) return;  // Dropping the channel hangs up on the client.
  Served served;
  served.channel = std::move(connection.channel);
  served.done = std::make_shared<std::atomic<bool>>(false);
  served.thread = std::thread([channel = served.channel.get(), stub, done = served.done] {
    (void)rpc::Serve(*channel, *stub);
    done->store(true);
  });
  served_.push_back(std::move(served));
}

void ServiceHost::ReapLocked() {
  for (auto it = served_.begin(); it != served_.end();) {
    if (it->done->load()) {
      it->thread.join();
      it = served_.erase(it);
    } else {
      ++it;
    }
  }
}

size_t ServiceHost::active_connections() {
  MutexLock lock(&mu_);
  ReapLocked();
  return served_.size();
}

void ServiceHost::Shutdown() {
  std::vector<std::string> names;
  std::vector<Served> served;
  {
    MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    names.swap(names_);
    served.swap(served_);
  }
  for (const std::string& name : names) (void)manager_->Unregister(name);
  for (Served& s : served) s.channel->Close();
  for (Served& s : served) s.thread.join();
}

}  // namespace sluice
