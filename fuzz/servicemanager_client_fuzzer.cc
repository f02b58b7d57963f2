// libFuzzer target: a process's handling of what the service manager sends
// (ipc/service ServiceManager: its reader thread's replies and events). A
// fake manager on a real socket answers Hello, Register and Subscribe, then
// sends the input's messages and hangs up, while the client waits in List.
// Whatever arrives, the client must not crash, hang or report a sanitizer
// error; List must end (with a reply, DATA_LOSS or UNAVAILABLE).
//
// Input: records of [u8 flags][u16 length, little-endian][length bytes],
// each sent as one message; flags bit 0 attaches two descriptors
// (/dev/null) the way a NewConnectionEvent or LookupReply carries them.
// The client's request ids are fixed: Hello 1, Register 2, Subscribe 3,
// List 4, so an input can answer them.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "ipc/service/service_manager.h"
#include "ipc/service/wire.h"

namespace {

namespace wire = ::sluice::servicemanager::wire;

struct Listener {
  std::string path;
  sluice::UniqueFd fd;
};

Listener* MakeListener() {
  char dir[] = "/tmp/sluice-sm-fuzz-XXXXXX";
  if (::mkdtemp(dir) == nullptr) std::abort();
  auto* out = new Listener{std::string(dir) + "/sm.sock", {}};
  out->fd.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, out->path.data(), out->path.size());
  if (::bind(out->fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(out->fd.get(), 4) != 0) {
    std::abort();
  }
  return out;
}

void Reply(int fd, uint64_t id, wire::Body type, flatbuffers::FlatBufferBuilder& builder,
           flatbuffers::Offset<void> body) {
  sluice::service_wire::FinishEnvelope(builder, id, absl::OkStatus(), type, body);
  (void)sluice::SendMessage(fd, sluice::service_wire::Bytes(builder));
}

// Answers the first `requests` requests with OK (Hello with a HelloReply).
bool AnswerSetup(int fd, int requests) {
  for (int i = 0; i < requests; ++i) {
    auto request = sluice::ReceiveMessage(fd, sluice::service_wire::kMaxRequestBytes);
    if (!request.ok()) return false;
    auto envelope = sluice::service_wire::VerifyEnvelope(request->bytes);
    if (!envelope.ok()) return false;
    flatbuffers::FlatBufferBuilder builder;
    if ((*envelope)->body_type() == wire::Body::HelloRequest) {
      Reply(fd, (*envelope)->request_id(), wire::Body::HelloReply, builder,
            wire::CreateHelloReply(builder, 1, 1, 7).Union());
    } else {
      Reply(fd, (*envelope)->request_id(), wire::Body::NONE, builder, 0);
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Listener* listener = MakeListener();
  static sluice::PeerWatcher* watcher = sluice::PeerWatcher::Create()->release();
  std::thread manager([&] {
    sluice::UniqueFd peer(::accept4(listener->fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!peer.valid() || !AnswerSetup(peer.get(), 3)) return;
    size_t at = 0;
    while (at + 3 <= size) {
      const uint8_t flags = data[at];
      const size_t length =
          std::min<size_t>(data[at + 1] | (size_t{data[at + 2]} << 8), size - at - 3);
      std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data + at + 3), length);
      at += 3 + length;
      std::vector<int> fds;
      sluice::UniqueFd a, b;
      if ((flags & 1) != 0) {
        a.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        b.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        fds = {a.get(), b.get()};
      }
      if (bytes.empty() && fds.empty()) continue;
      if (!sluice::SendMessage(peer.get(), bytes, fds).ok()) break;
    }
    // Hanging up ends the client's List if nothing answered it.
  });
  {
    sluice::ServiceManagerOptions options;
    options.socket_path = listener->path;
    options.watcher = watcher;
    options.reconnect = false;
    options.request_timeout = absl::Seconds(5);
    auto client = sluice::ServiceManager::Connect(options);
    if (client.ok()) {
      sluice::RegisterOptions register_options;
      register_options.on_client_gone = [](absl::string_view, uint64_t,
                                           const sluice::PeerCredentials&) {};
      (void)(*client)->Register(
          "f.svc", [](sluice::IncomingConnection) {}, std::move(register_options));
      (void)(*client)->Subscribe("f.", [](const sluice::NameEvent&) {});
      (void)(*client)->List("f.");
    }
  }
  manager.join();
  return 0;
}
