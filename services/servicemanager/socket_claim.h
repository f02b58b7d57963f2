// SocketClaim: the daemon's ownership of its socket path.
//
// Claim() decides, safely, whether this process may serve on a path, and
// binds it: the directory must not let others swap the socket; PATH.lock is
// flock()ed for the daemon's lifetime (the kernel drops a crashed daemon's
// lock, so a crash never blocks a restart); a live socket is never stolen
// and a stale one is replaced. Destruction removes the node only if it is
// still the one bound here (a successor may already have replaced it).
//
// Owns the listening descriptor and the lock descriptor. An adopted socket
// (Adopt) has no lock and is left in place at the end: its owner (systemd)
// keeps it, so clients can connect while the daemon restarts. Not thread safe;
// the daemon's loop thread uses the listener.
#ifndef SLUICE_SERVICES_SERVICEMANAGER_SOCKET_CLAIM_H_
#define SLUICE_SERVICES_SERVICEMANAGER_SOCKET_CLAIM_H_

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"
#include "ipc/base/unique_fd.h"

namespace sluice {

class SocketClaim {
 public:
  // A non-blocking SOCK_SEQPACKET listener on `path`, mode `mode`.
  // ALREADY_EXISTS if a live daemon owns the path; FAILED_PRECONDITION if the
  // path or its directory is unsafe to use; INVALID_ARGUMENT for a path that
  // does not fit sockaddr_un.
  static absl::StatusOr<SocketClaim> Claim(const std::string& path, mode_t mode);
  // A listening socket someone else made and owns the path of (systemd
  // socket activation): taken as is, never unlinked. The path is read back
  // with getsockname, for log lines.
  static absl::StatusOr<SocketClaim> Adopt(UniqueFd listener);

  SocketClaim(SocketClaim&&) noexcept = default;
  SocketClaim& operator=(SocketClaim&&) noexcept = default;
  ~SocketClaim();

  int listener() const { return listener_.get(); }
  const std::string& path() const { return path_; }

 private:
  SocketClaim(std::string path, UniqueFd listener, UniqueFd lock, ino_t inode)
      : path_(std::move(path)),
        listener_(std::move(listener)),
        lock_(std::move(lock)),
        inode_(inode) {}

  std::string path_;
  UniqueFd listener_;
  UniqueFd lock_;    // Held (flock) for as long as this claim lives.
  ino_t inode_ = 0;  // Of the node we bound; 0 once moved from.
};

}  // namespace sluice

#endif  // SLUICE_SERVICES_SERVICEMANAGER_SOCKET_CLAIM_H_
