// tally_server: publishes tally.Tally with the service manager ($SLUICE_SERVICEMANAGER
// or the usual socket path) and serves it until SIGTERM or SIGINT.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "ipc/host/service_host.h"
#include "tally_sluice.h"

namespace {

class TallyService : public tally::TallyStub {
 public:
  absl::StatusOr<flatbuffers::Offset<tally::AddResponse>> Add(
      const sluice::rpc::CallContext& /*context*/, const tally::AddRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override {
    std::lock_guard<std::mutex> lock(mu_);
    // The request lives in the shared region only during the call: what is
    // kept is copied into the object API's owning struct.
    tally::CounterT& counter = counters_[request.name()->str()];
    counter.name = request.name()->str();
    counter.total += request.amount();
    if (request.note() != nullptr) counter.note = request.note()->str();
    ++adds_;
    return tally::CreateAddResponse(reply, counter.total);
  }

  absl::StatusOr<flatbuffers::Offset<tally::TopResponse>> Top(
      const sluice::rpc::CallContext& /*context*/, const tally::TopRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override {
    const std::string prefix = request.prefix() != nullptr ? request.prefix()->str() : "";
    tally::TopResponseT top;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [name, counter] : counters_) {
        if (name.compare(0, prefix.size(), prefix) == 0) {
          top.counters.push_back(std::make_unique<tally::CounterT>(counter));
        }
      }
    }
    std::stable_sort(top.counters.begin(), top.counters.end(),
                     [](const auto& a, const auto& b) { return a->total > b->total; });
    if (top.counters.size() > request.limit()) top.counters.resize(request.limit());
    return tally::TopResponse::Pack(reply, &top);
  }

  int adds() {
    std::lock_guard<std::mutex> lock(mu_);
    return adds_;
  }

 private:
  std::mutex mu_;  // Methods run on one thread per connection.
  std::map<std::string, tally::CounterT> counters_;
  int adds_ = 0;
};

}  // namespace

int main() {
  // Blocked in every thread, so sigwait below receives them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  auto manager = sluice::ServiceManager::Connect();
  if (!manager.ok()) {
    std::fprintf(stderr, "tally_server: %s\n", manager.status().ToString().c_str());
    return 1;
  }
  auto service = std::make_shared<TallyService>();
  sluice::ServiceHost host(**manager);
  if (absl::Status published = host.Publish(service); !published.ok()) {
    std::fprintf(stderr, "tally_server: %s\n", published.ToString().c_str());
    return 1;
  }
  std::printf("tally_server: serving %s (pid %d)\n",
              std::string(tally::TallyInterface::kName).c_str(), getpid());
  std::fflush(stdout);

  int signal = 0;
  sigwait(&stop, &signal);
  host.Shutdown();
  std::printf("tally_server: %d adds; stopped by signal %d\n", service->adds(), signal);
  return 0;
}
