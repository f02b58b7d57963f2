// Region: a memfd-backed shared memory area, mapped into this process.
//
// A Region owns both the memfd and its one mapping; destroying it unmaps and
// closes exactly once. Regions are anonymous (memfd_create): nothing appears
// under /dev/shm and nothing is left behind when every holder dies.
//
// Size is fixed for a region's life. The creator seals the memfd against
// shrinking and growing before handing it out, and Adopt() refuses a memfd
// that is not sealed so: a hostile peer that could ftruncate() the file would
// otherwise turn our next access into SIGBUS.
//
// Who may write is enforced by the kernel, not by convention:
//   - memory one side builds in (an arena) is created by that side, mapped
//     read-write, then sealed with F_SEAL_FUTURE_WRITE (SealFutureWrites)
//     before the fd leaves the process: the peer can only map it read-only,
//     even through /proc/self/fd, while the owner's mapping stays writable;
//   - a message or blob handed over whole is filled, unmapped and sealed with
//     F_SEAL_WRITE (kImmutableSeals): nobody can write it any more.
// The receiver checks the seals with F_GET_SEALS before it maps the fd
// read-only (Adopt with Access::kReadOnly).
//
// Thread safety: the object is thread compatible; the mapped bytes are shared
// with other processes and must be accessed with the discipline of the layer
// on top (see docs/shared-memory-layout.md).
#ifndef SLUICE_IPC_SHM_REGION_H_
#define SLUICE_IPC_SHM_REGION_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ipc/base/unique_fd.h"

namespace sluice {

class Region {
 public:
  // Upper bound accepted for any region, created or adopted (2 GiB, the
  // largest FlatBuffer).
  static constexpr uint64_t kMaxSize = uint64_t{1} << 31;

  // Seals every region carries: its size cannot change.
  static constexpr int kSizeSeals = 0x0002 | 0x0004;  // F_SEAL_SHRINK | F_SEAL_GROW
  // An owner-written area: nobody can map it writable any more; the owner
  // keeps the writable mapping it made before sealing.
  static constexpr int kOwnerWritesSeals = kSizeSeals | 0x0010;  // | F_SEAL_FUTURE_WRITE
  // Immutable contents: nobody can write them at all.
  static constexpr int kImmutableSeals = kSizeSeals | 0x0008;  // | F_SEAL_WRITE

  enum class Access : uint8_t { kReadWrite, kReadOnly };

  // Creates a memfd of `size` bytes (rounded up to a page), seals its size,
  // and maps it read-write. `name` shows in /proc/PID/fd and /proc/PID/maps.
  // `prefault` allocates every page now, in one pass, rather than one
  // fault at a time as they are first written (for memory about to be
  // filled whole, such as a spilled message).
  static absl::StatusOr<Region> Create(absl::string_view name, uint64_t size,
                                       bool prefault = false);

  // Takes a memfd received from elsewhere, checks that it is a memfd that
  // carries at least `required_seals` and whose size lies in [min_size,
  // max_size], and maps it with `access`. Errors: INVALID_ARGUMENT for a
  // non-memfd, missing seals or a wrong size; the fd is closed.
  static absl::StatusOr<Region> Adopt(UniqueFd fd, uint64_t min_size, uint64_t max_size,
                                      Access access = Access::kReadWrite,
                                      int required_seals = kSizeSeals);

  // An empty region: no fd, no mapping.
  Region() = default;
  Region(Region&& other) noexcept;
  Region& operator=(Region&& other) noexcept;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  ~Region();

  // Adds F_SEAL_* bits (e.g. F_SEAL_WRITE for an immutable blob). Sealing
  // writes requires that no writable mapping exists, so call Unmap() first.
  absl::Status AddSeals(int seals);
  absl::StatusOr<int> Seals() const;

  // Seals the memfd with F_SEAL_FUTURE_WRITE (and F_SEAL_SEAL, so no seal
  // can be added or taken by anyone later): this mapping stays writable,
  // every other one can only be read-only. Call before the fd is shared.
  absl::Status SealFutureWrites();
  // Unmaps and seals the contents immutable (kImmutableSeals | F_SEAL_SEAL):
  // what a peer receives can never change. MapReadOnly() to read it again.
  absl::Status SealImmutable();
  // Maps an unmapped region again, read-only.
  absl::Status MapReadOnly();
  // Faults in the page tables of the whole mapping now (MADV_POPULATE_READ
  // or _WRITE), in one pass: for memory about to be read or written whole.
  void Prefault() const;

  // Drops the mapping but keeps the fd (to seal or hand on).
  void Unmap();
  // Drops the fd but keeps the mapping: a mapped region needs no descriptor.
  void CloseFd() { fd_.reset(); }

  int fd() const { return fd_.get(); }
  uint64_t size() const { return size_; }
  std::byte* data() const { return static_cast<std::byte*>(base_); }
  std::span<std::byte> bytes() const { return {data(), mapped() ? size_ : 0}; }
  bool mapped() const { return base_ != nullptr; }
  bool writable() const { return access_ == Access::kReadWrite; }

  // A fresh close-on-exec descriptor of the memfd, to send to a peer.
  absl::StatusOr<UniqueFd> DuplicateFd() const { return fd_.Duplicate(); }

 private:
  Region(UniqueFd fd, uint64_t size, void* base, Access access)
      : fd_(std::move(fd)), size_(size), base_(base), access_(access) {}
  static absl::StatusOr<void*> MapShared(int fd, uint64_t size, Access access);

  UniqueFd fd_;
  uint64_t size_ = 0;
  void* base_ = nullptr;  // nullptr when unmapped.
  Access access_ = Access::kReadWrite;
};

}  // namespace sluice

#endif  // SLUICE_IPC_SHM_REGION_H_
