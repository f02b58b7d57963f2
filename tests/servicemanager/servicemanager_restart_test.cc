// The service manager killed (SIGKILL) again and again, at random moments,
// under continuous traffic from several client processes to several server
// processes (two echo helpers, and kv_server publishing through a
// ServiceHost). What must hold across every restart:
//
//   - no call on an existing connection fails (channels never go through
//     the manager);
//   - every name is back within 1 s of the new manager being ready (each
//     server's ServiceManager reconnects and replays its registrations);
//   - new look-ups and WaitFors work, and a WaitFor pending across the
//     restart still returns when its name appears; a subscription carries
//     on;
//   - no descriptor growth in servers or clients.
//
// SLUICE_RESTART_KILLS sets the number of kills (default 10, for CI; run
// with 100 by hand).
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/service/service_manager.h"
#include "tests/servicemanager/echo.h"
#include "tests/servicemanager/test_util.h"
#include "tests/testing/status_matchers.h"

namespace sluice {
namespace {

using ::sluice::testing::CountFdsOf;
using ::sluice::testing::EchoCall;
using ::sluice::testing::ReportPipe;
using ::sluice::testing::SpawnDaemon;
using ::sluice::testing::Subprocess;
using ::sluice::testing::TempDir;

int Kills() {
  int kills = 10;
  if (const char* env = std::getenv("SLUICE_RESTART_KILLS")) (void)absl::SimpleAtoi(env, &kills);
  return kills;
}

// Waits (bounded) until `count()` equals `want`; returns the last count.
template <typename Count>
int SettlesAt(Count count, int want) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  int now = count();
  while (now != want && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
    now = count();
  }
  return now;
}

class ManagerRestartTest : public ::testing::Test {
 protected:
  absl::StatusOr<std::unique_ptr<ServiceManager>> Connect() {
    ServiceManagerOptions options;
    options.socket_path = socket_;
    return ServiceManager::Connect(options);
  }
  // A helper process whose first report line must be "ready".
  absl::StatusOr<Subprocess> Start(std::vector<std::string> argv, ReportPipe& report) {
    auto process = Subprocess::Spawn(argv, {report.write.get()});
    report.write.reset();
    if (!process.ok()) return process.status();
    auto line = report.ReadLine();
    if (!line.ok() || *line != "ready") {
      return absl::InternalError(
          absl::StrCat(argv[0], " not ready: ", line.ok() ? *line : line.status().ToString()));
    }
    return process;
  }

  TempDir dir_;
  std::string socket_ = dir_.File("sm.sock");
};

TEST_F(ManagerRestartTest, ManagerKilledRepeatedlyUnderTrafficLosesNothing) {
  const int kills = Kills();
  ASSERT_OK_AND_ASSIGN(Subprocess daemon, SpawnDaemon(socket_));

  const std::vector<std::string> echo_names = {"rs.echo0", "rs.echo1"};
  const std::vector<std::string> all_names = {"rs.echo0", "rs.echo1", "rs.kv"};
  std::vector<ReportPipe> server_reports;
  std::vector<Subprocess> servers;
  for (const std::string& name : echo_names) {
    server_reports.push_back(ReportPipe::Create());
    ASSERT_OK_AND_ASSIGN(auto server, Start({SLUICE_SM_TEST_HELPER_BIN, socket_, "serve", name},
                                            server_reports.back()));
    servers.push_back(std::move(server));
  }
  ASSERT_OK_AND_ASSIGN(auto kv, Subprocess::SpawnAndWaitReady(
                                    {SLUICE_KV_SERVER_BIN, "--socket=" + socket_, "--name=rs.kv"}));

  constexpr int kClients = 3;
  std::vector<ReportPipe> client_reports;
  std::vector<Subprocess> clients;
  for (int i = 0; i < kClients; ++i) {
    client_reports.push_back(ReportPipe::Create());
    ASSERT_OK_AND_ASSIGN(auto client,
                         Start({SLUICE_SM_TEST_HELPER_BIN, socket_, "traffic", "rs.echo0,rs.echo1"},
                               client_reports.back()));
    clients.push_back(std::move(client));
  }

  // This process: a subscriber that must keep hearing about names, and a
  // server for names that pending WaitFors wait for.
  // The subscriber's view of "rs." names, kept from events alone.
  absl::Mutex view_mu;
  std::set<std::string> view;
  ASSERT_OK_AND_ASSIGN(auto watcher, Connect());
  ASSERT_OK(watcher
                ->Subscribe("rs.",
                            [&](const NameEvent& e) {
                              absl::MutexLock lock(&view_mu);
                              if (e.change == NameChange::kAppeared) {
                                view.insert(e.name);
                              } else {
                                view.erase(e.name);
                              }
                            })
                .status());
  ASSERT_OK_AND_ASSIGN(auto late_server, Connect());

  std::vector<int> server_fds, client_fds;
  for (auto& s : servers) server_fds.push_back(CountFdsOf(s.pid()));
  const int kv_fds = CountFdsOf(kv.pid());
  for (auto& c : clients) client_fds.push_back(CountFdsOf(c.pid()));

  const unsigned seed = std::random_device{}();
  std::printf("seed %u, %d kills\n", seed, kills);
  std::mt19937 rng(seed);
  absl::Duration slowest = absl::ZeroDuration();
  int probes_of_echo = 0;
  for (int k = 0; k < kills; ++k) {
    SCOPED_TRACE(absl::StrCat("kill ", k));
    const std::string late = absl::StrCat("rs.late", k);
    absl::Status waited = absl::UnknownError("not run");
    // A jthread: an ASSERT that ends the test early still joins it (a
    // joinable std::thread would terminate the process, and the run would
    // show a timeout instead of the failure).
    std::jthread waiter([&] { waited = watcher->WaitFor(late, absl::Seconds(20)); });
    // A random moment: traffic keeps flowing meanwhile.
    absl::SleepFor(absl::Microseconds(rng() % 30000));
    ASSERT_OK(daemon.Kill(SIGKILL));
    (void)daemon.Wait(absl::Seconds(10));
    ASSERT_OK_AND_ASSIGN(daemon, SpawnDaemon(socket_));
    const absl::Time ready = absl::Now();

    ASSERT_OK_AND_ASSIGN(auto probe, Connect());
    for (const std::string& name : all_names) {
      EXPECT_OK(probe->WaitFor(name, absl::Seconds(1))) << name;
    }
    slowest = std::max(slowest, absl::Now() - ready);
    for (const std::string& name : echo_names) {
      ASSERT_OK_AND_ASSIGN(ServiceConnection connection, probe->Lookup(name));
      EXPECT_EQ(EchoCall(*connection.channel, "new").value_or(""), "new");
      ++probes_of_echo;
    }
    EXPECT_OK(probe->Lookup("rs.kv").status());

    // The late server's own ServiceManager may still be reconnecting.
    absl::Status registered;
    for (int attempt = 0; attempt < 200; ++attempt) {
      registered = late_server->Register(late, [](IncomingConnection) {});
      if (!absl::IsUnavailable(registered)) break;
      absl::SleepFor(absl::Milliseconds(10));
    }
    EXPECT_OK(registered);
    waiter.join();
    EXPECT_OK(waited) << "a WaitFor pending across the restart";
    ASSERT_OK(late_server->Unregister(late));
  }
  std::printf("names back at most %.1f ms after the new manager was ready\n",
              absl::ToDoubleMilliseconds(slowest));

  // The subscription carried on: its view matches the last manager's.
  {
    absl::MutexLock lock(&view_mu);
    auto settled = [&] {
      return view == std::set<std::string>(all_names.begin(), all_names.end());
    };
    EXPECT_TRUE(view_mu.AwaitWithTimeout(absl::Condition(&settled), absl::Seconds(10)))
        << absl::StrJoin(view, ",");
  }
  EXPECT_GE(watcher->manager_restarts(), static_cast<uint64_t>(kills));

  // The probes' channels die with them; the echo servers report each.
  int dead = 0;
  for (auto& report : server_reports) {
    for (;;) {
      if (dead == probes_of_echo) break;
      auto line = report.ReadLine(absl::Milliseconds(200));
      if (!line.ok()) break;
      if (absl::StartsWith(*line, "channel-dead")) ++dead;
    }
  }
  EXPECT_EQ(dead, probes_of_echo);
  for (size_t i = 0; i < servers.size(); ++i) {
    EXPECT_EQ(SettlesAt([&] { return CountFdsOf(servers[i].pid()); }, server_fds[i]), server_fds[i])
        << "server " << i;
  }
  EXPECT_EQ(SettlesAt([&] { return CountFdsOf(kv.pid()); }, kv_fds), kv_fds);
  for (size_t i = 0; i < clients.size(); ++i) {
    EXPECT_EQ(SettlesAt([&] { return CountFdsOf(clients[i].pid()); }, client_fds[i]), client_fds[i])
        << "client " << i;
  }

  uint64_t total_calls = 0;
  for (int i = 0; i < kClients; ++i) {
    ASSERT_OK(clients[i].Kill(SIGTERM));
    ASSERT_OK_AND_ASSIGN(std::string line, client_reports[i].ReadLine());
    uint64_t calls = 0, failed = 0;
    ASSERT_EQ(std::sscanf(line.c_str(), "calls %lu failed %lu", &calls, &failed), 2) << line;
    EXPECT_EQ(failed, 0u) << "client " << i;
    EXPECT_GT(calls, 0u);
    total_calls += calls;
  }
  std::printf("%lu calls on existing connections across %d kills\n", total_calls, kills);
  ASSERT_OK(daemon.Kill(SIGTERM));
}

}  // namespace
}  // namespace sluice
