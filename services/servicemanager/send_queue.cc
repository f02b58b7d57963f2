#include "services/servicemanager/send_queue.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "ipc/socket/unix_socket.h"

namespace sluice {
namespace {

// The descriptors as the borrowed ints SendMessage takes.
std::vector<int> RawFds(const std::vector<UniqueFd>& fds) {
  std::vector<int> raw;
  raw.reserve(fds.size());
  for (const UniqueFd& fd : fds) raw.push_back(fd.get());
  return raw;
}

}  // namespace

SendQueue::Result SendQueue::Send(int socket, OutgoingMessage message, absl::Time now) {
  if (queue_.empty()) {
    last_progress_ = now;
    absl::StatusOr<bool> sent = TrySendMessage(socket, message.bytes, RawFds(message.fds));
    if (!sent.ok()) return Result::kFailed;
    if (*sent) return Result::kDone;
  }
  if (bytes_ + message.bytes.size() > limits_.max_bytes ||
      now - last_progress_ > limits_.stall_timeout) {
    return Result::kOverflow;
  }
  bytes_ += message.bytes.size();
  queue_.push_back(std::move(message));
  return Result::kPending;
}

SendQueue::Result SendQueue::Flush(int socket, absl::Time now) {
  while (!queue_.empty()) {
    OutgoingMessage& next = queue_.front();
    absl::StatusOr<bool> sent = TrySendMessage(socket, next.bytes, RawFds(next.fds));
    if (!sent.ok()) return Result::kFailed;
    if (!*sent) return Result::kPending;
    bytes_ -= next.bytes.size();
    queue_.pop_front();
    last_progress_ = now;
  }
  return Result::kDone;
}

std::string SendQueue::DescribeOverflow(absl::Time now) const {
  return absl::StrCat(queue_.size(), " messages (", bytes_,
                      " bytes) queued and it has read none for ",
                      absl::FormatDuration(now - last_progress_));
}

}  // namespace sluice
