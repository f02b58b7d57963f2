// Socket activation: the listening socket handed over by systemd (or
// systemd-socket-activate), by the sd_listen_fds protocol done by hand so
// the daemon needs no libsystemd:
//
//   LISTEN_PID  must be our pid (else the variables were meant for a parent)
//   LISTEN_FDS  number of descriptors passed, starting at 3
//
// The variables are removed from the environment once read, so no child
// inherits them.
#ifndef SLUICE_SERVICES_SERVICEMANAGER_SOCKET_ACTIVATION_H_
#define SLUICE_SERVICES_SERVICEMANAGER_SOCKET_ACTIVATION_H_

#include <optional>

#include "absl/status/statusor.h"

namespace sluice {

// The first descriptor systemd passes.
inline constexpr int kListenFdsStart = 3;

// nullopt when not socket-activated. Otherwise descriptor 3, checked to be
// a listening AF_UNIX SOCK_SEQPACKET socket (FAILED_PRECONDITION naming what
// is wrong, e.g. a unit with ListenStream= instead of ListenSequentialPacket=)
// and made non-blocking and close-on-exec. More than one descriptor is
// FAILED_PRECONDITION too: the manager serves one socket.
absl::StatusOr<std::optional<int>> TakeActivatedSocket();

}  // namespace sluice

#endif  // SLUICE_SERVICES_SERVICEMANAGER_SOCKET_ACTIVATION_H_
