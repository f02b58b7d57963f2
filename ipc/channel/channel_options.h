// Per-process tuning and identity for one side of a channel. Nothing here
// lives in shared memory: each side picks its own.
#ifndef SLUICE_IPC_CHANNEL_CHANNEL_OPTIONS_H_
#define SLUICE_IPC_CHANNEL_CHANNEL_OPTIONS_H_

#include "absl/time/time.h"
#include "ipc/socket/unix_socket.h"

namespace sluice {

// When to spin instead of sleeping. Spinning only ever happens while the
// other side is running on another CPU (docs/architecture.md, "Signalling"):
// with both on one CPU, or a process limited to one CPU, every wait sleeps at
// once. The budgets should exceed a cross-core wake-up (~30-60 us on KVM
// guests), or both sides fall asleep and stay at futex speed.
struct SpinPolicy {
  // A caller spins this long for its reply before sleeping.
  absl::Duration call_spin = absl::Microseconds(150);
  // A server thread that just answered a call spins this long for the next.
  absl::Duration serve_spin = absl::Microseconds(150);
  // A server thread polls this much longer, once per answer or wake-up,
  // while its client fills a request that did not fit the arena (it goes in
  // a memfd of its own, whose fresh pages take microseconds each to fill):
  // such a request is often still being filled when serve_spin runs out,
  // and the wake-up it would then need costs as much as the rest of a
  // 128 KiB call. A client that starts one also wakes a sleeping server
  // thread at once, so that the wake-up overlaps the filling.
  absl::Duration build_spin = absl::Microseconds(500);

  static SpinPolicy NeverSpin() {
    return {absl::ZeroDuration(), absl::ZeroDuration(), absl::ZeroDuration()};
  }
};

// Which peers a side lets send large messages in place, in the arena the
// peer can still write, instead of in a sealed memfd (docs/memory.md,
// "Trust"). The default trusts the same user: a process of the same uid can
// already write into ours (ptrace, /proc/PID/mem), so sealing against it
// buys nothing, while a sealed memfd per large message costs fresh pages.
enum class TrustPolicy : uint8_t {
  kSameUser,  // The peer's uid is this process's effective uid.
  kNobody,    // Every large message arrives sealed.
  kEveryone,  // Every large message may stay in place.
};

// Whether `policy` trusts `peer` (credentials the kernel vouched for).
bool Trusts(TrustPolicy policy, const PeerCredentials& peer);

// The largest message either side ever sends or accepts: FlatBuffers
// cannot address more.
inline constexpr uint64_t kMaxMessageSize = (uint64_t{1} << 31) - 4096;

struct ChannelOptions {
  SpinPolicy spin;
  // Whether large messages from the peer may be read where the peer wrote
  // them (its arena, which it can still change) instead of arriving in a
  // sealed memfd. docs/memory.md, "Trust". A hint for the peer is published
  // in this side's words; this side enforces it: a large in-place message
  // from an untrusted peer is DATA_LOSS.
  bool trust_peer = false;
  // Largest message accepted from the peer (requests on a server, replies
  // on a client); published so that the peer fails early, before building.
  uint64_t max_message_size = uint64_t{1} << 30;
  // Who the other side is, as vouched for by whoever set the channel up (the
  // service manager's SO_PEERCRED), never by anything written in the region.
  PeerCredentials peer;
  // For channels nobody vouches for (object references, ipc/rpc/object.h):
  // the client introduces itself with a hello message on the liveness
  // socket when it opens the channel, and the server takes `peer` from the
  // kernel's SCM_CREDENTIALS on it (its socket must have
  // EnableSenderCredentials) before it hands out the first call. Both sides
  // must agree; a client that sends no hello has its first call refused.
  bool hello_identity = false;
};

}  // namespace sluice

#endif  // SLUICE_IPC_CHANNEL_CHANNEL_OPTIONS_H_
