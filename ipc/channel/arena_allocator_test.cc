#include "ipc/channel/arena_allocator.h"

#include <cstdint>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sluice {
namespace {

using ::testing::Optional;

constexpr uint64_t kAlign = 64;

TEST(ArenaAllocatorTest, SizeIsRoundedDownToTheAlignment) {
  EXPECT_EQ(ArenaAllocator(1000, kAlign, 4).size(), 960u);
  EXPECT_EQ(ArenaAllocator(1024, kAlign, 4).size(), 1024u);
  EXPECT_EQ(ArenaAllocator(63, kAlign, 4).size(), 0u);
}

TEST(ArenaAllocatorTest, EmptyArenaIsOneFreeGap) {
  ArenaAllocator arena(4096, kAlign, 8);
  EXPECT_EQ(arena.live_blocks(), 0u);
  EXPECT_EQ(arena.LargestFreeGap(), 4096u);
}

TEST(ArenaAllocatorTest, FirstAllocationStartsAtOffsetZero) {
  ArenaAllocator arena(4096, kAlign, 8);
  EXPECT_THAT(arena.Allocate(10), Optional(0u));
}

TEST(ArenaAllocatorTest, BlocksAreAlignedAndSizesRoundedUp) {
  ArenaAllocator arena(1 << 16, kAlign, 16);
  for (uint64_t size : {1, 63, 64, 65, 100, 127, 128, 129, 1000}) {
    std::optional<uint64_t> offset = arena.Allocate(size);
    ASSERT_TRUE(offset.has_value()) << size;
    EXPECT_EQ(*offset % kAlign, 0u) << size;
    EXPECT_EQ(arena.BlockSize(*offset), (size + kAlign - 1) / kAlign * kAlign) << size;
  }
}

TEST(ArenaAllocatorTest, SmallerAlignmentIsHonoured) {
  ArenaAllocator arena(1024, 8, 16);
  EXPECT_THAT(arena.Allocate(3), Optional(0u));
  EXPECT_THAT(arena.Allocate(9), Optional(8u));
  EXPECT_THAT(arena.Allocate(1), Optional(24u));
}

TEST(ArenaAllocatorTest, ZeroSizeCountsAsOneByte) {
  ArenaAllocator arena(4096, kAlign, 8);
  std::optional<uint64_t> a = arena.Allocate(0);
  std::optional<uint64_t> b = arena.Allocate(0);
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_NE(*a, *b) << "two live blocks must never share an offset";
  EXPECT_EQ(arena.BlockSize(*a), kAlign);
}

TEST(ArenaAllocatorTest, BlocksArePackedBackToBack) {
  ArenaAllocator arena(4096, kAlign, 8);
  EXPECT_THAT(arena.Allocate(64), Optional(0u));
  EXPECT_THAT(arena.Allocate(100), Optional(64u));
  EXPECT_THAT(arena.Allocate(1), Optional(192u));
}

TEST(ArenaAllocatorTest, FirstFitTakesTheLowestGapThatIsLargeEnough) {
  ArenaAllocator arena(4096, kAlign, 8);
  const uint64_t a = *arena.Allocate(64);   // [0, 64)
  const uint64_t b = *arena.Allocate(192);  // [64, 256)
  const uint64_t c = *arena.Allocate(64);   // [256, 320)
  const uint64_t d = *arena.Allocate(128);  // [320, 448)
  ASSERT_TRUE(arena.Free(a));
  ASSERT_TRUE(arena.Free(b));
  ASSERT_TRUE(arena.Free(d));
  // Gaps: [0, 256), [320, 4096). A small block goes into the first one.
  EXPECT_THAT(arena.Allocate(64), Optional(0u));
  // [64, 256) is still large enough for 192.
  EXPECT_THAT(arena.Allocate(192), Optional(64u));
  // Nothing left below c: the next block goes after it.
  EXPECT_THAT(arena.Allocate(1), Optional(c + 64));
}

TEST(ArenaAllocatorTest, FirstFitSkipsGapsThatAreTooSmall) {
  ArenaAllocator arena(4096, kAlign, 8);
  const uint64_t a = *arena.Allocate(64);   // [0, 64)
  *arena.Allocate(64);                      // [64, 128)
  const uint64_t c = *arena.Allocate(128);  // [128, 256)
  *arena.Allocate(64);                      // [256, 320)
  ASSERT_TRUE(arena.Free(a));
  ASSERT_TRUE(arena.Free(c));
  // Gaps of 64 and 128 bytes, then the tail: 192 bytes fit only in the tail.
  EXPECT_THAT(arena.Allocate(192), Optional(320u));
  EXPECT_THAT(arena.Allocate(128), Optional(128u));
  EXPECT_THAT(arena.Allocate(64), Optional(0u));
}

TEST(ArenaAllocatorTest, GapLeftByFreeIsReused) {
  ArenaAllocator arena(512, kAlign, 8);
  std::vector<uint64_t> offsets;
  for (int i = 0; i < 4; ++i) offsets.push_back(*arena.Allocate(128));
  EXPECT_EQ(arena.Allocate(1), std::nullopt) << "arena should be full";
  ASSERT_TRUE(arena.Free(offsets[2]));
  EXPECT_THAT(arena.Allocate(128), Optional(offsets[2]));
  EXPECT_EQ(arena.Allocate(1), std::nullopt);
}

TEST(ArenaAllocatorTest, AdjacentFreedBlocksFormOneGap) {
  ArenaAllocator arena(512, kAlign, 8);
  std::vector<uint64_t> offsets;
  for (int i = 0; i < 4; ++i) offsets.push_back(*arena.Allocate(128));
  ASSERT_TRUE(arena.Free(offsets[1]));
  ASSERT_TRUE(arena.Free(offsets[2]));
  EXPECT_EQ(arena.LargestFreeGap(), 256u);
  EXPECT_THAT(arena.Allocate(256), Optional(offsets[1]));
}

TEST(ArenaAllocatorTest, MaxBlocksLimitsLiveBlocksNotBytes) {
  ArenaAllocator arena(4096, kAlign, 3);
  const uint64_t first = *arena.Allocate(1);
  *arena.Allocate(1);
  *arena.Allocate(1);
  EXPECT_EQ(arena.live_blocks(), 3u);
  EXPECT_EQ(arena.Allocate(1), std::nullopt);
  EXPECT_GT(arena.LargestFreeGap(), 0u) << "space remains; only the block count is exhausted";
  ASSERT_TRUE(arena.Free(first));
  EXPECT_THAT(arena.Allocate(1), Optional(first));
}

TEST(ArenaAllocatorTest, ZeroMaxBlocksAllocatesNothing) {
  ArenaAllocator arena(4096, kAlign, 0);
  EXPECT_EQ(arena.Allocate(1), std::nullopt);
}

TEST(ArenaAllocatorTest, FreeOfAnUnknownOffsetReturnsFalseAndChangesNothing) {
  ArenaAllocator arena(4096, kAlign, 8);
  const uint64_t a = *arena.Allocate(128);
  const uint64_t b = *arena.Allocate(64);
  const uint64_t gap = arena.LargestFreeGap();
  EXPECT_FALSE(arena.Free(a + 64)) << "inside a block";
  EXPECT_FALSE(arena.Free(b + 64)) << "just past the last block";
  EXPECT_FALSE(arena.Free(4096));
  EXPECT_FALSE(arena.Free(UINT64_MAX));
  EXPECT_EQ(arena.live_blocks(), 2u);
  EXPECT_EQ(arena.LargestFreeGap(), gap);
  EXPECT_EQ(arena.BlockSize(a), 128u);
}

TEST(ArenaAllocatorTest, DoubleFreeReturnsFalse) {
  ArenaAllocator arena(4096, kAlign, 8);
  const uint64_t a = *arena.Allocate(64);
  EXPECT_TRUE(arena.Free(a));
  EXPECT_FALSE(arena.Free(a));
  EXPECT_EQ(arena.live_blocks(), 0u);
}

TEST(ArenaAllocatorTest, FreeOnAnEmptyArenaReturnsFalse) {
  ArenaAllocator arena(4096, kAlign, 8);
  EXPECT_FALSE(arena.Free(0));
}

TEST(ArenaAllocatorTest, BlockSizeOfAnUnknownOffsetIsZero) {
  ArenaAllocator arena(4096, kAlign, 8);
  const uint64_t a = *arena.Allocate(64);
  EXPECT_EQ(arena.BlockSize(a + 1), 0u);
  EXPECT_EQ(arena.BlockSize(1024), 0u);
}

TEST(ArenaAllocatorTest, LargestFreeGapSeesLeadingMiddleAndTrailingGaps) {
  ArenaAllocator arena(1024, kAlign, 8);
  const uint64_t a = *arena.Allocate(192);  // [0, 192)
  const uint64_t b = *arena.Allocate(64);   // [192, 256)
  const uint64_t c = *arena.Allocate(320);  // [256, 576)
  *arena.Allocate(384);                     // [576, 960), tail gap 64
  EXPECT_EQ(arena.LargestFreeGap(), 64u);
  ASSERT_TRUE(arena.Free(a));
  EXPECT_EQ(arena.LargestFreeGap(), 192u) << "leading gap";
  ASSERT_TRUE(arena.Free(c));
  EXPECT_EQ(arena.LargestFreeGap(), 320u) << "middle gap";
  ASSERT_TRUE(arena.Free(b));
  EXPECT_EQ(arena.LargestFreeGap(), 576u) << "merged leading gap";
}

TEST(ArenaAllocatorTest, WholeArenaCanBeOneBlock) {
  ArenaAllocator arena(4096, kAlign, 8);
  EXPECT_THAT(arena.Allocate(4096), Optional(0u));
  EXPECT_EQ(arena.LargestFreeGap(), 0u);
  EXPECT_EQ(arena.Allocate(0), std::nullopt);
}

TEST(ArenaAllocatorTest, OversizedRequestsFailWithoutOverflow) {
  ArenaAllocator arena(4096, kAlign, 8);
  EXPECT_EQ(arena.Allocate(4097), std::nullopt);
  EXPECT_EQ(arena.Allocate(UINT64_MAX), std::nullopt);
  EXPECT_EQ(arena.Allocate(UINT64_MAX - kAlign + 2), std::nullopt);
  EXPECT_EQ(arena.live_blocks(), 0u);
}

TEST(ArenaAllocatorTest, ExhaustionFailsUntilSomethingIsFreed) {
  ArenaAllocator arena(1024, kAlign, 64);
  std::vector<uint64_t> offsets;
  while (std::optional<uint64_t> offset = arena.Allocate(100)) offsets.push_back(*offset);
  EXPECT_EQ(offsets.size(), 1024u / 128u);
  EXPECT_EQ(arena.LargestFreeGap(), 0u);
  EXPECT_EQ(arena.Allocate(1), std::nullopt);
  ASSERT_TRUE(arena.Free(offsets.back()));
  EXPECT_THAT(arena.Allocate(1), Optional(offsets.back()));
}

// An obviously correct model: live blocks in a map, first fit by a linear scan.
class ReferenceArena {
 public:
  ReferenceArena(uint64_t size, uint64_t alignment, uint32_t max_blocks)
      : size_(size / alignment * alignment), alignment_(alignment), max_blocks_(max_blocks) {}

  std::optional<uint64_t> Allocate(uint64_t size) {
    if (blocks_.size() >= max_blocks_) return std::nullopt;
    const uint64_t rounded =
        (std::max<uint64_t>(size, 1) + alignment_ - 1) / alignment_ * alignment_;
    uint64_t cursor = 0;
    for (const auto& [offset, length] : blocks_) {
      if (offset - cursor >= rounded) break;
      cursor = offset + length;
    }
    if (cursor + rounded > size_) return std::nullopt;
    blocks_[cursor] = rounded;
    return cursor;
  }

  bool Free(uint64_t offset) { return blocks_.erase(offset) == 1; }

  uint64_t LargestFreeGap() const {
    uint64_t largest = 0, cursor = 0;
    for (const auto& [offset, length] : blocks_) {
      largest = std::max(largest, offset - cursor);
      cursor = offset + length;
    }
    return std::max(largest, size_ - cursor);
  }

  const std::map<uint64_t, uint64_t>& blocks() const { return blocks_; }

 private:
  uint64_t size_;
  uint64_t alignment_;
  uint32_t max_blocks_;
  std::map<uint64_t, uint64_t> blocks_;
};

TEST(ArenaAllocatorTest, RandomizedOperationsMatchTheReferenceModel) {
  constexpr uint64_t kSize = 64 * 1024 + 100;  // Not a multiple of the alignment.
  constexpr uint32_t kMaxBlocks = 64;
  ArenaAllocator arena(kSize, kAlign, kMaxBlocks);
  ReferenceArena model(kSize, kAlign, kMaxBlocks);
  std::mt19937_64 rng(20240611);
  std::uniform_int_distribution<int> op(0, 9);
  // Mostly small requests, some large, a few that cannot fit.
  std::discrete_distribution<int> size_class({60, 30, 8, 2});

  for (int step = 0; step < 10000; ++step) {
    const int choice = op(rng);
    if (choice < 5) {
      uint64_t size = 0;
      switch (size_class(rng)) {
        case 0:
          size = rng() % 512;
          break;
        case 1:
          size = rng() % 4096;
          break;
        case 2:
          size = rng() % 32768;
          break;
        default:
          size = kSize + rng() % 1000;
          break;
      }
      ASSERT_EQ(arena.Allocate(size), model.Allocate(size)) << "step " << step << " size " << size;
    } else if (choice < 9 && !model.blocks().empty()) {
      auto it = model.blocks().begin();
      std::advance(it, static_cast<long>(rng() % model.blocks().size()));
      const uint64_t offset = it->first;
      ASSERT_TRUE(model.Free(offset));
      ASSERT_TRUE(arena.Free(offset)) << "step " << step << " offset " << offset;
    } else {
      const uint64_t offset = rng() % (kSize + 1024);
      ASSERT_EQ(arena.Free(offset), model.Free(offset)) << "step " << step << " offset " << offset;
    }

    // The live blocks are exactly the model's, so checking the model's set
    // checks the allocator's.
    ASSERT_EQ(arena.live_blocks(), model.blocks().size()) << "step " << step;
    ASSERT_EQ(arena.LargestFreeGap(), model.LargestFreeGap()) << "step " << step;
    uint64_t previous_end = 0;
    for (const auto& [offset, length] : model.blocks()) {
      ASSERT_EQ(arena.BlockSize(offset), length) << "step " << step << " offset " << offset;
      ASSERT_TRUE(offset % kAlign == 0 && offset >= previous_end && offset + length <= arena.size())
          << "step " << step << ": block [" << offset << ", +" << length
          << ") is misaligned, overlaps its predecessor or is out of bounds";
      previous_end = offset + length;
    }
  }
}

TEST(ArenaAllocatorTest, ShrinkKeepsTheTailAndFreesTheRest) {
  ArenaAllocator arena(4096, 64, 4);
  auto block = arena.Allocate(1024);
  ASSERT_TRUE(block.has_value());
  // Keep 100 bytes near the end: rounded out to [896, 1024).
  ASSERT_TRUE(arena.Shrink(*block, *block + 900, 100));
  EXPECT_EQ(arena.BlockSize(*block + 896), 128u);
  EXPECT_EQ(arena.BlockSize(*block), 0u);
  EXPECT_EQ(arena.LargestFreeGap(), 4096u - 1024u);
  EXPECT_FALSE(arena.Shrink(*block, *block, 10)) << "no block starts there any more";
  EXPECT_FALSE(arena.Shrink(*block + 896, *block + 800, 10)) << "range outside the block";
  EXPECT_TRUE(arena.Free(*block + 896));
  EXPECT_EQ(arena.LargestFreeGap(), 4096u);
}

TEST(ArenaAllocatorTest, HighPlacementFillsFromTheTop) {
  ArenaAllocator arena(4096, 64, 8, ArenaAllocator::Placement::kHigh);
  auto a = arena.Allocate(1000);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*a, 4096u - 1024u);
  auto b = arena.Allocate(64);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(*b, 4096u - 1024u - 64u);
  // A tail kept from a large block leaves the free space below in one piece.
  ASSERT_TRUE(arena.Free(*b));
  auto big = arena.Allocate(2048);
  ASSERT_TRUE(big.has_value());
  ASSERT_TRUE(arena.Shrink(*big, *big + 2000, 48));
  EXPECT_EQ(arena.LargestFreeGap(), 4096u - 1024u - 64u);
  EXPECT_FALSE(arena.Allocate(4096).has_value());
}

}  // namespace
}  // namespace sluice
