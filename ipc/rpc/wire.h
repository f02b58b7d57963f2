// How an RPC is addressed on a channel (CallHeader), shared by sluice-idlc
// and the runtime so both compute the same numbers.
//
//   interface_id = Fnv1a64(fully qualified service name, e.g. "example.kv.KeyValueStore")
//   method       = Fnv1a32(method name) << 32 | Fnv1a32(signature)
//   signature    = "<request type>-><response type>" + ",oneway" if oneway
//
// Ids derive from names, not positions, so adding or reordering methods keeps
// old clients working (FlatBuffers evolution rules apply to the tables); a
// method whose request or response type changed is detected by its
// signature half. docs/wire-format.md has the full picture.
#ifndef SLUICE_IPC_RPC_WIRE_H_
#define SLUICE_IPC_RPC_WIRE_H_

#include <cstdint>

#include "absl/strings/string_view.h"
#include "ipc/channel/layout.h"

namespace sluice::rpc {

constexpr uint64_t Fnv1a64(absl::string_view text) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (char c : text) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

constexpr uint32_t Fnv1a32(absl::string_view text) {
  uint32_t hash = 0x811c9dc5u;
  for (char c : text) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 0x01000193u;
  }
  return hash;
}

constexpr uint64_t MethodWord(uint32_t method_id, uint32_t signature) {
  return (uint64_t{method_id} << 32) | signature;
}
constexpr uint32_t MethodIdOf(uint64_t word) { return static_cast<uint32_t>(word >> 32); }
constexpr uint32_t SignatureOf(uint64_t word) { return static_cast<uint32_t>(word); }

// FlatBuffers verifier limits for every message read from a peer.
inline constexpr uint32_t kMaxVerifierDepth = 64;
inline constexpr uint32_t kMaxVerifierTables = 1'000'000;

// Messages up to this size are copied out of the peer's arena into private
// memory before they are verified and read, so the peer cannot change them
// after verification. Larger ones come in a sealed memfd, or in place from a
// trusted peer; see docs/memory.md. The channel's own threshold.
inline constexpr size_t kPrivateCopyLimit = channel_layout::kLargeMessage;

}  // namespace sluice::rpc

#endif  // SLUICE_IPC_RPC_WIRE_H_
