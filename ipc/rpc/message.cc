#include "ipc/rpc/message.h"

namespace sluice::rpc {

MessageBuffer& MessageBuffer::operator=(MessageBuffer&& other) noexcept {
  if (this != &other) {
    std::memcpy(inline_, other.inline_, std::min(other.size_, kInline));
    heap_ = std::move(other.heap_);
    heap_capacity_ = std::exchange(other.heap_capacity_, 0);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

std::span<const uint8_t> MessageBuffer::Assign(std::span<const std::byte> bytes) {
  size_ = bytes.size();
  uint8_t* target = inline_;
  if (size_ > kInline) {
    if (heap_capacity_ < size_) {
      heap_capacity_ = (size_ + 7) / 8 * 8;
      heap_ = std::make_unique_for_overwrite<uint64_t[]>(heap_capacity_ / 8);
    }
    target = reinterpret_cast<uint8_t*>(heap_.get());
  }
  if (size_ > 0) std::memcpy(target, bytes.data(), size_);
  return {target, size_};
}

}  // namespace sluice::rpc
