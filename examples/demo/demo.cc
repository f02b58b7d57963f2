// sluice-demo: the README's first command. Starts a private service manager,
// the key-value example server and its client, shows `sluicectl list`, then
// stops everything and exits with the client's status.
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "ipc/base/unique_fd.h"
#include "ipc/testing/subprocess.h"

namespace {

using sluice::testing::Subprocess;

int Stop(Subprocess& child, const char* name) {
  (void)child.Kill(SIGTERM);
  auto status = child.Wait(absl::Seconds(10));
  if (!status.ok()) {
    std::fprintf(stderr, "sluice-demo: %s did not stop: %s\n", name,
                 status.status().ToString().c_str());
    return 1;
  }
  return WIFEXITED(*status) && WEXITSTATUS(*status) == 0 ? 0 : 1;
}

int Run(const std::string& dir) {
  const std::string socket = "--socket=" + dir + "/servicemanager.sock";
  std::printf("== sluice-demo: service manager at %s/servicemanager.sock\n", dir.c_str());
  std::fflush(stdout);
  auto manager =
      Subprocess::SpawnAndWaitReady({SLUICE_SERVICEMANAGER_BIN, socket, "--log_level=warning"});
  if (!manager.ok()) {
    std::fprintf(stderr, "sluice-demo: %s\n", manager.status().ToString().c_str());
    return 1;
  }
  std::printf("== starting kv_server\n");
  std::fflush(stdout);
  auto server = Subprocess::SpawnAndWaitReady({SLUICE_KV_SERVER_BIN, socket});
  if (!server.ok()) {
    std::fprintf(stderr, "sluice-demo: %s\n", server.status().ToString().c_str());
    return 1;
  }
  std::printf("== sluicectl list\n");
  std::fflush(stdout);
  if (auto list = Subprocess::Spawn({SLUICECTL_BIN, "list", socket}); list.ok()) {
    (void)list->Wait();
  }
  std::printf("== running kv_client\n");
  std::fflush(stdout);
  int client_ok = 1;
  if (auto client = Subprocess::Spawn({SLUICE_KV_CLIENT_BIN, socket}); client.ok()) {
    auto status = client->Wait(absl::Seconds(60));
    client_ok = status.ok() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0 ? 0 : 1;
  }
  std::printf("== stopping\n");
  std::fflush(stdout);
  const int server_stopped = Stop(*server, "kv_server");
  const int manager_stopped = Stop(*manager, "sluice-servicemanager");
  const int result = client_ok | server_stopped | manager_stopped;
  std::printf("== sluice-demo: %s\n", result == 0 ? "done" : "FAILED");
  return result;
}

}  // namespace

int main() {
  char dir_template[] = "/tmp/sluice-demo-XXXXXX";
  const char* dir = mkdtemp(dir_template);
  if (dir == nullptr) {
    std::perror("sluice-demo: mkdtemp");
    return 1;
  }
  const int result = Run(dir);
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return result;
}
