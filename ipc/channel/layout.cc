#include "ipc/channel/layout.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "ipc/shm/region.h"

namespace sluice::channel_layout {
namespace {

constexpr uint64_t kPage = 4096;

constexpr uint64_t AlignUp(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

bool InBounds(uint64_t offset, uint64_t size, uint64_t limit) {
  return offset <= limit && size <= limit - offset;
}

}  // namespace

absl::StatusOr<ChannelHeader> PlanRegion(const Geometry& geometry) {
  if (geometry.slot_count == 0 || geometry.slot_count > kMaxSlots) {
    return absl::InvalidArgumentError(
        absl::StrCat("slot_count ", geometry.slot_count, " is outside [1, ", kMaxSlots, "]"));
  }
  if (geometry.request_arena_size == 0 || geometry.request_arena_size > kMaxArenaSize ||
      geometry.reply_arena_size == 0 || geometry.reply_arena_size > kMaxArenaSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("arena sizes (request ", geometry.request_arena_size, ", reply ",
                     geometry.reply_arena_size, ") must each be in [1, ", kMaxArenaSize, "]"));
  }
  ChannelHeader h{};
  h.magic = kMagic;
  h.layout_version = kLayoutVersion;
  h.header_size = sizeof(ChannelHeader);
  h.slot_count = geometry.slot_count;
  h.client_words_offset = AlignUp(sizeof(ChannelHeader), kCacheLine);
  h.server_words_offset = h.client_words_offset + sizeof(ClientWords);
  h.slots_offset = h.server_words_offset + sizeof(ServerWords);
  // Arenas are memfds of their own, sized in whole pages (Region::Create).
  h.request_arena_size = AlignUp(geometry.request_arena_size, kPage);
  h.reply_arena_size = AlignUp(geometry.reply_arena_size, kPage);
  h.region_size = AlignUp(h.slots_offset + sizeof(Slot) * h.slot_count, kPage);
  return h;
}

absl::Status ValidateHeader(const ChannelHeader& h, uint64_t region_size) {
  if (h.magic != kMagic) {
    return absl::DataLossError(absl::StrCat("channel header: bad magic 0x", absl::Hex(h.magic),
                                            ", want 0x", absl::Hex(kMagic)));
  }
  if (h.layout_version != kLayoutVersion) {
    return absl::FailedPreconditionError(absl::StrCat("channel header: layout version ",
                                                      h.layout_version, ", this build speaks ",
                                                      kLayoutVersion));
  }
  if (h.header_size != sizeof(ChannelHeader)) {
    return absl::DataLossError(absl::StrCat("channel header: header_size ", h.header_size,
                                            ", want ", sizeof(ChannelHeader)));
  }
  if (h.slot_count == 0 || h.slot_count > kMaxSlots) {
    return absl::DataLossError(
        absl::StrCat("channel header: slot_count ", h.slot_count, " outside [1, ", kMaxSlots, "]"));
  }
  if (h.region_size != region_size) {
    return absl::DataLossError(absl::StrCat("channel header: region_size ", h.region_size,
                                            " but the mapping has ", region_size, " bytes"));
  }
  for (const auto& [name, size] :
       {std::pair{"request", h.request_arena_size}, std::pair{"reply", h.reply_arena_size}}) {
    if (size == 0 || size > kMaxArenaSize || size % kPage != 0) {
      return absl::DataLossError(absl::StrCat("channel header: ", name, " arena size ", size,
                                              " is not a whole number of pages in [1, ",
                                              kMaxArenaSize, "]"));
    }
  }
  struct Area {
    const char* name;
    uint64_t offset;
    uint64_t size;
    uint64_t alignment;
  };
  const Area areas[] = {
      {"header", 0, sizeof(ChannelHeader), 1},
      {"client words", h.client_words_offset, sizeof(ClientWords), kCacheLine},
      {"server words", h.server_words_offset, sizeof(ServerWords), kCacheLine},
      {"slots", h.slots_offset, uint64_t{h.slot_count} * sizeof(Slot), kCacheLine},
  };
  for (const Area& a : areas) {
    if (!InBounds(a.offset, a.size, region_size) || a.offset % a.alignment != 0) {
      return absl::DataLossError(absl::StrCat("channel header: ", a.name, " [", a.offset, ", +",
                                              a.size, ") is misaligned or outside the ",
                                              region_size, "-byte region"));
    }
    if (a.size == 0) {
      return absl::DataLossError(absl::StrCat("channel header: ", a.name, " is empty"));
    }
  }
  for (size_t i = 0; i < std::size(areas); ++i) {
    for (size_t j = i + 1; j < std::size(areas); ++j) {
      const Area& a = areas[i];
      const Area& b = areas[j];
      if (a.offset < b.offset + b.size && b.offset < a.offset + a.size) {
        return absl::DataLossError(absl::StrCat("channel header: ", a.name, " overlaps ", b.name));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace sluice::channel_layout
