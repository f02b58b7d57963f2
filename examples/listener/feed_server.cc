// feed_server: publishes example.listener.Feed with the service manager and
// serves it until SIGTERM or SIGINT, printing subscriptions, publishes and
// subscribers it drops because their process died.
//
//   feed_server [--socket=PATH] [--name=NAME] [--call_timeout_ms=MS] [--ready_fd=FD]
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "examples/listener/feed_service.h"
#include "ipc/host/service_host.h"

ABSL_FLAG(std::string, socket, "", "Service manager socket (default: the usual path rules)");
ABSL_FLAG(std::string, name, "", "Name to publish (default: example.listener.Feed)");
ABSL_FLAG(int, call_timeout_ms, 5000, "How long a Publish waits for each listener's Ack");
ABSL_FLAG(int, ready_fd, -1, "Write \"ready\\n\" here once published, then close it");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // Block the stop signals so sigwait below receives them, in every thread.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  auto manager = sluice::ServiceManager::Connect({.socket_path = absl::GetFlag(FLAGS_socket)});
  if (!manager.ok()) {
    std::fprintf(stderr, "feed_server: %s\n", manager.status().ToString().c_str());
    return 1;
  }
  auto feed =
      std::make_shared<example::listener::FeedService>(example::listener::FeedService::Options{
          .call_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_call_timeout_ms))});
  sluice::ServiceHost host(**manager);
  if (absl::Status published = host.Publish(feed, absl::GetFlag(FLAGS_name)); !published.ok()) {
    std::fprintf(stderr, "feed_server: %s\n", published.ToString().c_str());
    return 1;
  }
  const std::string name = absl::GetFlag(FLAGS_name).empty()
                               ? std::string(example::listener::FeedInterface::kName)
                               : absl::GetFlag(FLAGS_name);
  std::printf("feed_server: serving %s (pid %d)\n", name.c_str(), getpid());
  std::fflush(stdout);
  if (const int fd = absl::GetFlag(FLAGS_ready_fd); fd >= 0) {
    (void)!write(fd, "ready\n", 6);
    close(fd);
  }
  int signal = 0;
  sigwait(&stop, &signal);
  host.Shutdown();
  feed->Close();
  std::printf("feed_server: stopped by signal %d\n", signal);
  return 0;
}
