#include "ipc/channel/channel_region.h"

#include <cstring>

namespace sluice {

absl::StatusOr<Region> CreateChannelRegion(const channel_layout::Geometry& geometry) {
  auto header = channel_layout::PlanRegion(geometry);
  if (!header.ok()) return header.status();
  auto region = Region::Create("sluice-channel", header->region_size);
  if (!region.ok()) return region.status();
  // Region rounds up to whole pages; the plan already did.
  std::memcpy(region->data(), &*header, sizeof(*header));
  return region;
}

}  // namespace sluice
