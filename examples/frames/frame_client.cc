// Asks the frame source for frames, checks every pixel where it lies (a
// read-only mapping of the sealed blob: no copy), keeps the last few frames
// after their calls, and passes one back for the server to inspect: the
// blob goes out again as it came, still without a copy.
#include <chrono>
#include <cstdio>
#include <deque>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "examples/frames/frame_source.h"
#include "ipc/host/service_host.h"
#include "ipc/rpc/blob.h"
#include "ipc/rpc/object.h"
#include "ipc/service/service_manager.h"

ABSL_FLAG(std::string, socket, "", "Service manager socket (default: the usual path rules)");
ABSL_FLAG(int, frames, 10, "How many frames to fetch");
ABSL_FLAG(uint32_t, width, 1920, "Frame width");
ABSL_FLAG(uint32_t, height, 1080, "Frame height");
ABSL_FLAG(int, wait_ms, 5000, "How long to wait for the server");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using example::frames::FrameSourceProxy;
  auto manager = sluice::ServiceManager::Connect({.socket_path = absl::GetFlag(FLAGS_socket)});
  if (!manager.ok()) {
    std::fprintf(stderr, "frame_client: %s\n", manager.status().ToString().c_str());
    return 1;
  }
  if (absl::Status up = (*manager)->WaitFor(FrameSourceProxy::Interface::kName,
                                            absl::Milliseconds(absl::GetFlag(FLAGS_wait_ms)));
      !up.ok()) {
    std::fprintf(stderr, "frame_client: %s\n", up.ToString().c_str());
    return 1;
  }
  auto source = sluice::Connect<FrameSourceProxy>(**manager);
  if (!source.ok()) {
    std::fprintf(stderr, "frame_client: %s\n", source.status().ToString().c_str());
    return 1;
  }
  const uint32_t width = absl::GetFlag(FLAGS_width);
  const uint32_t height = absl::GetFlag(FLAGS_height);
  std::deque<sluice::rpc::Blob> kept;  // Frames outlive their calls.
  const auto start = std::chrono::steady_clock::now();
  uint64_t bytes = 0;
  for (int seq = 0; seq < absl::GetFlag(FLAGS_frames); ++seq) {
    auto frame = (*source)->Render(width, height, static_cast<uint64_t>(seq));
    if (!frame.ok()) {
      std::fprintf(stderr, "frame_client: Render: %s\n", frame.status().ToString().c_str());
      return 1;
    }
    auto pixels = sluice::rpc::TakeBlob(*frame, (*frame)->pixels());
    if (!pixels.ok() || pixels->size() != uint64_t{width} * height * 4) {
      std::fprintf(stderr, "frame_client: frame %d: no pixels of the right size\n", seq);
      return 1;
    }
    const auto* p = reinterpret_cast<const uint32_t*>(pixels->data().data());
    for (uint64_t i = 0; i < uint64_t{width} * height; ++i) {
      if (p[i] != example::frames::PixelAt(static_cast<uint64_t>(seq), i)) {
        std::fprintf(stderr, "frame_client: frame %d pixel %llu is wrong\n", seq,
                     static_cast<unsigned long long>(i));
        return 1;
      }
    }
    bytes += pixels->size();
    kept.push_back(*std::move(pixels));
    if (kept.size() > 3) kept.pop_front();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("frame_client: %d frames of %ux%u checked in place, %.0f MB/s\n",
              absl::GetFlag(FLAGS_frames), width, height, bytes / seconds / 1e6);
  if (kept.empty()) return 0;
  // Hand the newest kept frame back: the sealed memfd travels as it is.
  const sluice::rpc::Blob& last = kept.back();
  auto checked = (*source)->Inspect(width, height, 0, last);
  if (!checked.ok()) {
    std::fprintf(stderr, "frame_client: Inspect: %s\n", checked.status().ToString().c_str());
    return 1;
  }
  const uint64_t want = example::frames::SumPixels(last.data());
  std::printf("frame_client: passed a kept frame back; the server read %llu bytes, sum %s\n",
              static_cast<unsigned long long>((*checked)->bytes()),
              (*checked)->sum() == want ? "matches" : "DIFFERS");
  return (*checked)->sum() == want && (*checked)->bytes() == last.size() ? 0 : 1;
}
