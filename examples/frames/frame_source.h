// The frame source service: renders frames into sealed blobs, and checks
// frames it is handed. Pixel i of frame s holds (s * 2654435761 + i) as
// little-endian RGBA, so anyone can check a frame without the server.
#ifndef SLUICE_EXAMPLES_FRAMES_FRAME_SOURCE_H_
#define SLUICE_EXAMPLES_FRAMES_FRAME_SOURCE_H_

#include <cstdint>
#include <span>

#include "frames_sluice.h"

namespace example::frames {

// The pixel value frame `seq` has at index `i`.
inline uint32_t PixelAt(uint64_t seq, uint64_t i) {
  return static_cast<uint32_t>(seq * 2654435761u + i);
}

// The sum of every 32-bit pixel of `bytes`.
uint64_t SumPixels(std::span<const uint8_t> bytes);

class FrameSourceService : public FrameSourceStub {
 public:
  absl::StatusOr<flatbuffers::Offset<Frame>> Render(const sluice::rpc::CallContext& context,
                                                    const FrameRequest& request,
                                                    flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<Checksum>> Inspect(
      const sluice::rpc::CallContext& context, const Frame& request,
      flatbuffers::FlatBufferBuilder& reply) override;
};

}  // namespace example::frames

#endif  // SLUICE_EXAMPLES_FRAMES_FRAME_SOURCE_H_
