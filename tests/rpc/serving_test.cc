// Serving through ServiceHost across processes: the real service manager,
// a Painter published by rpc_test_peer, and this process as its clients.
// Busy or hung handlers do not starve other clients, the pool's hard cap
// holds, and slots held by calls the caller gave up on are visible.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "ipc/host/service_host.h"
#include "ipc/testing/subprocess.h"
#include "tests/rpc/kitchen_sink_service.h"
#include "tests/testing/status_matchers.h"

namespace sluice::testing {
namespace {

namespace sink = ::sluice::test::sink;
using PainterConnection = Connection<sink::PainterProxy>;

rpc::CallOptions Within(absl::Duration timeout) {
  return rpc::CallOptions{.deadline = absl::Now() + timeout};
}

class ServingTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (server_) {
      EXPECT_OK(server_->Kill(SIGKILL));
      (void)server_->Wait();
    }
    if (manager_) {
      EXPECT_OK(manager_->Kill(SIGTERM));
      EXPECT_OK(manager_->Wait());
    }
    if (!dir_.empty()) {
      std::string command = "rm -rf " + dir_;
      (void)!std::system(command.c_str());
    }
  }

  // Starts the manager and a Painter server with these pool settings.
  void Start(int max_threads, int thread_cap) {
    char dir[] = "/tmp/sluice-serving-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    const std::string socket = dir_ + "/sm.sock";
    ASSERT_OK_AND_ASSIGN(Subprocess manager, Subprocess::SpawnAndWaitReady(
                                                 {SLUICE_SERVICEMANAGER_BIN, "--socket=" + socket,
                                                  "--log_level=error"}));
    manager_.emplace(std::move(manager));
    ASSERT_OK_AND_ASSIGN(
        Subprocess server,
        Subprocess::SpawnAndWaitReady({SLUICE_RPC_TEST_PEER, "publish", socket,
                                       absl::StrCat(max_threads), absl::StrCat(thread_cap)}));
    server_.emplace(std::move(server));
    ASSERT_OK_AND_ASSIGN(sm_, ServiceManager::Connect({.socket_path = socket}));
  }

  std::vector<PainterConnection> ConnectMany(int n) {
    std::vector<PainterConnection> connections;
    for (int i = 0; i < n; ++i) {
      absl::StatusOr<PainterConnection> connection = Connect<sink::PainterProxy>(*sm_);
      EXPECT_OK(connection.status());
      if (connection.ok()) connections.push_back(*std::move(connection));
    }
    return connections;
  }

  std::string dir_;
  std::optional<Subprocess> manager_;
  std::optional<Subprocess> server_;
  std::unique_ptr<ServiceManager> sm_;
};

// Nobody passes a schema by hand: Publish registers the generated stub's,
// so the service can be described, and Connect<Proxy> sends the proxy's, so
// a proxy of another interface is refused at connect, not at its first call.
TEST_F(ServingTest, ThePublishedStubsSchemaGoesWithItsNameAndAProxySendsItsOwn) {
  ASSERT_NO_FATAL_FAILURE(Start(/*max_threads=*/1, /*thread_cap=*/2));
  ASSERT_OK_AND_ASSIGN(ServiceDescription described, sm_->Describe(sink::PainterInterface::kName));
  EXPECT_EQ(described.interface, sink::PainterInterface::kName);
  EXPECT_EQ(described.schema_hash, sink::PainterInterface::kSchema.structural_hash);
  EXPECT_EQ(described.schema.size(), sink::PainterInterface::kSchema.binary.size());
  EXPECT_THAT(Connect<sink::CalculatorProxy>(*sm_, sink::PainterInterface::kName).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::AllOf(::testing::HasSubstr("serves sluice.test.sink.Painter"),
                                        ::testing::HasSubstr("not sluice.test.sink.Calculator"))));
  ASSERT_OK_AND_ASSIGN(PainterConnection painter, Connect<sink::PainterProxy>(*sm_));
  EXPECT_OK(painter->Total(Within(absl::Seconds(10))));
}

// Regression: four handlers that did not return blocked every other client
// of a four-thread server (DEADLINE_EXCEEDED after 2 s).
TEST_F(ServingTest, BusyHandlersDoNotStarveOtherClients) {
  ASSERT_NO_FATAL_FAILURE(Start(/*max_threads=*/4, /*thread_cap=*/16));
  constexpr int kSlow = 6;
  std::vector<PainterConnection> slow = ConnectMany(kSlow);
  ASSERT_EQ(slow.size(), static_cast<size_t>(kSlow));
  ASSERT_OK_AND_ASSIGN(PainterConnection fast, Connect<sink::PainterProxy>(*sm_));
  std::atomic<int> slow_done{0};
  std::vector<std::thread> sleepers;
  for (PainterConnection& connection : slow) {
    sleepers.emplace_back([&] {
      EXPECT_OK(connection->Sleep(5000));
      ++slow_done;
    });
  }
  // Each Sleep holds a server thread once it arrives; let them all arrive.
  absl::SleepFor(absl::Milliseconds(200));
  for (int i = 0; i < 10; ++i) {
    ASSERT_OK(fast->Total(Within(absl::Seconds(2)))) << "call " << i;
  }
  EXPECT_EQ(slow_done.load(), 0) << "the fast client was served only after the slow calls";
  for (std::thread& sleeper : sleepers) sleeper.join();
  EXPECT_EQ(slow_done.load(), kSlow);
}

TEST_F(ServingTest, NeverRunsMoreThreadsThanItsCap) {
  ASSERT_NO_FATAL_FAILURE(Start(/*max_threads=*/1, /*thread_cap=*/2));
  std::vector<PainterConnection> connections = ConnectMany(4);
  ASSERT_EQ(connections.size(), 4u);
  // One serving thread so far (and the pool's watchdog).
  const int before = CountThreads(server_->pid());
  std::atomic<bool> done{false};
  int most = before;
  std::thread watch([&] {
    while (!done.load()) {
      most = std::max(most, CountThreads(server_->pid()));
      absl::SleepFor(absl::Milliseconds(2));
    }
  });
  std::vector<std::thread> callers;
  for (PainterConnection& connection : connections) {
    callers.emplace_back([&] { EXPECT_OK(connection->Sleep(300)); });
  }
  for (std::thread& caller : callers) caller.join();
  done = true;
  watch.join();
  EXPECT_GT(most, before) << "the pool never grew past max_threads while every thread was busy";
  EXPECT_LE(most, before + 1) << "the pool ran more threads than its cap of 2";
}

// Regression: calls that never came back held every slot while health()
// still read OK.
TEST_F(ServingTest, SlotsHeldByAbandonedCallsShowInHealthAndStats) {
  ASSERT_NO_FATAL_FAILURE(Start(/*max_threads=*/2, /*thread_cap=*/64));
  ASSERT_OK_AND_ASSIGN(PainterConnection painter, Connect<sink::PainterProxy>(*sm_));
  ClientChannel& channel = painter.channel();
  const uint32_t slots = channel.slot_count();
  for (uint32_t i = 0; i < slots; ++i) {
    EXPECT_THAT(painter->Sleep(8000, Within(absl::Milliseconds(20))).status(),
                StatusIs(absl::StatusCode::kDeadlineExceeded));
  }
  EXPECT_EQ(channel.stats().abandoned, slots);
  EXPECT_THAT(channel.health(), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(painter->Total(Within(absl::Milliseconds(20))),
              StatusIs(absl::StatusCode::kDeadlineExceeded, ::testing::HasSubstr("abandoned")));
  // Once the server answers them the channel goes on as before.
  EXPECT_OK(painter->Total(Within(absl::Seconds(60))));
  EXPECT_OK(channel.health());
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (channel.stats().abandoned != 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(channel.stats().abandoned, 0u);
}

}  // namespace
}  // namespace sluice::testing
