// sm_test_helper: a tiny server or client process for the multi-process
// service manager tests. Reports on descriptor 3 (a pipe from the test) when
// it is given one; exits with the absl::StatusCode of what it was asked to do.
//
//   sm_test_helper SOCKET [--uid=N] serve NAME [echo|hang|inspect]
//   sm_test_helper SOCKET [--uid=N] register NAME
//   sm_test_helper SOCKET [--uid=N] lookup NAME
//   sm_test_helper SOCKET [--uid=N] hold NAME
//   sm_test_helper SOCKET --spare_fds=N serve NAME [echo|hang]
//   sm_test_helper SOCKET --max_request_size=N serve NAME [echo|hang|inspect]
//   sm_test_helper SOCKET traffic NAME[,NAME...]
//
// inspect answers each request with how it arrived: "sealed N" (a spilled,
// sealed memfd) or "in-place N" (the client's arena), N its size in bytes.
//
// traffic looks every NAME up once, reports "ready", then calls each in turn
// (echo, 5 s deadline) until SIGTERM, and then reports "calls N failed M"
// and exits 0: continuous traffic over existing connections, for the
// manager-restart test.
//
// --uid switches to that uid (and gid) before doing anything, for policy
// tests run as root. --spare_fds lowers RLIMIT_NOFILE, once registered, to
// leave only N descriptors free, for descriptor-exhaustion tests.
// --max_request_size is the registration's own limit (RegisterOptions).
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "ipc/base/errors.h"
#include "ipc/service/service_manager.h"

namespace {

constexpr int kReportFd = 3;

void Report(const std::string& line) {
  const std::string text = line + "\n";
  (void)!::write(kReportFd, text.data(), text.size());
}

int CodeOf(const absl::Status& status) {
  if (!status.ok()) std::fprintf(stderr, "sm_test_helper: %s\n", status.ToString().c_str());
  return static_cast<int>(status.code());
}

// Serves one channel: echoes every request back, (hang) takes requests
// and never answers them, or (inspect) says how each arrived. Reports when
// the client's death is seen.
void Serve(std::unique_ptr<sluice::ServerChannel> channel, uint64_t id, const std::string& mode) {
  std::vector<sluice::IncomingCall> held;
  for (;;) {
    auto call = channel->Receive();
    if (!call.ok()) {
      if (sluice::IsPeerDead(call.status())) Report(absl::StrCat("channel-dead ", id));
      return;
    }
    if (mode == "hang") {
      held.push_back(*std::move(call));
      continue;
    }
    if (mode == "inspect") {
      const std::string how =
          absl::StrCat(call->request_immutable() ? "sealed " : "in-place ", call->request().size());
      auto space = call->ReserveReply(how.size());
      if (!space.ok()) {
        (void)call->Fail(space.status());
        continue;
      }
      std::memcpy(space->data(), how.data(), how.size());
      (void)call->Reply(space->first(how.size()));
      continue;
    }
    auto space = call->ReserveReply(call->request().size());
    if (!space.ok()) {
      (void)call->Fail(space.status());
      continue;
    }
    std::memcpy(space->data(), call->request().data(), call->request().size());
    (void)call->Reply(space->first(call->request().size()));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() < 3) {
    std::fprintf(stderr, "usage: sm_test_helper SOCKET [--uid=N] CMD NAME [MODE]\n");
    return 2;
  }
  sluice::ServiceManagerOptions options;
  options.socket_path = args[0];
  size_t next = 1;
  if (absl::StartsWith(args[next], "--uid=")) {
    uint32_t uid = 0;
    if (!absl::SimpleAtoi(args[next].substr(6), &uid)) return 2;
    if (::setresgid(uid, uid, uid) != 0 || ::setresuid(uid, uid, uid) != 0) {
      std::perror("setresuid");
      return 2;
    }
    ++next;
  }
  int spare_fds = -1;
  if (args.size() > next && absl::StartsWith(args[next], "--spare_fds=")) {
    if (!absl::SimpleAtoi(args[next].substr(12), &spare_fds)) return 2;
    ++next;
  }
  uint64_t max_request_size = 0;
  if (args.size() > next && absl::StartsWith(args[next], "--max_request_size=")) {
    if (!absl::SimpleAtoi(args[next].substr(19), &max_request_size)) return 2;
    ++next;
  }
  if (args.size() < next + 2) return 2;
  const std::string command = args[next];
  const std::string name = args[next + 1];
  const std::string mode = args.size() > next + 2 ? args[next + 2] : "echo";

  auto manager = sluice::ServiceManager::Connect(options);
  if (!manager.ok()) {
    Report(absl::StrCat("error ", CodeOf(manager.status())));
    return CodeOf(manager.status());
  }
  if (command == "register") {
    return CodeOf((*manager)->Register(name, [](sluice::IncomingConnection) {}));
  }
  if (command == "lookup") return CodeOf((*manager)->Lookup(name).status());
  if (command == "traffic") {
    std::vector<sluice::ServiceConnection> connections;
    for (absl::string_view target : absl::StrSplit(name, ',')) {
      auto connection = (*manager)->Lookup(target);
      if (!connection.ok()) {
        Report(absl::StrCat("error ", CodeOf(connection.status())));
        return CodeOf(connection.status());
      }
      connections.push_back(*std::move(connection));
    }
    static std::atomic<bool> stop{false};
    std::signal(SIGTERM, [](int) { stop = true; });
    Report("ready");
    uint64_t calls = 0, failed = 0;
    const std::string payload = "traffic";
    while (!stop) {
      for (auto& connection : connections) {
        sluice::ClientChannel& channel = *connection.channel;
        const absl::Time deadline = absl::Now() + absl::Seconds(5);
        ++calls;
        auto call = channel.BeginCall(payload.size(), deadline);
        if (!call.ok()) {
          ++failed;
          continue;
        }
        const std::span<std::byte> buffer = call->buffer().first(payload.size());
        std::memcpy(buffer.data(), payload.data(), payload.size());
        auto reply = channel.Call(*std::move(call), buffer, deadline);
        if (!reply.ok() || reply->data().size() != payload.size()) ++failed;
      }
    }
    Report(absl::StrCat("calls ", calls, " failed ", failed));
    return 0;
  }
  if (command == "hold") {
    auto connection = (*manager)->Lookup(name);
    if (!connection.ok()) return CodeOf(connection.status());
    Report(absl::StrCat("connected ", connection->connection_id));
    for (;;) ::pause();
  }
  if (command == "serve") {
    sluice::RegisterOptions register_options;
    if (max_request_size != 0) register_options.max_request_size = max_request_size;
    register_options.on_client_gone = [](absl::string_view, uint64_t id,
                                         const sluice::PeerCredentials&) {
      Report(absl::StrCat("client-gone ", id));
    };
    absl::Status status = (*manager)->Register(
        name,
        [mode](sluice::IncomingConnection connection) {
          std::thread(Serve, std::move(connection.channel), connection.connection_id, mode)
              .detach();
        },
        std::move(register_options));
    if (!status.ok()) {
      Report(absl::StrCat("error ", CodeOf(status)));
      return CodeOf(status);
    }
    if (spare_fds >= 0) {
      // New descriptors must be numbered below the limit: pick the limit
      // below which exactly N numbers are free (inherited descriptors may
      // sit anywhere, so count rather than take the highest).
      std::vector<int> open_fds;
      for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
        int fd = 0;
        if (absl::SimpleAtoi(entry.path().filename().string(), &fd)) open_fds.push_back(fd);
      }
      std::sort(open_fds.begin(), open_fds.end());
      int free_below = 0, number = 0;
      size_t next_open = 0;
      for (; free_below < spare_fds; ++number) {
        if (next_open < open_fds.size() && open_fds[next_open] == number) {
          ++next_open;
        } else {
          ++free_below;
        }
      }
      rlimit limit{static_cast<rlim_t>(number), static_cast<rlim_t>(number)};
      if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
        std::perror("setrlimit");
        return 2;
      }
    }
    Report("ready");
    for (;;) ::pause();
  }
  std::fprintf(stderr, "sm_test_helper: unknown command %s\n", command.c_str());
  return 2;
}
