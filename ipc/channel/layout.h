// The byte layout of a channel region, shared by a client and a server process.
//
//   offset 0        ChannelHeader     geometry; written once by the creator,
//                                      copied and validated by each side
//   header_size     ClientWords       one cache line, written by the client only
//   +64             ServerWords       one cache line, written by the server only
//   slots_offset    Slot[slot_count]  per call: a client line and a server line
//   request_arena   bytes             written by the client only
//   reply_arena     bytes             written by the server only
//
// Every field either side can change after the region is shared is a
// std::atomic: the other process is untrusted and may write at any time, so
// readers load each field once into a local, validate the local and use only
// the local. Offsets, never pointers. docs/shared-memory-layout.md has the
// protocol that runs over these fields.
#ifndef SLUICE_IPC_CHANNEL_LAYOUT_H_
#define SLUICE_IPC_CHANNEL_LAYOUT_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "absl/status/statusor.h"
#include "ipc/sync/futex.h"

namespace sluice::channel_layout {

inline constexpr uint32_t kMagic = 0x48434c53;  // "SLCH" in little-endian bytes.
inline constexpr uint32_t kLayoutVersion = 1;
inline constexpr uint32_t kMaxSlots = 64;
inline constexpr uint64_t kCacheLine = 64;
// Arena blocks start on a cache line, so FlatBuffers' largest alignment (and
// SIMD-friendly copies) hold without extra work.
inline constexpr uint64_t kArenaAlignment = 64;

struct ChannelHeader {
  uint32_t magic;
  uint32_t layout_version;
  uint32_t header_size;  // sizeof(ChannelHeader) when written.
  uint32_t slot_count;   // 1..kMaxSlots.
  uint64_t region_size;
  uint64_t client_words_offset;
  uint64_t server_words_offset;
  uint64_t slots_offset;
  uint64_t request_arena_offset;
  uint64_t request_arena_size;
  uint64_t reply_arena_offset;
  uint64_t reply_arena_size;
  uint64_t reserved[4];  // Zero; room for growth without a version bump.
};
static_assert(sizeof(ChannelHeader) == 112);
static_assert(std::is_trivially_copyable_v<ChannelHeader>);

// What a side is doing, published so the other side can choose between
// spinning and sleeping. Bits 0-1: ActivityState; bits 8-31: CPU + 1 (0 means
// unknown).
enum class ActivityState : uint32_t { kUnknown = 0, kRunning = 1, kSpinning = 2, kSleeping = 3 };
inline constexpr uint32_t EncodeActivity(ActivityState state, int cpu) {
  return static_cast<uint32_t>(state) | (static_cast<uint32_t>(cpu + 1) << 8);
}
inline constexpr ActivityState ActivityStateOf(uint32_t word) {
  return static_cast<ActivityState>(word & 3);
}
inline constexpr int ActivityCpuOf(uint32_t word) { return static_cast<int>(word >> 8) - 1; }

struct alignas(kCacheLine) ClientWords {
  // +1 for every request published. Server threads sleep on it.
  FutexWord doorbell;
  // Encoded ActivityState of the client's most recent caller.
  std::atomic<uint32_t> activity;
  // Client threads sleeping until the server completes *any* call (waiting for
  // a slot or arena space). The server bumps ServerWords::completions and
  // wakes it only when this is non-zero.
  std::atomic<uint32_t> resource_waiters;
  uint32_t reserved[13];
};
static_assert(sizeof(ClientWords) == kCacheLine);

struct alignas(kCacheLine) ServerWords {
  // Server threads asleep on ClientWords::doorbell; the client issues
  // FUTEX_WAKE only when it is non-zero.
  std::atomic<uint32_t> sleepers;
  std::atomic<uint32_t> activity;
  // Bumped (and woken) after a completion while the client has resource waiters.
  FutexWord completions;
  // Server threads polling the slots for a request right now (spinning
  // after a call). While non-zero the client skips its FUTEX_WAKE: a poller
  // takes the request, and a poller that stops re-checks and passes the wake
  // on (ServerChannel::EndPoll). Zero from a peer that predates it: the
  // client then wakes as before.
  std::atomic<uint32_t> pollers;
  uint32_t reserved[12];
};
static_assert(sizeof(ServerWords) == kCacheLine);

// Slot flags, written by the client.
inline constexpr uint32_t kSlotFlagOneway = 1u << 0;
// File descriptors travel with the request: one SCM_RIGHTS message on the
// liveness socket, tagged (slot << 32 | seq), sent before request_seq.
inline constexpr uint32_t kSlotFlagHasFds = 1u << 1;
inline constexpr uint32_t kKnownSlotFlags = kSlotFlagOneway | kSlotFlagHasFds;

// Reply flags, written by the server.
inline constexpr uint64_t kReplyFlagHasFds = 1u << 0;

// The tag of the descriptor message that belongs to a call.
constexpr uint64_t FdTag(uint32_t slot, uint32_t seq) { return (uint64_t{slot} << 32) | seq; }

// One call in flight. A slot is pending when request_seq differs from the
// seq the server last served; it is answered when reply_seq == request_seq.
struct Slot {
  // ---- client line ----
  // Bumped (release) after the request fields below and the request bytes are
  // written. Never equal to reply_seq while a call is pending.
  alignas(kCacheLine) std::atomic<uint32_t> request_seq;
  // Client threads asleep on reply_seq; the server wakes only when non-zero.
  std::atomic<uint32_t> reply_waiters;
  std::atomic<uint32_t> flags;
  // The seq whose reply the client no longer reads; its reply bytes may be reused.
  std::atomic<uint32_t> reply_released_seq;
  std::atomic<uint64_t> request_offset;  // From the start of the request arena.
  std::atomic<uint64_t> request_length;
  // Per-channel order of oneway calls: the server runs oneway N+1 only after N.
  std::atomic<uint64_t> oneway_seq;
  // Opaque to the channel: the RPC layer's interface id and method word.
  std::atomic<uint64_t> interface_id;
  std::atomic<uint64_t> method;
  // The caller's call-chain id, so that a call back into the caller's
  // process reaches the thread waiting in the chain (nested calls). Opaque
  // to the channel; 0 for none.
  std::atomic<uint64_t> call_context;
  // ---- server line ----
  alignas(kCacheLine) FutexWord reply_seq;
  std::atomic<uint32_t> status_code;   // absl::StatusCode of the reply.
  std::atomic<uint64_t> reply_offset;  // From the start of the reply arena.
  std::atomic<uint64_t> reply_length;
  std::atomic<uint64_t> reply_flags;  // kReplyFlag*.
  std::atomic<uint64_t> server_reserved[4];
};
static_assert(sizeof(Slot) == 2 * kCacheLine);
static_assert(offsetof(Slot, reply_seq) == kCacheLine);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

// Region geometry, chosen by whoever creates the region.
struct Geometry {
  uint32_t slot_count = 16;
  uint64_t request_arena_size = uint64_t{4} << 20;
  uint64_t reply_arena_size = uint64_t{1} << 20;
};

// The header for `geometry`, or INVALID_ARGUMENT if it is out of range.
absl::StatusOr<ChannelHeader> PlanRegion(const Geometry& geometry);

// Checks a header copied out of a region of `region_size` bytes: magic,
// version, every offset and size in bounds, areas disjoint and aligned.
// FAILED_PRECONDITION for a version mismatch, DATA_LOSS for anything else.
absl::Status ValidateHeader(const ChannelHeader& header, uint64_t region_size);

}  // namespace sluice::channel_layout

#endif  // SLUICE_IPC_CHANNEL_LAYOUT_H_
