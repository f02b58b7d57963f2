// The one place where errno turns into absl::Status, and where EINTR is retried.
//
// Every syscall failure in the runtime surfaces as a Status whose message names
// the call and the errno (e.g. "memfd_create(sluice-channel): EMFILE: Too many
// open files"), so an error read in a log points at the failing syscall.
#ifndef SLUICE_IPC_BASE_ERRNO_STATUS_H_
#define SLUICE_IPC_BASE_ERRNO_STATUS_H_

#include <cerrno>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sluice {

// Maps an errno value to the canonical code agreed in docs/error-handling.md
// (e.g. EMFILE/ENOMEM -> RESOURCE_EXHAUSTED, EPIPE/ECONNRESET -> UNAVAILABLE).
absl::StatusCode ErrnoToCode(int error_number);

// A Status for a failed syscall: `what` names the call (and its object when
// useful); `error_number` is the errno it set.
absl::Status ErrnoStatus(absl::string_view what, int error_number);

// Retries `call` while it fails with EINTR. `call` returns a signed integer
// that is -1 on failure with errno set, like raw syscalls do.
template <typename Call>
auto RetryOnEintr(Call&& call) {
  for (;;) {
    auto result = call();
    if (result != -1 || errno != EINTR) return result;
  }
}

}  // namespace sluice

#endif  // SLUICE_IPC_BASE_ERRNO_STATUS_H_
