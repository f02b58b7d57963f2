// libFuzzer target: arbitrary bytes and call headers through a generated
// stub's Dispatch, the path every request from a (possibly hostile) client
// takes. Any input must end in a reply or an error, never a crash, hang or
// sanitizer report.
//
// Input: 16 bytes of CallHeader (interface id, method word), 1 byte of flags
// (bit 0: oneway), then the request bytes.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>

#include "ipc/channel/client_channel.h"
#include "tests/rpc/kitchen_sink_service.h"
#include "tests/testing/channel_pair.h"

namespace {

namespace sink = ::sluice::test::sink;

struct Harness {
  std::unique_ptr<sluice::PeerWatcher> watcher;
  sluice::testing::LocalPair pair;
  sluice::testing::PainterService painter;
};

Harness* MakeHarness() {
  auto* h = new Harness();
  h->watcher = *sluice::PeerWatcher::Create();
  h->pair = *sluice::testing::MakeLocalPair(*h->watcher);
  return h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness* harness = MakeHarness();
  if (size < 17) return 0;
  sluice::CallHeader header;
  std::memcpy(&header.interface_id, data, 8);
  std::memcpy(&header.method, data + 8, 8);
  const bool oneway = (data[16] & 1) != 0;
  // Aim most inputs at real methods so the verifier, not the id check, is hit.
  if ((data[16] & 2) == 0) header.interface_id = sink::PainterInterface::kInterfaceId;
  if ((data[16] & 4) == 0) {
    constexpr uint64_t kMethods[] = {
        sink::PainterInterface::kSummarize, sink::PainterInterface::kEcho,
        sink::PainterInterface::kFail,      sink::PainterInterface::kNote,
        sink::PainterInterface::kTotal,     sink::PainterInterface::kUpload,
        sink::PainterInterface::kDownload,
    };
    header.method = kMethods[data[0] % std::size(kMethods)];
  }
  // Hang never answers by design; it is for the process-death tests.
  if (sluice::rpc::MethodIdOf(header.method) ==
      sluice::rpc::MethodIdOf(sink::PainterInterface::kHang)) {
    return 0;
  }
  const uint8_t* body = data + 17;
  const size_t length = std::min<size_t>(size - 17, 64 * 1024);

  // A fresh pair when a malformed request closed the last one.
  if (!harness->pair.server->health().ok()) {
    harness->pair = *sluice::testing::MakeLocalPair(*harness->watcher);
  }
  sluice::ClientChannel& client = *harness->pair.client;
  auto call = client.BeginCall(length == 0 ? 1 : length);
  if (!call.ok()) return 0;
  std::memcpy(call->buffer().data(), body, length);
  call->header() = header;
  const auto message = call->buffer().first(length);
  if (oneway) {
    if (!client.Send(*std::move(call), message).ok()) return 0;
  } else {
    // Publish without waiting: the server side is driven right here.
    std::thread caller([&client, c = *std::move(call), message]() mutable {
      (void)client.Call(std::move(c), message);
    });
    auto incoming = harness->pair.server->Receive();
    if (incoming.ok()) {
      absl::Status handled = harness->painter.Dispatch(*incoming, {});
      if (absl::IsDataLoss(handled)) harness->pair.server->Close(handled);
    }
    caller.join();
    return 0;
  }
  auto incoming = harness->pair.server->Receive();
  if (incoming.ok()) {
    absl::Status handled = harness->painter.Dispatch(*incoming, {});
    if (absl::IsDataLoss(handled)) harness->pair.server->Close(handled);
  }
  return 0;
}
