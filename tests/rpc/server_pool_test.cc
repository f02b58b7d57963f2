// rpc::ServerPool in one process: many channels, few threads, no stalls
// behind a long call, channels dropped when their client goes. In one
// process a call is served by its own waiting thread once a pool thread has
// taken it (call_router.h), so what needs the pool's threads to serve (busy
// handlers, caps, abandoned calls) is in serving_test.cc, across processes.
#include "ipc/rpc/server_pool.h"

#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "ipc/base/errors.h"
#include "ipc/base/mutex.h"
#include "ipc/base/notification.h"
#include "ipc/rpc/object.h"
#include "ipc/rpc/object_wire.h"
#include "ipc/testing/subprocess.h"
#include "tests/rpc/kitchen_sink_service.h"
#include "tests/testing/channel_pair.h"
#include "tests/testing/status_matchers.h"

namespace sluice::testing {
namespace {

namespace sink = ::sluice::test::sink;

// True while thread `tid` of this process sleeps in the kernel (state S).
bool SleepsInTheKernel(pid_t tid) {
  std::ifstream stat(absl::StrCat("/proc/self/task/", tid, "/stat"));
  std::string line;
  std::getline(stat, line);
  // "tid (name) S ...": the state follows the name, which may hold anything.
  const size_t name_end = line.rfind(')');
  return name_end != std::string::npos && name_end + 2 < line.size() && line[name_end + 2] == 'S';
}

// Whether `pool` comes to hold `count` channels within `within`.
bool WaitForChannelCount(rpc::ServerPool& pool, size_t count,
                         absl::Duration within = absl::Seconds(10)) {
  const absl::Time give_up = absl::Now() + within;
  while (pool.channel_count() != count && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  return pool.channel_count() == count;
}

TEST(ServerPool, ServesManyChannelsWithFewThreads) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  const int threads_before = CountThreads();
  rpc::ServerPool pool({.max_threads = 2});
  auto painter = std::make_shared<PainterService>();
  // More than one futex_waitv's worth of channels.
  constexpr int kChannels = 150;
  std::vector<std::unique_ptr<ClientChannel>> clients;
  for (int i = 0; i < kChannels; ++i) {
    ASSERT_OK_AND_ASSIGN(LocalPair pair, MakeLocalPair(*watcher));
    ASSERT_OK(pool.Add(std::move(pair.server), painter));
    clients.push_back(std::move(pair.client));
  }
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < kChannels; ++i) {
      sink::PainterProxy proxy(*clients[i]);
      ASSERT_OK_AND_ASSIGN(auto echo, proxy.Echo("x", i, false, sink::Color::Red, {}, {}));
      ASSERT_EQ(echo->number(), i);
    }
  }
  EXPECT_LE(pool.thread_count(), 2u);
  EXPECT_LE(CountThreads(), threads_before + 2 + 1) << "two serving threads and the watchdog";
  EXPECT_EQ(pool.channel_count(), static_cast<size_t>(kChannels));
}

// Regression: idle threads slept on fixed groups of 125 doorbells and were
// capped at max_threads, so channel 4 * 125 + 1 had nobody to wake for it
// and its first call hung.
TEST(ServerPool, AnswersEveryChannelPastWhatOneWaitHolds) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  rpc::ServerPool pool({.max_threads = 4});
  auto painter = std::make_shared<PainterService>();
  constexpr int kChannels = 4 * rpc::ServerPool::kChannelsPerWait + 20;
  std::vector<std::unique_ptr<ClientChannel>> clients;
  for (int i = 0; i < kChannels; ++i) {
    ASSERT_OK_AND_ASSIGN(LocalPair pair, MakeLocalPair(*watcher));
    ASSERT_OK(pool.Add(std::move(pair.server), painter));
    clients.push_back(std::move(pair.client));
  }
  EXPECT_TRUE(pool.stats().on_bells);
  // From the last channel back: the newest ones are those nobody watched.
  for (int i = kChannels - 1; i >= 0; --i) {
    sink::PainterProxy proxy(*clients[i]);
    ASSERT_OK_AND_ASSIGN(auto echo,
                         proxy.Echo("x", i, false, sink::Color::Red, {}, {},
                                    rpc::CallOptions{.deadline = absl::Now() + absl::Seconds(10)}));
    ASSERT_EQ(echo->number(), i);
  }
  EXPECT_LE(pool.thread_count(), 4u);
  // Concurrent callers on channels past the first wait's worth.
  std::vector<std::thread> callers;
  std::atomic<int> answered{0};
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&, t] {
      for (int i = kChannels - 1 - t; i >= 0; i -= 4) {
        sink::PainterProxy proxy(*clients[i]);
        if (proxy.Total(rpc::CallOptions{.deadline = absl::Now() + absl::Seconds(10)}).ok())
          ++answered;
      }
    });
  }
  for (std::thread& caller : callers) caller.join();
  EXPECT_EQ(answered.load(), kChannels);
  // Channels ended by their clients are still dropped, those watched
  // before the switch to bells as well as those after.
  clients.erase(clients.begin(), clients.begin() + (kChannels - 10));
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (pool.channel_count() != 10 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(pool.channel_count(), 10u);
}

TEST(ServerPool, ALongCallDoesNotStallOtherChannels) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  rpc::ServerPool pool({.max_threads = 2});
  auto painter = std::make_shared<PainterService>();
  ASSERT_OK_AND_ASSIGN(LocalPair slow, MakeLocalPair(*watcher));
  ASSERT_OK_AND_ASSIGN(LocalPair fast, MakeLocalPair(*watcher));
  ASSERT_OK(pool.Add(std::move(slow.server), painter));
  ASSERT_OK(pool.Add(std::move(fast.server), painter));
  std::atomic<bool> slow_done{false};
  std::thread slow_caller([&] {
    sink::PainterProxy proxy(*slow.client);
    EXPECT_OK(proxy.Sleep(1000));
    slow_done = true;
  });
  // Wait until the long call holds a pool thread, then call the other channel.
  absl::SleepFor(absl::Milliseconds(100));
  sink::PainterProxy proxy(*fast.client);
  for (int i = 0; i < 100; ++i) ASSERT_OK(proxy.Total());
  EXPECT_FALSE(slow_done.load()) << "the other channel waited for the long call";
  slow_caller.join();
}

// Records which channel each oneway Note came in on; the one tagged
// kGateTag holds its thread until the gate opens.
class NoteLog : public PainterService {
 public:
  static constexpr char kGateTag = 'G';
  struct Shared {
    Mutex mu;
    std::string order ABSL_GUARDED_BY(mu);
    Notification gate;
    Notification at_gate;
  };
  NoteLog(char tag, Shared& shared) : tag_(tag), shared_(shared) {}
  absl::Status Note(const rpc::CallContext&, const sink::Counter&) override {
    if (tag_ == kGateTag) {
      shared_.at_gate.Notify();
      shared_.gate.WaitForNotification();
      return absl::OkStatus();
    }
    MutexLock lock(&shared_.mu);
    shared_.order.push_back(tag_);
    return absl::OkStatus();
  }

 private:
  const char tag_;
  Shared& shared_;
};

// Regression: every look started at the pool's first channel, so one whose
// client kept it busy was served again and again while the others waited
// (a one-thread pool served 8 clients with the slowest getting none of the
// calls in a measured window). Each look now starts past the channel last
// served.
TEST(ServerPool, ChannelsWithWorkAreServedInTurn) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  rpc::ServerPool pool({.max_threads = 1, .thread_cap = 1});
  NoteLog::Shared shared;
  ASSERT_OK_AND_ASSIGN(LocalPair gate, MakeLocalPair(*watcher));
  ASSERT_OK(pool.Add(std::move(gate.server), std::make_shared<NoteLog>(NoteLog::kGateTag, shared)));
  const std::string tags = "abc";
  std::vector<std::unique_ptr<ClientChannel>> clients;
  for (char tag : tags) {
    ASSERT_OK_AND_ASSIGN(LocalPair pair, MakeLocalPair(*watcher));
    ASSERT_OK(pool.Add(std::move(pair.server), std::make_shared<NoteLog>(tag, shared)));
    clients.push_back(std::move(pair.client));
  }
  // The pool's one thread is held in a call while every channel queues
  // work: oneways, which the pool thread serves itself, in order per channel.
  sink::PainterProxy gate_proxy(*gate.client);
  ASSERT_OK(gate_proxy.Note(0));
  shared.at_gate.WaitForNotification();
  constexpr int kNotesEach = 4;
  for (int i = 1; i <= kNotesEach; ++i) {
    for (auto& client : clients) ASSERT_OK(sink::PainterProxy(*client).Note(i));
  }
  shared.gate.Notify();
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  std::string order;
  while (order.size() < tags.size() * kNotesEach && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
    MutexLock lock(&shared.mu);
    order = shared.order;
  }
  ASSERT_EQ(order.size(), tags.size() * kNotesEach) << order;
  // In turns of one call per channel: every window of three has each channel once.
  for (size_t i = 0; i + tags.size() <= order.size(); ++i) {
    std::string window = order.substr(i, tags.size());
    std::sort(window.begin(), window.end());
    EXPECT_EQ(window, tags) << "served in this order: " << order;
  }
}

TEST(ServerPool, ChannelIsDroppedWhenItsClientGoes) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  rpc::ServerPool pool({.max_threads = 1});
  ASSERT_OK_AND_ASSIGN(LocalPair pair, MakeLocalPair(*watcher));
  ASSERT_OK(pool.Add(std::move(pair.server), std::make_shared<PainterService>()));
  sink::PainterProxy proxy(*pair.client);
  ASSERT_OK(proxy.Total());
  pair.client.reset();
  EXPECT_TRUE(WaitForChannelCount(pool, 0, absl::Seconds(5)));
}

TEST(ServerPool, ShutdownEndsEveryChannel) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  auto pool = std::make_unique<rpc::ServerPool>();
  ASSERT_OK_AND_ASSIGN(LocalPair pair, MakeLocalPair(*watcher));
  ASSERT_OK(pool->Add(std::move(pair.server), std::make_shared<PainterService>()));
  pool.reset();
  sink::PainterProxy proxy(*pair.client);
  absl::Status status = proxy.Total().status();
  EXPECT_TRUE(IsPeerDead(status)) << status;
}

TEST(ServerPool, OnEndTellsOnceWhyEachChannelEnded) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  struct Ending {
    std::atomic<int> calls{0};
    absl::Status why;
    Notification told;
  };
  Ending hung_up;
  Ending open;
  auto tell = [](Ending& ending) {
    return [&ending](absl::Status why) {
      if (ending.calls.fetch_add(1) == 0) {
        ending.why = std::move(why);
        ending.told.Notify();
      }
    };
  };
  auto pool = std::make_unique<rpc::ServerPool>();
  auto painter = std::make_shared<PainterService>();
  ASSERT_OK_AND_ASSIGN(LocalPair first, MakeLocalPair(*watcher));
  ASSERT_OK_AND_ASSIGN(LocalPair second, MakeLocalPair(*watcher));
  ASSERT_OK(pool->Add(std::move(first.server), painter, tell(hung_up)));
  ASSERT_OK(pool->Add(std::move(second.server), painter, tell(open)));
  sink::PainterProxy proxy(*second.client);
  ASSERT_OK(proxy.Total());

  first.client.reset();
  ASSERT_TRUE(hung_up.told.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_TRUE(IsPeerDead(hung_up.why)) << hung_up.why;
  EXPECT_EQ(pool->channel_count(), 1u);
  EXPECT_FALSE(open.told.HasBeenNotified());

  pool.reset();
  ASSERT_TRUE(open.told.HasBeenNotified()) << "Shutdown ended the channel without telling";
  EXPECT_THAT(open.why, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(hung_up.calls.load(), 1);
  EXPECT_EQ(open.calls.load(), 1);
}

// Issue 11: feed_server, told to stop after its last client had gone, hung
// in ServiceHost::Shutdown. A worker had seen the pool running; Shutdown then
// set stop_ and bumped the pool's wake word; only then did the worker read
// that word for its sleep. It slept on the new value with no channel left to
// ring it, and Shutdown waited forever to join it. The hook stops the pool in
// exactly that gap.
TEST(ServerPool, ShutdownWakesAWorkerThatHasJustSeenThePoolRunning) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  rpc::ServerPool* pool = nullptr;
  std::atomic<bool> armed{false};
  Notification stop_now;
  std::atomic<pid_t> stopper_tid{0};
  std::atomic<bool> in_shutdown{false};
  Notification stopped;
  rpc::ServerPool::Options options{.max_threads = 1};
  options.after_stop_check_for_testing = [&] {
    // Once, when the worker has dropped the last channel: then nothing but
    // Shutdown's own wake-up can end its sleep.
    if (!armed.load() || pool->channel_count() != 0) return;
    armed = false;
    stop_now.Notify();
    // The worker goes on once Shutdown has done all it does before it joins
    // the workers: the join is the only place where Shutdown sleeps.
    while (!in_shutdown.load() || !SleepsInTheKernel(stopper_tid.load())) {
      absl::SleepFor(absl::Milliseconds(1));
    }
  };
  auto owned = std::make_unique<rpc::ServerPool>(std::move(options));
  pool = owned.get();
  ASSERT_OK_AND_ASSIGN(LocalPair pair, MakeLocalPair(*watcher));
  ASSERT_OK(pool->Add(std::move(pair.server), std::make_shared<PainterService>()));
  {
    sink::PainterProxy proxy(*pair.client);
    ASSERT_OK(proxy.Total());
  }
  std::thread stopper([&] {
    stopper_tid = gettid();
    stop_now.WaitForNotification();
    in_shutdown = true;
    pool->Shutdown();
    stopped.Notify();
  });
  armed = true;
  pair.client.reset();  // The last client goes; the worker drops its channel.
  if (!stopped.WaitForNotificationWithTimeout(absl::Seconds(20))) {
    ADD_FAILURE() << "Shutdown did not return: the worker slept through it";
    // Both threads are stuck for good: leave them and what they use to exit.
    stopper.detach();
    (void)owned.release();
    (void)watcher.release();
    return;
  }
  stopper.join();
  EXPECT_EQ(pool->thread_count(), 0u);
}

// A hand-written service whose interface id happens to carry the object
// word's tag (about one name in 65,536 hashes so: this is
// Fnv1a64("acme.Service1027440")). Answers every call with an empty reply.
class TagLookalikeService final : public rpc::ServiceStub {
 public:
  static constexpr uint64_t kId = 0x0b1ecc2a160b6fe8ull;
  absl::string_view service_name() const override { return "acme.Service1027440"; }
  uint64_t interface_id() const override { return kId; }
  absl::Status Dispatch(IncomingCall& call, const rpc::CallContext&) override {
    return call.Reply({});
  }
};
static_assert(rpc::Fnv1a64("acme.Service1027440") == TagLookalikeService::kId);
static_assert(rpc::object_wire::IsObjectWord(TagLookalikeService::kId));

// Regression: the object protocol took every call whose interface word
// looked like an object word for a call on an object its replies lent, so
// such a service answered nothing but NOT_FOUND.
TEST(ServerPool, AServiceWhoseIdLooksLikeAnObjectWordIsStillItself) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  rpc::ServerPool pool({.max_threads = 1});
  ASSERT_OK_AND_ASSIGN(LocalPair pair, MakeLocalPair(*watcher));
  ASSERT_OK(pool.Add(std::move(pair.server),
                     rpc::ServeWithObjectProtocol(std::make_shared<TagLookalikeService>())));
  ASSERT_OK_AND_ASSIGN(OutgoingCall call,
                       pair.client->BeginCall(0, absl::Now() + absl::Seconds(10)));
  call.header() = CallHeader{TagLookalikeService::kId, rpc::MethodWord(1, 2), 0};
  EXPECT_OK(pair.client->Call(std::move(call), {}, absl::Now() + absl::Seconds(10)).status());
}

// A Note whose bytes are no Counter: the stub answers DATA_LOSS, and the
// pool closes the channel.
absl::Status SendMalformedNote(ClientChannel& client) {
  const std::byte garbage[8] = {std::byte{0xff}, std::byte{0xff}, std::byte{0xff}, std::byte{0xff}};
  absl::StatusOr<OutgoingCall> call =
      client.BeginCall(sizeof(garbage), absl::Now() + absl::Seconds(10));
  if (!call.ok()) return call.status();
  std::memcpy(call->buffer().data(), garbage, sizeof(garbage));
  call->header() =
      CallHeader{sink::PainterInterface::kInterfaceId, sink::PainterInterface::kNote, 0};
  const std::span<const std::byte> message = call->buffer().first(sizeof(garbage));
  return client.Send(*std::move(call), message);
}

// A Painter whose Note calls Total on another channel, `out`, from the pool
// thread that serves it: that thread has then been blocked in a call.
class CallsOut final : public PainterService {
 public:
  explicit CallsOut(ClientChannel& out) : out_(out) {}
  absl::Status Note(const rpc::CallContext&, const sink::Counter&) override {
    sink::PainterProxy proxy(out_);
    total_ = proxy.Total({.deadline = absl::Now() + absl::Seconds(10)}).status();
    called_.Notify();
    return absl::OkStatus();
  }
  Notification& called() { return called_; }
  const absl::Status& total() const { return total_; }

 private:
  ClientChannel& out_;
  absl::Status total_;
  Notification called_;
};

// Regression (found by the object fuzzer's passes surface): a pool thread
// that had once been blocked in a call of its own kept the channels it had
// watched meanwhile, and so kept a channel the pool then closed as
// malformed open for its client: the client's next call waited out its
// deadline with nobody left to serve it, and the channel's memory, socket
// and stub stayed until the thread next blocked in a call. Now the pool
// lets go of a channel as soon as it drops it, and a channel closed on one
// side tells the other at once, whoever still holds it.
TEST(ServerPool, AChannelItClosesEndsForItsClientAtOnce) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  rpc::ServerPool answers({.max_threads = 1});
  ASSERT_OK_AND_ASSIGN(LocalPair out, MakeLocalPair(*watcher));
  ASSERT_OK(answers.Add(std::move(out.server), std::make_shared<PainterService>()));

  rpc::ServerPool pool({.max_threads = 1});
  ASSERT_OK_AND_ASSIGN(LocalPair pair, MakeLocalPair(*watcher));
  auto service = std::make_shared<CallsOut>(*out.client);
  const std::weak_ptr<CallsOut> alive = service;
  ASSERT_OK(pool.Add(std::move(pair.server), service));
  sink::PainterProxy proxy(*pair.client);
  // Oneway, so that the pool's thread serves it (a sync call from this
  // process would be served by its own waiting thread, call_router.h).
  ASSERT_OK(proxy.Note(1));
  ASSERT_TRUE(service->called().WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_OK(service->total());
  service.reset();

  ASSERT_OK(SendMalformedNote(*pair.client));
  ASSERT_TRUE(WaitForChannelCount(pool, 0));

  const absl::Status total = proxy.Total({.deadline = absl::Now() + absl::Seconds(10)}).status();
  EXPECT_TRUE(IsPeerDead(total)) << total;
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (!alive.expired() && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_TRUE(alive.expired()) << "the pool still holds the channel it dropped";
}

// A Painter whose Note waits until the test opens `gate`.
class GatedNote final : public PainterService {
 public:
  absl::Status Note(const rpc::CallContext&, const sink::Counter&) override {
    at_gate.Notify();
    gate.WaitForNotification();
    return absl::OkStatus();
  }
  Notification at_gate;
  Notification gate;
};

// The same end, with the channel still held: a pool thread in a long
// handler of another channel keeps the snapshot of channels it took the
// call from. The client of the channel closed meanwhile must not wait for
// that handler.
TEST(ServerPool, AChannelItClosesEndsForItsClientWhileAnotherHandlerRuns) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  rpc::ServerPool pool({.max_threads = 2});
  ASSERT_OK_AND_ASSIGN(LocalPair gated, MakeLocalPair(*watcher));
  ASSERT_OK_AND_ASSIGN(LocalPair doomed, MakeLocalPair(*watcher));
  auto gate = std::make_shared<GatedNote>();
  // Whatever fails below, the handler returns and the pool can stop.
  const absl::Cleanup open_gate = [gate] { gate->gate.Notify(); };
  ASSERT_OK(pool.Add(std::move(gated.server), gate));
  ASSERT_OK(pool.Add(std::move(doomed.server), std::make_shared<PainterService>()));
  // Taken off `doomed` by a pool thread (and served by this thread, which
  // waits in its chain): that thread's snapshot holds both channels now, as
  // it does when it takes the gated Note next.
  ASSERT_OK(sink::PainterProxy(*doomed.client).Total());
  ASSERT_OK(sink::PainterProxy(*gated.client).Note(1));
  ASSERT_TRUE(gate->at_gate.WaitForNotificationWithTimeout(absl::Seconds(10)));

  ASSERT_OK(SendMalformedNote(*doomed.client));
  ASSERT_TRUE(WaitForChannelCount(pool, 1));

  const absl::Status total = sink::PainterProxy(*doomed.client)
                                 .Total({.deadline = absl::Now() + absl::Seconds(10)})
                                 .status();
  EXPECT_TRUE(IsPeerDead(total)) << total;
}

}  // namespace
}  // namespace sluice::testing
