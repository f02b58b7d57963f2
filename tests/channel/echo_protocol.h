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
#include "ipc/channel/channel.h"

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

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_CHANNEL_ECHO_PROTOCOL_H_
