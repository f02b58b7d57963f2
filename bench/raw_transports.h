// The baselines the channel is measured against: raw shared-memory ping-pong
// (spin, futex, spin-then-futex) and kernel byte streams (Unix socket, pipe).
// They carry none of the channel's bookkeeping, so their latency is what the
// hardware and kernel charge for a handoff of that kind on this machine.
#ifndef SLUICE_BENCH_RAW_TRANSPORTS_H_
#define SLUICE_BENCH_RAW_TRANSPORTS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "absl/status/statusor.h"
#include "bench/pingpong.h"
#include "ipc/sync/futex.h"

namespace sluice::bench {

// The handoff every raw shared-memory baseline uses, one side waiting for a
// word the other side moves.
// Waits until `word` != `old`: spins for `spin_ns` (forever if negative, not
// at all if zero), then sleeps in FUTEX_WAIT with `sleeping` raised.
void AwaitChange(const FutexWord& word, uint32_t old, std::atomic<uint32_t>& sleeping,
                 int64_t spin_ns);
// Stores `value` into `word` and wakes the other side if it raised
// `peer_sleeping` (its AwaitChange).
void Publish(FutexWord& word, uint32_t value, const std::atomic<uint32_t>& peer_sleeping);

// Blocking byte-stream I/O for the kernel baselines. ReadAll returns false on
// end of stream before the first byte (a clean stop); end of stream
// mid-message is DATA_LOSS.
absl::Status WriteAll(int fd, std::span<const std::byte> bytes);
absl::StatusOr<bool> ReadAll(int fd, std::span<std::byte> bytes);

// How a raw shared-memory side waits for the other: spin this long before
// FUTEX_WAIT; negative spins forever, zero sleeps at once.
absl::StatusOr<std::unique_ptr<PingPongClient>> StartRawShm(Transport transport, int64_t spin_ns,
                                                            const CaseSetup& setup);
int ServeRawShm(int64_t spin_ns, size_t payload);

// Unix stream socket or a pair of pipes (`transport` says which).
absl::StatusOr<std::unique_ptr<PingPongClient>> StartStream(Transport transport,
                                                            const CaseSetup& setup);
int ServeStream(size_t payload);

}  // namespace sluice::bench

#endif  // SLUICE_BENCH_RAW_TRANSPORTS_H_
