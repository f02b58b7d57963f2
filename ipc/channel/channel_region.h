// CreateChannelRegion: makes a channel's control region. Whoever sets a
// channel up (the service manager for a connection, a process for an object
// it lends) calls it and hands the region to both sides, which open it with
// ClientChannel::Open and ServerChannel::Open; each side makes its own arena
// then. The layout is channel_layout's (layout.h).
#ifndef SLUICE_IPC_CHANNEL_CHANNEL_REGION_H_
#define SLUICE_IPC_CHANNEL_CHANNEL_REGION_H_

#include "absl/status/statusor.h"
#include "ipc/channel/layout.h"
#include "ipc/shm/region.h"

namespace sluice {

// A region formatted for `geometry`; INVALID_ARGUMENT if it is out of range.
absl::StatusOr<Region> CreateChannelRegion(const channel_layout::Geometry& geometry = {});

}  // namespace sluice

#endif  // SLUICE_IPC_CHANNEL_CHANNEL_REGION_H_
