// sluice-servicemanager: wires flags, logger, policy and signals to a
// ServiceManagerDaemon and runs it. Everything else is in daemon.h.
//
// Socket activation: started by systemd with LISTEN_FDS=1, it serves the
// socket it was given (units in services/servicemanager/systemd/).
//
// Signals: SIGTERM/SIGINT stop cleanly (connections closed, socket removed,
// exit 0); SIGHUP re-reads the --policy file.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "ipc/service/socket_path.h"
#include "services/servicemanager/daemon.h"
#include "services/servicemanager/socket_activation.h"

ABSL_FLAG(std::string, socket, "",
          "Socket path; default $SLUICE_SERVICEMANAGER, else "
          "$XDG_RUNTIME_DIR/sluice/servicemanager.sock, else (root) "
          "/run/sluice/servicemanager.sock");
ABSL_FLAG(std::string, policy, "",
          "Policy file (docs/servicemanager.md); default: same uid + root");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning, error or off");
ABSL_FLAG(int, log_fd, 2, "Descriptor the log lines go to (default stderr)");
ABSL_FLAG(int, max_connections, 4096, "Connections served at once; more are refused");
ABSL_FLAG(int, hello_timeout_ms, 10000, "Drop connections that do not say Hello by then");
ABSL_FLAG(std::string, socket_mode, "0666", "Mode of the socket node (octal)");
ABSL_FLAG(int, ready_fd, -1,
          "Once listening, write \"ready\\n\" to this descriptor and close it (for supervisors "
          "and tests)");

namespace {

std::atomic<sluice::ServiceManagerDaemon*> g_daemon{nullptr};

void OnSignal(int signal) {
  // Stop() and Reload() only write an eventfd: async-signal-safe.
  auto* daemon = g_daemon.load();
  if (daemon == nullptr) return;
  if (signal == SIGHUP) {
    daemon->Reload();
  } else {
    daemon->Stop();
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Sluice service manager daemon");
  absl::ParseCommandLine(argc, argv);

  auto level = sluice::Logger::ParseLevel(absl::GetFlag(FLAGS_log_level));
  if (!level.ok()) {
    std::fprintf(stderr, "sluice-servicemanager: %s\n", level.status().ToString().c_str());
    return 2;
  }
  sluice::Logger logger(*level, absl::GetFlag(FLAGS_log_fd));

  sluice::DaemonOptions options;
  options.logger = &logger;
  options.socket_path = absl::GetFlag(FLAGS_socket);
  // Socket activation: systemd made the socket (and owns its path).
  auto activated = sluice::TakeActivatedSocket();
  if (!activated.ok()) {
    logger.Error(activated.status().message());
    return 1;
  }
  if (activated->has_value()) {
    options.listen_fd = **activated;
  } else if (options.socket_path.empty()) {
    auto path = sluice::DefaultServiceManagerSocketPath();
    if (!path.ok()) {
      logger.Error(path.status().message());
      return 2;
    }
    options.socket_path = *path;
  }
  options.policy_path = absl::GetFlag(FLAGS_policy);
  if (!options.policy_path.empty()) {
    // Checked here too, so a bad file at start-up is a usage error (exit 2).
    if (auto policy = sluice::Policy::Load(options.policy_path, ::geteuid()); !policy.ok()) {
      logger.Error(policy.status().message());
      return 2;
    }
  }
  options.max_connections = static_cast<size_t>(absl::GetFlag(FLAGS_max_connections));
  options.hello_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_hello_timeout_ms));
  {
    const std::string mode = absl::GetFlag(FLAGS_socket_mode);
    char* end = nullptr;
    const unsigned long parsed = std::strtoul(mode.c_str(), &end, 8);
    if (mode.empty() || *end != '\0' || parsed > 07777) {
      logger.Error("--socket_mode must be an octal mode like 0666, not '", mode, "'");
      return 2;
    }
    options.socket_mode = static_cast<mode_t>(parsed);
  }

  // Each connection costs a descriptor; take the hard limit so the
  // configured connection limit, not RLIMIT_NOFILE, is what refuses clients.
  rlimit limit;
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }

  auto daemon = sluice::ServiceManagerDaemon::Create(std::move(options));
  if (!daemon.ok()) {
    logger.Error(daemon.status().message());
    return daemon.status().code() == absl::StatusCode::kAlreadyExists ? 3 : 1;
  }
  g_daemon = daemon->get();
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGHUP, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);
  if (const int ready_fd = absl::GetFlag(FLAGS_ready_fd); ready_fd >= 0) {
    (void)!::write(ready_fd, "ready\n", 6);
    ::close(ready_fd);
  }

  absl::Status status = (*daemon)->Run();
  g_daemon = nullptr;
  if (!status.ok()) {
    logger.Error("event loop failed: ", status.message());
    return 1;
  }
  logger.Info("stopped");
  return 0;
}
