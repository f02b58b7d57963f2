#include "ipc/channel/arena_allocator.h"

#include <algorithm>

namespace sluice {

ArenaAllocator::ArenaAllocator(uint64_t size, uint64_t alignment, uint32_t max_blocks,
                               Placement placement)
    : size_(size / alignment * alignment),
      alignment_(alignment),
      max_blocks_(max_blocks),
      placement_(placement) {
  blocks_.reserve(max_blocks);
}

std::optional<uint64_t> ArenaAllocator::Allocate(uint64_t size) {
  if (blocks_.size() >= max_blocks_ || size > size_) return std::nullopt;
  const uint64_t rounded = (std::max<uint64_t>(size, 1) + alignment_ - 1) / alignment_ * alignment_;
  if (placement_ == Placement::kHigh) {
    // Gaps from the top down: [end of block i-1, start of block i).
    for (size_t i = blocks_.size() + 1; i-- > 0;) {
      const uint64_t gap_end = i < blocks_.size() ? blocks_[i].offset : size_;
      const uint64_t gap_start = i > 0 ? blocks_[i - 1].offset + blocks_[i - 1].size : 0;
      if (gap_end - gap_start >= rounded) {
        const uint64_t offset = gap_end - rounded;
        blocks_.insert(blocks_.begin() + static_cast<std::ptrdiff_t>(i), Block{offset, rounded});
        return offset;
      }
    }
    return std::nullopt;
  }
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

bool ArenaAllocator::Shrink(uint64_t offset, uint64_t new_offset, uint64_t new_size) {
  auto it = std::lower_bound(blocks_.begin(), blocks_.end(), offset,
                             [](const Block& b, uint64_t off) { return b.offset < off; });
  if (it == blocks_.end() || it->offset != offset) return false;
  const uint64_t begin = new_offset / alignment_ * alignment_;
  const uint64_t end =
      (new_offset + std::max<uint64_t>(new_size, 1) + alignment_ - 1) / alignment_ * alignment_;
  if (new_offset < offset || begin < it->offset || end > it->offset + it->size) return false;
  // The block only moves its start forward, so the order is kept.
  it->offset = begin;
  it->size = end - begin;
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
