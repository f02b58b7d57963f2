#include "tests/testing/channel_pair.h"

#include "ipc/channel/channel_region.h"
#include "ipc/socket/unix_socket.h"

namespace sluice::testing {

absl::StatusOr<LocalPair> MakeLocalPair(PeerWatcher& watcher,
                                        const channel_layout::Geometry& geometry,
                                        const ChannelOptions& client_options) {
  auto region = CreateChannelRegion(geometry);
  if (!region.ok()) return region.status();
  auto sockets = SeqPacketPair();
  if (!sockets.ok()) return sockets.status();
  auto fd = region->DuplicateFd();
  if (!fd.ok()) return fd.status();
  auto server_region = Region::Adopt(*std::move(fd), 0, Region::kMaxSize);
  if (!server_region.ok()) return server_region.status();
  auto server = ServerChannel::Open(*std::move(server_region), std::move(sockets->second), watcher);
  if (!server.ok()) return server.status();
  auto client =
      ClientChannel::Open(*std::move(region), std::move(sockets->first), watcher, client_options);
  if (!client.ok()) return client.status();
  return LocalPair{*std::move(client), *std::move(server)};
}

absl::StatusOr<ChildConnection> ConnectToChild(const std::vector<std::string>& argv,
                                               PeerWatcher& watcher,
                                               const channel_layout::Geometry& geometry,
                                               const std::vector<int>& extra_fds,
                                               std::optional<int> cpu) {
  auto region = CreateChannelRegion(geometry);
  if (!region.ok()) return region.status();
  auto sockets = SeqPacketPair();
  if (!sockets.ok()) return sockets.status();
  std::vector<int> fds = {region->fd(), sockets->second.get()};
  fds.insert(fds.end(), extra_fds.begin(), extra_fds.end());
  auto child = Subprocess::Spawn(argv, fds, cpu);
  if (!child.ok()) return child.status();
  // Only the server may hold its end, or its death goes unseen.
  sockets->second.reset();
  auto client = ClientChannel::Open(*std::move(region), std::move(sockets->first), watcher);
  if (!client.ok()) return client.status();
  return ChildConnection{*std::move(client), *std::move(child)};
}

absl::StatusOr<std::unique_ptr<ServerChannel>> ServerChannelFromInheritedFds(PeerWatcher& watcher) {
  auto region = Region::Adopt(UniqueFd(3), 0, Region::kMaxSize);
  if (!region.ok()) return region.status();
  return ServerChannel::Open(*std::move(region), UniqueFd(4), watcher);
}

}  // namespace sluice::testing
