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
#include "tests/examples/example_deployment.h"
#include "tests/testing/status_matchers.h"

namespace sluice::testing {
namespace {

class KvExampleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(deployment_,
                         ExampleDeployment::Start(SLUICE_SERVICEMANAGER_BIN, SLUICE_KV_SERVER_BIN));
  }
  std::unique_ptr<ExampleDeployment> deployment_;
};

TEST_F(KvExampleTest, TwoClientProcessesAtOnceBothSucceed) {
  std::vector<Subprocess> clients;
  for (const char* prefix : {"--key_prefix=a/", "--key_prefix=b/"}) {
    ASSERT_OK_AND_ASSIGN(
        Subprocess client,
        Subprocess::Spawn({SLUICE_KV_CLIENT_BIN, deployment_->socket_flag(), prefix}));
    clients.push_back(std::move(client));
  }
  for (Subprocess& client : clients) {
    ASSERT_OK_AND_ASSIGN(int status, client.Wait(absl::Seconds(60)));
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "client status " << status;
  }
}

}  // namespace
}  // namespace sluice::testing
