// kv_server: publishes example.kv.KeyValueStore with the service manager and
// serves it until SIGTERM or SIGINT.
//
//   kv_server [--socket=PATH] [--name=NAME] [--ready_fd=FD]
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "examples/kv/key_value_store.h"
#include "ipc/host/service_host.h"

ABSL_FLAG(std::string, socket, "", "Service manager socket (default: the usual path rules)");
ABSL_FLAG(std::string, name, "", "Name to publish (default: example.kv.KeyValueStore)");
ABSL_FLAG(bool, trust_same_user, true,
          "Read large requests of same-uid clients in place; false: every client sends them "
          "sealed (docs/memory.md, \"Trust\")");
ABSL_FLAG(uint64_t, max_value_bytes, example::kv::KeyValueStore::kDefaultMaxValue,
          "Largest value a Put may store");
ABSL_FLAG(bool, trust_everyone, false,
          "Read every client's large requests in place unless the service manager's policy "
          "file narrows it (`trust` lines); overrides --trust_same_user");
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
    std::fprintf(stderr, "kv_server: %s\n", manager.status().ToString().c_str());
    return 1;
  }
  auto store = std::make_shared<example::kv::KeyValueStore>(absl::GetFlag(FLAGS_max_value_bytes));
  sluice::ServiceHost host(**manager);
  // Publish sends the stub's schema with the name, so `sluicectl describe`
  // and `call` work against this server with no .fbs of their own.
  sluice::RegisterOptions options;
  options.trust = absl::GetFlag(FLAGS_trust_same_user) ? sluice::TrustPolicy::kSameUser
                                                       : sluice::TrustPolicy::kNobody;
  if (absl::GetFlag(FLAGS_trust_everyone)) options.trust = sluice::TrustPolicy::kEveryone;
  if (absl::Status published = host.Publish(store, absl::GetFlag(FLAGS_name), std::move(options));
      !published.ok()) {
    std::fprintf(stderr, "kv_server: %s\n", published.ToString().c_str());
    return 1;
  }
  std::printf(
      "kv_server: serving %s (pid %d)\n",
      std::string(absl::GetFlag(FLAGS_name).empty() ? example::kv::KeyValueStoreInterface::kName
                                                    : absl::GetFlag(FLAGS_name))
          .c_str(),
      getpid());
  std::fflush(stdout);
  if (const int fd = absl::GetFlag(FLAGS_ready_fd); fd >= 0) {
    (void)!write(fd, "ready\n", 6);
    close(fd);
  }
  int signal = 0;
  sigwait(&stop, &signal);
  host.Shutdown();
  for (const std::string& line : store->audit_log())
    std::printf("kv_server: audit %s\n", line.c_str());
  std::printf("kv_server: stopped by signal %d\n", signal);
  return 0;
}
