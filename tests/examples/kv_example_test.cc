// The key-value example as a user runs it: the real service manager, the
// example server and client binaries, all separate processes.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ipc/base/unique_fd.h"
#include "ipc/testing/subprocess.h"
#include "tests/testing/status_matchers.h"

namespace sluice::testing {
namespace {

class KvExampleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/sluice-kv-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    socket_flag_ = "--socket=" + dir_ + "/sm.sock";
    ASSERT_OK_AND_ASSIGN(
        manager_, StartReady({SLUICE_SERVICEMANAGER_BIN, socket_flag_, "--log_level=error"}));
    ASSERT_OK_AND_ASSIGN(server_, StartReady({SLUICE_KV_SERVER_BIN, socket_flag_}));
  }
  void TearDown() override {
    if (server_) {
      ASSERT_OK(server_->Kill(SIGTERM));
      EXPECT_OK(server_->Wait());
    }
    if (manager_) {
      ASSERT_OK(manager_->Kill(SIGTERM));
      EXPECT_OK(manager_->Wait());
    }
    std::string command = "rm -rf " + dir_;
    (void)!std::system(command.c_str());
  }

  absl::StatusOr<std::optional<Subprocess>> StartReady(std::vector<std::string> argv) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe2");
    UniqueFd read_end(fds[0]), write_end(fds[1]);
    argv.push_back("--ready_fd=3");
    auto child = Subprocess::Spawn(argv, {write_end.get()});
    if (!child.ok()) return child.status();
    write_end.reset();
    char buffer[8];
    if (read(read_end.get(), buffer, sizeof(buffer)) <= 0) {
      return absl::UnavailableError(argv[0] + " never got ready");
    }
    return std::optional<Subprocess>(*std::move(child));
  }

  std::string dir_;
  std::string socket_flag_;
  std::optional<Subprocess> manager_;
  std::optional<Subprocess> server_;
};

TEST_F(KvExampleTest, TwoClientProcessesAtOnceBothSucceed) {
  std::vector<Subprocess> clients;
  for (const char* prefix : {"--key_prefix=a/", "--key_prefix=b/"}) {
    ASSERT_OK_AND_ASSIGN(Subprocess client,
                         Subprocess::Spawn({SLUICE_KV_CLIENT_BIN, socket_flag_, prefix}));
    clients.push_back(std::move(client));
  }
  for (Subprocess& client : clients) {
    ASSERT_OK_AND_ASSIGN(int status, client.Wait(absl::Seconds(60)));
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "client status " << status;
  }
}

}  // namespace
}  // namespace sluice::testing
