// UniqueFd: sole owner of one file descriptor; closes it exactly once.
//
// Move-only. A moved-from UniqueFd holds -1 and closes nothing. Thread
// compatible: one owner at a time.
#ifndef SLUICE_IPC_BASE_UNIQUE_FD_H_
#define SLUICE_IPC_BASE_UNIQUE_FD_H_

#include <utility>

#include "absl/status/statusor.h"

namespace sluice {

class UniqueFd {
 public:
  UniqueFd() = default;
  // Takes ownership of `fd` (may be -1).
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }

  // Gives up ownership without closing.
  [[nodiscard]] int release() { return std::exchange(fd_, -1); }
  // Closes the current fd (if any) and takes `fd`.
  void reset(int fd = -1);

  // A new descriptor for the same open file, close-on-exec.
  absl::StatusOr<UniqueFd> Duplicate() const;

 private:
  int fd_ = -1;
};

}  // namespace sluice

#endif  // SLUICE_IPC_BASE_UNIQUE_FD_H_
