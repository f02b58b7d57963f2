#include "services/servicemanager/socket_claim.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ipc/base/errno_status.h"
#include "ipc/base/status_macros.h"

namespace sluice {
namespace {

std::string ParentDir(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// The directory holding the socket must not let anyone else swap the socket
// for their own: owned by us or root, and not writable by others unless
// sticky (like /tmp). Created (mode 0755) if missing.
absl::Status PrepareDirectory(const std::string& dir) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) return ErrnoStatus(absl::StrCat("lstat(", dir, ")"), errno);
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoStatus(absl::StrCat("mkdir(", dir, ")"), errno);
    }
    if (::lstat(dir.c_str(), &st) != 0) {
      return ErrnoStatus(absl::StrCat("lstat(", dir, ")"), errno);
    }
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(dir, " is not a directory"));
  }
  if (st.st_uid != ::geteuid() && st.st_uid != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("socket directory ", dir, " is owned by uid ", st.st_uid));
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("socket directory ", dir, " is writable by others and not sticky"));
  }
  return absl::OkStatus();
}

bool SomeoneListens(const sockaddr_un& addr) {
  UniqueFd probe(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!probe) return false;
  return RetryOnEintr([&] {
           return ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
         }) == 0 ||
         errno == EAGAIN;  // Backlog full: alive, just busy.
}

}  // namespace

absl::StatusOr<SocketClaim> SocketClaim::Claim(const std::string& path, mode_t mode) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "socket path '", path, "' is empty or longer than ", sizeof(addr.sun_path) - 1, " bytes"));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  SLUICE_RETURN_IF_ERROR(PrepareDirectory(ParentDir(path)));

  // The lock decides who owns the path: a crashed daemon's lock is released
  // by the kernel, a live one's is not. The socket probe below also covers a
  // daemon started without the lock file (e.g. an older build).
  const std::string lock_path = absl::StrCat(path, ".lock");
  UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock) return ErrnoStatus(absl::StrCat("open(", lock_path, ")"), errno);
  if (RetryOnEintr([&] { return ::flock(lock.get(), LOCK_EX | LOCK_NB); }) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::AlreadyExistsError(
          absl::StrCat("another service manager is running on ", path, " (holds ", lock_path, ")"));
    }
    return ErrnoStatus(absl::StrCat("flock(", lock_path, ")"), errno);
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " exists and is not a socket; refusing to replace it"));
    }
    if (SomeoneListens(addr)) {
      return absl::AlreadyExistsError(
          absl::StrCat("a live service manager is listening on ", path));
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus(absl::StrCat("unlink(stale socket ", path, ")"), errno);
    }
  } else if (errno != ENOENT) {
    return ErrnoStatus(absl::StrCat("lstat(", path, ")"), errno);
  }

  UniqueFd listener(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listener) return ErrnoStatus("socket(AF_UNIX, SOCK_SEQPACKET)", errno);
  // Bind under a tight umask so the node never exists with looser rights
  // than asked for, then widen it to the configured mode.
  const mode_t old_umask = ::umask(0177);
  const int bound = ::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  const int bind_errno = errno;
  ::umask(old_umask);
  if (bound != 0) return ErrnoStatus(absl::StrCat("bind(", path, ")"), bind_errno);
  if (::chmod(path.c_str(), mode) != 0) {
    return ErrnoStatus(absl::StrCat("chmod(", path, ")"), errno);
  }
  if (::lstat(path.c_str(), &st) != 0) return ErrnoStatus(absl::StrCat("lstat(", path, ")"), errno);
  if (::listen(listener.get(), SOMAXCONN) != 0) {
    return ErrnoStatus(absl::StrCat("listen(", path, ")"), errno);
  }
  const std::string pid_text = absl::StrCat(::getpid(), "\n");
  if (::ftruncate(lock.get(), 0) == 0) (void)!::write(lock.get(), pid_text.data(), pid_text.size());
  return SocketClaim(path, std::move(listener), std::move(lock), st.st_ino);
}

absl::StatusOr<SocketClaim> SocketClaim::Adopt(UniqueFd listener) {
  sockaddr_un addr{};
  socklen_t len = sizeof(addr);
  if (::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return ErrnoStatus("getsockname(adopted socket)", errno);
  }
  std::string path;
  if (len > offsetof(sockaddr_un, sun_path) && addr.sun_path[0] != '\0') {
    path.assign(addr.sun_path, strnlen(addr.sun_path, sizeof(addr.sun_path)));
  }
  return SocketClaim(std::move(path), std::move(listener), UniqueFd(), /*inode=*/0);
}

SocketClaim::~SocketClaim() {
  if (!listener_.valid() || inode_ == 0) return;
  struct stat st;
  if (::lstat(path_.c_str(), &st) == 0 && st.st_ino == inode_) ::unlink(path_.c_str());
}

}  // namespace sluice
