// The baselines the channel is measured against: raw shared-memory ping-pong
// (spin, futex, spin-then-futex) and kernel byte streams (Unix socket, pipe).
// They carry none of the channel's bookkeeping, so their latency is what the
// hardware and kernel charge for a handoff of that kind on this machine.
#ifndef SLUICE_BENCH_RAW_TRANSPORTS_H_
#define SLUICE_BENCH_RAW_TRANSPORTS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "bench/pingpong.h"

namespace sluice::bench {

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
