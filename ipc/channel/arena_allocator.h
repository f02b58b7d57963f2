// ArenaAllocator: variable-size blocks inside one side's arena of a channel.
//
// The bookkeeping lives in the owning process's private memory, never in the
// shared region, so a hostile peer cannot corrupt it, and no lock is shared
// between processes. Each arena has exactly one writer process (the client
// owns the request arena, the server the reply arena); the owner serializes
// its own threads with its own mutex.
//
// A channel has at most a block or two per call slot (a client one per
// request; a server one per reply kept plus one per reservation), so the
// live-block table has a fixed capacity and the allocator never touches the
// heap after construction: calls allocate nothing.
//
// First fit over the gaps between live blocks, kept sorted by offset; O(live
// blocks) per operation with at most max_blocks live blocks (2 *
// channel_layout::kMaxSlots on a server).
#ifndef SLUICE_IPC_CHANNEL_ARENA_ALLOCATOR_H_
#define SLUICE_IPC_CHANNEL_ARENA_ALLOCATOR_H_

#include <cstdint>
#include <optional>
#include <vector>

namespace sluice {

class ArenaAllocator {
 public:
  // Where in a gap a block goes. kHigh places blocks at the top of the
  // highest gap that fits: for blocks later shrunk to their tail (a
  // FlatBuffer built back to front), the freed fronts then join the free
  // space below instead of leaving holes.
  enum class Placement : uint8_t { kLow, kHigh };

  // An arena of `size` bytes handing out blocks aligned to `alignment` (a
  // power of two dividing `size`), with at most `max_blocks` live at once.
  ArenaAllocator(uint64_t size, uint64_t alignment, uint32_t max_blocks,
                 Placement placement = Placement::kLow);

  // Offset of a new block of at least `size` bytes (size 0 counts as 1), or
  // nullopt if no gap is large enough or max_blocks are live.
  std::optional<uint64_t> Allocate(uint64_t size);

  // Releases the block starting at `offset`. Returns false (and changes
  // nothing) if no live block starts there.
  bool Free(uint64_t offset);

  // Keeps only [new_offset, new_offset + new_size) of the block starting at
  // `offset` (rounded out to the alignment), giving the rest back. False (and
  // nothing changes) if there is no such block or the range is not inside it.
  bool Shrink(uint64_t offset, uint64_t new_offset, uint64_t new_size);

  // Size of the block starting at `offset`, 0 if none.
  uint64_t BlockSize(uint64_t offset) const;

  uint64_t size() const { return size_; }
  uint64_t LargestFreeGap() const;
  uint32_t live_blocks() const { return static_cast<uint32_t>(blocks_.size()); }

 private:
  struct Block {
    uint64_t offset;
    uint64_t size;
  };

  uint64_t size_;
  uint64_t alignment_;
  uint32_t max_blocks_;
  Placement placement_;
  std::vector<Block> blocks_;  // Sorted by offset; capacity reserved up front.
};

}  // namespace sluice

#endif  // SLUICE_IPC_CHANNEL_ARENA_ALLOCATOR_H_
