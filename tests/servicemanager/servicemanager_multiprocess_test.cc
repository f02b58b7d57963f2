// Service manager scenarios across real processes: the sluice-servicemanager
// binary, sm_test_helper servers and clients (some under another uid), this
// test process, and sluicectl.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/base/errors.h"
#include "ipc/base/mutex.h"
#include "ipc/base/notification.h"
#include "ipc/service/service_manager.h"
#include "tests/servicemanager/echo.h"
#include "tests/servicemanager/test_util.h"
#include "tests/testing/status_matchers.h"

namespace sluice {
namespace {

using ::sluice::testing::EchoCall;
using ::sluice::testing::EchoServer;
using ::sluice::testing::InProcessDaemon;
using ::sluice::testing::ReportPipe;
using ::sluice::testing::SpawnDaemon;
using ::sluice::testing::StatusIs;
using ::sluice::testing::Subprocess;
using ::sluice::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uid_t kOtherUid = 65534;  // nobody

channel_layout::Geometry SmallGeometry() {
  channel_layout::Geometry g;
  g.slot_count = 4;
  g.request_arena_size = 64 * 1024;
  g.reply_arena_size = 64 * 1024;
  return g;
}

// Starts sm_test_helper on `socket` with `args`, its report pipe on fd 3;
// with `wait_ready`, returns once it has reported "ready" (a server).
absl::StatusOr<Subprocess> StartHelper(const std::string& socket,
                                       const std::vector<std::string>& args, ReportPipe& report,
                                       bool wait_ready) {
  std::vector<std::string> argv = {SLUICE_SM_TEST_HELPER_BIN, socket};
  argv.insert(argv.end(), args.begin(), args.end());
  auto process = Subprocess::Spawn(argv, {report.write.get()});
  report.write.reset();
  if (!process.ok() || !wait_ready) return process;
  auto line = report.ReadLine();
  if (!line.ok() || *line != "ready") {
    return absl::InternalError(
        absl::StrCat("server helper not ready: ", line.ok() ? *line : line.status().ToString()));
  }
  return process;
}

int ExitCodeOf(Subprocess& process) {
  auto status = process.Wait(absl::Seconds(30));
  if (!status.ok() || !WIFEXITED(*status)) return -1;
  return WEXITSTATUS(*status);
}

class MultiProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto daemon = SpawnDaemon(socket_);
    ASSERT_OK(daemon.status());
    daemon_ = *std::move(daemon);
  }
  void TearDown() override {
    // A clean stop, so the daemon's own exit path (and, in sanitizer builds,
    // LeakSanitizer) is checked after every scenario.
    if (!daemon_.has_value() || daemon_->pid() <= 0) return;
    ASSERT_OK(daemon_->Kill(SIGTERM));
    auto status = daemon_->Wait(absl::Seconds(30));
    ASSERT_OK(status.status());
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
        << "daemon wait status " << *status;
  }
  absl::StatusOr<std::unique_ptr<ServiceManager>> Connect() {
    ServiceManagerOptions options;
    options.socket_path = socket_;
    return ServiceManager::Connect(options);
  }
  absl::StatusOr<Subprocess> Helper(std::vector<std::string> args, ReportPipe& report) {
    return StartHelper(socket_, args, report, /*wait_ready=*/false);
  }
  absl::StatusOr<Subprocess> Server(const std::string& name, ReportPipe& report,
                                    const std::string& mode = "echo") {
    return StartHelper(socket_, {"serve", name, mode}, report, /*wait_ready=*/true);
  }

  TempDir dir_;
  std::string socket_ = dir_.File("sm.sock");
  std::optional<Subprocess> daemon_;
};

TEST_F(MultiProcessTest, RegisterLookupListWaitAcrossProcesses) {
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  absl::Status waited;
  std::thread waiter([&] { waited = client->WaitFor("mp.echo", absl::Seconds(30)); });
  ReportPipe report = ReportPipe::Create();
  ASSERT_OK_AND_ASSIGN(Subprocess server, Server("mp.echo", report));
  waiter.join();
  EXPECT_OK(waited);

  ASSERT_OK_AND_ASSIGN(ServiceConnection connection, client->Lookup("mp.echo"));
  EXPECT_EQ(connection.server.pid, server.pid());
  ASSERT_OK_AND_ASSIGN(std::string reply, EchoCall(*connection.channel, "across processes"));
  EXPECT_EQ(reply, "across processes");

  ASSERT_OK_AND_ASSIGN(auto list, client->List());
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].name, "mp.echo");
  EXPECT_EQ(list[0].owner.pid, server.pid());

  ReportPipe second_report = ReportPipe::Create();
  ASSERT_OK_AND_ASSIGN(Subprocess second, Helper({"serve", "mp.echo"}, second_report));
  EXPECT_EQ(second_report.ReadLine().value_or(""),
            absl::StrCat("error ", static_cast<int>(absl::StatusCode::kAlreadyExists)));
  EXPECT_EQ(ExitCodeOf(second), static_cast<int>(absl::StatusCode::kAlreadyExists));
}

// Regression: one datagram (Hello, then a request kind with no body) killed
// the real daemon with SIGSEGV. Now each closes only its own connection; the
// daemon keeps serving and, at TearDown, still stops cleanly with exit 0.
TEST_F(MultiProcessTest, RequestsWithoutABodyNeverStopTheDaemon) {
  ReportPipe report = ReportPipe::Create();
  ASSERT_OK_AND_ASSIGN(Subprocess server, Server("mp.echo", report));
  for (servicemanager::wire::Body kind : testing::kRequestKinds) {
    UniqueFd fd = testing::RawConnect(socket_);
    ASSERT_TRUE(fd.valid());
    ASSERT_OK(SendMessage(fd.get(), testing::HelloBytes(1)));
    ASSERT_OK(ReceiveMessage(fd.get(), 4096).status());
    ASSERT_OK(SendMessage(fd.get(), testing::RequestWithoutBody(kind, 2)));
    EXPECT_TRUE(testing::HungUp(fd.get())) << servicemanager::wire::EnumNameBody(kind);
  }
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  ASSERT_OK_AND_ASSIGN(ServiceConnection connection, client->Lookup("mp.echo"));
  EXPECT_EQ(EchoCall(*connection.channel, "alive").value_or(""), "alive");
}

TEST_F(MultiProcessTest, NameIsFreedWhenOwnerIsKilledAndANewServerTakesIt) {
  // Declared before the client, whose reader thread runs the handler.
  Notification disappeared;
  std::atomic<int> disappearances{0};
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  ASSERT_OK(client
                ->Subscribe("mp.",
                            [&](const NameEvent& e) {
                              if (e.change == NameChange::kDisappeared && e.name == "mp.echo" &&
                                  disappearances.fetch_add(1) == 0) {
                                disappeared.Notify();
                              }
                            })
                .status());
  ReportPipe report = ReportPipe::Create();
  ASSERT_OK_AND_ASSIGN(Subprocess server, Server("mp.echo", report));
  ASSERT_OK_AND_ASSIGN(ServiceConnection connection, client->Lookup("mp.echo"));
  ASSERT_OK(server.Kill(SIGKILL));
  ASSERT_TRUE(disappeared.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_THAT(client->Lookup("mp.echo"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_TRUE(IsPeerDead(EchoCall(*connection.channel, "x").status()));

  ReportPipe report2 = ReportPipe::Create();
  ASSERT_OK_AND_ASSIGN(Subprocess server2, Server("mp.echo", report2));
  ASSERT_OK_AND_ASSIGN(ServiceConnection connection2, client->Lookup("mp.echo"));
  EXPECT_EQ(connection2.server.pid, server2.pid());
  EXPECT_EQ(EchoCall(*connection2.channel, "again").value_or(""), "again");
}

// Name events as a subscriber saw them, in order: "=NAME" for a name that
// was there when the subscription was made (kAppeared, existing), "+NAME"
// for one that appeared since, "-NAME" for one that went.
class NameLog {
 public:
  NameEventHandler Handler() {
    return [this](const NameEvent& e) {
      MutexLock lock(&mu_);
      const char* sign = e.change == NameChange::kDisappeared ? "-" : (e.existing ? "=" : "+");
      events_.push_back(absl::StrCat(sign, e.name));
      owners_[e.name] = e.owner.pid;
    };
  }
  std::vector<std::string> events() {
    MutexLock lock(&mu_);
    return events_;
  }
  pid_t owner(const std::string& name) {
    MutexLock lock(&mu_);
    return owners_[name];
  }
  // Waits (bounded) until `done(events)` holds.
  bool Await(const std::function<bool(const std::vector<std::string>&)>& done) {
    const absl::Time give_up = absl::Now() + absl::Seconds(20);
    while (!done(events()) && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(2));
    return done(events());
  }

 private:
  Mutex mu_;
  std::vector<std::string> events_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, pid_t> owners_ ABSL_GUARDED_BY(mu_);
};

// The names a log leaves present, or an error naming the first event that
// contradicts what came before (a name appearing twice, or going while
// absent).
absl::StatusOr<std::set<std::string>> PresentNames(const std::vector<std::string>& events) {
  std::set<std::string> present;
  for (const std::string& event : events) {
    const std::string name = event.substr(1);
    const bool known = present.contains(name);
    if (event[0] == '-' ? !known : known) {
      return absl::InternalError(
          absl::StrCat("inconsistent event ", event, " in ", absl::StrJoin(events, " ")));
    }
    if (event[0] == '-') {
      present.erase(name);
    } else {
      present.insert(name);
    }
  }
  return present;
}

TEST_F(MultiProcessTest, SubscriptionIsToldTheNamesAlreadyThereBeforeSubscribeReturns) {
  NameLog log;  // Outlives the client, whose reader thread runs the handler.
  ReportPipe report_a = ReportPipe::Create(), report_b = ReportPipe::Create(),
             report_other = ReportPipe::Create(), report_c = ReportPipe::Create();
  ASSERT_OK_AND_ASSIGN(Subprocess a, Server("mp.snap.a", report_a));
  ASSERT_OK_AND_ASSIGN(Subprocess b, Server("mp.snap.b", report_b));
  ASSERT_OK_AND_ASSIGN(Subprocess other, Server("mp.other", report_other));
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  ASSERT_OK(client->Subscribe("mp.snap.", log.Handler()).status());
  // No waiting: the snapshot is complete once Subscribe has returned.
  EXPECT_THAT(log.events(), ElementsAre("=mp.snap.a", "=mp.snap.b"));
  EXPECT_EQ(log.owner("mp.snap.a"), a.pid());
  EXPECT_EQ(log.owner("mp.snap.b"), b.pid());

  ASSERT_OK_AND_ASSIGN(Subprocess c, Server("mp.snap.c", report_c));
  ASSERT_OK(b.Kill(SIGKILL));
  ASSERT_TRUE(log.Await([](const auto& e) { return e.size() >= 4; }));
  EXPECT_THAT(log.events(), ElementsAre("=mp.snap.a", "=mp.snap.b", "+mp.snap.c", "-mp.snap.b"));
}

// After a manager restart a subscriber is told that each name went (with
// the manager that held it) and is told again, once, of each name the new
// manager has; its view never holds a name twice or loses one it was told
// of, and ends equal to what is registered.
TEST_F(MultiProcessTest, AfterAManagerRestartASubscriberSeesEachNameGoAndComeBackOnce) {
  NameLog log;
  ReportPipe report_a = ReportPipe::Create(), report_b = ReportPipe::Create();
  ASSERT_OK_AND_ASSIGN(Subprocess a, Server("mp.snap.a", report_a));
  ASSERT_OK_AND_ASSIGN(Subprocess b, Server("mp.snap.b", report_b));
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  ASSERT_OK(client->Subscribe("mp.snap.", log.Handler()).status());
  ASSERT_THAT(log.events(), ElementsAre("=mp.snap.a", "=mp.snap.b"));

  ASSERT_OK(daemon_->Kill(SIGKILL));
  ASSERT_OK(daemon_->Wait(absl::Seconds(30)).status());
  ASSERT_OK_AND_ASSIGN(daemon_, SpawnDaemon(socket_));
  const std::set<std::string> both = {"mp.snap.a", "mp.snap.b"};
  ASSERT_TRUE(log.Await([&](const std::vector<std::string>& events) {
    auto present = PresentNames(events);
    return events.size() >= 6 && present.ok() && *present == both;
  })) << absl::StrJoin(log.events(), " ");
  const std::vector<std::string> events = log.events();
  ASSERT_OK_AND_ASSIGN(std::set<std::string> present, PresentNames(events));
  EXPECT_EQ(present, both);
  EXPECT_THAT(events, ::testing::SizeIs(6)) << absl::StrJoin(events, " ");
  ASSERT_OK_AND_ASSIGN(auto list, client->List("mp.snap."));
  EXPECT_EQ(list.size(), 2u);
}

TEST_F(MultiProcessTest, BlockedCallerGetsPeerDeadWhenServerIsKilled) {
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  ReportPipe report = ReportPipe::Create();
  ASSERT_OK_AND_ASSIGN(Subprocess server, Server("mp.hang", report, "hang"));
  ASSERT_OK_AND_ASSIGN(ServiceConnection connection, client->Lookup("mp.hang"));
  absl::Time killed_at;
  Notification killed;
  std::thread killer([&] {
    absl::SleepFor(absl::Milliseconds(200));  // Let the call block first.
    killed_at = absl::Now();
    ASSERT_OK(server.Kill(SIGKILL));
    killed.Notify();
  });
  absl::StatusOr<std::string> result = EchoCall(*connection.channel, "never answered");
  const absl::Time returned_at = absl::Now();
  killer.join();
  EXPECT_TRUE(IsPeerDead(result.status())) << result.status();
  const absl::Duration detection = returned_at - killed_at;
  std::printf("peer-dead detection after SIGKILL of the server: %.3f ms\n",
              absl::ToDoubleMilliseconds(detection));
  EXPECT_LT(detection, absl::Seconds(2));
}

TEST_F(MultiProcessTest, ServerLearnsOfClientDeath) {
  Notification client_gone, channel_dead;
  absl::Time gone_at, dead_at;
  ASSERT_OK_AND_ASSIGN(auto server, Connect());
  std::unique_ptr<ServerChannel> channel;
  Notification connected;
  RegisterOptions options;
  options.geometry = SmallGeometry();
  options.on_client_gone = [&](absl::string_view, uint64_t, const PeerCredentials&) {
    gone_at = absl::Now();
    client_gone.Notify();
  };
  ASSERT_OK(server->Register(
      "mp.watch",
      [&](IncomingConnection c) {
        channel = std::move(c.channel);
        connected.Notify();
      },
      std::move(options)));
  ReportPipe report = ReportPipe::Create();
  ASSERT_OK_AND_ASSIGN(Subprocess client, Helper({"hold", "mp.watch"}, report));
  ASSERT_TRUE(absl::StartsWith(report.ReadLine().value_or(""), "connected"));
  ASSERT_TRUE(connected.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(channel->peer().pid, client.pid());

  std::thread receiver([&] {
    auto call = channel->Receive(absl::Now() + absl::Seconds(10));
    EXPECT_TRUE(IsPeerDead(call.status())) << call.status();
    dead_at = absl::Now();
    channel_dead.Notify();
  });
  const absl::Time killed_at = absl::Now();
  ASSERT_OK(client.Kill(SIGKILL));
  ASSERT_TRUE(client_gone.WaitForNotificationWithTimeout(absl::Seconds(2)));
  ASSERT_TRUE(channel_dead.WaitForNotificationWithTimeout(absl::Seconds(2)));
  receiver.join();
  std::printf("client death seen by the server: channel %.3f ms, manager event %.3f ms\n",
              absl::ToDoubleMilliseconds(dead_at - killed_at),
              absl::ToDoubleMilliseconds(gone_at - killed_at));
}

TEST_F(MultiProcessTest, TenThousandConnectLookupDisconnectCyclesLeakNothing) {
  ASSERT_OK_AND_ASSIGN(auto server, Connect());
  std::atomic<int> served{0};
  RegisterOptions options;
  options.geometry = SmallGeometry();
  // Dropping each channel at once is the server's way of "releasing" it.
  ASSERT_OK(server->Register(
      "mp.cycle", [&](IncomingConnection) { served.fetch_add(1); }, std::move(options)));
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  ServiceManagerOptions client_options;
  client_options.socket_path = socket_;
  client_options.watcher = watcher.get();
  auto cycle = [&] {
    auto client = ServiceManager::Connect(client_options);
    ASSERT_OK(client.status());
    ASSERT_OK((*client)->Lookup("mp.cycle").status());
  };
  for (int i = 0; i < 200; ++i) cycle();  // Warm up allocator and tables.
  const pid_t pid = daemon_->pid();
  // The daemon handles a client's hang-up shortly after the client returns.
  // A probe's round trips order us after hang-ups that were already queued
  // (epoll reports readiness in order); the count excludes the probe itself.
  auto settled_fds = [&] {
    auto probe = Connect();
    EXPECT_OK(probe.status());
    if (probe.ok()) {
      EXPECT_OK((*probe)->List().status());
    }
    return ::sluice::testing::CountFdsOf(pid) - 1;
  };
  const int fds_before = settled_fds();
  const int64_t rss_before = ::sluice::testing::RssKibOf(pid);
  const absl::Time start = absl::Now();
  for (int i = 0; i < 10000; ++i) {
    cycle();
    if (HasFatalFailure()) return;
  }
  const absl::Duration took = absl::Now() - start;
  const int fds_after = settled_fds();
  const int64_t rss_after = ::sluice::testing::RssKibOf(pid);
  std::printf("10000 cycles in %.2f s; manager fds %d -> %d, RSS %lld -> %lld KiB\n",
              absl::ToDoubleSeconds(took), fds_before, fds_after,
              static_cast<long long>(rss_before), static_cast<long long>(rss_after));
  EXPECT_EQ(fds_after, fds_before);
#if defined(__SANITIZE_ADDRESS__)
  // ASan's quarantine holds freed memory back on purpose, so RSS says
  // nothing here; LeakSanitizer checks the daemon at its clean exit instead
  // (TearDown stops it with SIGTERM and expects exit 0).
  (void)rss_after;
#else
  // Allocator caches may keep a little; a leak of even 100 bytes per cycle
  // would show as ~1 MiB.
  EXPECT_LE(rss_after, rss_before + 512);
#endif
  // The churn of others never costs the server its registration.
  EXPECT_OK(server->health());
  ASSERT_OK_AND_ASSIGN(auto names, server->List("mp.cycle"));
  ASSERT_EQ(names.size(), 1u);
  EXPECT_EQ(names[0].owner.pid, ::getpid());
}

// Regression: with its descriptors exhausted, a server's reader thread took
// the truncated NewConnectionEvent for the manager going away and stopped;
// every later client got a channel nobody served. Now that one connection is
// refused (the client's Lookup says why) and the server serves the rest.
TEST_F(MultiProcessTest, ServerOutOfDescriptorsRefusesThatConnectionAndKeepsServing) {
  ReportPipe report = ReportPipe::Create();
  ASSERT_OK_AND_ASSIGN(auto process, Helper({"--spare_fds=8", "serve", "mp.fd", "echo"}, report));
  ASSERT_EQ(report.ReadLine().value_or(""), "ready");
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  std::vector<ServiceConnection> held;
  absl::Status refused;
  for (int i = 0; i < 64 && refused.ok(); ++i) {
    auto connection = client->Lookup("mp.fd");
    if (!connection.ok()) {
      refused = connection.status();
      break;
    }
    ASSERT_OK(EchoCall(*connection->channel, "served").status());
    held.push_back(*std::move(connection));
  }
  EXPECT_FALSE(held.empty());
  std::printf("refused after %zu connections: %s\n", held.size(), refused.ToString().c_str());
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kResourceExhausted,
                                ::testing::AllOf(HasSubstr("mp.fd"), HasSubstr("descriptors"))));
  // Hanging up frees the server's descriptors; it serves new clients again.
  const size_t count = held.size();
  held.clear();
  for (size_t i = 0; i < count; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string line, report.ReadLine());
    EXPECT_TRUE(absl::StartsWith(line, "channel-dead")) << line;
  }
  ASSERT_OK_AND_ASSIGN(ServiceConnection again, client->Lookup("mp.fd"));
  EXPECT_EQ(EchoCall(*again.channel, "again").value_or(""), "again");
  ASSERT_OK_AND_ASSIGN(auto names, client->List("mp.fd"));
  EXPECT_EQ(names.size(), 1u);
  ASSERT_OK(process.Kill(SIGKILL));
  (void)process.Wait(absl::Seconds(10));
}

// Regression: a Lookup right after a server was killed could return a channel
// to it (the manager had not yet seen the hang-up). The manager now answers
// only once the server has acknowledged the connection, which a killed
// process never does.
TEST_F(MultiProcessTest, LookupRightAfterServerIsKilledNeverReturnsAChannel) {
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  for (int i = 0; i < 20; ++i) {
    ReportPipe report = ReportPipe::Create();
    ASSERT_OK_AND_ASSIGN(Subprocess server, Server("mp.doomed", report));
    ASSERT_OK(client->Lookup("mp.doomed").status());
    ASSERT_OK(server.Kill(SIGKILL));
    auto connection = client->Lookup("mp.doomed");
    EXPECT_TRUE(absl::IsUnavailable(connection.status()) || absl::IsNotFound(connection.status()))
        << "attempt " << i << ": " << connection.status();
    (void)server.Wait(absl::Seconds(10));
    ASSERT_OK(client->health());
  }
}

TEST_F(MultiProcessTest, RepeatedCrashesOfServersAndClientsLeakNothing) {
  const pid_t pid = daemon_->pid();
  auto settled_fds = [&] {
    auto probe = Connect();
    EXPECT_OK(probe.status());
    if (probe.ok()) {
      EXPECT_OK((*probe)->List().status());
    }
    return ::sluice::testing::CountFdsOf(pid) - 1;
  };
  const int fds_before = settled_fds();
  for (int round = 0; round < 20; ++round) {
    const std::string name = absl::StrCat("mp.crash.", round);
    ReportPipe server_report = ReportPipe::Create();
    ASSERT_OK_AND_ASSIGN(Subprocess server, Server(name, server_report));
    ReportPipe client_report = ReportPipe::Create();
    ASSERT_OK_AND_ASSIGN(Subprocess client, Helper({"hold", name}, client_report));
    ASSERT_TRUE(absl::StartsWith(client_report.ReadLine().value_or(""), "connected"));
    // Alternate who dies first; the survivor must hear of it either way.
    Subprocess& first = round % 2 == 0 ? server : client;
    Subprocess& second = round % 2 == 0 ? client : server;
    ASSERT_OK(first.Kill(SIGKILL));
    ASSERT_OK(first.Wait().status());
    if (round % 2 == 1) {
      // Two independent paths, in either order: the channel's liveness
      // socket and the manager's client-gone event.
      std::string lines =
          server_report.ReadLine().value_or("") + " " + server_report.ReadLine().value_or("");
      EXPECT_THAT(lines, HasSubstr("channel-dead"));
      EXPECT_THAT(lines, HasSubstr("client-gone"));
    }
    ASSERT_OK(second.Kill(SIGKILL));
    ASSERT_OK(second.Wait().status());
  }
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  // Every crashed server's name is gone; each List waits on hang-ups queued before it.
  ASSERT_OK_AND_ASSIGN(auto names, client->List("mp.crash."));
  EXPECT_TRUE(names.empty()) << names.size() << " names survived their owners";
  client.reset();
  EXPECT_EQ(settled_fds(), fds_before);
}

TEST_F(MultiProcessTest, ThousandIdleConnectionsToTheBinaryLeaveNoTrace) {
  const pid_t pid = daemon_->pid();
  ASSERT_OK_AND_ASSIGN(auto probe, Connect());
  ASSERT_OK(probe->List().status());
  const int fds_before = ::sluice::testing::CountFdsOf(pid);
  const int64_t rss_before = ::sluice::testing::RssKibOf(pid);
  std::vector<std::unique_ptr<ServiceManager>> idle;
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  ServiceManagerOptions options;
  options.socket_path = socket_;
  options.watcher = watcher.get();
  for (int i = 0; i < 1000; ++i) {
    ASSERT_OK_AND_ASSIGN(auto c, ServiceManager::Connect(options));
    idle.push_back(std::move(c));
  }
  EXPECT_EQ(::sluice::testing::CountFdsOf(pid), fds_before + 1000);
  std::printf("manager with 1000 idle connections: RSS %lld -> %lld KiB\n",
              static_cast<long long>(rss_before),
              static_cast<long long>(::sluice::testing::RssKibOf(pid)));
  idle.clear();
  ASSERT_OK(probe->List().status());
  // Hang-ups are handled in order with our requests only per connection;
  // wait (bounded) for the count to settle.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (::sluice::testing::CountFdsOf(pid) != fds_before && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(::sluice::testing::CountFdsOf(pid), fds_before);
}

TEST_F(MultiProcessTest, SecondDaemonOnALiveSocketFailsAndAStaleOneIsReplaced) {
  ASSERT_OK_AND_ASSIGN(
      Subprocess second,
      Subprocess::Spawn({SLUICE_SERVICEMANAGER_BIN, "--socket=" + socket_, "--log_level=off"}));
  EXPECT_EQ(ExitCodeOf(second), 3);
  ASSERT_OK(Connect().status());  // The first still serves.

  ASSERT_OK(daemon_->Kill(SIGKILL));
  (void)daemon_->Wait();
  struct stat st;
  ASSERT_EQ(::lstat(socket_.c_str(), &st), 0) << "a crashed daemon leaves its socket";
  EXPECT_THAT(Connect(), StatusIs(absl::StatusCode::kUnavailable));
  ASSERT_OK_AND_ASSIGN(Subprocess third, SpawnDaemon(socket_));
  EXPECT_OK(Connect().status());
}

TEST_F(MultiProcessTest, SigtermShutsDownCleanly) {
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  ASSERT_OK(client->Register("mp.x", [](IncomingConnection) {}));
  ASSERT_OK(daemon_->Kill(SIGTERM));
  auto status = daemon_->Wait(absl::Seconds(10));
  ASSERT_OK(status.status());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
  struct stat st;
  EXPECT_NE(::lstat(socket_.c_str(), &st), 0) << "socket left behind";
  EXPECT_THAT(client->Lookup("mp.x"), StatusIs(absl::StatusCode::kUnavailable));
}

// sluicectl --socket=SOCKET ARGS...: its exit code, its stdout in `out`.
int RunSluicectl(const std::string& socket, const std::vector<std::string>& args,
                 std::string* out) {
  std::vector<std::string> argv = {SLUICECTL_BIN, "--socket=" + socket};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string command;
  for (auto& a : argv) command += "'" + a + "' ";
  FILE* pipe = ::popen(command.c_str(), "r");
  char buffer[4096];
  out->clear();
  while (size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) out->append(buffer, n);
  const int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_F(MultiProcessTest, SluicectlListWaitInfo) {
  ReportPipe report = ReportPipe::Create();
  ASSERT_OK_AND_ASSIGN(Subprocess server, Server("mp.ctl", report));
  auto run = [&](const std::vector<std::string>& args, std::string* out) {
    return RunSluicectl(socket_, args, out);
  };
  std::string out;
  EXPECT_EQ(run({"list", "--json"}, &out), 0);
  EXPECT_THAT(out,
              HasSubstr(absl::StrCat("\"name\":\"mp.ctl\",\"owner\":{\"pid\":", server.pid())));
  EXPECT_EQ(run({"list"}, &out), 0);
  EXPECT_THAT(out, HasSubstr("mp.ctl"));
  EXPECT_EQ(run({"info", "mp.ctl", "--json"}, &out), 0);
  EXPECT_THAT(out, HasSubstr("\"connection_list\":[]"));
  // The default policy has no settings.
  EXPECT_THAT(out, HasSubstr("\"policy\":{\"max_request_size\":null,\"trust_line\":0}"));
  EXPECT_EQ(run({"info", "mp.none", "--json"}, &out), 4);
  EXPECT_THAT(out, HasSubstr("\"code\":\"NOT_FOUND\""));
  EXPECT_EQ(run({"wait", "mp.ctl"}, &out), 0);
  EXPECT_EQ(run({"wait", "mp.never", "--timeout=50ms"}, &out), 6);
  EXPECT_EQ(run({"frobnicate"}, &out), 2);
  std::vector<std::string> no_daemon = {"--socket=" + dir_.File("none.sock"), "list"};
  EXPECT_EQ(run(no_daemon, &out), 3);
}

// ---- access control, with a second uid ----

class PolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) {
      GTEST_SKIP() << "policy tests switch a helper to uid " << kOtherUid << "; run as root";
    }
  }
  void StartDaemon(std::optional<std::string> policy_text) {
    DaemonOptions options;
    options.socket_path = socket_;
    if (policy_text.has_value()) {
      auto policy = Policy::Parse(*policy_text, ::geteuid());
      ASSERT_OK(policy.status());
      options.policy = *policy;
    }
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    log_read_.reset(fds[0]);
    log_write_.reset(fds[1]);
    logger_ = std::make_unique<Logger>(Logger::Level::kWarning, log_write_.get());
    options.logger = logger_.get();
    daemon_ = InProcessDaemon::Start(std::move(options));
    ASSERT_NE(daemon_, nullptr);
  }
  // Runs sm_test_helper as kOtherUid; returns its exit code (a StatusCode).
  int AsOtherUid(const std::string& command, const std::string& name) {
    auto process = Subprocess::Spawn(
        {SLUICE_SM_TEST_HELPER_BIN, socket_, absl::StrCat("--uid=", kOtherUid), command, name});
    if (!process.ok()) return -1;
    return ExitCodeOf(*process);
  }
  std::string Log() {
    char buffer[8192];
    const ssize_t n = ::read(log_read_.get(), buffer, sizeof(buffer));
    return n > 0 ? std::string(buffer, static_cast<size_t>(n)) : "";
  }
  absl::StatusOr<std::unique_ptr<ServiceManager>> Connect() {
    ServiceManagerOptions options;
    options.socket_path = socket_;
    return ServiceManager::Connect(options);
  }

  TempDir dir_;
  std::string socket_ = dir_.File("sm.sock");
  UniqueFd log_read_, log_write_;
  std::unique_ptr<Logger> logger_;
  std::unique_ptr<InProcessDaemon> daemon_;
};

constexpr int kOk = static_cast<int>(absl::StatusCode::kOk);
constexpr int kDenied = static_cast<int>(absl::StatusCode::kPermissionDenied);

TEST_F(PolicyTest, DefaultPolicyAllowsOnlySameUidAndRoot) {
  StartDaemon(std::nullopt);
  ASSERT_OK_AND_ASSIGN(auto root, Connect());
  ASSERT_OK(root->Register("pol.root", [](IncomingConnection) {}));
  EXPECT_EQ(AsOtherUid("lookup", "pol.root"), kDenied);
  EXPECT_EQ(AsOtherUid("register", "pol.other"), kDenied);
  EXPECT_THAT(root->Lookup("pol.other"), StatusIs(absl::StatusCode::kNotFound));
  const std::string log = Log();
  EXPECT_THAT(log, HasSubstr("denied: lookup of 'pol.root'"));
  EXPECT_THAT(log, HasSubstr("denied: register of 'pol.other'"));
}

TEST_F(PolicyTest, PolicyFileGrantsAndDeniesPerNameAndPrefix) {
  StartDaemon(absl::StrCat("# test policy\n", "allow register allowed.*   uid:", kOtherUid, "\n",
                           "deny  lookup   shared.secret *\n", "allow lookup   shared.*    uid:",
                           kOtherUid, ",gid:12345\n", "deny  *        *           *\n"));
  ASSERT_OK_AND_ASSIGN(auto root, Connect());
  ASSERT_OK(root->Register("shared.svc", [](IncomingConnection) {}));
  ASSERT_OK(root->Register("shared.secret", [](IncomingConnection) {}));
  ASSERT_OK(root->Register("private.svc", [](IncomingConnection) {}));

  EXPECT_EQ(AsOtherUid("register", "allowed.mine"), kOk);
  EXPECT_EQ(AsOtherUid("register", "shared.mine"), kDenied);
  EXPECT_EQ(AsOtherUid("lookup", "shared.svc"), kOk);
  EXPECT_EQ(AsOtherUid("lookup", "shared.secret"), kDenied);
  EXPECT_EQ(AsOtherUid("lookup", "private.svc"), kDenied);
  const std::string log = Log();
  EXPECT_THAT(log, HasSubstr("denied: register of 'shared.mine' by pid"));
  EXPECT_THAT(log, HasSubstr("denied: lookup of 'private.svc'"));
  EXPECT_THAT(log, HasSubstr("denied: lookup of 'shared.secret'"));
}

// ---- the real binary's signals and policy reload ----

class DaemonBinaryTest : public ::testing::Test {
 protected:
  // Starts sluice-servicemanager with its log lines on a pipe.
  void Start(std::vector<std::string> extra) {
    ReportPipe ready = ReportPipe::Create();
    log_ = ReportPipe::Create();
    std::vector<std::string> argv = {SLUICE_SERVICEMANAGER_BIN, "--socket=" + socket_,
                                     "--log_level=info", "--ready_fd=3", "--log_fd=4"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto process = Subprocess::Spawn(argv, {ready.write.get(), log_.write.get()});
    ASSERT_OK(process.status());
    ready.write.reset();
    log_.write.reset();
    daemon_ = *std::move(process);
    ASSERT_EQ(ready.ReadLine().value_or("(none)"), "ready");
  }
  // The next log line containing `text` (empty if none within 10 s).
  std::string LogLineWith(absl::string_view text) {
    for (;;) {
      auto line = log_.ReadLine();
      if (!line.ok()) return "";
      if (absl::StrContains(*line, text)) return *line;
    }
  }
  int AsOtherUid(const std::string& command, const std::string& name) {
    auto process = Subprocess::Spawn(
        {SLUICE_SM_TEST_HELPER_BIN, socket_, absl::StrCat("--uid=", kOtherUid), command, name});
    if (!process.ok()) return -1;
    return ExitCodeOf(*process);
  }
  void WritePolicy(const std::string& text) { std::ofstream(policy_) << text; }
  // sm_test_helper [FLAGS...] serve NAME MODE, as this test's uid, once ready.
  absl::StatusOr<Subprocess> Server(const std::string& name, const std::string& mode,
                                    ReportPipe& report, std::vector<std::string> flags = {}) {
    flags.insert(flags.end(), {"serve", name, mode});
    return StartHelper(socket_, flags, report, /*wait_ready=*/true);
  }

  TempDir dir_;
  std::string socket_ = dir_.File("sm.sock");
  std::string policy_ = dir_.File("policy");
  ReportPipe log_;
  std::optional<Subprocess> daemon_;
};

TEST_F(DaemonBinaryTest, SighupReloadsThePolicyAndAFileThatDoesNotParseKeepsTheOldOne) {
  if (::geteuid() != 0) GTEST_SKIP() << "switches a helper to uid " << kOtherUid;
  WritePolicy("allow * reload.a* *\n");
  Start({"--policy=" + policy_});
  EXPECT_EQ(AsOtherUid("register", "reload.b"), kDenied);

  WritePolicy("allow * reload.* *\nallow everything please\n");
  ASSERT_OK(daemon_->Kill(SIGHUP));
  const std::string failed = LogLineWith("policy reload");
  EXPECT_THAT(failed, HasSubstr("failed, keeping the old policy"));
  EXPECT_THAT(failed, HasSubstr("policy line 2"));
  EXPECT_EQ(AsOtherUid("register", "reload.b"), kDenied);
  EXPECT_EQ(AsOtherUid("register", "reload.a1"), kOk);

  WritePolicy("allow * reload.* *\n");
  ASSERT_OK(daemon_->Kill(SIGHUP));
  EXPECT_THAT(LogLineWith("policy reload"), HasSubstr("policy reloaded from " + policy_));
  EXPECT_EQ(AsOtherUid("register", "reload.b"), kOk);

  ASSERT_OK(daemon_->Kill(SIGTERM));
  EXPECT_EQ(ExitCodeOf(*daemon_), 0);
  EXPECT_FALSE(std::filesystem::exists(socket_));
}

// What the policy file imposes on a service and on each of its connections
// is what sluicectl info shows beside the service's own figures.
TEST_F(DaemonBinaryTest, SluicectlInfoShowsThePolicysLimitAndWhomItDistrusts) {
  WritePolicy(
      "allow * * uid:self\n"
      "limit mp.guarded 1MiB\n"
      "trust mp.guarded uid:4242\n"
      "trust mp.* uid:self\n");
  Start({"--policy=" + policy_});
  ReportPipe guarded_report = ReportPipe::Create(), open_report = ReportPipe::Create();
  ASSERT_OK_AND_ASSIGN(Subprocess guarded, Server("mp.guarded", "inspect", guarded_report));
  ASSERT_OK_AND_ASSIGN(Subprocess open, Server("mp.open", "inspect", open_report));
  ServiceManagerOptions options;
  options.socket_path = socket_;
  ASSERT_OK_AND_ASSIGN(auto client, ServiceManager::Connect(options));
  ASSERT_OK_AND_ASSIGN(ServiceConnection to_guarded, client->Lookup("mp.guarded"));
  ASSERT_OK_AND_ASSIGN(ServiceConnection to_open, client->Lookup("mp.open"));

  std::string out;
  ASSERT_EQ(RunSluicectl(socket_, {"info", "mp.guarded"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("policy:      requests up to 1048576 B; trust line 3 decides (for "
                             "new connections)"));
  EXPECT_THAT(out, HasSubstr(absl::StrCat(
                       "connection ", to_guarded.connection_id, ": pid ", ::getpid(), " uid ",
                       ::getuid(), " gid ", ::getgid(),
                       " (policy: requests up to 1048576 B) (policy: large requests sealed)")));
  ASSERT_EQ(RunSluicectl(socket_, {"info", "mp.guarded", "--json"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("\"policy\":{\"max_request_size\":1048576,\"trust_line\":3}"));
  EXPECT_THAT(out, HasSubstr("\"policy_distrusts\":true,\"policy_max_request_size\":1048576"));

  ASSERT_EQ(RunSluicectl(socket_, {"info", "mp.open"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("policy:      no limit line; trust line 4 decides"));
  EXPECT_THAT(out, Not(HasSubstr("(policy:")));
  ASSERT_EQ(RunSluicectl(socket_, {"info", "mp.open", "--json"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("\"policy\":{\"max_request_size\":null,\"trust_line\":4}"));
  EXPECT_THAT(out, HasSubstr("\"policy_distrusts\":false,\"policy_max_request_size\":null"));

  // A reload changes what new connections get, not what the old one got.
  WritePolicy("allow * * uid:self\nlimit mp.guarded 2MiB\n");
  ASSERT_OK(daemon_->Kill(SIGHUP));
  ASSERT_THAT(LogLineWith("policy reload"), HasSubstr("policy reloaded"));
  ASSERT_EQ(RunSluicectl(socket_, {"info", "mp.guarded", "--json"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("\"policy\":{\"max_request_size\":2097152,\"trust_line\":0}"));
  EXPECT_THAT(out, HasSubstr("\"policy_distrusts\":true,\"policy_max_request_size\":1048576"));
}

// One request of `size` bytes to an `inspect` server: its answer ("sealed
// N" or "in-place N"), or why the call failed.
absl::StatusOr<std::string> CallOfSize(ClientChannel& channel, size_t size) {
  auto call = channel.BeginCall(size);
  if (!call.ok()) return call.status();
  const std::span<std::byte> buffer = call->buffer().first(size);
  std::memset(buffer.data(), 'r', size);
  auto reply = channel.Call(*std::move(call), buffer);
  if (!reply.ok()) return reply.status();
  return std::string(reinterpret_cast<const char*>(reply->data().data()), reply->data().size());
}

// The file's `limit` lowers what a server registered with, before the
// client builds anything, and never raises it.
TEST_F(DaemonBinaryTest, PolicyLimitLowersAServicesRequestLimitAndNeverRaisesIt) {
  WritePolicy("allow * * uid:self\nlimit mp.small 64KiB\nlimit mp.* 1GiB\n");
  Start({"--policy=" + policy_});
  ReportPipe small_report = ReportPipe::Create(), capped_report = ReportPipe::Create();
  ASSERT_OK_AND_ASSIGN(Subprocess small, Server("mp.small", "inspect", small_report));
  ASSERT_OK_AND_ASSIGN(Subprocess capped,
                       Server("mp.capped", "inspect", capped_report, {"--max_request_size=32768"}));
  ServiceManagerOptions options;
  options.socket_path = socket_;
  ASSERT_OK_AND_ASSIGN(auto client, ServiceManager::Connect(options));

  ASSERT_OK_AND_ASSIGN(ServiceConnection to_small, client->Lookup("mp.small"));
  EXPECT_THAT(CallOfSize(*to_small.channel, 100 * 1024),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("request of 102400 bytes exceeds the server's limit of 65536")));
  EXPECT_EQ(CallOfSize(*to_small.channel, 64 * 1024).value_or("failed"), "in-place 65536");

  ASSERT_OK_AND_ASSIGN(ServiceConnection to_capped, client->Lookup("mp.capped"));
  EXPECT_THAT(CallOfSize(*to_capped.channel, 40000),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("request of 40000 bytes exceeds the server's limit of 32768")));
  EXPECT_EQ(CallOfSize(*to_capped.channel, 32768).value_or("failed"), "in-place 32768");
}

// The file's `trust` decides whether a large request (over kLargeMessage)
// stays in the client's arena or comes sealed; a reload applies to
// connections made after it, and leaves the open ones as they were.
TEST_F(DaemonBinaryTest, PolicyTrustDecidesWhetherALargeRequestStaysInPlaceOrComesSealed) {
  const size_t kLarge = 200 * 1024;
  WritePolicy(absl::StrCat(
      "allow * * uid:self\ntrust mp.sealed none\ntrust mp.listed uid:", ::geteuid(), "\n"));
  Start({"--policy=" + policy_});
  ReportPipe reports[3] = {ReportPipe::Create(), ReportPipe::Create(), ReportPipe::Create()};
  ASSERT_OK_AND_ASSIGN(Subprocess sealed, Server("mp.sealed", "inspect", reports[0]));
  ASSERT_OK_AND_ASSIGN(Subprocess listed, Server("mp.listed", "inspect", reports[1]));
  ASSERT_OK_AND_ASSIGN(Subprocess plain, Server("mp.plain", "inspect", reports[2]));
  ServiceManagerOptions options;
  options.socket_path = socket_;
  ASSERT_OK_AND_ASSIGN(auto client, ServiceManager::Connect(options));

  // Same uid everywhere, so each server's own kSameUser trusts this client.
  ASSERT_OK_AND_ASSIGN(ServiceConnection to_sealed, client->Lookup("mp.sealed"));
  EXPECT_EQ(CallOfSize(*to_sealed.channel, kLarge).value_or("failed"), "sealed 204800");
  EXPECT_EQ(CallOfSize(*to_sealed.channel, 1024).value_or("failed"), "in-place 1024");
  ASSERT_OK_AND_ASSIGN(ServiceConnection to_listed, client->Lookup("mp.listed"));
  EXPECT_EQ(CallOfSize(*to_listed.channel, kLarge).value_or("failed"), "in-place 204800");
  ASSERT_OK_AND_ASSIGN(ServiceConnection to_plain, client->Lookup("mp.plain"));
  EXPECT_EQ(CallOfSize(*to_plain.channel, kLarge).value_or("failed"), "in-place 204800");

  WritePolicy("allow * * uid:self\ntrust mp.plain gid:4242424\n");
  ASSERT_OK(daemon_->Kill(SIGHUP));
  ASSERT_THAT(LogLineWith("policy reload"), HasSubstr("policy reloaded from " + policy_));
  ASSERT_OK_AND_ASSIGN(ServiceConnection plain_again, client->Lookup("mp.plain"));
  EXPECT_EQ(CallOfSize(*plain_again.channel, kLarge).value_or("failed"), "sealed 204800");
  EXPECT_EQ(CallOfSize(*to_plain.channel, kLarge).value_or("failed"), "in-place 204800");
  ASSERT_OK_AND_ASSIGN(ServiceConnection sealed_again, client->Lookup("mp.sealed"));
  EXPECT_EQ(CallOfSize(*sealed_again.channel, kLarge).value_or("failed"), "in-place 204800");
}

TEST_F(DaemonBinaryTest, SigintAndSigtermStopCleanlyAndRemoveTheSocket) {
  for (int signal : {SIGINT, SIGTERM}) {
    Start({});
    ASSERT_OK_AND_ASSIGN(auto client, [&] {
      ServiceManagerOptions options;
      options.socket_path = socket_;
      return ServiceManager::Connect(options);
    }());
    ASSERT_OK(client->Register("signal.svc", [](IncomingConnection) {}));
    ASSERT_TRUE(std::filesystem::exists(socket_));
    ASSERT_OK(daemon_->Kill(signal));
    EXPECT_EQ(ExitCodeOf(*daemon_), 0) << strsignal(signal);
    EXPECT_FALSE(std::filesystem::exists(socket_)) << strsignal(signal);
  }
}

TEST_F(DaemonBinaryTest, StartupNamesPolicyRulesThatCanNeverApply) {
  WritePolicy("deny lookup secret uid:0\nallow * * *\nallow lookup late uid:5\n");
  Start({"--policy=" + policy_});
  EXPECT_THAT(LogLineWith("policy line 1"), HasSubstr("uid 0 is always allowed"));
  EXPECT_THAT(LogLineWith("policy line 3"), HasSubstr("line 2 already decides it"));
  ASSERT_OK(daemon_->Kill(SIGTERM));
  EXPECT_EQ(ExitCodeOf(*daemon_), 0);
}

// ---- socket activation ----

constexpr char kSocketActivate[] = "/usr/bin/systemd-socket-activate";

// systemd-socket-activate plays systemd: it binds the socket, and on the
// first connection starts the real daemon with the socket as fd 3 and
// LISTEN_FDS=1, LISTEN_PID set. The client connected before the daemon
// existed is served by it.
TEST(SocketActivationTest, ActivatedDaemonServesClientsOnTheSocketItWasGiven) {
  if (::access(kSocketActivate, X_OK) != 0) {
    GTEST_SKIP() << kSocketActivate << " is missing (Debian package systemd)";
  }
  TempDir dir;
  const std::string socket = dir.File("activated.sock");
  ASSERT_OK_AND_ASSIGN(Subprocess activator,
                       Subprocess::Spawn({kSocketActivate, "--seqpacket", "--listen=" + socket,
                                          SLUICE_SERVICEMANAGER_BIN, "--log_level=error"}));
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!std::filesystem::exists(socket) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_TRUE(std::filesystem::exists(socket));
  ServiceManagerOptions options;
  options.socket_path = socket;
  // The activator binds the path before it listens on it: a connect in
  // between is refused (ECONNREFUSED, seen once in a loaded ASan run), and
  // does not activate anything. Ready means a connect is accepted.
  absl::StatusOr<std::unique_ptr<ServiceManager>> connected = ServiceManager::Connect(options);
  while (!connected.ok() && absl::IsUnavailable(connected.status()) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
    connected = ServiceManager::Connect(options);
  }
  ASSERT_OK_AND_ASSIGN(auto server, std::move(connected));
  // The manager that answered is the daemon, in the activator's process
  // (it execs the daemon in place), not some other listener.
  EXPECT_EQ(server->manager().pid, activator.pid());
  EchoServer echo;
  ASSERT_OK(server->Register("activated.echo", echo.Handler()));
  ASSERT_OK_AND_ASSIGN(auto client, ServiceManager::Connect(options));
  ASSERT_OK_AND_ASSIGN(ServiceConnection connection, client->Lookup("activated.echo"));
  EXPECT_EQ(EchoCall(*connection.channel, "activated").value_or(""), "activated");
  ASSERT_OK(activator.Kill(SIGTERM));
  EXPECT_EQ(ExitCodeOf(activator), 0);
}

}  // namespace
}  // namespace sluice
