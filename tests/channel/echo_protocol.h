// The request/reply format the channel tests speak, and the servers that
// answer it. The same server code runs on a thread (in-process scenarios,
// visible to TSan) and in channel_test_peer (real separate processes).
//
// Request:  u64 tag | u64 checksum(payload) | payload
// Reply:    u64 tag | u64 checksum(payload) | payload with every byte ^ 0x5a
// A server that finds a bad checksum fails the call with DATA_LOSS, so a
// corrupted request cannot pass unnoticed.
#ifndef SLUICE_TESTS_CHANNEL_ECHO_PROTOCOL_H_
#define SLUICE_TESTS_CHANNEL_ECHO_PROTOCOL_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ipc/channel/client_channel.h"
#include "ipc/channel/server_channel.h"
#include "ipc/socket/unix_socket.h"

namespace sluice::testing {

inline constexpr size_t kEchoHeader = 16;

uint64_t Checksum(std::span<const std::byte> bytes);

// Writes a request for `payload` into `out` (at least kEchoHeader +
// payload.size() bytes); returns the bytes used.
std::span<const std::byte> WriteEchoRequest(uint64_t tag, std::span<const std::byte> payload,
                                            std::span<std::byte> out);

// Checks that `reply` answers `tag` with the transformed `payload`.
absl::Status CheckEchoReply(uint64_t tag, std::span<const std::byte> payload,
                            std::span<const std::byte> reply);

// Answers echo requests until the channel ends; returns why it ended.
// Method byte conventions: a request whose tag has the top bit set is oneway
// bookkeeping (see RunOrderingServer).
absl::Status RunEchoServer(ServerChannel& channel);

// Oneway ordering check: oneway requests carry an increasing tag; a sync
// request replies with (number of oneways seen, number seen out of order).
absl::Status RunOrderingServer(ServerChannel& channel);

// Descriptor passing: each request carries [memfd, pipe write end]. The
// server writes the memfd's contents into the pipe and answers with a new
// memfd holding "reply fd", attached to the reply.
absl::Status RunFdServer(ServerChannel& channel);

// Identity: the server answers a call with the caller it was given
// (IncomingCall::caller()) as u32 pid | u32 uid | u32 gid; a oneway call is
// just dropped.
absl::Status AnswerWithCaller(IncomingCall& call);
// Asks once, with an 8-byte request.
absl::StatusOr<PeerCredentials> AskCaller(ClientChannel& channel,
                                          absl::Time deadline = absl::InfiniteFuture());
// Asks `calls` times; OK if every answer names this process (pid, uid and
// gid), DATA_LOSS naming the pid if one does not, else the failed call's status.
absl::Status RunIdentityClient(ClientChannel& channel, int calls);
// How a client process reports RunIdentityClient's result: 0 for OK, else
// 10 + the status code.
inline int IdentityExitCode(const absl::Status& status) {
  return status.ok() ? 0 : 10 + static_cast<int>(status.code());
}

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_CHANNEL_ECHO_PROTOCOL_H_
