#include "services/servicemanager/socket_activation.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "ipc/base/errno_status.h"

namespace sluice {

absl::StatusOr<std::optional<int>> TakeActivatedSocket() {
  const char* pid_text = ::getenv("LISTEN_PID");
  const char* fds_text = ::getenv("LISTEN_FDS");
  if (pid_text == nullptr || fds_text == nullptr) return std::optional<int>();
  const std::string pid_value = pid_text, fds_value = fds_text;
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  pid_t pid = 0;
  int count = 0;
  if (!absl::SimpleAtoi(pid_value, &pid) || pid != ::getpid()) return std::optional<int>();
  if (!absl::SimpleAtoi(fds_value, &count) || count <= 0) return std::optional<int>();
  if (count != 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("systemd passed ", count, " sockets (LISTEN_FDS); the manager serves one"));
  }
  const int fd = kListenFdsStart;
  int type = 0, listening = 0, domain = 0;
  socklen_t len = sizeof(type);
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
    return ErrnoStatus("getsockopt(activated socket, SO_TYPE)", errno);
  }
  len = sizeof(domain);
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) {
    return ErrnoStatus("getsockopt(activated socket, SO_DOMAIN)", errno);
  }
  len = sizeof(listening);
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0) {
    return ErrnoStatus("getsockopt(activated socket, SO_ACCEPTCONN)", errno);
  }
  if (domain != AF_UNIX || type != SOCK_SEQPACKET || listening == 0) {
    return absl::FailedPreconditionError(
        "the socket from systemd is not a listening AF_UNIX SOCK_SEQPACKET socket (use "
        "ListenSequentialPacket= in the .socket unit)");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
      ::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    return ErrnoStatus("fcntl(activated socket)", errno);
  }
  return std::optional<int>(fd);
}

}  // namespace sluice
