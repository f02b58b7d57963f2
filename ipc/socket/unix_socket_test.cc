#include "ipc/socket/unix_socket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/testing/subprocess.h"
#include "tests/testing/status_matchers.h"

namespace sluice {
namespace {

using ::sluice::testing::CountOpenFds;
using ::sluice::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::SizeIs;

std::span<const std::byte> AsBytes(const std::string& text) {
  return std::as_bytes(std::span<const char>(text.data(), text.size()));
}

std::string AsString(const std::vector<std::byte>& bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

bool IsCloseOnExec(int fd) {
  const int flags = ::fcntl(fd, F_GETFD);
  return flags != -1 && (flags & FD_CLOEXEC) != 0;
}

bool SameFile(int a, int b) {
  struct stat sa {
  }, sb{};
  return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

std::pair<UniqueFd, UniqueFd> MakePipe() {
  int fds[2] = {-1, -1};
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// True if nothing is queued on `socket`.
bool NothingQueued(int socket) {
  char byte;
  return ::recv(socket, &byte, 1, MSG_DONTWAIT | MSG_PEEK) == -1 && errno == EAGAIN;
}

class UnixSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pair = SeqPacketPair();
    ASSERT_OK(pair);
    a_ = std::move(pair->first);
    b_ = std::move(pair->second);
  }
  UniqueFd a_;
  UniqueFd b_;
};

TEST_F(UnixSocketTest, SeqPacketPairIsConnectedCloseOnExecAndSeqPacket) {
  for (int fd : {a_.get(), b_.get()}) {
    EXPECT_TRUE(IsCloseOnExec(fd));
    int type = 0;
    socklen_t len = sizeof(type);
    ASSERT_EQ(::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len), 0);
    EXPECT_EQ(type, SOCK_SEQPACKET);
  }
}

TEST_F(UnixSocketTest, MessagesKeepTheirBoundaries) {
  ASSERT_OK(SendMessage(a_.get(), AsBytes("first")));
  ASSERT_OK(SendMessage(a_.get(), AsBytes("second message")));
  ASSERT_OK_AND_ASSIGN(ReceivedMessage one, ReceiveMessage(b_.get(), 1024));
  ASSERT_OK_AND_ASSIGN(ReceivedMessage two, ReceiveMessage(b_.get(), 1024));
  EXPECT_EQ(AsString(one.bytes), "first");
  EXPECT_EQ(AsString(two.bytes), "second message");
  EXPECT_TRUE(one.fds.empty());
  EXPECT_TRUE(two.fds.empty());
}

TEST_F(UnixSocketTest, TryReceiveReturnsNothingAtOnceWhenNothingIsQueued) {
  ASSERT_OK_AND_ASSIGN(std::optional<ReceivedMessage> none, TryReceiveMessage(b_.get(), 64));
  EXPECT_FALSE(none.has_value());
  ASSERT_OK(SendMessage(a_.get(), AsBytes("queued")));
  ASSERT_OK_AND_ASSIGN(std::optional<ReceivedMessage> one, TryReceiveMessage(b_.get(), 64));
  ASSERT_TRUE(one.has_value());
  EXPECT_EQ(AsString(one->bytes), "queued");
  a_.reset();
  EXPECT_THAT(TryReceiveMessage(b_.get(), 64), StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(UnixSocketTest, BothEndsCanSend) {
  ASSERT_OK(SendMessage(b_.get(), AsBytes("reply")));
  ASSERT_OK_AND_ASSIGN(ReceivedMessage got, ReceiveMessage(a_.get(), 64));
  EXPECT_EQ(AsString(got.bytes), "reply");
}

TEST_F(UnixSocketTest, MessageOfExactlyMaxBytesIsNotTruncated) {
  const std::string payload(100, 'z');
  ASSERT_OK(SendMessage(a_.get(), AsBytes(payload)));
  ASSERT_OK_AND_ASSIGN(ReceivedMessage got, ReceiveMessage(b_.get(), payload.size()));
  EXPECT_EQ(AsString(got.bytes), payload);
}

TEST_F(UnixSocketTest, ReceivedFdsAreValidCloseOnExecAndReferToTheSameFiles) {
  auto [read_end, write_end] = MakePipe();
  ASSERT_OK(
      SendMessage(a_.get(), AsBytes("pipe"), std::vector<int>{read_end.get(), write_end.get()}));
  ASSERT_OK_AND_ASSIGN(ReceivedMessage got, ReceiveMessage(b_.get(), 64));
  EXPECT_EQ(AsString(got.bytes), "pipe");
  ASSERT_THAT(got.fds, SizeIs(2));
  for (const UniqueFd& fd : got.fds) {
    EXPECT_TRUE(fd.valid());
    EXPECT_NE(::fcntl(fd.get(), F_GETFD), -1);
    EXPECT_TRUE(IsCloseOnExec(fd.get()));
  }
  EXPECT_NE(got.fds[0].get(), read_end.get());
  EXPECT_TRUE(SameFile(got.fds[0].get(), read_end.get()));
  EXPECT_TRUE(SameFile(got.fds[1].get(), write_end.get()));

  // Write through the received write end, read through the original read end.
  ASSERT_EQ(::write(got.fds[1].get(), "q", 1), 1);
  char byte = 0;
  ASSERT_EQ(::read(read_end.get(), &byte, 1), 1);
  EXPECT_EQ(byte, 'q');
}

TEST_F(UnixSocketTest, SentFdsStayOwnedByTheSender) {
  auto [read_end, write_end] = MakePipe();
  ASSERT_OK(SendMessage(a_.get(), AsBytes("x"), std::vector<int>{read_end.get()}));
  EXPECT_NE(::fcntl(read_end.get(), F_GETFD), -1);
  ASSERT_OK_AND_ASSIGN(ReceivedMessage got, ReceiveMessage(b_.get(), 64));
  EXPECT_THAT(got.fds, SizeIs(1));
}

TEST_F(UnixSocketTest, FdsCanTravelWithoutBytes) {
  auto [read_end, write_end] = MakePipe();
  ASSERT_OK(SendMessage(a_.get(), {}, std::vector<int>{write_end.get()}));
  ASSERT_OK_AND_ASSIGN(ReceivedMessage got, ReceiveMessage(b_.get(), 64));
  EXPECT_TRUE(got.bytes.empty());
  ASSERT_THAT(got.fds, SizeIs(1));
  EXPECT_TRUE(SameFile(got.fds[0].get(), write_end.get()));
}

TEST_F(UnixSocketTest, UpToTheFdLimitIsAccepted) {
  auto [read_end, write_end] = MakePipe();
  const std::vector<int> fds(kMaxFdsPerMessage, read_end.get());
  ASSERT_OK(SendMessage(a_.get(), AsBytes("many"), fds));
  ASSERT_OK_AND_ASSIGN(ReceivedMessage got, ReceiveMessage(b_.get(), 64));
  ASSERT_THAT(got.fds, SizeIs(kMaxFdsPerMessage));
  for (const UniqueFd& fd : got.fds) EXPECT_TRUE(SameFile(fd.get(), read_end.get()));
}

TEST_F(UnixSocketTest, TooManyFdsAreRejectedOnSendAndNothingIsSent) {
  auto [read_end, write_end] = MakePipe();
  const std::vector<int> fds(kMaxFdsPerMessage + 1, read_end.get());
  EXPECT_THAT(SendMessage(a_.get(), AsBytes("too many"), fds),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(absl::StrCat(kMaxFdsPerMessage + 1, " fds"))));
  EXPECT_TRUE(NothingQueued(b_.get()));
}

TEST_F(UnixSocketTest, TruncatedMessageIsDataLossAndItsFdsAreClosed) {
  auto [read_end, write_end] = MakePipe();
  const std::string payload(100, 'p');
  ASSERT_OK(SendMessage(a_.get(), AsBytes(payload),
                        std::vector<int>{read_end.get(), write_end.get(), read_end.get()}));
  const int fds_before = CountOpenFds();
  EXPECT_THAT(ReceiveMessage(b_.get(), 10),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("10-byte limit")));
  EXPECT_EQ(CountOpenFds(), fds_before);
  // The truncated datagram is consumed; the connection carries on.
  EXPECT_TRUE(NothingQueued(b_.get()));
}

TEST_F(UnixSocketTest, MoreFdsThanTheLimitFromARawPeerIsDataLossAndLeaksNothing) {
  auto [read_end, write_end] = MakePipe();
  constexpr size_t kCount = kMaxFdsPerMessage + 4;
  std::vector<int> fds(kCount, read_end.get());
  char byte = 'r';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kCount)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int) * kCount);
  std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * kCount);
  ASSERT_EQ(::sendmsg(a_.get(), &msg, 0), 1) << std::strerror(errno);

  const int fds_before = CountOpenFds();
  EXPECT_THAT(ReceiveMessage(b_.get(), 64),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("file descriptors")));
  EXPECT_EQ(CountOpenFds(), fds_before);
}

TEST_F(UnixSocketTest, EmptyMessageIsRejectedOnSend) {
  EXPECT_THAT(SendMessage(a_.get(), {}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(NothingQueued(b_.get()));
}

// recvmsg() returns 0 for a zero-length datagram as for end of stream, so a
// raw peer that sends one is treated as having hung up.
TEST_F(UnixSocketTest, ZeroLengthDatagramFromARawPeerReadsAsAHangUp) {
  ASSERT_EQ(::send(a_.get(), "", 0, 0), 0);
  EXPECT_THAT(ReceiveMessage(b_.get(), 64), StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(UnixSocketTest, ReceiveAfterPeerClosedIsUnavailable) {
  b_.reset();
  EXPECT_THAT(ReceiveMessage(a_.get(), 64), StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(UnixSocketTest, QueuedMessagesAreDeliveredBeforeThePeerClosedError) {
  ASSERT_OK(SendMessage(b_.get(), AsBytes("last words")));
  b_.reset();
  ASSERT_OK_AND_ASSIGN(ReceivedMessage got, ReceiveMessage(a_.get(), 64));
  EXPECT_EQ(AsString(got.bytes), "last words");
  EXPECT_THAT(ReceiveMessage(a_.get(), 64), StatusIs(absl::StatusCode::kUnavailable));
}

// MSG_NOSIGNAL: a closed peer is an error, not a SIGPIPE that kills the test.
TEST_F(UnixSocketTest, SendToAClosedPeerIsUnavailableWithoutSigpipe) {
  b_.reset();
  EXPECT_THAT(SendMessage(a_.get(), AsBytes("anyone?")),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("sendmsg")));
}

TEST_F(UnixSocketTest, ReceiveOnANonSocketNamesTheCall) {
  auto [read_end, write_end] = MakePipe();
  EXPECT_THAT(ReceiveMessage(read_end.get(), 64),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("recvmsg")));
}

TEST_F(UnixSocketTest, GetPeerCredentialsReturnsOurOwnIdentityOnASocketPair) {
  ASSERT_OK_AND_ASSIGN(PeerCredentials creds, GetPeerCredentials(a_.get()));
  EXPECT_EQ(creds.pid, ::getpid());
  EXPECT_EQ(creds.uid, ::getuid());
  EXPECT_EQ(creds.gid, ::getgid());
  ASSERT_OK_AND_ASSIGN(PeerCredentials other, GetPeerCredentials(b_.get()));
  EXPECT_EQ(other.pid, ::getpid());
}

TEST_F(UnixSocketTest, GetPeerCredentialsOnANonSocketFails) {
  auto [read_end, write_end] = MakePipe();
  EXPECT_THAT(GetPeerCredentials(read_end.get()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("SO_PEERCRED")));
}

}  // namespace
}  // namespace sluice
