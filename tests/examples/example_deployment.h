// The service manager and one example server as a user starts them: the
// real binaries, separate processes, the manager's socket in a scratch
// directory of their own. Shared by the example tests.
#ifndef SLUICE_TESTS_EXAMPLES_EXAMPLE_DEPLOYMENT_H_
#define SLUICE_TESTS_EXAMPLES_EXAMPLE_DEPLOYMENT_H_

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "ipc/testing/subprocess.h"

namespace sluice::testing {

class ExampleDeployment {
 public:
  // Starts `manager_binary`, then `server_binary --socket=...`, each once
  // it reports ready.
  static absl::StatusOr<std::unique_ptr<ExampleDeployment>> Start(
      const std::string& manager_binary, const std::string& server_binary) {
    char dir[] = "/tmp/sluice-example-XXXXXX";
    if (::mkdtemp(dir) == nullptr) return absl::InternalError("mkdtemp failed");
    auto deployment = std::unique_ptr<ExampleDeployment>(new ExampleDeployment(dir));
    absl::StatusOr<Subprocess> manager = Subprocess::SpawnAndWaitReady(
        {manager_binary, deployment->socket_flag(), "--log_level=error"});
    if (!manager.ok()) return manager.status();
    deployment->manager_.emplace(*std::move(manager));
    absl::StatusOr<Subprocess> server =
        Subprocess::SpawnAndWaitReady({server_binary, deployment->socket_flag()});
    if (!server.ok()) return server.status();
    deployment->server_.emplace(*std::move(server));
    return deployment;
  }

  // Stops whatever still runs (the server first) and removes the directory.
  ~ExampleDeployment() {
    if (server_) {
      absl::StatusOr<int> status = StopServer();
      EXPECT_TRUE(status.ok()) << status.status();
    }
    if (manager_) {
      EXPECT_TRUE(manager_->Kill(SIGTERM).ok());
      absl::StatusOr<int> status = manager_->Wait();
      EXPECT_TRUE(status.ok() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
          << "the service manager did not stop cleanly: "
          << (status.ok() ? absl::StrCat("wait status ", *status) : status.status().ToString());
    }
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  ExampleDeployment(const ExampleDeployment&) = delete;
  ExampleDeployment& operator=(const ExampleDeployment&) = delete;

  // SIGTERM to the server; its wait status once it exits. Afterwards
  // server() must not be used.
  absl::StatusOr<int> StopServer() {
    std::optional<Subprocess> server = std::move(server_);
    server_.reset();
    if (absl::Status killed = server->Kill(SIGTERM); !killed.ok()) return killed;
    return server->Wait();
  }

  const std::string& dir() const { return dir_; }
  const std::string& socket() const { return socket_; }
  std::string socket_flag() const { return "--socket=" + socket_; }
  Subprocess& manager() { return *manager_; }
  Subprocess& server() { return *server_; }
  bool server_running() const { return server_.has_value(); }

 private:
  explicit ExampleDeployment(std::string dir) : dir_(std::move(dir)), socket_(dir_ + "/sm.sock") {}

  std::string dir_;
  std::string socket_;
  std::optional<Subprocess> manager_;
  std::optional<Subprocess> server_;
};

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_EXAMPLES_EXAMPLE_DEPLOYMENT_H_
