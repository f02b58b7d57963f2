#include "services/servicemanager/send_queue.h"

#include "gtest/gtest.h"
#include "ipc/socket/unix_socket.h"
#include "tests/testing/status_matchers.h"

namespace sluice {
namespace {

OutgoingMessage Message(size_t size) { return {std::vector<std::byte>(size, std::byte{7}), {}}; }

class SendQueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pair = SeqPacketPair();
    ASSERT_OK(pair.status());
    ours_ = std::move(pair->first);
    theirs_ = std::move(pair->second);
  }
  // Sends until the socket is full; returns how many went out at once.
  int FillSocket(SendQueue& queue, absl::Time now) {
    int sent = 0;
    while (queue.Send(ours_.get(), Message(1024), now) == SendQueue::Result::kDone) ++sent;
    return sent;
  }
  UniqueFd ours_, theirs_;
  const absl::Time t0_ = absl::FromUnixSeconds(1000);
};

TEST_F(SendQueueTest, PeerThatReadsIsNeverGivenUpOnHoweverFarBehind) {
  SendQueue queue({.max_bytes = 1 << 20, .stall_timeout = absl::Seconds(10)});
  const int at_once = FillSocket(queue, t0_);
  ASSERT_GT(at_once, 0);
  // Queued: one from FillSocket. Queue more than the kernel holds.
  for (int i = 0; i < 200; ++i) {
    ASSERT_EQ(queue.Send(ours_.get(), Message(1024), t0_ + absl::Seconds(5)),
              SendQueue::Result::kPending);
  }
  // The peer reads one message; a flush makes progress, which resets the
  // stall clock even though most messages still wait.
  ASSERT_OK(ReceiveMessage(theirs_.get(), 4096).status());
  EXPECT_EQ(queue.Flush(ours_.get(), t0_ + absl::Seconds(9)), SendQueue::Result::kPending);
  EXPECT_EQ(queue.Send(ours_.get(), Message(1024), t0_ + absl::Seconds(18)),
            SendQueue::Result::kPending);
  // Reading everything drains the queue: read what the socket holds, flush
  // more into it, until nothing waits anywhere.
  size_t received = 1;
  for (;;) {
    auto message = TryReceiveMessage(theirs_.get(), 4096);
    ASSERT_OK(message.status());
    if (message->has_value()) {
      ++received;
      continue;
    }
    if (queue.size() == 0) break;
    queue.Flush(ours_.get(), t0_ + absl::Seconds(19));
  }
  EXPECT_EQ(queue.size(), 0u);
  EXPECT_EQ(queue.bytes(), 0u);
  EXPECT_EQ(received, static_cast<size_t>(at_once) + 202);
}

TEST_F(SendQueueTest, PeerThatReadsNothingForTheStallTimeoutOverflows) {
  SendQueue queue({.max_bytes = 1 << 20, .stall_timeout = absl::Seconds(10)});
  FillSocket(queue, t0_);
  EXPECT_EQ(queue.Send(ours_.get(), Message(1024), t0_ + absl::Seconds(10)),
            SendQueue::Result::kPending);
  EXPECT_EQ(queue.Send(ours_.get(), Message(1024), t0_ + absl::Seconds(11)),
            SendQueue::Result::kOverflow);
}

TEST_F(SendQueueTest, MoreThanTheByteLimitQueuedOverflows) {
  SendQueue queue({.max_bytes = 4096, .stall_timeout = absl::Seconds(10)});
  FillSocket(queue, t0_);  // One 1024-byte message queued.
  EXPECT_EQ(queue.Send(ours_.get(), Message(3072), t0_), SendQueue::Result::kPending);
  EXPECT_EQ(queue.Send(ours_.get(), Message(1), t0_), SendQueue::Result::kOverflow);
  EXPECT_EQ(queue.bytes(), 4096u);
}

TEST_F(SendQueueTest, PeerGoneIsFailed) {
  SendQueue queue({});
  theirs_.reset();
  EXPECT_EQ(queue.Send(ours_.get(), Message(8), t0_), SendQueue::Result::kFailed);
}

}  // namespace
}  // namespace sluice
