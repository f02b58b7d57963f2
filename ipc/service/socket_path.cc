#include "ipc/service/socket_path.h"

#include <unistd.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace sluice {

absl::StatusOr<std::string> DefaultServiceManagerSocketPath() {
  if (const char* env = std::getenv(kServiceManagerEnv); env != nullptr && env[0] != '\0') {
    return std::string(env);
  }
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && xdg[0] != '\0') {
    return absl::StrCat(xdg, "/sluice/servicemanager.sock");
  }
  if (::geteuid() == 0) return std::string("/run/sluice/servicemanager.sock");
  return absl::UnavailableError(
      absl::StrCat("no service manager socket path: set ", kServiceManagerEnv,
                   " or XDG_RUNTIME_DIR (the /run/sluice default is for root only)"));
}

}  // namespace sluice
