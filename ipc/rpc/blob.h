// Blob: a typed, immutable buffer that crosses calls without a copy.
//
// A producer asks for N writable bytes (BlobWriter::Create), fills them in
// place and seals them (Seal): the memfd is then sealed against every write
// (F_SEAL_WRITE) and mapped read-only, so no process, the producer
// included, can change the bytes again. A Blob passed in a call or reply
// (an IDL field with (sluice_blob), or Attachments::AddBlob / AttachBlob)
// travels as its descriptor; the receiver checks the seals before it maps
// it read-only (TakeBlob), and may keep it after the call and pass it on to
// a third process, still without a copy.
//
// Ownership: a Blob is a shared, reference-counted read-only mapping;
// copies are cheap and the mapping is released exactly once, when the last
// copy goes. A BlobWriter is move-only and belongs to one thread.
#ifndef SLUICE_IPC_RPC_BLOB_H_
#define SLUICE_IPC_RPC_BLOB_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "ipc/base/unique_fd.h"
#include "ipc/channel/channel_options.h"
#include "ipc/shm/region.h"

namespace sluice::rpc {

class Blob {
 public:
  // An empty blob: no bytes, no descriptor (a blob field left unset).
  Blob() = default;

  // Takes a received descriptor: it must be a memfd sealed against writes,
  // shrinking and growing, of at most `max_size` bytes. INVALID_ARGUMENT
  // otherwise (the fd is closed).
  static absl::StatusOr<Blob> Adopt(UniqueFd fd, uint64_t max_size = kMaxMessageSize);

  std::span<const std::byte> bytes() const {
    return region_ ? std::span<const std::byte>(region_->data(), region_->size())
                   : std::span<const std::byte>();
  }
  std::span<const uint8_t> data() const {
    return {reinterpret_cast<const uint8_t*>(bytes().data()), bytes().size()};
  }
  size_t size() const { return region_ ? region_->size() : 0; }
  bool empty() const { return size() == 0; }
  // The descriptor to send (the kernel duplicates it); -1 when empty.
  int fd() const { return region_ ? region_->fd() : -1; }

 private:
  friend class BlobWriter;
  explicit Blob(std::shared_ptr<const Region> region) : region_(std::move(region)) {}
  std::shared_ptr<const Region> region_;
};

class BlobWriter {
 public:
  // `size` writable bytes in a fresh memfd only this process holds.
  static absl::StatusOr<BlobWriter> Create(size_t size);

  BlobWriter(BlobWriter&&) noexcept = default;
  BlobWriter& operator=(BlobWriter&&) noexcept = default;

  std::span<std::byte> bytes() { return region_.bytes(); }
  uint8_t* data() { return reinterpret_cast<uint8_t*>(region_.data()); }
  size_t size() const { return region_.size(); }

  // Seals the bytes for good and returns them as a Blob; the writer is
  // spent (its span is gone).
  absl::StatusOr<Blob> Seal() &&;

 private:
  explicit BlobWriter(Region region) : region_(std::move(region)) {}
  Region region_;
};

}  // namespace sluice::rpc

#endif  // SLUICE_IPC_RPC_BLOB_H_
