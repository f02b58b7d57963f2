// rpc::Blob and BlobWriter: sealed for good, exact in size, shared without
// copies, released once, and refused when a memfd is not sealed as a blob.
#include "ipc/rpc/blob.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "ipc/rpc/object.h"
#include "tests/testing/status_matchers.h"

namespace sluice::rpc {
namespace {

using ::sluice::testing::StatusIs;
using ::testing::HasSubstr;

int BlobMappings() {
  std::ifstream maps("/proc/self/maps");
  int count = 0;
  for (std::string line; std::getline(maps, line);) {
    if (line.find("memfd:sluice-blob") != std::string::npos) ++count;
  }
  return count;
}

TEST(BlobTest, WriterFillsInPlaceAndSealingGivesTheSameBytesReadOnly) {
  ASSERT_OK_AND_ASSIGN(BlobWriter writer, BlobWriter::Create(10'001));
  ASSERT_EQ(writer.size(), 10'001u);
  for (size_t i = 0; i < writer.size(); ++i) writer.data()[i] = static_cast<uint8_t>(i * 7);
  ASSERT_OK_AND_ASSIGN(Blob blob, std::move(writer).Seal());
  EXPECT_EQ(blob.size(), 10'001u);  // Exact, not rounded to a page.
  for (size_t i = 0; i < blob.size(); ++i) {
    ASSERT_EQ(blob.data()[i], static_cast<uint8_t>(i * 7)) << i;
  }
}

TEST(BlobTest, NobodyCanWriteASealedBlob) {
  ASSERT_OK_AND_ASSIGN(BlobWriter writer, BlobWriter::Create(8192));
  std::memset(writer.data(), 1, writer.size());
  ASSERT_OK_AND_ASSIGN(Blob blob, std::move(writer).Seal());
  void* base = const_cast<uint8_t*>(blob.data().data());
  EXPECT_NE(::mprotect(base, blob.size(), PROT_READ | PROT_WRITE), 0);
  EXPECT_LT(::pwrite(blob.fd(), "x", 1, 0), 0);
  const std::string path = absl::StrCat("/proc/self/fd/", blob.fd());
  const int reopened = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (reopened >= 0) {
    EXPECT_EQ(::mmap(nullptr, blob.size(), PROT_READ | PROT_WRITE, MAP_SHARED, reopened, 0),
              MAP_FAILED);
    EXPECT_LT(::write(reopened, "x", 1), 0);
    ::close(reopened);
  }
  EXPECT_EQ(blob.data()[0], 1);
}

TEST(BlobTest, CopiesShareOneMappingThatIsReleasedOnceWhenTheLastGoes) {
  const int before = BlobMappings();
  {
    ASSERT_OK_AND_ASSIGN(BlobWriter writer, BlobWriter::Create(4096));
    ASSERT_OK_AND_ASSIGN(Blob blob, std::move(writer).Seal());
    std::optional<Blob> copy = blob;
    EXPECT_EQ(copy->data().data(), blob.data().data());
    EXPECT_EQ(BlobMappings(), before + 1);
    blob = Blob();
    EXPECT_EQ(BlobMappings(), before + 1);  // The copy still holds it.
    copy.reset();
    EXPECT_EQ(BlobMappings(), before);
  }
}

TEST(BlobTest, AdoptTakesASealedBlobsDescriptorAndSeesTheSameBytes) {
  ASSERT_OK_AND_ASSIGN(BlobWriter writer, BlobWriter::Create(5000));
  std::memset(writer.data(), 0xab, writer.size());
  ASSERT_OK_AND_ASSIGN(Blob blob, std::move(writer).Seal());
  ASSERT_OK_AND_ASSIGN(Blob again, Blob::Adopt(UniqueFd(::fcntl(blob.fd(), F_DUPFD_CLOEXEC, 0))));
  ASSERT_EQ(again.size(), 5000u);
  EXPECT_EQ(again.data()[4999], 0xab);
}

UniqueFd Memfd(int seals) {
  UniqueFd fd(::memfd_create("not-a-blob", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  EXPECT_EQ(::ftruncate(fd.get(), 4096), 0);
  if (seals != 0) {
    EXPECT_EQ(::fcntl(fd.get(), F_ADD_SEALS, seals), 0);
  }
  return fd;
}

TEST(BlobTest, AdoptRefusesMemfdsSomebodyCouldStillWrite) {
  EXPECT_THAT(Blob::Adopt(Memfd(0)), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Blob::Adopt(Memfd(F_SEAL_SHRINK | F_SEAL_GROW)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not sealed")));
  EXPECT_THAT(Blob::Adopt(Memfd(F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not sealed")));
  EXPECT_THAT(Blob::Adopt(Memfd(F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE), /*max_size=*/100),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(BlobTest, ABlobFieldWhoseDescriptorNeverArrivedIsDataLoss) {
  EXPECT_THAT(internal::BlobAt(UniqueFd(), 3), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(internal::BlobAt(Memfd(0), 1),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not an immutable memfd")));
}

TEST(BlobTest, EmptyAndOversizedWritersAreRefused) {
  EXPECT_THAT(BlobWriter::Create(0), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BlobWriter::Create(kMaxMessageSize + 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  Blob empty;
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(empty.fd(), -1);
}

}  // namespace
}  // namespace sluice::rpc
