#include "ipc/channel/layout.h"

#include <cstdint>
#include <cstring>
#include <functional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/shm/region.h"
#include "tests/testing/status_matchers.h"

namespace sluice::channel_layout {
namespace {

using ::sluice::testing::StatusIs;
using ::testing::HasSubstr;

constexpr uint64_t kPage = 4096;

ChannelHeader PlanOrDie(const Geometry& geometry) {
  absl::StatusOr<ChannelHeader> header = PlanRegion(geometry);
  EXPECT_OK(header);
  return header.ok() ? *header : ChannelHeader{};
}

// An independent statement of what a valid header promises: every area lies
// inside the region, is aligned, and touches no other area.
::testing::AssertionResult AreasAreSane(const ChannelHeader& h, uint64_t region_size) {
  struct Area {
    const char* name;
    uint64_t offset, size, alignment;
  };
  const std::vector<Area> areas = {
      {"header", 0, sizeof(ChannelHeader), 1},
      {"client words", h.client_words_offset, sizeof(ClientWords), kCacheLine},
      {"server words", h.server_words_offset, sizeof(ServerWords), kCacheLine},
      {"slots", h.slots_offset, uint64_t{h.slot_count} * sizeof(Slot), kCacheLine},
  };
  for (uint64_t arena : {h.request_arena_size, h.reply_arena_size}) {
    if (arena == 0 || arena % kPage != 0) {
      return ::testing::AssertionFailure() << "arena size " << arena << " is not whole pages";
    }
  }
  for (const Area& a : areas) {
    if (a.size == 0) return ::testing::AssertionFailure() << a.name << " is empty";
    if (a.offset > region_size || a.size > region_size - a.offset) {
      return ::testing::AssertionFailure() << a.name << " is out of bounds";
    }
    if (a.offset % a.alignment != 0) {
      return ::testing::AssertionFailure() << a.name << " is misaligned";
    }
  }
  for (size_t i = 0; i < areas.size(); ++i) {
    for (size_t j = i + 1; j < areas.size(); ++j) {
      const bool disjoint = areas[i].offset + areas[i].size <= areas[j].offset ||
                            areas[j].offset + areas[j].size <= areas[i].offset;
      if (!disjoint) {
        return ::testing::AssertionFailure() << areas[i].name << " overlaps " << areas[j].name;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(PlanRegionTest, RejectsZeroSlots) {
  EXPECT_THAT(PlanRegion({.slot_count = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("slot_count")));
}

TEST(PlanRegionTest, RejectsMoreThanMaxSlots) {
  EXPECT_THAT(PlanRegion({.slot_count = kMaxSlots + 1}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("slot_count")));
}

TEST(PlanRegionTest, RejectsEmptyArenas) {
  EXPECT_THAT(PlanRegion({.request_arena_size = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("arena")));
  EXPECT_THAT(PlanRegion({.reply_arena_size = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("arena")));
}

TEST(PlanRegionTest, RejectsOversizedArenas) {
  EXPECT_THAT(PlanRegion({.request_arena_size = Region::kMaxSize / 2 + 1}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(PlanRegion({.reply_arena_size = Region::kMaxSize / 2 + 1}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(PlanRegion({.request_arena_size = UINT64_MAX}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// Each arena is a memfd of its own, up to kMaxArenaSize.
TEST(PlanRegionTest, AcceptsArenasUpToTheLimitAndRejectsLarger) {
  ASSERT_OK_AND_ASSIGN(ChannelHeader h, PlanRegion({.slot_count = kMaxSlots,
                                                    .request_arena_size = kMaxArenaSize,
                                                    .reply_arena_size = kMaxArenaSize}));
  EXPECT_EQ(ChannelBytes(h), h.region_size + 2 * kMaxArenaSize);
  EXPECT_THAT(PlanRegion({.request_arena_size = kMaxArenaSize + 1}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("arena")));
}

TEST(PlanRegionTest, LargestRegionThatFitsIsAccepted) {
  const ChannelHeader h = PlanOrDie({.slot_count = kMaxSlots,
                                     .request_arena_size = Region::kMaxSize / 2,
                                     .reply_arena_size = Region::kMaxSize / 4});
  EXPECT_LE(h.region_size, Region::kMaxSize);
  EXPECT_OK(ValidateHeader(h, h.region_size));
}

TEST(PlanRegionTest, PlannedHeaderDescribesTheGeometry) {
  const ChannelHeader h =
      PlanOrDie({.slot_count = 5, .request_arena_size = 1000, .reply_arena_size = 130});
  EXPECT_EQ(h.magic, kMagic);
  EXPECT_EQ(h.layout_version, kLayoutVersion);
  EXPECT_EQ(h.header_size, sizeof(ChannelHeader));
  EXPECT_EQ(h.slot_count, 5u);
  // Arena sizes round up to whole pages (each arena is a memfd), never down.
  EXPECT_EQ(h.request_arena_size, kPage);
  EXPECT_EQ(h.reply_arena_size, kPage);
  for (uint64_t reserved : h.reserved) EXPECT_EQ(reserved, 0u);
}

TEST(PlanRegionTest, PlannedAreasAreOrderedAlignedAndPageAlignedWhereBulk) {
  const ChannelHeader h = PlanOrDie({});
  EXPECT_GE(h.client_words_offset, h.header_size);
  EXPECT_EQ(h.client_words_offset % kCacheLine, 0u);
  EXPECT_EQ(h.server_words_offset, h.client_words_offset + sizeof(ClientWords));
  EXPECT_EQ(h.slots_offset, h.server_words_offset + sizeof(ServerWords));
  // The control region ends with the slots; the arenas are memfds of their own.
  EXPECT_GE(h.region_size, h.slots_offset + h.slot_count * sizeof(Slot));
  EXPECT_LT(h.region_size, h.slots_offset + h.slot_count * sizeof(Slot) + kPage);
  EXPECT_EQ(h.region_size % kPage, 0u);
}

TEST(PlanRegionTest, PlannedHeadersValidateForManyGeometries) {
  for (uint32_t slots : {1u, 2u, 16u, 31u, kMaxSlots}) {
    for (uint64_t request : {uint64_t{1}, uint64_t{64}, uint64_t{4095}, uint64_t{1} << 20}) {
      for (uint64_t reply : {uint64_t{1}, uint64_t{65}, uint64_t{8192}}) {
        SCOPED_TRACE(::testing::Message()
                     << "slots " << slots << " request " << request << " reply " << reply);
        const ChannelHeader h = PlanOrDie(
            {.slot_count = slots, .request_arena_size = request, .reply_arena_size = reply});
        EXPECT_OK(ValidateHeader(h, h.region_size));
        EXPECT_TRUE(AreasAreSane(h, h.region_size));
        EXPECT_GE(h.request_arena_size, request);
        EXPECT_GE(h.reply_arena_size, reply);
      }
    }
  }
}

// ---- ValidateHeader: one corruption per case ----

struct Corruption {
  std::string name;
  std::function<void(ChannelHeader&)> corrupt;
  absl::StatusCode code;
};

void PrintTo(const Corruption& corruption, std::ostream* os) { *os << corruption.name; }

class ValidateHeaderTest : public ::testing::TestWithParam<Corruption> {};

TEST_P(ValidateHeaderTest, RejectsCorruptionWithTheRightCode) {
  ChannelHeader h =
      PlanOrDie({.slot_count = 16, .request_arena_size = 65536, .reply_arena_size = 8192});
  const uint64_t region_size = h.region_size;
  ASSERT_OK(ValidateHeader(h, region_size));
  GetParam().corrupt(h);
  EXPECT_THAT(ValidateHeader(h, region_size), StatusIs(GetParam().code));
}

constexpr auto kDataLoss = absl::StatusCode::kDataLoss;

INSTANTIATE_TEST_SUITE_P(
    EveryField, ValidateHeaderTest,
    ::testing::Values(
        Corruption{"BadMagic", [](ChannelHeader& h) { h.magic ^= 1; }, kDataLoss},
        Corruption{"ZeroMagic", [](ChannelHeader& h) { h.magic = 0; }, kDataLoss},
        Corruption{"ByteSwappedMagic",
                   [](ChannelHeader& h) { h.magic = __builtin_bswap32(h.magic); }, kDataLoss},
        Corruption{"NewerVersion", [](ChannelHeader& h) { h.layout_version = kLayoutVersion + 1; },
                   absl::StatusCode::kFailedPrecondition},
        Corruption{"ZeroVersion", [](ChannelHeader& h) { h.layout_version = 0; },
                   absl::StatusCode::kFailedPrecondition},
        Corruption{"SmallerHeaderSize", [](ChannelHeader& h) { h.header_size -= 8; }, kDataLoss},
        Corruption{"LargerHeaderSize", [](ChannelHeader& h) { h.header_size += 8; }, kDataLoss},
        Corruption{"ZeroSlots", [](ChannelHeader& h) { h.slot_count = 0; }, kDataLoss},
        Corruption{"TooManySlots", [](ChannelHeader& h) { h.slot_count = kMaxSlots + 1; },
                   kDataLoss},
        Corruption{"HugeSlotCount", [](ChannelHeader& h) { h.slot_count = UINT32_MAX; }, kDataLoss},
        Corruption{"SlotsRunIntoTheRequestArena",
                   [](ChannelHeader& h) { h.slot_count = kMaxSlots; }, kDataLoss},
        Corruption{"RegionSizeDisagreesWithMapping",
                   [](ChannelHeader& h) { h.region_size += kPage; }, kDataLoss},
        Corruption{"ClientWordsOverlapHeader", [](ChannelHeader& h) { h.client_words_offset = 64; },
                   kDataLoss},
        Corruption{"ClientWordsAtZero", [](ChannelHeader& h) { h.client_words_offset = 0; },
                   kDataLoss},
        Corruption{"ServerWordsOverlapClientWords",
                   [](ChannelHeader& h) { h.server_words_offset = h.client_words_offset; },
                   kDataLoss},
        Corruption{"SlotsOverlapServerWords",
                   [](ChannelHeader& h) { h.slots_offset = h.server_words_offset; }, kDataLoss},
        Corruption{"RequestArenaNotWholePages",
                   [](ChannelHeader& h) { h.request_arena_size += 64; }, kDataLoss},
        Corruption{"RequestArenaTooLarge",
                   [](ChannelHeader& h) { h.request_arena_size = kMaxArenaSize + kPage; },
                   kDataLoss},
        Corruption{"ReplyArenaSizeWrapsAround",
                   [](ChannelHeader& h) { h.reply_arena_size = UINT64_MAX - 63; }, kDataLoss},
        Corruption{"SlotsOffsetFarOutOfBounds",
                   [](ChannelHeader& h) { h.slots_offset = uint64_t{1} << 62; }, kDataLoss},
        Corruption{"MisalignedClientWords", [](ChannelHeader& h) { h.client_words_offset += 8; },
                   kDataLoss},
        Corruption{"MisalignedServerWords", [](ChannelHeader& h) { h.server_words_offset += 4; },
                   kDataLoss},
        Corruption{"MisalignedSlots", [](ChannelHeader& h) { h.slots_offset += 1; }, kDataLoss},
        Corruption{"EmptyRequestArena", [](ChannelHeader& h) { h.request_arena_size = 0; },
                   kDataLoss},
        Corruption{"EmptyReplyArena", [](ChannelHeader& h) { h.reply_arena_size = 0; }, kDataLoss}),
    [](const ::testing::TestParamInfo<Corruption>& param_info) { return param_info.param.name; });

TEST(ValidateHeaderTest, ChecksMagicBeforeVersion) {
  ChannelHeader h = PlanOrDie({});
  h.magic = 0;
  h.layout_version = 99;
  EXPECT_THAT(ValidateHeader(h, h.region_size), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(ValidateHeaderTest, VersionMismatchNamesBothVersions) {
  ChannelHeader h = PlanOrDie({});
  h.layout_version = 7;
  EXPECT_THAT(ValidateHeader(h, h.region_size),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("7")));
}

TEST(ValidateHeaderTest, RejectsAConsistentButTooSmallRegion) {
  ChannelHeader h = PlanOrDie({.slot_count = kMaxSlots});
  h.region_size = kPage;  // 64 slots of 128 bytes do not fit in one page.
  EXPECT_THAT(ValidateHeader(h, kPage), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(ValidateHeaderTest, RejectsARegionSmallerThanTheHeader) {
  ChannelHeader h = PlanOrDie({});
  h.region_size = 64;
  EXPECT_THAT(ValidateHeader(h, 64), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(ValidateHeaderTest, RejectsAnAllZeroHeader) {
  EXPECT_THAT(ValidateHeader(ChannelHeader{}, 1 << 20), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(ValidateHeaderTest, AcceptsALargerRegionThatSaysSo) {
  // Trailing slack after the reply arena is harmless.
  ChannelHeader h = PlanOrDie({});
  h.region_size += 16 * kPage;
  EXPECT_OK(ValidateHeader(h, h.region_size));
}

TEST(ValidateHeaderTest, IgnoresReservedFieldsForForwardCompatibility) {
  ChannelHeader h = PlanOrDie({});
  for (uint64_t& reserved : h.reserved) reserved = 0xdeadbeef;
  EXPECT_OK(ValidateHeader(h, h.region_size));
}

// Random byte and bit damage to a valid header must never crash; the result is
// either a clean error (DATA_LOSS or FAILED_PRECONDITION) or a header whose
// areas really are in bounds, aligned and disjoint.
TEST(ValidateHeaderTest, RandomCorruptionNeverCrashesAndNeverAdmitsABadLayout) {
  std::mt19937_64 rng(0x5eed1a7);
  const std::vector<Geometry> geometries = {
      {},
      {.slot_count = 1, .request_arena_size = 1, .reply_arena_size = 1},
      {.slot_count = kMaxSlots, .request_arena_size = 12345, .reply_arena_size = 777},
  };
  int accepted = 0, rejected = 0;
  for (int iteration = 0; iteration < 30000; ++iteration) {
    const ChannelHeader valid = PlanOrDie(geometries[rng() % geometries.size()]);
    ChannelHeader h = valid;
    auto* bytes = reinterpret_cast<unsigned char*>(&h);
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      const size_t at = rng() % sizeof(ChannelHeader);
      if (rng() % 2 == 0) {
        bytes[at] ^= static_cast<unsigned char>(1u << (rng() % 8));
      } else {
        bytes[at] = static_cast<unsigned char>(rng());
      }
    }
    // Usually check against the real mapping size; sometimes against the
    // (possibly corrupted) size the header claims.
    const uint64_t region_size = rng() % 4 == 0 ? h.region_size : valid.region_size;
    const absl::Status status = ValidateHeader(h, region_size);
    if (status.ok()) {
      ++accepted;
      ASSERT_TRUE(AreasAreSane(h, region_size)) << "iteration " << iteration;
      ASSERT_EQ(h.magic, kMagic);
      ASSERT_EQ(h.layout_version, kLayoutVersion);
      ASSERT_EQ(h.header_size, sizeof(ChannelHeader));
      ASSERT_GE(h.slot_count, 1u);
      ASSERT_LE(h.slot_count, kMaxSlots);
    } else {
      ++rejected;
      ASSERT_TRUE(status.code() == absl::StatusCode::kDataLoss ||
                  status.code() == absl::StatusCode::kFailedPrecondition)
          << status;
    }
  }
  // Both outcomes occur (reserved bytes and slack make some damage harmless).
  EXPECT_GT(accepted, 0);
  EXPECT_GT(rejected, 0);
}

}  // namespace
}  // namespace sluice::channel_layout
