#include "services/servicemanager/channel_material.h"

#include <utility>

#include "ipc/base/status_macros.h"
#include "ipc/channel/channel_region.h"
#include "ipc/socket/unix_socket.h"

namespace sluice {

absl::StatusOr<ChannelMaterial> CreateChannelMaterial(const channel_layout::Geometry& geometry) {
  SLUICE_ASSIGN_OR_RETURN(Region region, CreateChannelRegion(geometry));
  SLUICE_ASSIGN_OR_RETURN(UniqueFd client_region, region.DuplicateFd());
  SLUICE_ASSIGN_OR_RETURN(UniqueFd server_region, region.DuplicateFd());
  SLUICE_ASSIGN_OR_RETURN(auto liveness, SeqPacketPair());
  ChannelMaterial out;
  out.region_size = region.size();
  out.client_fds.push_back(std::move(client_region));
  out.client_fds.push_back(std::move(liveness.first));
  out.server_fds.push_back(std::move(server_region));
  out.server_fds.push_back(std::move(liveness.second));
  return out;
}

}  // namespace sluice
