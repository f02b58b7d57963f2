// The rpc case: N clients, each with a channel of its own, calling the
// generated BenchServiceProxy::Send against one server process whose
// rpc::ServerPool runs exactly one thread for all N channels.
//
//   client i: fd 3 run control, fd 4 its channel region, fd 5 its liveness end
//   server:   fd 3 run control, fds 4 + 2i and 5 + 2i: channel i's region and
//             liveness end
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "bench/channel_transport.h"
#include "bench/harness.h"
#include "bench/rpc/bench_service.h"
#include "bench/rpc/throughput.h"
#include "bench_sluice.h"
#include "ipc/base/errors.h"
#include "ipc/base/mutex.h"
#include "ipc/base/notification.h"
#include "ipc/base/status_macros.h"
#include "ipc/channel/channel_region.h"
#include "ipc/channel/client_channel.h"
#include "ipc/channel/peer_watcher.h"
#include "ipc/channel/server_channel.h"
#include "ipc/rpc/object.h"
#include "ipc/rpc/server_pool.h"
#include "ipc/socket/unix_socket.h"

namespace sluice::bench::throughput {
namespace {

class RpcCaller final : public Caller {
 public:
  RpcCaller(std::unique_ptr<PeerWatcher> watcher, std::unique_ptr<ClientChannel> channel)
      : watcher_(std::move(watcher)), channel_(std::move(channel)), proxy_(*channel_) {}

  absl::StatusOr<uint64_t> Call(std::span<const std::byte> payload) override {
    absl::StatusOr<rpc::Response<Ack>> reply = proxy_.Send(absl::Span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(payload.data()), payload.size()));
    if (!reply.ok()) return reply.status();
    if ((*reply)->size() != payload.size()) {
      return absl::DataLossError(absl::StrCat("the server saw ", (*reply)->size(), " bytes"));
    }
    return (*reply)->checksum();
  }

 private:
  // In this order, so that the channel goes before its watcher.
  std::unique_ptr<PeerWatcher> watcher_;
  std::unique_ptr<ClientChannel> channel_;
  BenchServiceProxy proxy_;
};

// The server's pool: one thread for every channel, whatever happens. With
// max_threads 1 no thread starts for busy ones, and with thread_cap 1 the
// watchdog (which grows a stalled pool past max_threads) cannot add one.
rpc::ServerPool::Options OneThread() {
  rpc::ServerPool::Options options;
  options.max_threads = 1;
  options.thread_cap = 1;
  return options;
}

}  // namespace

absl::StatusOr<Processes> StartRpc(int clients, size_t payload, int run_fd) {
  struct Connection {
    Region region;
    std::pair<UniqueFd, UniqueFd> liveness;  // The client's end, the server's.
  };
  std::vector<Connection> connections;
  std::vector<int> server_fds = {run_fd};
  for (int i = 0; i < clients; ++i) {
    SLUICE_ASSIGN_OR_RETURN(Region region, CreateChannelRegion(kBenchGeometry));
    SLUICE_ASSIGN_OR_RETURN(auto liveness, SeqPacketPair());
    connections.push_back({std::move(region), std::move(liveness)});
    server_fds.push_back(connections.back().region.fd());
    server_fds.push_back(connections.back().liveness.second.get());
  }
  SLUICE_ASSIGN_OR_RETURN(
      testing::Subprocess server,
      testing::Subprocess::Spawn(ServerArgv(Case::kRpc, clients, payload), server_fds));
  Processes processes{std::move(server), {}, nullptr};
  for (int i = 0; i < clients; ++i) {
    const Connection& c = connections[static_cast<size_t>(i)];
    SLUICE_ASSIGN_OR_RETURN(
        testing::Subprocess client,
        testing::Subprocess::Spawn(ClientArgv(Case::kRpc, i, payload),
                                   {run_fd, c.region.fd(), c.liveness.first.get()}));
    processes.clients.push_back(std::move(client));
  }
  // Our copies close here: each liveness end is held by its process alone,
  // so either side's death hangs up the other's.
  return processes;
}

absl::StatusOr<std::unique_ptr<Caller>> ConnectRpc() {
  SLUICE_ASSIGN_OR_RETURN(
      Region region,
      Region::Adopt(UniqueFd(4), sizeof(channel_layout::ChannelHeader), Region::kMaxSize));
  SLUICE_ASSIGN_OR_RETURN(std::unique_ptr<PeerWatcher> watcher, PeerWatcher::Create());
  SLUICE_ASSIGN_OR_RETURN(
      std::unique_ptr<ClientChannel> channel,
      ClientChannel::Open(std::move(region), UniqueFd(5), *watcher, SameUserTrust()));
  return std::make_unique<RpcCaller>(std::move(watcher), std::move(channel));
}

int ServeRpc(RunControl& run, int connections) {
  absl::StatusOr<std::unique_ptr<PeerWatcher>> watcher = PeerWatcher::Create();
  if (!watcher.ok()) Die(watcher.status(), "PeerWatcher::Create");
  // Served as ServiceHost serves a published stub: one stub instance, each
  // channel with an object protocol of its own.
  const auto stub = std::make_shared<BenchServer>();
  Mutex mu;
  int ended = 0;
  absl::Status failure;
  Notification all_ended;
  auto on_end = [&](absl::Status why) {
    MutexLock lock(&mu);
    if (!IsPeerDead(why) && failure.ok()) failure = std::move(why);
    if (++ended == connections) all_ended.Notify();
  };
  rpc::ServerPool pool(OneThread());
  for (int i = 0; i < connections; ++i) {
    absl::StatusOr<Region> region =
        Region::Adopt(UniqueFd(4 + 2 * i), sizeof(channel_layout::ChannelHeader), Region::kMaxSize);
    if (!region.ok()) Die(region.status(), "adopting a channel region");
    absl::StatusOr<std::unique_ptr<ServerChannel>> channel =
        ServerChannel::Open(*std::move(region), UniqueFd(5 + 2 * i), **watcher, SameUserTrust());
    if (!channel.ok()) Die(channel.status(), "ServerChannel::Open");
    if (absl::Status added =
            pool.Add(*std::move(channel), rpc::ServeWithObjectProtocol(stub), on_end);
        !added.ok()) {
      Die(added, "ServerPool::Add");
    }
  }
  // Every client disconnects once told to stop: the pool drops each channel
  // as its client's death.
  all_ended.WaitForNotification();
  run.server_threads.store(static_cast<uint32_t>(pool.stats().peak_threads),
                           std::memory_order_relaxed);
  pool.Shutdown();
  MutexLock lock(&mu);
  if (!failure.ok()) Die(failure, "serving");
  return 0;
}

}  // namespace sluice::bench::throughput
