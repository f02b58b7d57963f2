// Channels wired up for tests without the service manager: both ends in this
// process, or the server end in a child process started with the region at
// fd 3 and its liveness socket at fd 4 (see ServerChannelFromInheritedFds).
#ifndef SLUICE_TESTS_TESTING_CHANNEL_PAIR_H_
#define SLUICE_TESTS_TESTING_CHANNEL_PAIR_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ipc/channel/client_channel.h"
#include "ipc/channel/server_channel.h"
#include "ipc/testing/subprocess.h"

namespace sluice::testing {

struct LocalPair {
  std::unique_ptr<ClientChannel> client;
  std::unique_ptr<ServerChannel> server;
};

// `client_options`: the client end's (a fuzzer's small reply limit, say).
absl::StatusOr<LocalPair> MakeLocalPair(PeerWatcher& watcher,
                                        const channel_layout::Geometry& geometry = {},
                                        const ChannelOptions& client_options = {});

struct ChildConnection {
  std::unique_ptr<ClientChannel> client;
  Subprocess server;
};

// Starts `argv` as the server, passing the region as fd 3, its liveness end
// as fd 4, then `extra_fds` from fd 5 on.
// `cpu`, if set, pins the child to that CPU.
absl::StatusOr<ChildConnection> ConnectToChild(const std::vector<std::string>& argv,
                                               PeerWatcher& watcher,
                                               const channel_layout::Geometry& geometry = {},
                                               const std::vector<int>& extra_fds = {},
                                               std::optional<int> cpu = std::nullopt);

// In the child: the server end handed over by ConnectToChild.
absl::StatusOr<std::unique_ptr<ServerChannel>> ServerChannelFromInheritedFds(PeerWatcher& watcher);

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_TESTING_CHANNEL_PAIR_H_
