// The other processes of the nested-call tests (nested_test).
//
//   nested_peer SOCKET NAME[,ALIAS...] MAX_THREADS --ready_fd=3
//       publishes a Bouncer named NAME (and under each ALIAS: a connection
//       per name, so deep routes do not run out of one channel's slots) with
//       the service manager at SOCKET, served by a ServiceHost of MAX_THREADS
//       threads; says "ready" on fd 3 and serves until killed. Hops carry NAME.
//   nested_peer SOCKET --call TARGET [NAME...]
//       calls the Bouncer TARGET with the route NAME... from a fresh call
//       chain (one no thread of the test process waits in), writes one line
//       "PID TID NAME" per hop to fd 3, or "error STATUS"; exits 0 on success.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "ipc/host/service_host.h"
#include "tests/rpc/bouncer.h"

namespace sluice::testing {
namespace {

int Fail(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "nested_peer: %s: %s\n", what, status.ToString().c_str());
  return 2;
}

void WriteAll(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

int RunServer(const std::string& socket, const std::string& names, int max_threads) {
  auto manager = ServiceManager::Connect({.socket_path = socket});
  if (!manager.ok()) return Fail("connect", manager.status());
  ServiceHost host(**manager, {.max_threads = max_threads});
  const std::vector<std::string> aliases = absl::StrSplit(names, ',');
  auto bouncer = std::make_shared<BouncerService>(**manager, aliases.front());
  for (const std::string& alias : aliases) {
    if (absl::Status published = host.Publish(bouncer, alias); !published.ok()) {
      return Fail("publish", published);
    }
  }
  (void)!::write(3, "ready\n", 6);
  ::close(3);
  for (;;) ::pause();
}

int RunClient(const std::string& socket, const std::string& target,
              const std::vector<std::string>& route) {
  auto manager = ServiceManager::Connect({.socket_path = socket});
  if (!manager.ok()) return Fail("connect", manager.status());
  auto bouncer = Connect<::sluice::test::nested::BouncerProxy>(**manager, target);
  if (!bouncer.ok()) return Fail("lookup", bouncer.status());
  absl::StatusOr<std::vector<HopRecord>> hops =
      CallBounce(bouncer->proxy(), route, absl::Now() + absl::Seconds(30));
  if (!hops.ok()) {
    WriteAll(3, absl::StrCat("error ", hops.status().ToString(), "\n"));
    return 1;
  }
  std::string out;
  for (const HopRecord& hop : *hops)
    absl::StrAppend(&out, hop.pid, " ", hop.tid, " ", hop.name, "\n");
  WriteAll(3, out);
  return 0;
}

int Main(int argc, char** argv) {
  if (argc >= 4 && std::string(argv[2]) == "--call") {
    return RunClient(argv[1], argv[3], std::vector<std::string>(argv + 4, argv + argc));
  }
  int max_threads = 0;
  if (argc < 4 || !absl::SimpleAtoi(argv[3], &max_threads) || max_threads < 1) {
    return Fail("usage", absl::InvalidArgumentError(
                             "nested_peer SOCKET NAME[,ALIAS...] MAX_THREADS --ready_fd=3 | "
                             "nested_peer SOCKET --call TARGET [NAME...]"));
  }
  return RunServer(argv[1], argv[2], max_threads);
}

}  // namespace
}  // namespace sluice::testing

int main(int argc, char** argv) { return sluice::testing::Main(argc, argv); }
