// Caller identity through the real service manager: the server's
// CallContext names the calling process as the kernel saw it (SO_PEERCRED at
// the manager), and the client learns the server's identity the same way.
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "ipc/host/service_host.h"
#include "ipc/testing/subprocess.h"
#include "tests/rpc/kitchen_sink_service.h"
#include "tests/testing/status_matchers.h"

namespace sluice::testing {
namespace {

namespace sink = ::sluice::test::sink;

TEST(CallerIdentity, ServerSeesTheCallingProcessAndClientSeesTheServer) {
  char dir[] = "/tmp/sluice-identity-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string socket = std::string(dir) + "/sm.sock";
  {
    ASSERT_OK_AND_ASSIGN(Subprocess manager, Subprocess::SpawnAndWaitReady(
                                                 {SLUICE_SERVICEMANAGER_BIN, "--socket=" + socket,
                                                  "--log_level=error"}));
    ASSERT_OK_AND_ASSIGN(Subprocess server,
                         Subprocess::SpawnAndWaitReady({SLUICE_RPC_TEST_PEER, "publish", socket}));
    ASSERT_OK_AND_ASSIGN(auto sm, ServiceManager::Connect({.socket_path = socket}));
    ASSERT_OK_AND_ASSIGN(auto painter, Connect<sink::PainterProxy>(*sm));
    EXPECT_EQ(painter.server().pid, server.pid());
    ASSERT_OK_AND_ASSIGN(auto caller, painter->WhoAmI());
    EXPECT_EQ(caller->pid(), getpid());
    EXPECT_EQ(caller->uid(), getuid());
    EXPECT_EQ(caller->gid(), getgid());
    ASSERT_OK(server.Kill(SIGKILL));
    ASSERT_OK(manager.Kill(SIGTERM));
    EXPECT_OK(manager.Wait());
  }
  std::string cleanup = std::string("rm -rf ") + dir;
  (void)!std::system(cleanup.c_str());
}

}  // namespace
}  // namespace sluice::testing
