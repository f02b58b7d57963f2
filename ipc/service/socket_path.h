// Where the service manager listens: one rule, shared by the daemon, the
// client library and sluicectl so they always agree.
//
//   1. $SLUICE_SERVICEMANAGER, if set and non-empty
//   2. $XDG_RUNTIME_DIR/sluice/servicemanager.sock, if XDG_RUNTIME_DIR is set
//   3. /run/sluice/servicemanager.sock when running as root (euid 0)
//   4. otherwise there is no default: UNAVAILABLE saying what to set
//
// (The daemon's --socket flag, and ServiceManagerOptions::socket_path, take
// precedence over all of these.)
#ifndef SLUICE_IPC_SERVICE_SOCKET_PATH_H_
#define SLUICE_IPC_SERVICE_SOCKET_PATH_H_

#include <string>

#include "absl/status/statusor.h"

namespace sluice {

inline constexpr char kServiceManagerEnv[] = "SLUICE_SERVICEMANAGER";

absl::StatusOr<std::string> DefaultServiceManagerSocketPath();

}  // namespace sluice

#endif  // SLUICE_IPC_SERVICE_SOCKET_PATH_H_
