// RegionAllocator: lets a flatbuffers::FlatBufferBuilder build straight into
// space reserved in a channel region, so a message is written exactly once.
//
// The first allocation is the reserved span itself. If the message outgrows
// it, the builder moves to the heap and overflowed() turns true: the caller
// then reserves a larger span and builds (or copies) again. Nothing is freed
// that lives in the region.
//
// One builder, one thread.
#ifndef SLUICE_IPC_RPC_REGION_ALLOCATOR_H_
#define SLUICE_IPC_RPC_REGION_ALLOCATOR_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "flatbuffers/flatbuffers.h"

namespace sluice::rpc {

class RegionAllocator final : public flatbuffers::Allocator {
 public:
  explicit RegionAllocator(std::span<std::byte> region) : region_(region) {}

  uint8_t* allocate(size_t size) override;
  void deallocate(uint8_t* p, size_t size) override;

  bool overflowed() const { return overflowed_; }
  bool InRegion(const uint8_t* p) const {
    const auto* base = reinterpret_cast<const uint8_t*>(region_.data());
    return p >= base && p < base + region_.size();
  }

 private:
  std::span<std::byte> region_;
  bool region_taken_ = false;
  bool overflowed_ = false;
};

// The builder rounds its buffer up to its alignment (8) before the first
// allocation; a reservation that is not a multiple would never fit.
constexpr size_t RoundUpForBuilder(size_t size) { return (size + 63) / 64 * 64; }

}  // namespace sluice::rpc

#endif  // SLUICE_IPC_RPC_REGION_ALLOCATOR_H_
