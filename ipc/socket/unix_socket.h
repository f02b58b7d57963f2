// Unix-domain socket helpers: messages with file descriptors (SCM_RIGHTS) and
// the peer's kernel-verified identity (SO_PEERCRED).
//
// Received descriptors are always close-on-exec and owned (UniqueFd), so a
// message that fails validation cannot leak them. Every syscall failure is an
// absl::Status naming the call and errno; a peer that hung up is UNAVAILABLE.
#ifndef SLUICE_IPC_SOCKET_UNIX_SOCKET_H_
#define SLUICE_IPC_SOCKET_UNIX_SOCKET_H_

#include <sys/types.h>

#include <cstddef>
#include <optional>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "ipc/base/unique_fd.h"

namespace sluice {

// Who is on the other end, as the kernel saw it at connect()/socketpair() time.
struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

// Most descriptors one message may carry.
inline constexpr size_t kMaxFdsPerMessage = 64;

// A connected pair of SOCK_SEQPACKET sockets (message boundaries kept),
// both close-on-exec.
absl::StatusOr<std::pair<UniqueFd, UniqueFd>> SeqPacketPair();

// Sends one message carrying `bytes` and (optionally) `fds`. The fds stay
// owned by the caller. Never raises SIGPIPE. A message with neither bytes nor
// fds is INVALID_ARGUMENT: the receiver could not tell it from a hang-up.
absl::Status SendMessage(int socket, std::span<const std::byte> bytes,
                         std::span<const int> fds = {});

// As SendMessage, but never blocks: false (nothing sent) when the socket's
// send buffer is full, so a single-threaded server can queue the message and
// wait for EPOLLOUT instead of stalling on one slow peer.
absl::StatusOr<bool> TrySendMessage(int socket, std::span<const std::byte> bytes,
                                    std::span<const int> fds = {});

struct ReceivedMessage {
  std::vector<std::byte> bytes;
  std::vector<UniqueFd> fds;
  // The sending process as the kernel saw it at send time; set only when
  // the receiving socket has EnableSenderCredentials, and had it before the
  // message was sent (for one sent earlier the kernel recorded nobody).
  std::optional<PeerCredentials> sender;
};

// Receives one message of at most `max_bytes`. A message that was truncated
// (too long, or with more than kMaxFdsPerMessage fds) is DATA_LOSS and any fds
// that did arrive are closed. End of stream is UNAVAILABLE.
absl::StatusOr<ReceivedMessage> ReceiveMessage(int socket, size_t max_bytes);

// As ReceiveMessage, but returns nullopt at once when no message is queued.
absl::StatusOr<std::optional<ReceivedMessage>> TryReceiveMessage(int socket, size_t max_bytes);

// The first queued message, looked at without taking it (and without taking
// any descriptor it carries into this process): up to head.size() of its
// bytes, whether it is longer, and whether it carries descriptors. nullopt
// when none is queued. Never blocks.
struct PeekedMessage {
  size_t length = 0;  // Bytes copied into the head.
  bool longer = false;
  bool has_fds = false;
};
absl::StatusOr<std::optional<PeekedMessage>> PeekMessage(int socket, std::span<std::byte> head);
// Drops the first queued message (closing any descriptors it carries).
void DiscardMessage(int socket);

// A message received into a buffer its caller owns (ReceiveMessageInto).
struct ReceivedInto {
  // The prefix of the caller's buffer this message filled: the only bytes of
  // it that belong to this message. The rest still holds whatever was there
  // before (an earlier, longer message), so nothing may read past it.
  std::span<const std::byte> bytes;
  std::vector<UniqueFd> fds;
  std::optional<PeerCredentials> sender;
  // Only with LostFds::kKeepMessage: some descriptors the sender attached
  // never arrived (`fds` holds those that did).
  bool fds_lost = false;
};
// What to do with a message whose descriptors did not all arrive
// (MSG_CTRUNC: this process hit RLIMIT_NOFILE, or the sender attached more
// than kMaxFdsPerMessage). kKeepMessage returns it with `fds_lost` set: its
// bytes are intact, so a caller that reads requests off a long-lived socket
// can refuse that one message and keep the socket.
enum class LostFds { kDataLoss, kKeepMessage };

// As ReceiveMessage with `buffer.size()` as the limit, but into `buffer`:
// nothing is allocated or cleared per message (nothing at all when no
// descriptors arrive), so a loop that receives many small messages under a
// large limit keeps one buffer and reuses it.
absl::StatusOr<ReceivedInto> ReceiveMessageInto(int socket, std::span<std::byte> buffer,
                                                LostFds lost_fds = LostFds::kDataLoss);

absl::StatusOr<PeerCredentials> GetPeerCredentials(int socket);

// SO_PASSCRED: every message sent to `socket` from now on carries its
// sender's pid/uid/gid, filled in by the kernel (ReceivedMessage::sender).
// Unlike SO_PEERCRED this names whoever sends, even on a socketpair whose
// other end was handed to another process. Enable it before handing the
// other end out: messages sent earlier name nobody.
absl::Status EnableSenderCredentials(int socket);

}  // namespace sluice

#endif  // SLUICE_IPC_SOCKET_UNIX_SOCKET_H_
