#include "ipc/channel/arena_allocator.h"

#include <algorithm>

namespace sluice {

ArenaAllocator::ArenaAllocator(uint64_t size, uint64_t alignment, uint32_t max_blocks)
    : size_(size / alignment * alignment), alignment_(alignment), max_blocks_(max_blocks) {
  blocks_.reserve(max_blocks);
}

std::optional<uint64_t> ArenaAllocator::Allocate(uint64_t size) {
  if (blocks_.size() >= max_blocks_ || size > size_) return std::nullopt;
  const uint64_t rounded = (std::max<uint64_t>(size, 1) + alignment_ - 1) / alignment_ * alignment_;
  uint64_t gap_start = 0;
  for (size_t i = 0; i <= blocks_.size(); ++i) {
    const uint64_t gap_end = i < blocks_.size() ? blocks_[i].offset : size_;
    if (gap_end - gap_start >= rounded) {
      blocks_.insert(blocks_.begin() + static_cast<std::ptrdiff_t>(i), Block{gap_start, rounded});
      return gap_start;
    }
    if (i < blocks_.size()) gap_start = blocks_[i].offset + blocks_[i].size;
  }
  return std::nullopt;
}

bool ArenaAllocator::Free(uint64_t offset) {
  auto it = std::lower_bound(blocks_.begin(), blocks_.end(), offset,
                             [](const Block& b, uint64_t off) { return b.offset < off; });
  if (it == blocks_.end() || it->offset != offset) return false;
  blocks_.erase(it);
  return true;
}

uint64_t ArenaAllocator::BlockSize(uint64_t offset) const {
  auto it = std::lower_bound(blocks_.begin(), blocks_.end(), offset,
                             [](const Block& b, uint64_t off) { return b.offset < off; });
  return it != blocks_.end() && it->offset == offset ? it->size : 0;
}

uint64_t ArenaAllocator::LargestFreeGap() const {
  uint64_t largest = 0;
  uint64_t gap_start = 0;
  for (const Block& b : blocks_) {
    largest = std::max(largest, b.offset - gap_start);
    gap_start = b.offset + b.size;
  }
  return std::max(largest, size_ - gap_start);
}

}  // namespace sluice
