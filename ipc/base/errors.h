// Error vocabulary shared by every layer (docs/error-handling.md).
//
// The canonical absl codes carry the meaning; the one Sluice-specific marker
// is "peer dead", which Binder callers know as DEAD_OBJECT: an UNAVAILABLE
// status carrying a payload, so a caller can tell "the process on the other
// side is gone" from a server that returned UNAVAILABLE on purpose.
#ifndef SLUICE_IPC_BASE_ERRORS_H_
#define SLUICE_IPC_BASE_ERRORS_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sluice {

inline constexpr absl::string_view kPeerDeadPayloadUrl = "sluice.dev/peer-dead";

// UNAVAILABLE "peer dead: <what>", marked so IsPeerDead() recognizes it.
absl::Status PeerDeadError(absl::string_view what);

bool IsPeerDead(const absl::Status& status);

}  // namespace sluice

#endif  // SLUICE_IPC_BASE_ERRORS_H_
