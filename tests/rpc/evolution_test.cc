// Schema evolution across processes: a client built from an older schema
// against a newer server, and the reverse. Each side is its own binary, so
// the two versions never meet in one program.
#include <sys/wait.h>

#include <string>

#include "gtest/gtest.h"
#include "ipc/channel/channel_region.h"
#include "ipc/socket/unix_socket.h"
#include "ipc/testing/subprocess.h"
#include "tests/testing/status_matchers.h"

namespace sluice::testing {
namespace {

class EvolutionTest : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(EvolutionTest, ClientAndServerOfDifferentVersionsAgreeOnSharedFields) {
  const auto& [client_binary, server_binary] = GetParam();
  ASSERT_OK_AND_ASSIGN(Region region, CreateChannelRegion());
  ASSERT_OK_AND_ASSIGN(auto sockets, SeqPacketPair());
  ASSERT_OK_AND_ASSIGN(Subprocess server, Subprocess::Spawn({server_binary, "server"},
                                                            {region.fd(), sockets.second.get()}));
  ASSERT_OK_AND_ASSIGN(Subprocess client, Subprocess::Spawn({client_binary, "client"},
                                                            {region.fd(), sockets.first.get()}));
  sockets.first.reset();
  sockets.second.reset();
  ASSERT_OK_AND_ASSIGN(int client_status, client.Wait(absl::Seconds(30)));
  EXPECT_TRUE(WIFEXITED(client_status) && WEXITSTATUS(client_status) == 0)
      << client_binary << " against " << server_binary << ": status " << client_status;
  // The server ends by itself once its client is gone.
  ASSERT_OK_AND_ASSIGN(int server_status, server.Wait(absl::Seconds(30)));
  EXPECT_TRUE(WIFEXITED(server_status) && WEXITSTATUS(server_status) == 0);
}

INSTANTIATE_TEST_SUITE_P(Versions, EvolutionTest,
                         ::testing::Values(std::make_pair(SLUICE_EVOLUTION_V1, SLUICE_EVOLUTION_V2),
                                           std::make_pair(SLUICE_EVOLUTION_V2, SLUICE_EVOLUTION_V1),
                                           std::make_pair(SLUICE_EVOLUTION_V1, SLUICE_EVOLUTION_V1),
                                           std::make_pair(SLUICE_EVOLUTION_V2,
                                                          SLUICE_EVOLUTION_V2)));

}  // namespace
}  // namespace sluice::testing
