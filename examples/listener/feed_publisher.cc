// feed_publisher: publishes --count events to a topic of example.listener.Feed
// and prints, for each, how many listeners it was delivered to.
//
//   feed_publisher [--socket=PATH] [--name=NAME] [--topic=TOPIC] [--count=N]
//                  [--text=TEXT] [--wait_subscribers=N] [--expect_delivered=N]
//
// Exits with 1 if a Publish fails, or (--expect_delivered) reaches another
// number of listeners than expected.
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "ipc/host/service_host.h"
#include "listener_sluice.h"

ABSL_FLAG(std::string, socket, "", "Service manager socket (default: the usual path rules)");
ABSL_FLAG(std::string, name, "", "Feed service name (default: example.listener.Feed)");
ABSL_FLAG(std::string, topic, "news", "Topic to publish to");
ABSL_FLAG(int, count, 3, "Events to publish");
ABSL_FLAG(std::string, text, "event", "Event text; \" N\" is appended (1..count)");
ABSL_FLAG(int, wait_ms, 5000, "How long to wait for the feed, and for --wait_subscribers");
ABSL_FLAG(int, wait_subscribers, -1,
          "First wait until the topic has exactly this many subscribers (-1: don't)");
ABSL_FLAG(int, expect_delivered, -1,
          "Fail unless every event reaches exactly this many listeners (-1: any)");

namespace {

using example::listener::FeedProxy;

int Run() {
  auto manager = sluice::ServiceManager::Connect({.socket_path = absl::GetFlag(FLAGS_socket)});
  if (!manager.ok()) {
    std::fprintf(stderr, "feed_publisher: %s\n", manager.status().ToString().c_str());
    return 1;
  }
  const std::string name = absl::GetFlag(FLAGS_name).empty()
                               ? std::string(example::listener::FeedInterface::kName)
                               : absl::GetFlag(FLAGS_name);
  const absl::Duration wait = absl::Milliseconds(absl::GetFlag(FLAGS_wait_ms));
  if (absl::Status up = (*manager)->WaitFor(name, wait); !up.ok()) {
    std::fprintf(stderr, "feed_publisher: %s\n", up.ToString().c_str());
    return 1;
  }
  auto feed = sluice::Connect<FeedProxy>(**manager, name);
  if (!feed.ok()) {
    std::fprintf(stderr, "feed_publisher: %s\n", feed.status().ToString().c_str());
    return 1;
  }
  const std::string topic = absl::GetFlag(FLAGS_topic);

  // Subscribers of the topic, waiting (polling) for the wanted number first.
  const int wanted = absl::GetFlag(FLAGS_wait_subscribers);
  const absl::Time deadline = absl::Now() + wait;
  int64_t subscribers = -1;
  for (;;) {
    auto count = (*feed)->Subscribers(topic);
    if (!count.ok()) {
      std::fprintf(stderr, "feed_publisher: Subscribers: %s\n", count.status().ToString().c_str());
      return 1;
    }
    subscribers = (*count)->count();
    if (wanted < 0 || subscribers == wanted || absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  std::printf("feed_publisher: %s has %lld subscriber(s)\n", topic.c_str(),
              static_cast<long long>(subscribers));
  std::fflush(stdout);
  if (wanted >= 0 && subscribers != wanted) {
    std::fprintf(stderr, "feed_publisher: expected %d subscribers\n", wanted);
    return 1;
  }

  const int expected = absl::GetFlag(FLAGS_expect_delivered);
  int failures = 0;
  for (int i = 1; i <= absl::GetFlag(FLAGS_count); ++i) {
    const std::string text = absl::StrCat(absl::GetFlag(FLAGS_text), " ", i);
    auto published = (*feed)->Publish(topic, text);
    if (!published.ok()) {
      std::printf("feed_publisher: %s \"%s\" -> FAILED: %s\n", topic.c_str(), text.c_str(),
                  published.status().ToString().c_str());
      ++failures;
      continue;
    }
    const bool as_expected =
        expected < 0 || (*published)->delivered() == static_cast<uint32_t>(expected);
    std::printf("feed_publisher: %s #%llu \"%s\" -> delivered %u, dropped %u, failed %u%s\n",
                topic.c_str(), static_cast<unsigned long long>((*published)->seq()), text.c_str(),
                (*published)->delivered(), (*published)->dropped(), (*published)->failed(),
                as_expected ? "" : absl::StrCat(" (expected ", expected, ")").c_str());
    std::fflush(stdout);
    failures += as_expected ? 0 : 1;
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return Run();
}
