// ChannelMaterial: everything the manager makes for one client↔server
// connection, in ONE function, so a change of the channel's memory layout
// (ipc/channel) touches only CreateChannelMaterial.
//
// Ownership: the caller owns every descriptor and hands each side its half
// (client_fds in the LookupReply, server_fds in the NewConnectionEvent); the
// manager keeps none once both are sent.
#ifndef SLUICE_SERVICES_SERVICEMANAGER_CHANNEL_MATERIAL_H_
#define SLUICE_SERVICES_SERVICEMANAGER_CHANNEL_MATERIAL_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "ipc/base/unique_fd.h"
#include "ipc/channel/layout.h"

namespace sluice {

struct ChannelMaterial {
  uint64_t region_size = 0;
  // Descriptors in wire order (idl/servicemanager.fbs): [region, liveness].
  std::vector<UniqueFd> client_fds;
  std::vector<UniqueFd> server_fds;
};

// A formatted, sealed channel region of `geometry` plus a liveness socket
// pair. Errors are the OS's (RESOURCE_EXHAUSTED for EMFILE/ENOMEM).
absl::StatusOr<ChannelMaterial> CreateChannelMaterial(const channel_layout::Geometry& geometry);

}  // namespace sluice

#endif  // SLUICE_SERVICES_SERVICEMANAGER_CHANNEL_MATERIAL_H_
