#include "ipc/socket/unix_socket.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "ipc/base/errno_status.h"

namespace sluice {

absl::StatusOr<std::pair<UniqueFd, UniqueFd>> SeqPacketPair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) {
    return ErrnoStatus("socketpair(AF_UNIX, SOCK_SEQPACKET)", errno);
  }
  return std::make_pair(UniqueFd(fds[0]), UniqueFd(fds[1]));
}

namespace {
// nullopt: MSG_DONTWAIT was given and the socket's buffer is full.
absl::StatusOr<bool> Send(int socket, std::span<const std::byte> bytes, std::span<const int> fds,
                          int flags) {
  if (bytes.empty() && fds.empty()) {
    // recvmsg() returns 0 for it, exactly as for end of stream.
    return absl::InvalidArgumentError("sendmsg: an empty message reads as a hang-up");
  }
  if (fds.size() > kMaxFdsPerMessage) {
    return absl::InvalidArgumentError(
        absl::StrCat("sendmsg: ", fds.size(), " fds exceed the limit of ", kMaxFdsPerMessage));
  }
  iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
  if (!fds.empty()) {
    std::memset(control, 0, sizeof(control));
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  const ssize_t sent = RetryOnEintr([&] { return ::sendmsg(socket, &msg, MSG_NOSIGNAL | flags); });
  if (sent < 0) {
    if ((flags & MSG_DONTWAIT) != 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
    return ErrnoStatus("sendmsg", errno);
  }
  if (static_cast<size_t>(sent) != bytes.size()) {
    return absl::UnavailableError(
        absl::StrCat("sendmsg: short write of ", sent, " of ", bytes.size(), " bytes"));
  }
  return true;
}
}  // namespace

absl::Status SendMessage(int socket, std::span<const std::byte> bytes, std::span<const int> fds) {
  return Send(socket, bytes, fds, 0).status();
}

absl::StatusOr<bool> TrySendMessage(int socket, std::span<const std::byte> bytes,
                                    std::span<const int> fds) {
  return Send(socket, bytes, fds, MSG_DONTWAIT);
}

namespace {
// nullopt only for a non-blocking receive that found nothing queued.
absl::StatusOr<std::optional<ReceivedInto>> ReceiveInto(int socket, std::span<std::byte> buffer,
                                                        int flags, LostFds lost_fds) {
  ReceivedInto out;
  iovec iov{buffer.data(), buffer.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  // Room for the sender's credentials too, which the kernel adds to every
  // message once the receiving socket has SO_PASSCRED.
  alignas(cmsghdr) char
      control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage) + CMSG_SPACE(sizeof(ucred))];
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  const ssize_t got =
      RetryOnEintr([&] { return ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC | flags); });
  if (got < 0) {
    if ((flags & MSG_DONTWAIT) != 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return std::optional<ReceivedInto>();
    }
    return ErrnoStatus("recvmsg", errno);
  }
  // Take ownership of every fd first, so that an error below closes them.
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET) continue;
    if (cmsg->cmsg_type == SCM_CREDENTIALS && cmsg->cmsg_len >= CMSG_LEN(sizeof(ucred))) {
      ucred cred;
      std::memcpy(&cred, CMSG_DATA(cmsg), sizeof(cred));
      // pid 0 (with the overflow uid and gid) vouches for nobody: the kernel
      // recorded no sender because neither socket had SO_PASSCRED when the
      // message was sent, or the sender is in a pid namespace we cannot see.
      if (cred.pid != 0) out.sender = PeerCredentials{cred.pid, cred.uid, cred.gid};
      continue;
    }
    if (cmsg->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
      out.fds.emplace_back(fd);
    }
  }
  if (got == 0 && out.fds.empty()) {
    return absl::UnavailableError("recvmsg: peer closed the connection");
  }
  if ((msg.msg_flags & MSG_TRUNC) != 0) {
    return absl::DataLossError(
        absl::StrCat("recvmsg: message longer than the ", buffer.size(), "-byte limit"));
  }
  // The credentials' room can hold a few descriptors more than the limit.
  if ((msg.msg_flags & MSG_CTRUNC) != 0 || out.fds.size() > kMaxFdsPerMessage) {
    if (lost_fds == LostFds::kDataLoss) {
      return absl::DataLossError(absl::StrCat("recvmsg: more than ", kMaxFdsPerMessage,
                                              " file descriptors in one message"));
    }
    out.fds_lost = true;
  }
  out.bytes = buffer.first(static_cast<size_t>(got));
  return std::optional<ReceivedInto>(std::move(out));
}

// The owning variants: a buffer of `max_bytes` per message, cut to size.
absl::StatusOr<std::optional<ReceivedMessage>> Receive(int socket, size_t max_bytes, int flags) {
  ReceivedMessage out;
  out.bytes.resize(max_bytes);
  absl::StatusOr<std::optional<ReceivedInto>> received =
      ReceiveInto(socket, out.bytes, flags, LostFds::kDataLoss);
  if (!received.ok()) return received.status();
  if (!received->has_value()) return std::optional<ReceivedMessage>();
  out.bytes.resize((*received)->bytes.size());
  out.fds = std::move((*received)->fds);
  out.sender = (*received)->sender;
  return std::optional<ReceivedMessage>(std::move(out));
}
}  // namespace

absl::StatusOr<ReceivedMessage> ReceiveMessage(int socket, size_t max_bytes) {
  absl::StatusOr<std::optional<ReceivedMessage>> message = Receive(socket, max_bytes, 0);
  if (!message.ok()) return message.status();
  return **std::move(message);
}

absl::StatusOr<std::optional<ReceivedMessage>> TryReceiveMessage(int socket, size_t max_bytes) {
  return Receive(socket, max_bytes, MSG_DONTWAIT);
}

absl::StatusOr<std::optional<PeekedMessage>> PeekMessage(int socket, std::span<std::byte> head) {
  iovec iov{head.data(), head.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  // Room for credentials only (SO_PASSCRED adds them to every message): a
  // message's descriptors do not fit beside them, and MSG_CTRUNC says they
  // are there. Without credentials a few would fit; those copies are closed
  // at once below.
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  const ssize_t got = RetryOnEintr(
      [&] { return ::recvmsg(socket, &msg, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC); });
  if (got < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return std::optional<PeekedMessage>();
    return ErrnoStatus("recvmsg(MSG_PEEK)", errno);
  }
  bool has_fds = (msg.msg_flags & MSG_CTRUNC) != 0;
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    has_fds = true;
    const size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
      ::close(fd);
    }
  }
  return PeekedMessage{static_cast<size_t>(got), (msg.msg_flags & MSG_TRUNC) != 0, has_fds};
}

void DiscardMessage(int socket) {
  char byte;
  (void)RetryOnEintr([&] { return ::recv(socket, &byte, 0, MSG_DONTWAIT); });
}

absl::StatusOr<ReceivedInto> ReceiveMessageInto(int socket, std::span<std::byte> buffer,
                                                LostFds lost_fds) {
  absl::StatusOr<std::optional<ReceivedInto>> message = ReceiveInto(socket, buffer, 0, lost_fds);
  if (!message.ok()) return message.status();
  return **std::move(message);
}

absl::Status EnableSenderCredentials(int socket) {
  const int on = 1;
  if (::setsockopt(socket, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) != 0) {
    return ErrnoStatus("setsockopt(SO_PASSCRED)", errno);
  }
  return absl::OkStatus();
}

absl::StatusOr<PeerCredentials> GetPeerCredentials(int socket) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return ErrnoStatus("getsockopt(SO_PEERCRED)", errno);
  }
  return PeerCredentials{cred.pid, cred.uid, cred.gid};
}

}  // namespace sluice
