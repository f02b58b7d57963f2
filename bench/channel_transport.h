// The Sluice channel as a ping-pong transport, and the plumbing that puts
// one side of a channel in a child process.
//
// Wiring (the parent creates everything):
//   parent                                   child (re-exec of this binary)
//   CreateChannelRegion(kBenchGeometry)  ->  fd 3: the region's memfd
//   SeqPacketPair(): keeps one end       ->  fd 4: the other end (liveness)
//                                            fd 5...: extra descriptors
// Each side opens its channel with its own PeerWatcher. The parent closes its
// copy of the child's socket end at once, so the child's death hangs up the
// parent's end (and the other way round).
#ifndef SLUICE_BENCH_CHANNEL_TRANSPORT_H_
#define SLUICE_BENCH_CHANNEL_TRANSPORT_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/pingpong.h"
#include "ipc/base/unique_fd.h"
#include "ipc/channel/layout.h"
#include "ipc/channel/peer_watcher.h"
#include "ipc/shm/region.h"
#include "ipc/testing/subprocess.h"

namespace sluice::bench {

// Room for a 1 MiB request plus slack, and small replies.
inline constexpr channel_layout::Geometry kBenchGeometry{
    .slot_count = 16,
    .request_arena_size = uint64_t{2} << 20,
    .reply_arena_size = uint64_t{64} << 10,
};

// The parent's half of a channel whose other side runs in `process`.
struct ChannelPeer {
  testing::Subprocess process;
  Region region;      // For ClientChannel::Open or ServerChannel::Open.
  UniqueFd liveness;  // Hangs up when the child dies.
};

// Creates a channel region and liveness pair and starts `argv` with its side
// at fds 3 and 4 and `extra_fds` from fd 5, pinned to `cpu` if set.
absl::StatusOr<ChannelPeer> SpawnChannelPeer(const std::vector<std::string>& argv,
                                             const std::vector<int>& extra_fds,
                                             std::optional<int> cpu);

// In a child started by SpawnChannelPeer: its region (fd 3) and liveness end
// (fd 4).
struct ChildChannelEnds {
  Region region;
  UniqueFd liveness;
};
absl::StatusOr<ChildChannelEnds> AdoptChildChannelEnds();

absl::StatusOr<std::unique_ptr<PingPongClient>> StartChannel(const CaseSetup& setup,
                                                             PeerWatcher& watcher);
int ServeChannel(const CaseSetup& setup);

}  // namespace sluice::bench

#endif  // SLUICE_BENCH_CHANNEL_TRANSPORT_H_
