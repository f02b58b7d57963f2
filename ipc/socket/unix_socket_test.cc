#include "ipc/socket/unix_socket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

// Sends one byte with `fds` as SCM_RIGHTS straight through sendmsg(), as a
// peer that ignores kMaxFdsPerMessage would.
ssize_t RawSendFds(int socket, const std::vector<int>& fds) {
  char byte = 'r';
  iovec iov{&byte, 1};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  return ::sendmsg(socket, &msg, 0);
}

// Runs `child` in a forked copy of this process and returns its exit code
// (-1 if it did not exit normally). The child reports only through that
// value: it leaves by _exit, so nothing of the test's state runs down there.
template <typename Child>
int RunInChild(Child child, pid_t* pid_out = nullptr) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(child());
  if (pid_out != nullptr) *pid_out = pid;
  if (pid < 0) return -1;
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
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
  // Just over the limit; within the room the receive buffer keeps for
  // credentials (so only the explicit count check catches it); beyond it.
  for (size_t count : {kMaxFdsPerMessage + 1, kMaxFdsPerMessage + 4, kMaxFdsPerMessage + 8,
                       kMaxFdsPerMessage + 9, 2 * kMaxFdsPerMessage}) {
    ASSERT_EQ(RawSendFds(a_.get(), std::vector<int>(count, read_end.get())), 1)
        << std::strerror(errno);
    const int fds_before = CountOpenFds();
    EXPECT_THAT(ReceiveMessage(b_.get(), 64),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("file descriptors")))
        << count << " fds";
    EXPECT_EQ(CountOpenFds(), fds_before) << count << " fds";
    EXPECT_TRUE(NothingQueued(b_.get()));
  }
}

TEST_F(UnixSocketTest, KeepingMessagesWithLostFdsKeepsTheBytesWhenFdsDidNotFit) {
  auto [read_end, write_end] = MakePipe();
  // Beyond the receive buffer's room: the kernel drops the rest (MSG_CTRUNC),
  // as it does for a receiver at RLIMIT_NOFILE.
  ASSERT_EQ(RawSendFds(a_.get(), std::vector<int>(2 * kMaxFdsPerMessage, read_end.get())), 1)
      << std::strerror(errno);
  std::vector<std::byte> buffer(64);
  const int fds_before = CountOpenFds();
  {
    ASSERT_OK_AND_ASSIGN(ReceivedInto message,
                         ReceiveMessageInto(b_.get(), buffer, LostFds::kKeepMessage));
    EXPECT_TRUE(message.fds_lost);
    EXPECT_THAT(message.bytes, SizeIs(1));
    EXPECT_LT(message.fds.size(), 2 * kMaxFdsPerMessage);
  }
  EXPECT_EQ(CountOpenFds(), fds_before);
  // An intact message is not marked.
  ASSERT_OK(SendMessage(a_.get(), AsBytes("whole")));
  ASSERT_OK_AND_ASSIGN(ReceivedInto whole,
                       ReceiveMessageInto(b_.get(), buffer, LostFds::kKeepMessage));
  EXPECT_FALSE(whole.fds_lost);
  EXPECT_EQ(AsString({whole.bytes.begin(), whole.bytes.end()}), "whole");
}

TEST_F(UnixSocketTest, ReceiveIntoABufferWritesOnlyTheMessageAndReportsOnlyItsLength) {
  // A reused buffer: a long message, then a short one. The short one's view
  // ends where it does, and nothing past it was written (no clearing), so
  // the bytes behind it are still the long message's.
  std::vector<std::byte> buffer(256, std::byte{0xee});
  ASSERT_OK(SendMessage(a_.get(), AsBytes(std::string(100, 'L'))));
  ASSERT_OK(SendMessage(a_.get(), AsBytes("short")));
  ASSERT_OK_AND_ASSIGN(ReceivedInto long_one, ReceiveMessageInto(b_.get(), buffer));
  EXPECT_EQ(long_one.bytes.data(), buffer.data());
  EXPECT_THAT(long_one.bytes, SizeIs(100));
  ASSERT_OK_AND_ASSIGN(ReceivedInto short_one, ReceiveMessageInto(b_.get(), buffer));
  EXPECT_EQ(short_one.bytes.data(), buffer.data());
  EXPECT_EQ(AsString({short_one.bytes.begin(), short_one.bytes.end()}), "short");
  EXPECT_EQ(buffer[5], std::byte{'L'});
  EXPECT_EQ(buffer[99], std::byte{'L'});
  EXPECT_EQ(buffer[100], std::byte{0xee});
}

TEST_F(UnixSocketTest, ReceiveIntoABufferTooSmallIsDataLossAndItsFdsAreClosed) {
  auto [read_end, write_end] = MakePipe();
  ASSERT_OK(SendMessage(a_.get(), AsBytes(std::string(100, 'p')),
                        std::vector<int>{read_end.get(), write_end.get()}));
  std::vector<std::byte> buffer(10);
  const int fds_before = CountOpenFds();
  EXPECT_THAT(ReceiveMessageInto(b_.get(), buffer),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("10-byte limit")));
  EXPECT_EQ(CountOpenFds(), fds_before);
  EXPECT_TRUE(NothingQueued(b_.get()));
}

TEST_F(UnixSocketTest, TrySendSaysFalseWhenTheBufferIsFullAndSendsNothing) {
  const std::string chunk(1024, 'x');
  int sent = 0;
  for (;; ++sent) {
    ASSERT_OK_AND_ASSIGN(bool ok, TrySendMessage(a_.get(), AsBytes(chunk)));
    if (!ok) break;
    ASSERT_LT(sent, 1 << 20) << "the buffer never filled";
  }
  ASSERT_GT(sent, 0);
  ASSERT_OK(ReceiveMessage(b_.get(), 4096).status());
  ASSERT_OK_AND_ASSIGN(bool after_drain, TrySendMessage(a_.get(), AsBytes(chunk)));
  EXPECT_TRUE(after_drain);
  int received = 0;
  while (true) {
    ASSERT_OK_AND_ASSIGN(auto message, TryReceiveMessage(b_.get(), 4096));
    if (!message.has_value()) break;
    ++received;
  }
  EXPECT_EQ(received, sent);  // sent-1 left, plus the one after the drain.
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

// ---------------------------------------------------------------------------
// Sender credentials (SO_PASSCRED / SCM_CREDENTIALS).

TEST(FdLimit, IsSixtyFourOnBothSides) {
  EXPECT_EQ(kMaxFdsPerMessage, 64u);
  ASSERT_OK_AND_ASSIGN(auto pair, SeqPacketPair());
  auto [read_end, write_end] = MakePipe();
  ASSERT_OK(SendMessage(pair.first.get(), AsBytes("64"), std::vector<int>(64, read_end.get())));
  EXPECT_THAT(SendMessage(pair.first.get(), AsBytes("65"), std::vector<int>(65, read_end.get())),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("65 fds")));
  ASSERT_OK_AND_ASSIGN(ReceivedMessage got, ReceiveMessage(pair.second.get(), 64));
  EXPECT_EQ(AsString(got.bytes), "64");
  EXPECT_THAT(got.fds, SizeIs(64));
  ASSERT_EQ(RawSendFds(pair.first.get(), std::vector<int>(65, read_end.get())), 1);
  EXPECT_THAT(ReceiveMessage(pair.second.get(), 64), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(UnixSocketTest, WithoutSenderCredentialsNoSenderIsReported) {
  auto [read_end, write_end] = MakePipe();
  ASSERT_OK(SendMessage(a_.get(), AsBytes("anonymous")));
  ASSERT_OK(SendMessage(a_.get(), AsBytes("with fd"), std::vector<int>{read_end.get()}));
  ASSERT_OK_AND_ASSIGN(ReceivedMessage plain, ReceiveMessage(b_.get(), 64));
  EXPECT_EQ(AsString(plain.bytes), "anonymous");
  EXPECT_FALSE(plain.sender.has_value());
  ASSERT_OK_AND_ASSIGN(std::optional<ReceivedMessage> with_fd, TryReceiveMessage(b_.get(), 64));
  ASSERT_TRUE(with_fd.has_value());
  EXPECT_FALSE(with_fd->sender.has_value());
  EXPECT_THAT(with_fd->fds, SizeIs(1));
}

TEST_F(UnixSocketTest, SenderCredentialsNameThisProcessWhenItSends) {
  ASSERT_OK(EnableSenderCredentials(b_.get()));
  ASSERT_OK(SendMessage(a_.get(), AsBytes("me")));
  ASSERT_OK_AND_ASSIGN(ReceivedMessage got, ReceiveMessage(b_.get(), 64));
  EXPECT_EQ(AsString(got.bytes), "me");
  ASSERT_TRUE(got.sender.has_value());
  EXPECT_EQ(got.sender->pid, ::getpid());
  EXPECT_EQ(got.sender->uid, ::getuid());
  EXPECT_EQ(got.sender->gid, ::getgid());
  // Only the socket that enabled it receives credentials.
  ASSERT_OK(SendMessage(b_.get(), AsBytes("back")));
  ASSERT_OK_AND_ASSIGN(std::optional<ReceivedMessage> back, TryReceiveMessage(a_.get(), 64));
  ASSERT_TRUE(back.has_value());
  EXPECT_FALSE(back->sender.has_value());
}

// The kernel records a sender only while SO_PASSCRED is on: a message
// queued before must not come out naming somebody (the kernel reports pid 0
// and the overflow uid for it).
TEST_F(UnixSocketTest, AMessageSentBeforeCredentialsWereEnabledNamesNobody) {
  ASSERT_OK(SendMessage(a_.get(), AsBytes("early")));
  ASSERT_OK(EnableSenderCredentials(b_.get()));
  ASSERT_OK(SendMessage(a_.get(), AsBytes("late")));
  ASSERT_OK_AND_ASSIGN(ReceivedMessage early, ReceiveMessage(b_.get(), 64));
  ASSERT_OK_AND_ASSIGN(ReceivedMessage late, ReceiveMessage(b_.get(), 64));
  EXPECT_EQ(AsString(early.bytes), "early");
  EXPECT_FALSE(early.sender.has_value())
      << "pid " << early.sender->pid << " uid " << early.sender->uid;
  ASSERT_TRUE(late.sender.has_value());
  EXPECT_EQ(late.sender->pid, ::getpid());
}

// SO_PEERCRED names whoever created the socket pair; SCM_CREDENTIALS names
// the process that sent each message, here a child holding the other end.
TEST_F(UnixSocketTest, SenderCredentialsNameTheChildThatSentNotTheCreatorOfThePair) {
  ASSERT_OK(EnableSenderCredentials(b_.get()));
  ASSERT_OK(SendMessage(a_.get(), AsBytes("parent")));
  pid_t child = -1;
  const int sender = a_.get();
  ASSERT_EQ(RunInChild(
                [sender] {
                  static const char kText[] = "child";
                  return SendMessage(sender, std::as_bytes(std::span(kText, 5))).ok() ? 0 : 1;
                },
                &child),
            0);
  ASSERT_GT(child, 0);
  ASSERT_OK(SendMessage(a_.get(), AsBytes("parent again")));

  ASSERT_OK_AND_ASSIGN(ReceivedMessage first, ReceiveMessage(b_.get(), 64));
  ASSERT_OK_AND_ASSIGN(ReceivedMessage second, ReceiveMessage(b_.get(), 64));
  ASSERT_OK_AND_ASSIGN(ReceivedMessage third, ReceiveMessage(b_.get(), 64));
  EXPECT_EQ(AsString(second.bytes), "child");
  ASSERT_TRUE(first.sender.has_value());
  ASSERT_TRUE(second.sender.has_value());
  ASSERT_TRUE(third.sender.has_value());
  EXPECT_EQ(first.sender->pid, ::getpid());
  EXPECT_EQ(second.sender->pid, child);
  EXPECT_NE(second.sender->pid, ::getpid());
  EXPECT_EQ(second.sender->uid, ::getuid());
  EXPECT_EQ(third.sender->pid, ::getpid());
  // The peer credentials still name the creator.
  ASSERT_OK_AND_ASSIGN(PeerCredentials peer, GetPeerCredentials(b_.get()));
  EXPECT_EQ(peer.pid, ::getpid());
}

// The credentials are the sender's at the time it sent, not its creator's:
// a child that drops to another user and group is reported as that user.
TEST_F(UnixSocketTest, SenderCredentialsCarryTheSendersUidAndGid) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to change the child's uid and gid";
  ASSERT_OK(EnableSenderCredentials(b_.get()));
  constexpr uid_t kUid = 65534;
  constexpr gid_t kGid = 65533;
  const int sender = a_.get();
  pid_t child = -1;
  const int exit_code = RunInChild(
      [sender] {
        if (::setgid(kGid) != 0 || ::setuid(kUid) != 0) return 77;
        static const char kText[] = "nobody";
        return SendMessage(sender, std::as_bytes(std::span(kText, 6))).ok() ? 0 : 1;
      },
      &child);
  if (exit_code == 77) GTEST_SKIP() << "the child cannot switch to uid " << kUid;
  ASSERT_EQ(exit_code, 0);
  ASSERT_OK_AND_ASSIGN(ReceivedMessage got, ReceiveMessage(b_.get(), 64));
  ASSERT_TRUE(got.sender.has_value());
  EXPECT_EQ(got.sender->pid, child);
  EXPECT_EQ(got.sender->uid, kUid);
  EXPECT_EQ(got.sender->gid, kGid);
}

// The receive buffer holds the most descriptors and the credentials at once.
TEST_F(UnixSocketTest, CredentialsAndTheMostDescriptorsArriveInOneMessage) {
  ASSERT_OK(EnableSenderCredentials(b_.get()));
  auto [read_end, write_end] = MakePipe();
  std::vector<int> fds(kMaxFdsPerMessage, read_end.get());
  fds.back() = write_end.get();
  ASSERT_OK(SendMessage(a_.get(), AsBytes("full"), fds));
  const int fds_before = CountOpenFds();
  ASSERT_OK_AND_ASSIGN(ReceivedMessage got, ReceiveMessage(b_.get(), 64));
  EXPECT_EQ(AsString(got.bytes), "full");
  ASSERT_TRUE(got.sender.has_value());
  EXPECT_EQ(got.sender->pid, ::getpid());
  ASSERT_THAT(got.fds, SizeIs(kMaxFdsPerMessage));
  EXPECT_EQ(CountOpenFds(), fds_before + static_cast<int>(kMaxFdsPerMessage));
  for (size_t i = 0; i + 1 < got.fds.size(); ++i) {
    EXPECT_TRUE(SameFile(got.fds[i].get(), read_end.get())) << i;
  }
  EXPECT_TRUE(SameFile(got.fds.back().get(), write_end.get()));
}

TEST_F(UnixSocketTest, ChildSendsDescriptorsAndItsCredentialsTogether) {
  ASSERT_OK(EnableSenderCredentials(b_.get()));
  auto [read_end, write_end] = MakePipe();
  const int sender = a_.get();
  const int attach[] = {write_end.get(), read_end.get()};
  pid_t child = -1;
  ASSERT_EQ(RunInChild(
                [&] {
                  static const char kText[] = "fds";
                  return SendMessage(sender, std::as_bytes(std::span(kText, 3)), attach).ok() ? 0
                                                                                              : 1;
                },
                &child),
            0);
  ASSERT_OK_AND_ASSIGN(ReceivedMessage got, ReceiveMessage(b_.get(), 64));
  ASSERT_TRUE(got.sender.has_value());
  EXPECT_EQ(got.sender->pid, child);
  ASSERT_THAT(got.fds, SizeIs(2));
  EXPECT_TRUE(SameFile(got.fds[0].get(), write_end.get()));
  EXPECT_TRUE(SameFile(got.fds[1].get(), read_end.get()));
}

TEST_F(UnixSocketTest, MoreFdsThanTheLimitWithCredentialsIsDataLossAndLeaksNothing) {
  ASSERT_OK(EnableSenderCredentials(b_.get()));
  auto [read_end, write_end] = MakePipe();
  for (size_t count : {kMaxFdsPerMessage + 1, kMaxFdsPerMessage + 8, 2 * kMaxFdsPerMessage}) {
    ASSERT_EQ(RawSendFds(a_.get(), std::vector<int>(count, read_end.get())), 1)
        << std::strerror(errno);
    const int fds_before = CountOpenFds();
    EXPECT_THAT(ReceiveMessage(b_.get(), 64),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("file descriptors")))
        << count << " fds";
    EXPECT_EQ(CountOpenFds(), fds_before) << count << " fds";
  }
  // The connection carries on, credentials included.
  ASSERT_OK(SendMessage(a_.get(), AsBytes("after")));
  ASSERT_OK_AND_ASSIGN(ReceivedMessage got, ReceiveMessage(b_.get(), 64));
  EXPECT_EQ(AsString(got.bytes), "after");
  EXPECT_TRUE(got.sender.has_value());
}

TEST_F(UnixSocketTest, EnableSenderCredentialsOnANonSocketFails) {
  auto [read_end, write_end] = MakePipe();
  EXPECT_THAT(EnableSenderCredentials(read_end.get()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("SO_PASSCRED")));
}

}  // namespace
}  // namespace sluice
