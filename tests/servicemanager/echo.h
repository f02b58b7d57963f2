// An in-process echo service for the service manager tests: every accepted
// channel gets a thread that echoes requests until its client goes away or
// the EchoServer is destroyed.
#ifndef SLUICE_TESTS_SERVICEMANAGER_ECHO_H_
#define SLUICE_TESTS_SERVICEMANAGER_ECHO_H_

#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "ipc/service/service_manager.h"

namespace sluice::testing {

class EchoServer {
 public:
  ~EchoServer() {
    std::vector<std::thread> threads;
    {
      absl::MutexLock lock(&mu_);
      for (auto& channel : channels_) channel->Close();
      threads = std::move(threads_);
    }
    for (auto& t : threads) t.join();
  }
  ConnectionHandler Handler() {
    return [this](IncomingConnection connection) {
      absl::MutexLock lock(&mu_);
      ServerChannel* channel = connection.channel.get();
      channels_.push_back(std::move(connection.channel));
      clients_.push_back(connection.client);
      threads_.emplace_back([channel] { Serve(*channel); });
    };
  }
  size_t connections() const {
    absl::MutexLock lock(&mu_);
    return channels_.size();
  }
  std::vector<PeerCredentials> clients() const {
    absl::MutexLock lock(&mu_);
    return clients_;
  }

 private:
  static void Serve(ServerChannel& channel) {
    for (;;) {
      auto call = channel.Receive();  // Ends with CANCELLED on Close().
      if (!call.ok()) return;
      const size_t n = call->request().size();
      auto space = call->ReserveReply(n);
      if (!space.ok()) {
        (void)call->Fail(space.status());
        continue;
      }
      std::memcpy(space->data(), call->request().data(), n);
      (void)call->Reply(space->first(n));
    }
  }

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<ServerChannel>> channels_ ABSL_GUARDED_BY(mu_);
  std::vector<PeerCredentials> clients_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

// One echo round trip.
inline absl::StatusOr<std::string> EchoCall(ClientChannel& channel, const std::string& message,
                                            absl::Time deadline = absl::InfiniteFuture()) {
  auto call = channel.BeginCall(message.size(), deadline);
  if (!call.ok()) return call.status();
  std::span<std::byte> buffer = call->buffer().first(message.size());
  std::memcpy(buffer.data(), message.data(), message.size());
  auto reply = channel.Call(*std::move(call), buffer, deadline);
  if (!reply.ok()) return reply.status();
  return std::string(reinterpret_cast<const char*>(reply->data().data()), reply->data().size());
}

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_SERVICEMANAGER_ECHO_H_
