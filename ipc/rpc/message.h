// Verified FlatBuffers messages read from a peer, and the private copies that
// make verification meaningful.
//
// A peer can rewrite the bytes of its arena at any time, so verifying a table
// where it lies proves nothing about the next read. Messages there up to
// kPrivateCopyLimit are therefore copied into private memory first (for the
// sizes RPCs mostly carry, the copy costs less than the verification) and
// verified there. Larger ones reach us in an arena only from a peer we trust
// (the channel refuses them otherwise); from anyone else they arrive in a
// sealed memfd, which nobody can change, and are verified and read in place.
#ifndef SLUICE_IPC_RPC_MESSAGE_H_
#define SLUICE_IPC_RPC_MESSAGE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "flatbuffers/flatbuffers.h"
#include "ipc/channel/client_channel.h"
#include "ipc/rpc/wire.h"

namespace sluice::rpc {

class ReplyObjects;

// Private, suitably aligned storage for one message. Small messages live
// inline, so the common call allocates nothing; a buffer that grew keeps its
// capacity for reuse.
class MessageBuffer {
 public:
  MessageBuffer() = default;
  MessageBuffer(MessageBuffer&& other) noexcept { *this = std::move(other); }
  MessageBuffer& operator=(MessageBuffer&& other) noexcept;

  // Copies `bytes` in and returns the private copy.
  std::span<const uint8_t> Assign(std::span<const std::byte> bytes);
  // The current copy. Moves with the object (inline bytes are copied).
  std::span<const uint8_t> view() const {
    return {size_ > kInline ? reinterpret_cast<const uint8_t*>(heap_.get()) : inline_, size_};
  }

 private:
  static constexpr size_t kInline = 512;
  alignas(16) uint8_t inline_[kInline];
  std::unique_ptr<uint64_t[]> heap_;  // uint64_t: 8-byte alignment for FlatBuffers.
  size_t heap_capacity_ = 0;
  size_t size_ = 0;
};

// Verifies that `bytes` hold a `T` root table. DATA_LOSS names `what`.
template <typename T>
absl::StatusOr<const T*> VerifyMessage(std::span<const uint8_t> bytes, absl::string_view what) {
  if (bytes.size() >= FLATBUFFERS_MAX_BUFFER_SIZE) {
    return absl::DataLossError(absl::StrCat(what, ": ", bytes.size(), " bytes is too large"));
  }
  flatbuffers::Verifier verifier(bytes.data(), bytes.size(), kMaxVerifierDepth, kMaxVerifierTables);
  if (!verifier.VerifyBuffer<T>(nullptr)) {
    return absl::DataLossError(
        absl::StrCat(what, ": ", bytes.size(), " bytes are not a valid FlatBuffer of this type"));
  }
  return flatbuffers::GetRoot<T>(bytes.data());
}

// Message bytes made safe to read: in place when `immutable` (sealed) or
// large (the channel let it through from a trusted peer only), else a
// private copy.
inline std::span<const uint8_t> Stabilize(std::span<const std::byte> bytes, bool immutable,
                                          MessageBuffer& private_copy) {
  if (!immutable && bytes.size() <= kPrivateCopyLimit) return private_copy.Assign(bytes);
  return {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()};
}

// A typed reply. Holds the channel's reply (and so its slot) until destroyed.
template <typename T>
class Response {
 public:
  // `owner` keeps the channel alive as long as the reply (may be null);
  // `lent`: the objects the reply lends by handle (object.h), if any.
  static absl::StatusOr<Response> Make(Reply reply, absl::string_view what,
                                       std::shared_ptr<void> owner = nullptr,
                                       std::shared_ptr<ReplyObjects> lent = nullptr) {
    Response response(std::move(reply));
    response.owner_ = std::move(owner);
    response.lent_ = std::move(lent);
    auto table = VerifyMessage<T>(response.bytes(), what);
    if (!table.ok()) return table.status();
    return response;
  }

  Response(Response&& other) noexcept = default;
  Response& operator=(Response&& other) noexcept {
    if (this != &other) {
      // The old reply goes first, while the old owner still keeps its channel.
      reply_ = std::move(other.reply_);
      owner_ = std::move(other.owner_);
      lent_ = std::move(other.lent_);
      copy_ = std::move(other.copy_);
      in_place_ = other.in_place_;
    }
    return *this;
  }

  const T* get() const { return flatbuffers::GetRoot<T>(bytes().data()); }
  const T* operator->() const { return get(); }
  const T& operator*() const { return *get(); }
  // Descriptors the server attached (CallContext::AttachReplyFds), owned by
  // the caller from now on.
  std::vector<UniqueFd> TakeFds() { return reply_.TakeFds(); }
  // One of them by index (rpc::TakeFd / TakeObject read fields with it).
  UniqueFd TakeFd(size_t index) { return reply_.TakeFd(index); }
  // The objects the reply lends by handle (rpc::TakeObject reads fields
  // with it); null when it lends none.
  ReplyObjects* lent_objects() const { return lent_.get(); }

  // The verified message bytes.
  std::span<const uint8_t> bytes() const {
    return in_place_
               ? std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(reply_.data().data()),
                                          reply_.data().size())
               : copy_.view();
  }

 private:
  explicit Response(Reply reply) : reply_(std::move(reply)) {
    in_place_ = reply_.immutable() || reply_.data().size() > kPrivateCopyLimit;
    if (!in_place_) copy_.Assign(reply_.data());
    // A copy, or a sealed memfd, needs nothing of the channel any more: give
    // its slot back now, so that kept responses never hold up later calls.
    if (!in_place_ || reply_.immutable()) reply_.ReleaseSlot();
  }

  // Declared before reply_, so destroyed after it: the reply releases its
  // slot on a channel this may be the last owner of.
  std::shared_ptr<void> owner_;
  // Settled when the Response goes: what was taken from it is kept.
  std::shared_ptr<ReplyObjects> lent_;
  Reply reply_;
  MessageBuffer copy_;
  bool in_place_ = false;
};

}  // namespace sluice::rpc

#endif  // SLUICE_IPC_RPC_MESSAGE_H_
