#include "examples/frames/frame_source.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "ipc/rpc/blob.h"
#include "ipc/rpc/object.h"

namespace example::frames {

uint64_t SumPixels(std::span<const uint8_t> bytes) {
  uint64_t sum = 0;
  for (size_t i = 0; i + 4 <= bytes.size(); i += 4) {
    uint32_t pixel;
    std::memcpy(&pixel, bytes.data() + i, 4);
    sum += pixel;
  }
  return sum;
}

absl::StatusOr<flatbuffers::Offset<Frame>> FrameSourceService::Render(
    const sluice::rpc::CallContext& context, const FrameRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  const uint64_t pixels = uint64_t{request.width()} * request.height();
  if (pixels == 0 || pixels > (uint64_t{1} << 26)) {
    return absl::InvalidArgumentError(
        absl::StrCat(request.width(), "x", request.height(), " is not a frame size we render"));
  }
  // The frame's only write: straight into memory that is sealed next.
  auto writer = sluice::rpc::BlobWriter::Create(pixels * 4);
  if (!writer.ok()) return writer.status();
  auto* out = reinterpret_cast<uint32_t*>(writer->data());
  for (uint64_t i = 0; i < pixels; ++i) out[i] = PixelAt(request.seq(), i);
  auto blob = std::move(*writer).Seal();
  if (!blob.ok()) return blob.status();
  auto field = sluice::rpc::AttachBlob(context, *blob);
  if (!field.ok()) return field.status();
  return CreateFrame(reply, request.width(), request.height(), request.seq(), *field);
}

absl::StatusOr<flatbuffers::Offset<Checksum>> FrameSourceService::Inspect(
    const sluice::rpc::CallContext& context, const Frame& request,
    flatbuffers::FlatBufferBuilder& reply) {
  auto blob = sluice::rpc::TakeBlob(context, request.pixels());
  if (!blob.ok()) return blob.status();
  return CreateChecksum(reply, blob->size(), SumPixels(blob->data()));
}

}  // namespace example::frames
