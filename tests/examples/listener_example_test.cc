// The listener example as a user runs it: the real service manager,
// feed_server, feed_listener and feed_publisher binaries, all separate
// processes. The test itself talks to the feed through the generated proxy
// to publish and to watch the subscriber count.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ipc/host/service_host.h"
#include "ipc/testing/subprocess.h"
#include "listener_sluice.h"
#include "tests/examples/example_deployment.h"
#include "tests/testing/status_matchers.h"

namespace sluice::testing {
namespace {

using example::listener::FeedProxy;

// One line of a feed_listener --events_file.
struct Received {
  std::string topic;
  uint64_t seq = 0;
  int caller_pid = 0;
  std::string text;
};

std::vector<Received> ReadEvents(const std::string& path) {
  std::vector<Received> events;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    Received event;
    fields >> event.topic >> event.seq >> event.caller_pid;
    std::getline(fields >> std::ws, event.text);
    events.push_back(event);
  }
  return events;
}

std::vector<uint64_t> Seqs(const std::vector<Received>& events) {
  std::vector<uint64_t> seqs;
  for (const Received& event : events) seqs.push_back(event.seq);
  return seqs;
}

class ListenerExampleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(
        deployment_, ExampleDeployment::Start(SLUICE_SERVICEMANAGER_BIN, SLUICE_FEED_SERVER_BIN));
    ASSERT_OK_AND_ASSIGN(sm_, ServiceManager::Connect({.socket_path = deployment_->socket()}));
    ASSERT_OK_AND_ASSIGN(Connection<FeedProxy> feed, Connect<FeedProxy>(*sm_));
    feed_.emplace(std::move(feed));
  }
  void TearDown() override {
    feed_.reset();
    sm_.reset();
    if (deployment_ != nullptr && deployment_->server_running()) {
      ASSERT_OK_AND_ASSIGN(int status, deployment_->StopServer());
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "feed_server status " << status;
    }
  }

  // A feed_listener on topic news, ready once subscribed, writing what it
  // receives to `events_file`.
  absl::StatusOr<Subprocess> StartListener(const std::string& events_file,
                                           std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {SLUICE_FEED_LISTENER_BIN, deployment_->socket_flag(),
                                     "--topic=news", "--events_file=" + events_file};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return Subprocess::SpawnAndWaitReady(argv);
  }

  absl::StatusOr<uint32_t> Subscribers(const std::string& topic = "news") {
    auto count = (*feed_)->Subscribers(topic);
    if (!count.ok()) return count.status();
    return (*count)->count();
  }

  // Polls until the topic has `want` subscribers, up to `timeout`.
  bool SubscribersBecome(uint32_t want, absl::Duration timeout = absl::Seconds(5)) {
    const absl::Time deadline = absl::Now() + timeout;
    for (;;) {
      absl::StatusOr<uint32_t> count = Subscribers();
      if (count.ok() && *count == want) return true;
      if (absl::Now() >= deadline) return false;
      absl::SleepFor(absl::Milliseconds(2));
    }
  }

  std::unique_ptr<ExampleDeployment> deployment_;
  std::unique_ptr<ServiceManager> sm_;
  std::optional<Connection<FeedProxy>> feed_;
};

TEST_F(ListenerExampleTest, AKilledListenerIsDroppedOnItsDeathAndTheOtherKeepsReceiving) {
  const std::string doomed_events = deployment_->dir() + "/doomed.events";
  const std::string survivor_events = deployment_->dir() + "/survivor.events";
  ASSERT_OK_AND_ASSIGN(Subprocess doomed, StartListener(doomed_events));
  // 2 events before the kill, 1 from here and 2 from feed_publisher after it.
  ASSERT_OK_AND_ASSIGN(Subprocess survivor, StartListener(survivor_events, {"--count=5"}));
  ASSERT_OK_AND_ASSIGN(uint32_t subscribers, Subscribers());
  EXPECT_EQ(subscribers, 2u);

  for (int i = 1; i <= 2; ++i) {
    ASSERT_OK_AND_ASSIGN(auto published, (*feed_)->Publish("news", "before " + std::to_string(i)));
    EXPECT_EQ(published->seq(), static_cast<uint64_t>(i));
    EXPECT_EQ(published->delivered(), 2u);
    EXPECT_EQ(published->dropped(), 0u);
    EXPECT_EQ(published->failed(), 0u);
  }
  // Publish returns once every listener acknowledged: both have written.
  const std::vector<Received> before = ReadEvents(doomed_events);
  EXPECT_EQ(Seqs(before), (std::vector<uint64_t>{1, 2}));
  ASSERT_EQ(before.size(), 2u);
  EXPECT_EQ(before[0].topic, "news");
  EXPECT_EQ(before[0].text, "before 1");
  EXPECT_EQ(before[1].caller_pid, deployment_->server().pid());
  EXPECT_EQ(Seqs(ReadEvents(survivor_events)), (std::vector<uint64_t>{1, 2}));

  // No Publish in between: only the death notification can tell the feed.
  ASSERT_OK(doomed.Kill(SIGKILL));
  ASSERT_OK(doomed.Wait().status());
  EXPECT_TRUE(SubscribersBecome(1)) << "the feed did not drop the killed listener within 5 s";

  ASSERT_OK_AND_ASSIGN(auto published, (*feed_)->Publish("news", "after 1"));
  EXPECT_EQ(published->seq(), 3u);
  EXPECT_EQ(published->delivered(), 1u);
  EXPECT_EQ(published->dropped(), 0u);
  EXPECT_EQ(published->failed(), 0u);
  { auto drop_reply = std::move(published); }

  // The publisher binary checks its own delivered counts.
  ASSERT_OK_AND_ASSIGN(
      Subprocess publisher,
      Subprocess::Spawn({SLUICE_FEED_PUBLISHER_BIN, deployment_->socket_flag(), "--topic=news",
                         "--count=2", "--text=after", "--expect_delivered=1"}));
  ASSERT_OK_AND_ASSIGN(int publisher_status, publisher.Wait(absl::Seconds(60)));
  EXPECT_TRUE(WIFEXITED(publisher_status) && WEXITSTATUS(publisher_status) == 0)
      << "feed_publisher status " << publisher_status;

  // The survivor leaves by itself after its 5th event, unsubscribing.
  ASSERT_OK_AND_ASSIGN(int survivor_status, survivor.Wait(absl::Seconds(60)));
  EXPECT_TRUE(WIFEXITED(survivor_status) && WEXITSTATUS(survivor_status) == 0)
      << "feed_listener status " << survivor_status;
  const std::vector<Received> all = ReadEvents(survivor_events);
  EXPECT_EQ(Seqs(all), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  for (const Received& event : all) {
    EXPECT_EQ(event.topic, "news");
    // The caller of OnEvent, vouched for by the kernel: the feed server.
    EXPECT_EQ(event.caller_pid, deployment_->server().pid()) << "seq " << event.seq;
  }
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(all[2].text, "after 1");
  EXPECT_EQ(all[4].text, "after 2");
  // The killed one got nothing more.
  EXPECT_EQ(Seqs(ReadEvents(doomed_events)), (std::vector<uint64_t>{1, 2}));
  EXPECT_TRUE(SubscribersBecome(0));
}

TEST_F(ListenerExampleTest, TopicsAreSeparateAndAnotherProcessCannotUnsubscribe) {
  const std::string news_events = deployment_->dir() + "/news.events";
  const std::string sport_events = deployment_->dir() + "/sport.events";
  ASSERT_OK_AND_ASSIGN(Subprocess news, StartListener(news_events, {"--count=1"}));
  ASSERT_OK_AND_ASSIGN(Subprocess sport,
                       Subprocess::SpawnAndWaitReady(
                           {SLUICE_FEED_LISTENER_BIN, deployment_->socket_flag(), "--topic=sport",
                            "--events_file=" + sport_events, "--count=1"}));
  EXPECT_EQ(Subscribers("news").value_or(0), 1u);
  EXPECT_EQ(Subscribers("").value_or(0), 2u);

  // Subscription ids start at 1; neither is this process's.
  auto foreign = (*feed_)->Unsubscribe(1);
  EXPECT_THAT(foreign.status(), StatusIs(absl::StatusCode::kPermissionDenied));
  ASSERT_OK_AND_ASSIGN(auto unknown, (*feed_)->Unsubscribe(12345));
  EXPECT_FALSE(unknown->removed());

  ASSERT_OK_AND_ASSIGN(auto to_sport, (*feed_)->Publish("sport", "goal"));
  EXPECT_EQ(to_sport->delivered(), 1u);
  EXPECT_EQ(to_sport->seq(), 1u);
  ASSERT_OK_AND_ASSIGN(auto to_nobody, (*feed_)->Publish("weather", "rain"));
  EXPECT_EQ(to_nobody->delivered(), 0u);
  ASSERT_OK_AND_ASSIGN(auto to_news, (*feed_)->Publish("news", "headline"));
  EXPECT_EQ(to_news->delivered(), 1u);

  for (Subprocess* listener : {&news, &sport}) {
    ASSERT_OK_AND_ASSIGN(int status, listener->Wait(absl::Seconds(60)));
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  }
  const std::vector<Received> sport_got = ReadEvents(sport_events);
  ASSERT_EQ(sport_got.size(), 1u);
  EXPECT_EQ(sport_got[0].topic, "sport");
  EXPECT_EQ(sport_got[0].text, "goal");
  EXPECT_EQ(ReadEvents(news_events).size(), 1u);
  EXPECT_TRUE(SubscribersBecome(0));
}

TEST_F(ListenerExampleTest, TheServerStopsWithOneListenerSubscribedAndAnotherDying) {
  const std::string live_events = deployment_->dir() + "/live.events";
  const std::string doomed_events = deployment_->dir() + "/doomed.events";
  // Without --count it stays subscribed until the feed goes.
  ASSERT_OK_AND_ASSIGN(Subprocess live, StartListener(live_events));
  ASSERT_OK_AND_ASSIGN(Subprocess doomed, StartListener(doomed_events));
  ASSERT_TRUE(SubscribersBecome(2));
  feed_.reset();
  // Not waited for: its death reaches the feed before, during or after the stop.
  ASSERT_OK(doomed.Kill(SIGKILL));
  ASSERT_OK_AND_ASSIGN(int status, deployment_->StopServer());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "feed_server status " << status;
  ASSERT_OK(doomed.Wait().status());
  // The subscribed one sees its feed die and leaves with 1, as documented.
  ASSERT_OK_AND_ASSIGN(int live_status, live.Wait());
  EXPECT_TRUE(WIFEXITED(live_status) && WEXITSTATUS(live_status) == 1)
      << "feed_listener status " << live_status;
}

}  // namespace
}  // namespace sluice::testing
