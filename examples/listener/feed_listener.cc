// feed_listener: subscribes a Listener object of its own to a topic of
// example.listener.Feed and prints every event the feed calls it back with,
// together with the calling process (the feed server, vouched for by the
// kernel). Exits after --count events, or runs until SIGTERM or SIGINT; then
// unsubscribes. Exits with 1 at once if the feed server dies.
//
//   feed_listener [--socket=PATH] [--name=NAME] [--topic=TOPIC] [--count=N]
//                 [--events_file=PATH] [--ready_fd=FD]
#include <signal.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "ipc/base/errors.h"
#include "ipc/host/service_host.h"
#include "ipc/rpc/object.h"
#include "listener_sluice.h"

ABSL_FLAG(std::string, socket, "", "Service manager socket (default: the usual path rules)");
ABSL_FLAG(std::string, name, "", "Feed service name (default: example.listener.Feed)");
ABSL_FLAG(std::string, topic, "news", "Topic to subscribe to");
ABSL_FLAG(int, count, 0, "Exit after this many events; 0: run until SIGTERM or SIGINT");
ABSL_FLAG(std::string, events_file, "",
          "Also write each event here, one line each: TOPIC SEQ CALLER_PID TEXT");
ABSL_FLAG(int, wait_ms, 5000, "How long to wait for the feed to appear");
ABSL_FLAG(int, ready_fd, -1, "Write \"ready\\n\" here once subscribed, then close it");

namespace {

using example::listener::FeedProxy;

// What main waits for: enough events, a stop signal, or the feed's death.
class Progress {
 public:
  void FeedDied() {
    std::lock_guard<std::mutex> lock(mu_);
    feed_died_ = true;
    cv_.notify_all();
  }
  void Received() {
    std::lock_guard<std::mutex> lock(mu_);
    ++received_;
    cv_.notify_all();
  }
  void Stop(int signal) {
    std::lock_guard<std::mutex> lock(mu_);
    signal_ = signal;
    cv_.notify_all();
  }
  // Waits until `count` events arrived (never for 0), a signal came or the
  // feed died. Returns the number of events.
  int Wait(int count) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return (count > 0 && received_ >= count) || signal_ != 0 || feed_died_; });
    return received_;
  }
  bool feed_died() {
    std::lock_guard<std::mutex> lock(mu_);
    return feed_died_;
  }
  int signal() {
    std::lock_guard<std::mutex> lock(mu_);
    return signal_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int received_ = 0;
  int signal_ = 0;
  bool feed_died_ = false;
};

// The object the feed calls back. It lives in this process; the feed holds
// a reference to it (a channel of its own) until it unsubscribes it or this
// process dies.
class PrintingListener : public example::listener::ListenerStub {
 public:
  PrintingListener(Progress& progress, FILE* events) : progress_(progress), events_(events) {}

  absl::StatusOr<flatbuffers::Offset<example::listener::Ack>> OnEvent(
      const sluice::rpc::CallContext& context, const example::listener::Event& request,
      flatbuffers::FlatBufferBuilder& reply) override {
    const std::string topic = request.topic() != nullptr ? request.topic()->str() : "";
    const std::string text = request.text() != nullptr ? request.text()->str() : "";
    // context.caller: the process holding the reference, from the kernel.
    std::printf("feed_listener[%d]: %s #%llu \"%s\" (caller pid %d)\n", getpid(), topic.c_str(),
                static_cast<unsigned long long>(request.seq()), text.c_str(), context.caller.pid);
    std::fflush(stdout);
    if (events_ != nullptr) {
      std::fprintf(events_, "%s %llu %d %s\n", topic.c_str(),
                   static_cast<unsigned long long>(request.seq()), context.caller.pid,
                   text.c_str());
      std::fflush(events_);
    }
    progress_.Received();
    return example::listener::CreateAck(reply, getpid());
  }

 private:
  Progress& progress_;
  FILE* const events_;
};

int Run() {
  // Block the stop signals in every thread; one thread takes them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  // Never destroyed: the signal thread and the object host's threads may
  // still use it while the process exits.
  Progress& progress = *new Progress;
  std::thread([&progress, stop] {
    int signal = 0;
    sigwait(&stop, &signal);
    progress.Stop(signal);
  }).detach();

  FILE* events = nullptr;
  if (const std::string path = absl::GetFlag(FLAGS_events_file); !path.empty()) {
    events = std::fopen(path.c_str(), "w");
    if (events == nullptr) {
      std::perror(("feed_listener: " + path).c_str());
      return 1;
    }
  }

  auto manager = sluice::ServiceManager::Connect({.socket_path = absl::GetFlag(FLAGS_socket)});
  if (!manager.ok()) {
    std::fprintf(stderr, "feed_listener: %s\n", manager.status().ToString().c_str());
    return 1;
  }
  const std::string name = absl::GetFlag(FLAGS_name).empty()
                               ? std::string(example::listener::FeedInterface::kName)
                               : absl::GetFlag(FLAGS_name);
  if (absl::Status up = (*manager)->WaitFor(name, absl::Milliseconds(absl::GetFlag(FLAGS_wait_ms)));
      !up.ok()) {
    std::fprintf(stderr, "feed_listener: %s\n", up.ToString().c_str());
    return 1;
  }
  auto feed = sluice::Connect<FeedProxy>(**manager, name);
  if (!feed.ok()) {
    std::fprintf(stderr, "feed_listener: %s\n", feed.status().ToString().c_str());
    return 1;
  }
  // Without a feed no more events come: stop waiting for them.
  if (auto linked = (*feed)->LinkToDeath([&progress] { progress.FeedDied(); }); !linked.ok()) {
    std::fprintf(stderr, "feed_listener: %s\n", linked.status().ToString().c_str());
    return 1;
  }

  // Passing the object: the generated Subscribe takes any ObjectRef (here a
  // local stub; a proxy to someone else's Listener would do as well).
  const std::string topic = absl::GetFlag(FLAGS_topic);
  auto listener = std::make_shared<PrintingListener>(progress, events);
  uint64_t id = 0;
  {
    auto subscribed = (*feed)->Subscribe(topic, listener);
    if (!subscribed.ok()) {
      std::fprintf(stderr, "feed_listener: Subscribe: %s\n",
                   subscribed.status().ToString().c_str());
      return 1;
    }
    id = (*subscribed)->id();
  }
  std::printf("feed_listener[%d]: subscribed to %s as #%llu\n", getpid(), topic.c_str(),
              static_cast<unsigned long long>(id));
  std::fflush(stdout);
  if (const int fd = absl::GetFlag(FLAGS_ready_fd); fd >= 0) {
    (void)!write(fd, "ready\n", 6);
    close(fd);
  }

  const int received = progress.Wait(absl::GetFlag(FLAGS_count));
  if (progress.feed_died()) {
    std::printf("feed_listener[%d]: the feed died after %d events\n", getpid(), received);
    std::fflush(stdout);
    return 1;
  }
  int result = 0;
  {
    auto unsubscribed = (*feed)->Unsubscribe(id);
    if (!unsubscribed.ok() && !sluice::IsPeerDead(unsubscribed.status())) {
      std::fprintf(stderr, "feed_listener: Unsubscribe: %s\n",
                   unsubscribed.status().ToString().c_str());
      result = 1;
    }
  }
  // The feed lets go of its reference once it is done with it, so the Ack of
  // the last event has reached it too: only then is leaving harmless.
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (sluice::rpc::ObjectHost::Get().reference_count() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  std::printf("feed_listener[%d]: %d events%s; unsubscribed\n", getpid(), received,
              progress.signal() != 0 ? ", stopped by a signal" : "");
  std::fflush(stdout);
  return result;  // exit() flushes and closes the events file.
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return Run();
}
