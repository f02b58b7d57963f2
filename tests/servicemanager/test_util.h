// Helpers for the service manager tests: a temp socket directory, a daemon
// run in-process on a thread or as the real binary, a line reader for the
// helpers' report pipes, and /proc probes for leak checks.
#ifndef SLUICE_TESTS_SERVICEMANAGER_TEST_UTIL_H_
#define SLUICE_TESTS_SERVICEMANAGER_TEST_UTIL_H_

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "ipc/base/errno_status.h"
#include "ipc/base/unique_fd.h"
#include "ipc/service/wire.h"
#include "ipc/testing/subprocess.h"
#include "services/servicemanager/daemon.h"

namespace sluice::testing {

// A directory under /tmp, world-traversable (tests switch uid), removed at
// the end.
class TempDir {
 public:
  TempDir() {
    char templ[] = "/tmp/sluice-sm-XXXXXX";
    path_ = ::mkdtemp(templ);
    ::chmod(path_.c_str(), 0755);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A pipe whose write end a Subprocess gets as fd 3.
struct ReportPipe {
  UniqueFd read;
  UniqueFd write;
  static ReportPipe Create() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) std::abort();
    return {UniqueFd(fds[0]), UniqueFd(fds[1]), {}};
  }
  // The next line, or DEADLINE_EXCEEDED / UNAVAILABLE (writer gone).
  absl::StatusOr<std::string> ReadLine(absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time deadline = absl::Now() + timeout;
    for (;;) {
      if (size_t nl = buffer.find('\n'); nl != std::string::npos) {
        std::string line = buffer.substr(0, nl);
        buffer.erase(0, nl + 1);
        return line;
      }
      const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (left <= 0) return absl::DeadlineExceededError("no line on the report pipe");
      pollfd p{read.get(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      char chunk[256];
      const ssize_t n = ::read(read.get(), chunk, sizeof(chunk));
      if (n <= 0) return absl::UnavailableError("report pipe closed");
      buffer.append(chunk, static_cast<size_t>(n));
    }
  }
  std::string buffer;
};

// The daemon on a thread of this process.
class InProcessDaemon {
 public:
  static std::unique_ptr<InProcessDaemon> Start(DaemonOptions options) {
    auto daemon = ServiceManagerDaemon::Create(std::move(options));
    if (!daemon.ok()) {
      std::fprintf(stderr, "daemon: %s\n", daemon.status().ToString().c_str());
      return nullptr;
    }
    auto out = std::make_unique<InProcessDaemon>();
    out->daemon = *std::move(daemon);
    out->thread = std::thread([d = out->daemon.get()] {
      absl::Status status = d->Run();
      if (!status.ok()) std::fprintf(stderr, "daemon: %s\n", status.ToString().c_str());
    });
    return out;
  }
  ~InProcessDaemon() {
    daemon->Stop();
    thread.join();
  }
  // Waits (bounded) until `pred(stats)` holds; the daemon updates stats once
  // per loop iteration.
  template <typename Pred>
  bool WaitForStats(Pred pred, absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (pred(daemon->stats())) return true;
      absl::SleepFor(absl::Milliseconds(2));
    }
    return pred(daemon->stats());
  }
  std::unique_ptr<ServiceManagerDaemon> daemon;
  std::thread thread;
};

// The real sluice-servicemanager binary.
inline absl::StatusOr<Subprocess> SpawnDaemon(const std::string& socket,
                                              std::vector<std::string> extra = {}) {
  ReportPipe ready = ReportPipe::Create();
  std::vector<std::string> argv = {SLUICE_SERVICEMANAGER_BIN, "--socket=" + socket,
                                   "--log_level=error", "--ready_fd=3"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto process = Subprocess::Spawn(argv, {ready.write.get()});
  if (!process.ok()) return process.status();
  ready.write.reset();
  auto line = ready.ReadLine();
  if (!line.ok() || *line != "ready") {
    return absl::InternalError(absl::StrCat("daemon did not become ready: ",
                                            line.ok() ? *line : line.status().ToString()));
  }
  return process;
}

// A raw SOCK_SEQPACKET connection to the daemon at `path`, for speaking
// garbage. Invalid if nothing listens there.
inline UniqueFd RawConnect(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), std::min(path.size(), sizeof(addr.sun_path) - 1));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) fd.reset();
  return fd;
}

// Whether the daemon hung up on `fd` within `timeout` (reads past any
// replies first).
inline bool HungUp(int fd, absl::Duration timeout = absl::Seconds(5)) {
  timeval tv{static_cast<time_t>(absl::ToInt64Seconds(timeout)), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
}

inline std::vector<std::byte> HelloBytes(uint64_t id = 1) {
  namespace wire = ::sluice::servicemanager::wire;
  flatbuffers::FlatBufferBuilder builder;
  auto hello = wire::CreateHelloRequest(builder, 1);
  service_wire::FinishEnvelope(builder, id, absl::OkStatus(), wire::Body::HelloRequest,
                               hello.Union());
  auto bytes = service_wire::Bytes(builder);
  return {bytes.begin(), bytes.end()};
}

// Every request kind a client may send after Hello.
inline constexpr servicemanager::wire::Body kRequestKinds[] = {
    servicemanager::wire::Body::RegisterRequest,  servicemanager::wire::Body::UnregisterRequest,
    servicemanager::wire::Body::LookupRequest,    servicemanager::wire::Body::WaitRequest,
    servicemanager::wire::Body::ListRequest,      servicemanager::wire::Body::InfoRequest,
    servicemanager::wire::Body::SubscribeRequest, servicemanager::wire::Body::UnsubscribeRequest,
};

// An Envelope whose body_type names `kind` but which has no body: the
// FlatBuffers verifier accepts it, since a union value may be absent.
inline std::vector<std::byte> RequestWithoutBody(servicemanager::wire::Body kind, uint64_t id) {
  namespace wire = ::sluice::servicemanager::wire;
  flatbuffers::FlatBufferBuilder builder;
  wire::EnvelopeBuilder envelope(builder);
  envelope.add_request_id(id);
  envelope.add_body_type(kind);
  builder.Finish(envelope.Finish(), wire::EnvelopeIdentifier());
  auto bytes = service_wire::Bytes(builder);
  return {bytes.begin(), bytes.end()};
}

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_SERVICEMANAGER_TEST_UTIL_H_
