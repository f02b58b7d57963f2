// Serves example.frames.FrameSource until SIGTERM/SIGINT.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "examples/frames/frame_source.h"
#include "ipc/host/service_host.h"
#include "ipc/service/service_manager.h"

ABSL_FLAG(std::string, socket, "", "Service manager socket (default: the usual path rules)");
ABSL_FLAG(int, ready_fd, -1, "Write \"ready\\n\" here once published, then close it");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  auto manager = sluice::ServiceManager::Connect({.socket_path = absl::GetFlag(FLAGS_socket)});
  if (!manager.ok()) {
    std::fprintf(stderr, "frame_server: %s\n", manager.status().ToString().c_str());
    return 1;
  }
  sluice::ServiceHost host(**manager);
  if (absl::Status published =
          host.Publish(std::make_shared<example::frames::FrameSourceService>());
      !published.ok()) {
    std::fprintf(stderr, "frame_server: %s\n", published.ToString().c_str());
    return 1;
  }
  std::printf("frame_server: serving example.frames.FrameSource (pid %d)\n", ::getpid());
  std::fflush(stdout);
  if (const int fd = absl::GetFlag(FLAGS_ready_fd); fd >= 0) {
    (void)!::write(fd, "ready\n", 6);
    ::close(fd);
  }
  int signal_number = 0;
  sigwait(&stop, &signal_number);
  host.Shutdown();
  return 0;
}
