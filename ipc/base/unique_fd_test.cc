#include "ipc/base/unique_fd.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>
#include <type_traits>
#include <utility>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace sluice {
namespace {

using ::sluice::testing::StatusIs;
using ::testing::HasSubstr;

bool IsOpen(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

bool IsCloseOnExec(int fd) {
  const int flags = ::fcntl(fd, F_GETFD);
  return flags != -1 && (flags & FD_CLOEXEC) != 0;
}

// A pipe whose ends are *not* close-on-exec, so that Duplicate() visibly adds it.
struct Pipe {
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    read_end = fds[0];
    write_end = fds[1];
  }
  int read_end = -1;
  int write_end = -1;
};

static_assert(!std::is_copy_constructible_v<UniqueFd>);
static_assert(!std::is_copy_assignable_v<UniqueFd>);
static_assert(std::is_nothrow_move_constructible_v<UniqueFd>);
static_assert(std::is_nothrow_move_assignable_v<UniqueFd>);

TEST(UniqueFdTest, DefaultConstructedHoldsNothing) {
  UniqueFd fd;
  EXPECT_EQ(fd.get(), -1);
  EXPECT_FALSE(fd.valid());
  EXPECT_FALSE(static_cast<bool>(fd));
}

TEST(UniqueFdTest, TakesOwnershipOfTheGivenFd) {
  Pipe pipe;
  UniqueFd fd(pipe.read_end);
  EXPECT_EQ(fd.get(), pipe.read_end);
  EXPECT_TRUE(fd.valid());
  EXPECT_TRUE(static_cast<bool>(fd));
  ::close(pipe.write_end);
}

TEST(UniqueFdTest, DestructorClosesTheFd) {
  Pipe pipe;
  { UniqueFd fd(pipe.read_end); }
  EXPECT_FALSE(IsOpen(pipe.read_end));
  ::close(pipe.write_end);
}

TEST(UniqueFdTest, MovedFromObjectClosesNothing) {
  Pipe pipe;
  ::close(pipe.write_end);
  std::optional<UniqueFd> source(std::in_place, pipe.read_end);
  {
    UniqueFd target(std::move(*source));
    EXPECT_EQ(target.get(), pipe.read_end);
    EXPECT_EQ(source->get(), -1);
  }
  EXPECT_FALSE(IsOpen(pipe.read_end));
  // The lowest free number is handed out again; a second close by the
  // moved-from object would hit this unrelated descriptor.
  const int reused = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(reused, 0);
  source.reset();
  EXPECT_TRUE(IsOpen(reused));
  ::close(reused);
}

TEST(UniqueFdTest, MoveAssignmentClosesThePreviousFdAndTakesTheNewOne) {
  Pipe pipe;
  UniqueFd target(pipe.read_end);
  UniqueFd source(pipe.write_end);
  target = std::move(source);
  EXPECT_FALSE(IsOpen(pipe.read_end));
  EXPECT_EQ(target.get(), pipe.write_end);
  EXPECT_TRUE(IsOpen(pipe.write_end));
  EXPECT_FALSE(source.valid());  // NOLINT(bugprone-use-after-move): the contract under test.
}

TEST(UniqueFdTest, SelfMoveAssignmentKeepsTheFd) {
  Pipe pipe;
  ::close(pipe.write_end);
  UniqueFd fd(pipe.read_end);
  UniqueFd& alias = fd;
  fd = std::move(alias);
  EXPECT_EQ(fd.get(), pipe.read_end);
  EXPECT_TRUE(IsOpen(pipe.read_end));
}

TEST(UniqueFdTest, ReleaseGivesUpOwnershipWithoutClosing) {
  Pipe pipe;
  ::close(pipe.write_end);
  int raw = -1;
  {
    UniqueFd fd(pipe.read_end);
    raw = fd.release();
    EXPECT_FALSE(fd.valid());
  }
  EXPECT_EQ(raw, pipe.read_end);
  EXPECT_TRUE(IsOpen(raw));
  ::close(raw);
}

TEST(UniqueFdTest, ResetClosesTheOldFdAndTakesTheNewOne) {
  Pipe pipe;
  UniqueFd fd(pipe.read_end);
  fd.reset(pipe.write_end);
  EXPECT_FALSE(IsOpen(pipe.read_end));
  EXPECT_EQ(fd.get(), pipe.write_end);
  fd.reset();
  EXPECT_FALSE(IsOpen(pipe.write_end));
  EXPECT_FALSE(fd.valid());
  fd.reset();  // Resetting an empty UniqueFd is harmless.
  EXPECT_FALSE(fd.valid());
}

TEST(UniqueFdTest, DuplicateIsANewCloseOnExecFdForTheSameFile) {
  Pipe pipe;
  UniqueFd read_end(pipe.read_end);
  UniqueFd write_end(pipe.write_end);
  ASSERT_FALSE(IsCloseOnExec(write_end.get()));

  ASSERT_OK_AND_ASSIGN(UniqueFd copy, write_end.Duplicate());
  EXPECT_NE(copy.get(), write_end.get());
  EXPECT_TRUE(IsCloseOnExec(copy.get()));
  EXPECT_FALSE(IsCloseOnExec(write_end.get())) << "the original's flags must not change";

  struct stat original_stat {
  }, copy_stat{};
  ASSERT_EQ(::fstat(write_end.get(), &original_stat), 0);
  ASSERT_EQ(::fstat(copy.get(), &copy_stat), 0);
  EXPECT_EQ(original_stat.st_dev, copy_stat.st_dev);
  EXPECT_EQ(original_stat.st_ino, copy_stat.st_ino);

  // Bytes written through the copy come out of the original pipe.
  ASSERT_EQ(::write(copy.get(), "x", 1), 1);
  char byte = 0;
  ASSERT_EQ(::read(read_end.get(), &byte, 1), 1);
  EXPECT_EQ(byte, 'x');
}

TEST(UniqueFdTest, DuplicateOutlivesTheOriginal) {
  Pipe pipe;
  UniqueFd read_end(pipe.read_end);
  std::optional<UniqueFd> write_end(std::in_place, pipe.write_end);
  ASSERT_OK_AND_ASSIGN(UniqueFd copy, write_end->Duplicate());
  write_end.reset();
  EXPECT_TRUE(IsOpen(copy.get()));
  ASSERT_EQ(::write(copy.get(), "y", 1), 1);
}

TEST(UniqueFdTest, DuplicateOfAnEmptyFdFailsNamingTheCall) {
  UniqueFd fd;
  EXPECT_THAT(fd.Duplicate(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("F_DUPFD_CLOEXEC")));
}

}  // namespace
}  // namespace sluice
