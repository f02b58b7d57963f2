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
    ASSERT_OK_AND_ASSIGN(Subprocess manager,
                         Subprocess::SpawnAndWaitReady(
                             {SLUICE_SERVICEMANAGER_BIN, socket_flag_, "--log_level=error"}));
    manager_.emplace(std::move(manager));
    ASSERT_OK_AND_ASSIGN(Subprocess server,
                         Subprocess::SpawnAndWaitReady({SLUICE_KV_SERVER_BIN, socket_flag_}));
    server_.emplace(std::move(server));
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
