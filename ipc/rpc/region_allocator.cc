#include "ipc/rpc/region_allocator.h"

namespace sluice::rpc {

uint8_t* RegionAllocator::allocate(size_t size) {
  if (!region_taken_ && size <= region_.size()) {
    region_taken_ = true;
    return reinterpret_cast<uint8_t*>(region_.data());
  }
  overflowed_ = true;
  return new uint8_t[size];
}

void RegionAllocator::deallocate(uint8_t* p, size_t /*size*/) {
  if (InRegion(p)) return;
  delete[] p;
}

}  // namespace sluice::rpc
