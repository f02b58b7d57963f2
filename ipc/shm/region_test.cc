#include "ipc/shm/region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/testing/subprocess.h"
#include "tests/testing/status_matchers.h"

namespace sluice {
namespace {

using ::sluice::testing::CountMappings;
using ::sluice::testing::CountOpenFds;
using ::sluice::testing::StatusIs;
using ::testing::HasSubstr;

constexpr int kSizeSeals = F_SEAL_SHRINK | F_SEAL_GROW;

uint64_t PageSize() { return static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)); }

// True if [address, address + length) is mapped in this process.
bool IsMapped(const void* address, size_t length) {
  std::vector<unsigned char> residency((length + PageSize() - 1) / PageSize());
  return ::mincore(const_cast<void*>(address), length, residency.data()) == 0;
}

// Mappings of memfds named `name` in /proc/self/maps. Counting only these
// (rather than every mapping) keeps allocator and sanitizer activity out of
// the leak check.
int CountMemfdMappings(const std::string& name) {
  std::ifstream maps("/proc/self/maps");
  int count = 0;
  for (std::string line; std::getline(maps, line);) {
    if (line.find("/memfd:" + name + " ") != std::string::npos) ++count;
  }
  return count;
}

// A memfd made by hand, with exactly the seals a test asks for.
UniqueFd MakeMemfd(uint64_t size, int seals, unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING) {
  UniqueFd fd(::memfd_create("region-test", flags));
  EXPECT_TRUE(fd.valid()) << std::strerror(errno);
  EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0) << std::strerror(errno);
  if (seals != 0) {
    EXPECT_EQ(::fcntl(fd.get(), F_ADD_SEALS, seals), 0) << std::strerror(errno);
  }
  return fd;
}

static_assert(!std::is_copy_constructible_v<Region>);
static_assert(!std::is_copy_assignable_v<Region>);
static_assert(std::is_nothrow_move_constructible_v<Region>);
static_assert(std::is_nothrow_move_assignable_v<Region>);

TEST(RegionTest, CreateRoundsSizeUpToAWholePage) {
  const uint64_t page = PageSize();
  struct Case {
    uint64_t requested;
    uint64_t expected;
  };
  for (const Case& c : {Case{1, page}, Case{page - 1, page}, Case{page, page},
                        Case{page + 1, 2 * page}, Case{3 * page, 3 * page}}) {
    ASSERT_OK_AND_ASSIGN(Region region, Region::Create("rounding", c.requested));
    EXPECT_EQ(region.size(), c.expected) << "requested " << c.requested;
    struct stat st {};
    ASSERT_EQ(::fstat(region.fd(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), c.expected);
    EXPECT_EQ(region.bytes().size(), c.expected);
  }
}

TEST(RegionTest, CreateRejectsZeroSize) {
  EXPECT_THAT(Region::Create("empty", 0), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(RegionTest, CreateRejectsSizeAboveTheLimit) {
  EXPECT_THAT(Region::Create("huge", Region::kMaxSize + 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside")));
}

TEST(RegionTest, CreateSealsTheSize) {
  ASSERT_OK_AND_ASSIGN(Region region, Region::Create("sealed", 4096));
  ASSERT_OK_AND_ASSIGN(int seals, region.Seals());
  EXPECT_EQ(seals & kSizeSeals, kSizeSeals);
  EXPECT_EQ(::fcntl(region.fd(), F_GET_SEALS), seals);
  // Writes and further seals stay allowed: a channel needs both.
  EXPECT_EQ(seals & (F_SEAL_WRITE | F_SEAL_SEAL), 0);
}

TEST(RegionTest, CreatedRegionCannotBeResized) {
  ASSERT_OK_AND_ASSIGN(Region region, Region::Create("fixed", 2 * PageSize()));
  EXPECT_NE(::ftruncate(region.fd(), static_cast<off_t>(4 * PageSize())), 0);
  EXPECT_EQ(errno, EPERM);
  EXPECT_NE(::ftruncate(region.fd(), static_cast<off_t>(PageSize())), 0);
  EXPECT_EQ(errno, EPERM);
  EXPECT_NE(::ftruncate(region.fd(), 0), 0);
  struct stat st {};
  ASSERT_EQ(::fstat(region.fd(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 2 * PageSize());
}

TEST(RegionTest, CreatedRegionIsZeroedWritableAndCloseOnExec) {
  ASSERT_OK_AND_ASSIGN(Region region, Region::Create("fresh", 3 * PageSize()));
  ASSERT_TRUE(region.mapped());
  ASSERT_NE(region.data(), nullptr);
  for (std::byte b : region.bytes()) ASSERT_EQ(b, std::byte{0});
  region.bytes().front() = std::byte{1};
  region.bytes().back() = std::byte{2};
  EXPECT_EQ(region.data()[0], std::byte{1});
  EXPECT_NE(::fcntl(region.fd(), F_GETFD) & FD_CLOEXEC, 0);
}

TEST(RegionTest, CreateNamesTheMemfd) {
  ASSERT_OK_AND_ASSIGN(Region region, Region::Create("sluice-name-check", 4096));
  char target[256] = {};
  const std::string link = "/proc/self/fd/" + std::to_string(region.fd());
  ASSERT_GT(::readlink(link.c_str(), target, sizeof(target) - 1), 0);
  EXPECT_THAT(std::string(target), HasSubstr("memfd:sluice-name-check"));
}

TEST(RegionTest, TwoMappingsOfOneMemfdShareMemory) {
  ASSERT_OK_AND_ASSIGN(Region creator, Region::Create("shared", 2 * PageSize()));
  ASSERT_OK_AND_ASSIGN(UniqueFd copy, creator.DuplicateFd());
  ASSERT_OK_AND_ASSIGN(Region adopter, Region::Adopt(std::move(copy), 1, Region::kMaxSize));
  ASSERT_EQ(adopter.size(), creator.size());
  ASSERT_NE(adopter.data(), creator.data()) << "expected two distinct mappings";

  const char kHello[] = "written by the creator";
  std::memcpy(creator.data() + PageSize() + 7, kHello, sizeof(kHello));
  EXPECT_EQ(std::memcmp(adopter.data() + PageSize() + 7, kHello, sizeof(kHello)), 0);

  adopter.data()[adopter.size() - 1] = std::byte{0x5a};
  EXPECT_EQ(creator.data()[creator.size() - 1], std::byte{0x5a});
}

TEST(RegionTest, DuplicateFdIsCloseOnExecAndRefersToTheSameMemfd) {
  ASSERT_OK_AND_ASSIGN(Region region, Region::Create("dup", 4096));
  ASSERT_OK_AND_ASSIGN(UniqueFd copy, region.DuplicateFd());
  EXPECT_NE(copy.get(), region.fd());
  EXPECT_NE(::fcntl(copy.get(), F_GETFD) & FD_CLOEXEC, 0);
  struct stat a {
  }, b{};
  ASSERT_EQ(::fstat(region.fd(), &a), 0);
  ASSERT_EQ(::fstat(copy.get(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_dev, b.st_dev);
}

TEST(RegionTest, AdoptAcceptsASizeSealedMemfdMadeElsewhere) {
  UniqueFd fd = MakeMemfd(2 * PageSize(), kSizeSeals);
  ASSERT_OK_AND_ASSIGN(Region region, Region::Adopt(std::move(fd), 1, Region::kMaxSize));
  EXPECT_EQ(region.size(), 2 * PageSize());
  EXPECT_TRUE(region.mapped());
}

TEST(RegionTest, AdoptRejectsInvalidFd) {
  EXPECT_THAT(Region::Adopt(UniqueFd(), 1, Region::kMaxSize),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Region::Adopt(UniqueFd(-5), 1, Region::kMaxSize),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(RegionTest, AdoptRejectsAPipe) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  UniqueFd write_end(fds[1]);
  EXPECT_THAT(Region::Adopt(UniqueFd(fds[0]), 0, Region::kMaxSize),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a sealable memfd")));
}

TEST(RegionTest, AdoptRejectsDevNull) {
  UniqueFd fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  EXPECT_THAT(Region::Adopt(std::move(fd), 0, Region::kMaxSize),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(RegionTest, AdoptRejectsARegularFile) {
  std::string path = ::testing::TempDir() + "/region_test_XXXXXX";
  UniqueFd fd(::mkostemp(path.data(), O_CLOEXEC));
  ASSERT_TRUE(fd.valid()) << path << ": " << std::strerror(errno);
  ::unlink(path.c_str());
  ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(PageSize())), 0);
  EXPECT_THAT(Region::Adopt(std::move(fd), 0, Region::kMaxSize),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// A tmpfs file is shmem like a memfd, so F_GET_SEALS succeeds on it (reporting
// F_SEAL_SEAL); it must still be refused, since its size is not sealed.
TEST(RegionTest, AdoptRejectsATmpfsFile) {
  std::string path = "/dev/shm/region_test_XXXXXX";
  UniqueFd fd(::mkostemp(path.data(), O_CLOEXEC));
  if (!fd.valid()) GTEST_SKIP() << "no writable /dev/shm";
  ::unlink(path.c_str());
  ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(PageSize())), 0);
  EXPECT_THAT(Region::Adopt(std::move(fd), 0, Region::kMaxSize),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(RegionTest, AdoptRejectsUnsealedMemfd) {
  UniqueFd fd = MakeMemfd(PageSize(), /*seals=*/0);
  EXPECT_THAT(Region::Adopt(std::move(fd), 0, Region::kMaxSize),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not sealed")));
}

TEST(RegionTest, AdoptRejectsMemfdThatCanStillGrow) {
  UniqueFd fd = MakeMemfd(PageSize(), F_SEAL_SHRINK);
  EXPECT_THAT(Region::Adopt(std::move(fd), 0, Region::kMaxSize),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not sealed")));
}

TEST(RegionTest, AdoptRejectsMemfdThatCanStillShrink) {
  UniqueFd fd = MakeMemfd(PageSize(), F_SEAL_GROW);
  EXPECT_THAT(Region::Adopt(std::move(fd), 0, Region::kMaxSize),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not sealed")));
}

// Without MFD_ALLOW_SEALING the memfd carries F_SEAL_SEAL and nothing else, so
// its size can never be sealed.
TEST(RegionTest, AdoptRejectsMemfdCreatedWithoutSealing) {
  UniqueFd fd = MakeMemfd(PageSize(), /*seals=*/0, MFD_CLOEXEC);
  EXPECT_THAT(Region::Adopt(std::move(fd), 0, Region::kMaxSize),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(RegionTest, AdoptRejectsSizeBelowTheMinimum) {
  UniqueFd fd = MakeMemfd(PageSize(), kSizeSeals);
  EXPECT_THAT(Region::Adopt(std::move(fd), PageSize() + 1, Region::kMaxSize),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside")));
}

TEST(RegionTest, AdoptRejectsSizeAboveTheMaximum) {
  UniqueFd fd = MakeMemfd(2 * PageSize(), kSizeSeals);
  EXPECT_THAT(Region::Adopt(std::move(fd), 0, 2 * PageSize() - 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside")));
}

TEST(RegionTest, AdoptNeverAcceptsMoreThanTheGlobalLimit) {
  // Sparse: a memfd's size costs nothing until pages are touched.
  UniqueFd fd = MakeMemfd(Region::kMaxSize + PageSize(), kSizeSeals);
  EXPECT_THAT(Region::Adopt(std::move(fd), 0, UINT64_MAX),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside")));
}

TEST(RegionTest, AdoptAcceptsSizeExactlyAtBothBounds) {
  UniqueFd fd = MakeMemfd(2 * PageSize(), kSizeSeals);
  ASSERT_OK_AND_ASSIGN(Region region, Region::Adopt(std::move(fd), 2 * PageSize(), 2 * PageSize()));
  EXPECT_EQ(region.size(), 2 * PageSize());
}

TEST(RegionTest, AdoptRejectsAnEmptyMemfd) {
  UniqueFd fd = MakeMemfd(0, kSizeSeals);
  EXPECT_THAT(Region::Adopt(std::move(fd), 0, Region::kMaxSize),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(RegionTest, FailedAdoptClosesTheFd) {
  UniqueFd fd = MakeMemfd(PageSize(), /*seals=*/0);
  const int raw = fd.get();
  const int fds_before = CountOpenFds();
  EXPECT_FALSE(Region::Adopt(std::move(fd), 0, Region::kMaxSize).ok());
  EXPECT_EQ(CountOpenFds(), fds_before - 1);
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1);
}

TEST(RegionTest, MoveConstructionTransfersOwnership) {
  ASSERT_OK_AND_ASSIGN(Region source, Region::Create("move", PageSize()));
  const int fd = source.fd();
  std::byte* const data = source.data();
  Region target(std::move(source));
  EXPECT_EQ(target.fd(), fd);
  EXPECT_EQ(target.data(), data);
  EXPECT_EQ(target.size(), PageSize());
  EXPECT_TRUE(target.mapped());
  // NOLINTBEGIN(bugprone-use-after-move): the moved-from state is the contract.
  EXPECT_EQ(source.fd(), -1);
  EXPECT_EQ(source.size(), 0u);
  EXPECT_FALSE(source.mapped());
  EXPECT_TRUE(source.bytes().empty());
  // NOLINTEND(bugprone-use-after-move)
}

TEST(RegionTest, MoveAssignmentReleasesTheTargetsOldRegion) {
  ASSERT_OK_AND_ASSIGN(Region target, Region::Create("old", PageSize()));
  ASSERT_OK_AND_ASSIGN(Region source, Region::Create("new", 2 * PageSize()));
  const int old_fd = target.fd();
  std::byte* const old_data = target.data();
  std::byte* const new_data = source.data();
  const int fds_before = CountOpenFds();

  target = std::move(source);

  EXPECT_EQ(CountOpenFds(), fds_before - 1);
  EXPECT_EQ(::fcntl(old_fd, F_GETFD), -1);
  EXPECT_FALSE(IsMapped(old_data, PageSize()));
  EXPECT_EQ(target.data(), new_data);
  EXPECT_EQ(target.size(), 2 * PageSize());
  EXPECT_FALSE(source.mapped());  // NOLINT(bugprone-use-after-move)
}

TEST(RegionTest, DestructionUnmapsAndClosesExactlyOnce) {
  const int fds_before = CountOpenFds();
  std::byte* data = nullptr;
  {
    ASSERT_OK_AND_ASSIGN(Region region, Region::Create("lifetime", 4 * PageSize()));
    data = region.data();
    EXPECT_EQ(CountOpenFds(), fds_before + 1);
    EXPECT_EQ(CountMemfdMappings("lifetime"), 1);
    Region moved(std::move(region));
    Region assigned = std::move(moved);
    EXPECT_EQ(CountOpenFds(), fds_before + 1);
    EXPECT_EQ(CountMemfdMappings("lifetime"), 1);
  }
  EXPECT_EQ(CountOpenFds(), fds_before);
  EXPECT_EQ(CountMemfdMappings("lifetime"), 0);
  EXPECT_FALSE(IsMapped(data, 4 * PageSize()));
}

TEST(RegionTest, AdoptedRegionIsUnmappedAndClosedOnDestruction) {
  ASSERT_OK_AND_ASSIGN(Region creator, Region::Create("adopted", PageSize()));
  const int fds_before = CountOpenFds();
  EXPECT_EQ(CountMemfdMappings("adopted"), 1);
  {
    ASSERT_OK_AND_ASSIGN(UniqueFd copy, creator.DuplicateFd());
    ASSERT_OK_AND_ASSIGN(Region adopted, Region::Adopt(std::move(copy), 0, Region::kMaxSize));
    EXPECT_EQ(CountOpenFds(), fds_before + 1);
    EXPECT_EQ(CountMemfdMappings("adopted"), 2);
  }
  EXPECT_EQ(CountOpenFds(), fds_before);
  EXPECT_EQ(CountMemfdMappings("adopted"), 1);
}

TEST(RegionTest, ManyRegionsLeaveNoFdsOrMappingsBehind) {
  const int fds_before = CountOpenFds();
  const int mappings_before = CountMappings();
  for (int i = 0; i < 50; ++i) {
    ASSERT_OK_AND_ASSIGN(Region region, Region::Create("churn", PageSize()));
    region.data()[0] = std::byte{1};
  }
  EXPECT_EQ(CountOpenFds(), fds_before);
  EXPECT_EQ(CountMemfdMappings("churn"), 0);
  // Other mappings may come and go (allocator, sanitizers), but 50 leaked
  // regions would show.
  EXPECT_LT(CountMappings(), mappings_before + 50);
}

TEST(RegionTest, UnmapKeepsTheFdAndIsIdempotent) {
  ASSERT_OK_AND_ASSIGN(Region region, Region::Create("unmap", PageSize()));
  std::byte* const data = region.data();
  const int fd = region.fd();
  region.Unmap();
  EXPECT_FALSE(region.mapped());
  EXPECT_EQ(region.data(), nullptr);
  EXPECT_TRUE(region.bytes().empty());
  EXPECT_EQ(region.fd(), fd);
  EXPECT_NE(::fcntl(fd, F_GETFD), -1);
  EXPECT_FALSE(IsMapped(data, PageSize()));
  region.Unmap();
  EXPECT_FALSE(region.mapped());
}

TEST(RegionTest, DestructionAfterUnmapDoesNotUnmapAgain) {
  std::byte* data = nullptr;
  void* squatter = MAP_FAILED;
  {
    ASSERT_OK_AND_ASSIGN(Region region, Region::Create("squat", PageSize()));
    data = region.data();
    region.Unmap();
    // Put something else at the freed address; a second munmap would drop it.
    squatter = ::mmap(data, PageSize(), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    ASSERT_NE(squatter, MAP_FAILED) << std::strerror(errno);
  }
  EXPECT_TRUE(IsMapped(squatter, PageSize()));
  ::munmap(squatter, PageSize());
}

TEST(RegionTest, AddSealsWriteAfterUnmapMakesTheMemfdImmutable) {
  ASSERT_OK_AND_ASSIGN(Region region, Region::Create("blob", PageSize()));
  const char kBlob[] = "immutable blob";
  std::memcpy(region.data(), kBlob, sizeof(kBlob));
  region.Unmap();

  ASSERT_OK(region.AddSeals(F_SEAL_WRITE));
  ASSERT_OK_AND_ASSIGN(int seals, region.Seals());
  EXPECT_EQ(seals & (F_SEAL_WRITE | kSizeSeals), F_SEAL_WRITE | kSizeSeals);

  errno = 0;
  EXPECT_EQ(::mmap(nullptr, PageSize(), PROT_READ | PROT_WRITE, MAP_SHARED, region.fd(), 0),
            MAP_FAILED);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::pwrite(region.fd(), "x", 1, 0), -1);
  EXPECT_EQ(errno, EPERM);

  // Still readable, with the bytes written before sealing.
  void* readonly = ::mmap(nullptr, PageSize(), PROT_READ, MAP_SHARED, region.fd(), 0);
  ASSERT_NE(readonly, MAP_FAILED);
  EXPECT_EQ(std::memcmp(readonly, kBlob, sizeof(kBlob)), 0);
  ::munmap(readonly, PageSize());
}

// Adopt maps read-write, so a write-sealed memfd cannot be adopted.
TEST(RegionTest, AdoptRefusesAWriteSealedMemfd) {
  ASSERT_OK_AND_ASSIGN(Region region, Region::Create("blob", PageSize()));
  region.Unmap();
  ASSERT_OK(region.AddSeals(F_SEAL_WRITE));
  ASSERT_OK_AND_ASSIGN(UniqueFd copy, region.DuplicateFd());
  EXPECT_THAT(Region::Adopt(std::move(copy), 0, Region::kMaxSize),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("mmap")));
}

TEST(RegionTest, AddSealsWriteFailsWhileMapped) {
  ASSERT_OK_AND_ASSIGN(Region region, Region::Create("busy", PageSize()));
  const absl::Status status = region.AddSeals(F_SEAL_WRITE);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr("F_ADD_SEALS"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("EBUSY"));
  ASSERT_OK_AND_ASSIGN(int seals, region.Seals());
  EXPECT_EQ(seals & F_SEAL_WRITE, 0);
}

TEST(RegionTest, SealsOfAMovedFromRegionIsAnError) {
  ASSERT_OK_AND_ASSIGN(Region source, Region::Create("gone", PageSize()));
  Region target(std::move(source));
  EXPECT_THAT(source.Seals(),  // NOLINT(bugprone-use-after-move)
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(source.AddSeals(F_SEAL_SEAL), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace sluice
