// The byte layout of a channel: one control region both sides map, and one
// arena per direction that only its writer can write.
//
//   control region (made by whoever sets the channel up, mapped read-write
//   by both; every value in it is a signal read once, never memory anyone
//   builds in):
//     offset 0        ChannelHeader     geometry; written once by the creator,
//                                        copied and validated by each side
//     header_size     ClientWords       two cache lines, written by the client
//     +128            ServerWords       two cache lines, written by the server
//     slots_offset    Slot[slot_count]  per call: a client line, a server line
//                                        and the client's rarely used line
//
//   request arena (memfd made by the client, sealed F_SEAL_FUTURE_WRITE
//   before the server gets it: the server maps it read-only)
//   reply arena   (memfd made by the server, sealed the same way)
//
// Each arena's memfd is the first descriptor message its owner sends on the
// liveness socket (tag kArenaTag); the peer maps it when it first needs it.
// The liveness socket is also the channel's bell: for a server watching
// more channels than one futex_waitv can hold, the client sends a ring
// message on it (ServerWords::bell_listeners), and the server waits for
// the socket to turn readable in an epoll set. After the channel opens,
// each side holds the liveness socket as its one descriptor.
// Builders' scratch and every byte either side reads back lives in memory
// the other side cannot write: the kernel enforces it.
//
// Every field of the control region is a std::atomic: the other process is
// untrusted and may write at any time, so readers load each field once into
// a local, validate the local and use only the local. Offsets, never
// pointers. docs/shared-memory-layout.md has the protocol over these fields.
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
inline constexpr uint32_t kLayoutVersion = 6;
inline constexpr uint32_t kMaxSlots = 64;
inline constexpr uint64_t kCacheLine = 64;
// Arena blocks start on a cache line, so FlatBuffers' largest alignment (and
// SIMD-friendly copies) hold without extra work.
inline constexpr uint64_t kArenaAlignment = 64;

// A message in a peer's arena larger than this is read in place, so it is
// accepted only from a peer this side trusts (ChannelOptions::trust_peer);
// an untrusted sender puts anything larger in a sealed memfd of its own
// (kSlotFlagSpilled). Up to here the receiver copies before it verifies.
inline constexpr uint64_t kLargeMessage = 64 * 1024;

struct ChannelHeader {
  uint32_t magic;
  uint32_t layout_version;
  uint32_t header_size;  // sizeof(ChannelHeader) when written.
  uint32_t slot_count;   // 1..kMaxSlots.
  uint64_t region_size;  // Of the control region.
  uint64_t client_words_offset;
  uint64_t server_words_offset;
  uint64_t slots_offset;
  uint64_t request_arena_size;  // The client's arena memfd has exactly this size.
  uint64_t reply_arena_size;    // The server's arena memfd has exactly this size.
  uint64_t reserved[6];         // Zero; room for growth without a version bump.
};
static_assert(sizeof(ChannelHeader) == 112);
static_assert(std::is_trivially_copyable_v<ChannelHeader>);

// What a side is doing, published so the other side can choose between
// spinning and sleeping. Bits 0-2: ActivityState; bits 8-31: CPU + 1 (0 means
// unknown). kBuilding (a client only): filling a request in a memfd of its
// own, which its server may poll for (SpinPolicy::build_spin). A hint: a peer
// that lies about it only makes the other side poll or sleep.
enum class ActivityState : uint32_t {
  kUnknown = 0,
  kRunning = 1,
  kSpinning = 2,
  kSleeping = 3,
  kBuilding = 4,
};
inline constexpr uint32_t EncodeActivity(ActivityState state, int cpu) {
  return static_cast<uint32_t>(state) | (static_cast<uint32_t>(cpu + 1) << 8);
}
inline constexpr ActivityState ActivityStateOf(uint32_t word) {
  return static_cast<ActivityState>(word & 7);
}
inline constexpr int ActivityCpuOf(uint32_t word) { return static_cast<int>(word >> 8) - 1; }

// Each side's words take two cache lines, split by how they change. On
// these machines a line the peer has touched since this side last did
// costs a transfer either way, a load included (perf: the client's load of
// its own activity word and of the server's size limit missed on every
// call while they shared lines with counters bumped per call). So words
// the peer reads on every call but that change rarely (state, limits,
// features) sit on one line, which stays cached on both sides, and the
// counters their owner bumps on every call sit on the other, which the
// peer reads only to decide a wake-up.
struct alignas(kCacheLine) ClientWords {
  // ---- settled line: read by the server on every call, rarely written ----
  // Encoded ActivityState of the client's most recent caller.
  std::atomic<uint32_t> activity;
  // Client threads sleeping until the server completes *any* call (waiting for
  // a slot). The server bumps ServerWords::completions and wakes it only
  // when this is non-zero.
  std::atomic<uint32_t> resource_waiters;
  // kAcceptsInPlace when the client reads large replies in place from the
  // reply arena (it trusts the server); otherwise the server sends replies
  // over kLargeMessage in sealed memfds. A hint for the server only: the
  // client enforces its own choice.
  std::atomic<uint32_t> reception;
  // Opaque to the channel: what the client's RPC layer can take in replies
  // (ClientChannel::AnnounceFeatures); zero from peers that predate it.
  std::atomic<uint32_t> features;
  // Largest reply, in bytes, the client accepts (a hint, as above).
  std::atomic<uint64_t> max_reply_size;
  uint64_t settled_reserved[5];
  // ---- counting line: bumped by the client on every request ----
  // +1 for every request published. Server threads sleep on it.
  alignas(kCacheLine) FutexWord doorbell;
  // +1 for every ring the client sends on the bell. It rings only while
  // ServerWords::bell_heard equals it, so at most a few rings are ever
  // queued on the liveness socket, ahead of descriptors a call needs.
  std::atomic<uint32_t> bell_rings;
  uint32_t counting_reserved[14];
};
static_assert(sizeof(ClientWords) == 2 * kCacheLine);
static_assert(offsetof(ClientWords, doorbell) == kCacheLine);

struct alignas(kCacheLine) ServerWords {
  // ---- settled line: read by the client on every call, rarely written ----
  std::atomic<uint32_t> activity;
  // As ClientWords::reception and max_reply_size, for requests.
  std::atomic<uint32_t> reception;
  // Opaque to the channel: what the server's RPC layer can take in requests
  // (ServerChannel::AnnounceFeatures); zero from peers that predate it.
  std::atomic<uint32_t> features;
  uint32_t settled_reserved0;
  std::atomic<uint64_t> max_request_size;
  uint64_t settled_reserved[5];
  // ---- counting line: what the client reads after it publishes a
  // request, to decide whether to wake a server thread ----
  // Server threads asleep on ClientWords::doorbell; the client issues
  // FUTEX_WAKE only when it is non-zero.
  alignas(kCacheLine) std::atomic<uint32_t> sleepers;
  // Server threads polling the slots for a request right now (spinning
  // after a call, or about to look again having just answered one:
  // IncomingCall::set_announce_poll_with_reply). While non-zero the client
  // skips its FUTEX_WAKE: a poller takes the request, and a poller that
  // stops re-checks and passes the wake on (ServerChannel::EndPoll).
  std::atomic<uint32_t> pollers;
  // Non-zero while the server waits for this channel's requests on its bell
  // (an epoll over many channels) rather than on the doorbell: the client
  // then also rings the bell for a request it publishes (unless a poller is
  // announced, or a ring is still unheard), never blocking.
  std::atomic<uint32_t> bell_listeners;
  // The ClientWords::bell_rings the server saw before it last drained the
  // bell and looked at the slots: rings up to it are heard.
  std::atomic<uint32_t> bell_heard;
  // Bumped (and woken) after a completion while the client has resource waiters.
  FutexWord completions;
  uint32_t counting_reserved[11];
};
static_assert(sizeof(ServerWords) == 2 * kCacheLine);
static_assert(offsetof(ServerWords, sleepers) == kCacheLine);

// ClientWords/ServerWords::reception bits.
inline constexpr uint32_t kAcceptsInPlace = 1u << 0;

// Slot flags, written by the client.
inline constexpr uint32_t kSlotFlagOneway = 1u << 0;
// File descriptors travel with the request: one SCM_RIGHTS message on the
// liveness socket, tagged (slot << 32 | seq), sent before request_seq.
inline constexpr uint32_t kSlotFlagHasFds = 1u << 1;
// The request bytes are not in the request arena but in a memfd sealed
// immutable (Region::kImmutableSeals), the last descriptor of the call's
// descriptor message (so kSlotFlagHasFds is set too); request_offset and
// request_length locate the message inside it.
inline constexpr uint32_t kSlotFlagSpilled = 1u << 2;
// Slot::request_word holds the RPC layer's word for this request. Without
// it the server does not read that line (it may be stale).
inline constexpr uint32_t kSlotFlagHasWord = 1u << 3;
inline constexpr uint32_t kKnownSlotFlags =
    kSlotFlagOneway | kSlotFlagHasFds | kSlotFlagSpilled | kSlotFlagHasWord;

// Reply flags, written by the server.
inline constexpr uint64_t kReplyFlagHasFds = 1u << 0;
// As kSlotFlagSpilled, for the reply.
inline constexpr uint64_t kReplyFlagSpilled = 1u << 1;
inline constexpr uint64_t kKnownReplyFlags = kReplyFlagHasFds | kReplyFlagSpilled;

// The tag of the descriptor message that belongs to a call.
constexpr uint64_t FdTag(uint32_t slot, uint32_t seq) { return (uint64_t{slot} << 32) | seq; }
// The tag of the message that carries a side's arena memfd. Never an FdTag
// (slots are numbered below kMaxSlots) nor the hello's ~0.
inline constexpr uint64_t kArenaTag = ~uint64_t{1};
// The tag of a ring of the bell (client to server, no descriptors).
inline constexpr uint64_t kBellTag = ~uint64_t{2};

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
  // From the start of the request arena (or of the spilled memfd).
  std::atomic<uint64_t> request_offset;
  std::atomic<uint64_t> request_length;
  // Per-channel order of oneway calls: the server runs oneway N+1 only after N.
  std::atomic<uint64_t> oneway_seq;
  // Opaque to the channel: the RPC layer's interface id and method word.
  std::atomic<uint64_t> interface_id;
  std::atomic<uint64_t> method;
  // The caller's call-chain id, so that a call back into the caller's
  // process reaches the thread waiting in the chain (nested calls). Opaque
  // to the channel; 0 for none.
  std::atomic<uint64_t> chain_id;
  // ---- server line ----
  alignas(kCacheLine) FutexWord reply_seq;
  std::atomic<uint32_t> status_code;   // absl::StatusCode of the reply.
  std::atomic<uint64_t> reply_offset;  // From the start of the reply arena (or spilled memfd).
  std::atomic<uint64_t> reply_length;
  std::atomic<uint64_t> reply_flags;  // kReplyFlag*.
  // Opaque to the channel, like interface_id and method for requests: a
  // word the server's RPC layer sends with an OK reply; 0 for none.
  std::atomic<uint64_t> reply_word;
  std::atomic<uint64_t> server_reserved[3];
  // ---- client's second line: what most calls never touch ----
  // Opaque to the channel, like reply_word the other way: a word the
  // client's RPC layer sends with the request (CallHeader::word), valid
  // only under kSlotFlagHasWord.
  alignas(kCacheLine) std::atomic<uint64_t> request_word;
  std::atomic<uint64_t> client_reserved[7];
};
static_assert(sizeof(Slot) == 3 * kCacheLine);
static_assert(offsetof(Slot, reply_seq) == kCacheLine);
static_assert(offsetof(Slot, request_word) == 2 * kCacheLine);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

// Channel geometry, chosen by whoever sets the channel up. The arena sizes
// bound what fits in place; larger messages spill to sealed memfds.
struct Geometry {
  uint32_t slot_count = 16;
  uint64_t request_arena_size = uint64_t{4} << 20;
  uint64_t reply_arena_size = uint64_t{1} << 20;
};

// The header for `geometry`, or INVALID_ARGUMENT if it is out of range.
absl::StatusOr<ChannelHeader> PlanRegion(const Geometry& geometry);

// Bytes a channel of this header maps on each side: the control region and
// both arenas (what the manager's region limit bounds).
inline constexpr uint64_t ChannelBytes(const ChannelHeader& h) {
  return h.region_size + h.request_arena_size + h.reply_arena_size;
}

// Largest arena either side creates.
inline constexpr uint64_t kMaxArenaSize = uint64_t{1} << 30;

// Checks a header copied out of a control region of `region_size` bytes:
// magic, version, every offset and size in bounds, areas disjoint and
// aligned, arena sizes in range. FAILED_PRECONDITION for a version
// mismatch, DATA_LOSS for anything else.
absl::Status ValidateHeader(const ChannelHeader& header, uint64_t region_size);

}  // namespace sluice::channel_layout

#endif  // SLUICE_IPC_CHANNEL_LAYOUT_H_
