#include "ipc/shm/region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ipc/base/errno_status.h"

namespace sluice {
namespace {

static_assert(Region::kSizeSeals == (F_SEAL_SHRINK | F_SEAL_GROW));
static_assert(Region::kOwnerWritesSeals == (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE));
static_assert(Region::kImmutableSeals == (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE));

uint64_t RoundUpToPage(uint64_t size) {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  return (size + page - 1) / page * page;
}

}  // namespace

absl::StatusOr<void*> Region::MapShared(int fd, uint64_t size, Access access) {
  const int prot = access == Access::kReadWrite ? PROT_READ | PROT_WRITE : PROT_READ;
  void* base = ::mmap(nullptr, size, prot, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return ErrnoStatus(absl::StrCat("mmap(", size, " bytes)"), errno);
  return base;
}

absl::StatusOr<Region> Region::Create(absl::string_view name, uint64_t size, bool prefault) {
  if (size == 0 || size > kMaxSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("region size ", size, " is outside [1, ", kMaxSize, "]"));
  }
  size = RoundUpToPage(size);
  const std::string memfd_name(name);
  UniqueFd fd(::memfd_create(memfd_name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) return ErrnoStatus(absl::StrCat("memfd_create(", name, ")"), errno);
  if (RetryOnEintr([&] { return ::ftruncate(fd.get(), static_cast<off_t>(size)); }) != 0) {
    return ErrnoStatus(absl::StrCat("ftruncate(", name, ", ", size, ")"), errno);
  }
  if (::fcntl(fd.get(), F_ADD_SEALS, kSizeSeals) != 0) {
    return ErrnoStatus(absl::StrCat("fcntl(", name, ", F_ADD_SEALS)"), errno);
  }
  auto base = MapShared(fd.get(), size, Access::kReadWrite);
  if (!base.ok()) return base.status();
  Region region(std::move(fd), size, *base, Access::kReadWrite);
  if (prefault) region.Prefault();
  return region;
}

void Region::Prefault() const {
#if defined(MADV_POPULATE_WRITE)
  // Best effort: on failure (an old kernel) pages fault in one by one as usual.
  (void)::madvise(base_, size_, writable() ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
#endif
}

absl::StatusOr<Region> Region::Adopt(UniqueFd fd, uint64_t min_size, uint64_t max_size,
                                     Access access, int required_seals) {
  if (!fd) return absl::InvalidArgumentError("adopting a region: no file descriptor");
  // F_GET_SEALS fails with EINVAL on anything that is not a memfd (or a
  // shmem file created with sealing allowed), which is exactly the check.
  const int seals = ::fcntl(fd.get(), F_GET_SEALS);
  if (seals < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("adopting a region: fd ", fd.get(), " is not a sealable memfd"));
  }
  required_seals |= kSizeSeals;
  if ((seals & required_seals) != required_seals) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adopting a region: memfd is not sealed as required (seals 0x", absl::Hex(seals),
        ", missing 0x", absl::Hex(required_seals & ~seals), ")",
        (required_seals & ~seals & kSizeSeals) != 0 ? "; a peer could shrink it under us"
                                                    : "; a peer could still write it"));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus("fstat(adopted region)", errno);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  max_size = std::min(max_size, kMaxSize);
  if (size < min_size || size > max_size) {
    return absl::InvalidArgumentError(absl::StrCat("adopting a region: size ", size,
                                                   " is outside [", min_size, ", ", max_size, "]"));
  }
  if (size == 0) return absl::InvalidArgumentError("adopting a region: the memfd is empty");
  auto base = MapShared(fd.get(), size, access);
  if (!base.ok()) return base.status();
  return Region(std::move(fd), size, *base, access);
}

Region::Region(Region&& other) noexcept
    : fd_(std::move(other.fd_)),
      size_(std::exchange(other.size_, 0)),
      base_(std::exchange(other.base_, nullptr)),
      access_(other.access_) {}

Region& Region::operator=(Region&& other) noexcept {
  if (this != &other) {
    Unmap();
    fd_ = std::move(other.fd_);
    size_ = std::exchange(other.size_, 0);
    base_ = std::exchange(other.base_, nullptr);
    access_ = other.access_;
  }
  return *this;
}

Region::~Region() { Unmap(); }

void Region::Unmap() {
  if (base_ != nullptr) {
    ::munmap(base_, size_);
    base_ = nullptr;
  }
}

absl::Status Region::AddSeals(int seals) {
  if (::fcntl(fd_.get(), F_ADD_SEALS, seals) != 0) {
    return ErrnoStatus(absl::StrCat("fcntl(F_ADD_SEALS, 0x", absl::Hex(seals), ")"), errno);
  }
  return absl::OkStatus();
}

absl::Status Region::SealFutureWrites() { return AddSeals(F_SEAL_FUTURE_WRITE | F_SEAL_SEAL); }

absl::Status Region::SealImmutable() {
  // F_SEAL_WRITE is refused while any writable mapping exists, ours included.
  Unmap();
  return AddSeals(F_SEAL_WRITE | F_SEAL_SEAL);
}

absl::Status Region::MapReadOnly() {
  if (mapped()) return absl::FailedPreconditionError("region is mapped already");
  auto base = MapShared(fd_.get(), size_, Access::kReadOnly);
  if (!base.ok()) return base.status();
  base_ = *base;
  access_ = Access::kReadOnly;
  return absl::OkStatus();
}

absl::StatusOr<int> Region::Seals() const {
  const int seals = ::fcntl(fd_.get(), F_GET_SEALS);
  if (seals < 0) return ErrnoStatus("fcntl(F_GET_SEALS)", errno);
  return seals;
}

}  // namespace sluice
