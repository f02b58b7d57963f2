// The timeout argument of poll(2) and epoll_wait(2) for a deadline.
#ifndef SLUICE_IPC_BASE_POLL_TIMEOUT_H_
#define SLUICE_IPC_BASE_POLL_TIMEOUT_H_

#include <algorithm>
#include <climits>
#include <cstdint>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace sluice {

// -1 (wait forever) for an infinite deadline, 0 once it has passed, else
// the milliseconds left rounded up: a wait that returns early only to wait
// again costs a loop.
inline int PollTimeoutMs(absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) return -1;
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, INT_MAX));
}

}  // namespace sluice

#endif  // SLUICE_IPC_BASE_POLL_TIMEOUT_H_
