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
  // Upper bound accepted for any region, created or adopted (1 GiB).
  static constexpr uint64_t kMaxSize = uint64_t{1} << 30;

  // Creates a memfd of `size` bytes (rounded up to a page), seals its size,
  // and maps it read-write. `name` shows in /proc/PID/fd and /proc/PID/maps.
  static absl::StatusOr<Region> Create(absl::string_view name, uint64_t size);

  // Takes a memfd received from elsewhere, checks that it is a memfd whose
  // size is sealed and lies in [min_size, max_size], and maps it read-write.
  // Errors: INVALID_ARGUMENT for a non-memfd, unsealed or wrongly sized fd.
  static absl::StatusOr<Region> Adopt(UniqueFd fd, uint64_t min_size, uint64_t max_size);

  Region(Region&& other) noexcept;
  Region& operator=(Region&& other) noexcept;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  ~Region();

  // Adds F_SEAL_* bits (e.g. F_SEAL_WRITE for an immutable blob). Sealing
  // writes requires that no writable mapping exists, so call Unmap() first.
  absl::Status AddSeals(int seals);
  absl::StatusOr<int> Seals() const;

  // Drops the mapping but keeps the fd (to seal or hand on).
  void Unmap();

  int fd() const { return fd_.get(); }
  uint64_t size() const { return size_; }
  std::byte* data() const { return static_cast<std::byte*>(base_); }
  std::span<std::byte> bytes() const { return {data(), mapped() ? size_ : 0}; }
  bool mapped() const { return base_ != nullptr; }

  // A fresh close-on-exec descriptor of the memfd, to send to a peer.
  absl::StatusOr<UniqueFd> DuplicateFd() const { return fd_.Duplicate(); }

 private:
  Region(UniqueFd fd, uint64_t size, void* base) : fd_(std::move(fd)), size_(size), base_(base) {}
  static absl::StatusOr<void*> MapShared(int fd, uint64_t size);

  UniqueFd fd_;
  uint64_t size_ = 0;
  void* base_ = nullptr;  // nullptr when unmapped.
};

}  // namespace sluice

#endif  // SLUICE_IPC_SHM_REGION_H_
