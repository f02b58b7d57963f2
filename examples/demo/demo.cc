// sluice-demo: the README's first command. Starts a private service manager,
// the key-value example server and its client, shows `sluicectl list`, then
// stops everything and exits with the client's status.
//
// sluice-demo --example=listener: the callback example instead. A feed server,
// two listeners subscribed to it and a publisher; one listener is killed
// midway and the feed drops it on its death notification, so the next events
// reach only the other one. Exits with 0 if everything went as described.
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "ipc/base/unique_fd.h"
#include "ipc/testing/subprocess.h"

ABSL_FLAG(std::string, example, "kv", "Which example to run: kv, listener or frames");

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

void Say(const std::string& line) {
  std::printf("== %s\n", line.c_str());
  std::fflush(stdout);
}

// Runs `argv` to its end; 0 if it exited with 0.
int RunToEnd(const std::vector<std::string>& argv) {
  auto child = Subprocess::Spawn(argv);
  if (!child.ok()) {
    std::fprintf(stderr, "sluice-demo: %s\n", child.status().ToString().c_str());
    return 1;
  }
  auto status = child->Wait(absl::Seconds(60));
  return status.ok() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0 ? 0 : 1;
}

// Spawns `argv` and waits for it to say it is ready; says why not if it
// does not (nullopt).
std::optional<Subprocess> StartReady(const std::vector<std::string>& argv) {
  auto child = Subprocess::SpawnAndWaitReady(argv);
  if (!child.ok()) {
    std::fprintf(stderr, "sluice-demo: %s\n", child.status().ToString().c_str());
    return std::nullopt;
  }
  return *std::move(child);
}

int RunKv(const std::string& dir) {
  const std::string socket = "--socket=" + dir + "/servicemanager.sock";
  std::printf("== sluice-demo: service manager at %s/servicemanager.sock\n", dir.c_str());
  std::fflush(stdout);
  std::optional<Subprocess> manager =
      StartReady({SLUICE_SERVICEMANAGER_BIN, socket, "--log_level=warning"});
  if (!manager) return 1;
  std::printf("== starting kv_server\n");
  std::fflush(stdout);
  std::optional<Subprocess> server = StartReady({SLUICE_KV_SERVER_BIN, socket});
  if (!server) return 1;
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

// The listener example: manager, feed_server, two feed_listeners and two
// rounds of feed_publisher, with one listener SIGKILLed in between.
int RunListener(const std::string& dir) {
  const std::string socket = "--socket=" + dir + "/servicemanager.sock";
  Say("sluice-demo: service manager at " + dir + "/servicemanager.sock");
  std::optional<Subprocess> manager =
      StartReady({SLUICE_SERVICEMANAGER_BIN, socket, "--log_level=warning"});
  if (!manager) return 1;
  Say("starting feed_server");
  std::optional<Subprocess> server = StartReady({SLUICE_FEED_SERVER_BIN, socket});
  if (!server) return 1;
  // Each is ready once subscribed: it has passed the feed its Listener object.
  Say("starting two feed_listeners on topic news; the second one stops after 4 events");
  std::optional<Subprocess> doomed = StartReady({SLUICE_FEED_LISTENER_BIN, socket, "--topic=news"});
  if (!doomed) return 1;
  auto survivor = Subprocess::SpawnAndWaitReady(
      {SLUICE_FEED_LISTENER_BIN, socket, "--topic=news", "--count=4"});
  if (!survivor.ok()) {
    std::fprintf(stderr, "sluice-demo: %s\n", survivor.status().ToString().c_str());
    return 1;
  }
  Say("feed_publisher: 2 events, to both listeners");
  int result = RunToEnd({SLUICE_FEED_PUBLISHER_BIN, socket, "--topic=news", "--count=2",
                         "--text=before the kill", "--wait_subscribers=2", "--expect_delivered=2"});

  Say("killing feed_listener " + std::to_string(doomed->pid()) +
      " with SIGKILL: the feed hears of it from its death notification");
  (void)doomed->Kill(SIGKILL);
  (void)doomed->Wait(absl::Seconds(10));

  Say("feed_publisher: 2 more events, once the feed is down to 1 subscriber");
  result |= RunToEnd({SLUICE_FEED_PUBLISHER_BIN, socket, "--topic=news", "--count=2",
                      "--text=after the kill", "--wait_subscribers=1", "--expect_delivered=1"});

  Say("waiting for feed_listener " + std::to_string(survivor->pid()) + " to finish");
  auto survived = survivor->Wait(absl::Seconds(30));
  result |= survived.ok() && WIFEXITED(*survived) && WEXITSTATUS(*survived) == 0 ? 0 : 1;

  Say("stopping");
  result |= Stop(*server, "feed_server");
  result |= Stop(*manager, "sluice-servicemanager");
  Say(std::string("sluice-demo: ") + (result == 0 ? "done" : "FAILED"));
  return result;
}

// The large-buffer example: frame_server renders 1080p frames into sealed
// blobs; frame_client checks them in place and passes one back.
int RunFrames(const std::string& dir) {
  const std::string socket = "--socket=" + dir + "/servicemanager.sock";
  Say("sluice-demo: service manager at " + dir + "/servicemanager.sock");
  std::optional<Subprocess> manager =
      StartReady({SLUICE_SERVICEMANAGER_BIN, socket, "--log_level=warning"});
  if (!manager) return 1;
  Say("starting frame_server");
  std::optional<Subprocess> server = StartReady({SLUICE_FRAME_SERVER_BIN, socket});
  if (!server) return 1;
  Say("frame_client: 30 frames of 1920x1080 (8 MB each) as sealed blobs");
  const int client_ok = RunToEnd({SLUICE_FRAME_CLIENT_BIN, socket, "--frames=30"});
  Say("stopping");
  const int result =
      client_ok | Stop(*server, "frame_server") | Stop(*manager, "sluice-servicemanager");
  Say(std::string("sluice-demo: ") + (result == 0 ? "done" : "FAILED"));
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string example = absl::GetFlag(FLAGS_example);
  if (example != "kv" && example != "listener" && example != "frames") {
    std::fprintf(stderr, "sluice-demo: unknown --example=%s (kv, listener or frames)\n",
                 example.c_str());
    return 2;
  }
  char dir_template[] = "/tmp/sluice-demo-XXXXXX";
  const char* dir = mkdtemp(dir_template);
  if (dir == nullptr) {
    std::perror("sluice-demo: mkdtemp");
    return 1;
  }
  const int result = example == "listener" ? RunListener(dir)
                     : example == "frames" ? RunFrames(dir)
                                           : RunKv(dir);
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return result;
}
