#include "ipc/rpc/blob.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "ipc/base/errno_status.h"

namespace sluice::rpc {

absl::StatusOr<Blob> Blob::Adopt(UniqueFd fd, uint64_t max_size) {
  absl::StatusOr<Region> region =
      Region::Adopt(std::move(fd), 1, max_size, Region::Access::kReadOnly, Region::kImmutableSeals);
  if (!region.ok()) return region.status();
  return Blob(std::make_shared<const Region>(*std::move(region)));
}

absl::StatusOr<BlobWriter> BlobWriter::Create(size_t size) {
  if (size == 0 || size > kMaxMessageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("blob of ", size, " bytes is outside [1, ", kMaxMessageSize, "]"));
  }
  // Exactly `size` bytes (not rounded to a page), so the receiver sees the
  // blob's own length in the memfd's.
  UniqueFd fd(::memfd_create("sluice-blob", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) return ErrnoStatus("memfd_create(sluice-blob)", errno);
  if (RetryOnEintr([&] { return ::ftruncate(fd.get(), static_cast<off_t>(size)); }) != 0) {
    return ErrnoStatus(absl::StrCat("ftruncate(sluice-blob, ", size, ")"), errno);
  }
  if (::fcntl(fd.get(), F_ADD_SEALS, Region::kSizeSeals) != 0) {
    return ErrnoStatus("fcntl(sluice-blob, F_ADD_SEALS)", errno);
  }
  absl::StatusOr<Region> region = Region::Adopt(std::move(fd), size, size);
  if (!region.ok()) return region.status();
  // The producer fills it whole: allocate its pages in one pass.
  region->Prefault();
  return BlobWriter(*std::move(region));
}

absl::StatusOr<Blob> BlobWriter::Seal() && {
  if (absl::Status sealed = region_.SealImmutable(); !sealed.ok()) return sealed;
  if (absl::Status mapped = region_.MapReadOnly(); !mapped.ok()) return mapped;
  return Blob(std::make_shared<const Region>(std::move(region_)));
}

}  // namespace sluice::rpc
