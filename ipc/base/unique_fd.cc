#include "ipc/base/unique_fd.h"

#include <fcntl.h>
#include <unistd.h>

#include "ipc/base/errno_status.h"

namespace sluice {

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) {
    // close() is not retried on EINTR: on Linux the fd is gone either way and a
    // retry could close a descriptor another thread just received.
    ::close(fd_);
  }
  fd_ = fd;
}

absl::StatusOr<UniqueFd> UniqueFd::Duplicate() const {
  int copy = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return ErrnoStatus("fcntl(F_DUPFD_CLOEXEC)", errno);
  return UniqueFd(copy);
}

}  // namespace sluice
