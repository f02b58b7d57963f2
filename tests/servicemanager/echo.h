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
  EchoServer() : state_(std::make_shared<State>()) {}
  ~EchoServer() { state_->Stop(); }
  // The handler may be called after this object is gone: the manager
  // connection that holds it (and delivers connections on its own thread)
  // is often destroyed after the EchoServer, and a connection whose Lookup
  // returned at the acknowledgement may still be on its way to the handler.
  // So the handler shares the state, and once stopped turns connections
  // away (the client sees the server end close).
  ConnectionHandler Handler() {
    return
        [state = state_](IncomingConnection connection) { state->Accept(std::move(connection)); };
  }
  size_t connections() const {
    absl::MutexLock lock(&state_->mu);
    return state_->channels.size();
  }
  std::vector<PeerCredentials> clients() const {
    absl::MutexLock lock(&state_->mu);
    return state_->clients;
  }

 private:
  struct State {
    void Accept(IncomingConnection connection) {
      absl::MutexLock lock(&mu);
      if (stopped) return;
      ServerChannel* channel = connection.channel.get();
      channels.push_back(std::move(connection.channel));
      clients.push_back(connection.client);
      threads.emplace_back([channel] { Serve(*channel); });
    }
    void Stop() {
      std::vector<std::thread> serving;
      {
        absl::MutexLock lock(&mu);
        stopped = true;
        for (auto& channel : channels) channel->Close();
        serving = std::move(threads);
      }
      for (auto& t : serving) t.join();
    }

    mutable absl::Mutex mu;
    bool stopped ABSL_GUARDED_BY(mu) = false;
    std::vector<std::unique_ptr<ServerChannel>> channels ABSL_GUARDED_BY(mu);
    std::vector<PeerCredentials> clients ABSL_GUARDED_BY(mu);
    std::vector<std::thread> threads ABSL_GUARDED_BY(mu);
  };

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

  std::shared_ptr<State> state_;
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
