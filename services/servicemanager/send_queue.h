// SendQueue: the messages waiting for one manager connection to read them.
//
// The daemon is a single thread serving everyone, so it never blocks on a
// peer: a message goes out at once when nothing is queued and the socket
// takes it (TrySendMessage), and waits here otherwise until EPOLLOUT. A peer
// that reads is never given up on, however far a burst puts it behind; one
// is given up on (kOverflow) only when more than `max_bytes` wait, or when it
// has taken nothing for `stall_timeout` while messages wait.
//
// Owns the queued descriptors (closed with the queue). One thread.
#ifndef SLUICE_SERVICES_SERVICEMANAGER_SEND_QUEUE_H_
#define SLUICE_SERVICES_SERVICEMANAGER_SEND_QUEUE_H_

#include <cstddef>
#include <deque>
#include <string>

#include "absl/time/time.h"
#include "services/servicemanager/outbox.h"

namespace sluice {

class SendQueue {
 public:
  struct Limits {
    size_t max_bytes = size_t{8} << 20;
    absl::Duration stall_timeout = absl::Seconds(10);
  };
  enum class Result {
    kDone,      // Sent; nothing waits.
    kPending,   // Messages wait: ask for EPOLLOUT, then Flush.
    kOverflow,  // The peer is not reading (see Limits): drop it.
    kFailed,    // The socket failed (peer gone): drop it.
  };

  explicit SendQueue(Limits limits) : limits_(limits) {}

  Result Send(int socket, OutgoingMessage message, absl::Time now);
  // Sends what waits until the socket is full or nothing is left.
  Result Flush(int socket, absl::Time now);

  size_t size() const { return queue_.size(); }
  size_t bytes() const { return bytes_; }
  // Why the last kOverflow happened, for the log.
  std::string DescribeOverflow(absl::Time now) const;

 private:
  Limits limits_;
  std::deque<OutgoingMessage> queue_;
  size_t bytes_ = 0;          // Sum of queue_[i].bytes.size().
  absl::Time last_progress_;  // When queue_ was last empty or last shrank.
};

}  // namespace sluice

#endif  // SLUICE_SERVICES_SERVICEMANAGER_SEND_QUEUE_H_
