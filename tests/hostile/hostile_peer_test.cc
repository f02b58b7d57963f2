// Hostile peers across real processes: a client, a server and an object's
// host (a subscribed listener), that write
// random bytes over every byte of Sluice memory they can map while calls
// run, and try to get write access to the memory their victim builds in or
// reads back. The victim must never crash or hang, and keeps serving (or
// calling) everyone else. SLUICE_HOSTILE_SECONDS (default 3) sets how long;
// run it for minutes by hand:
//   SLUICE_HOSTILE_SECONDS=300 ctest --test-dir build -R Hostile
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "ipc/base/mutex.h"
#include "ipc/host/service_host.h"
#include "ipc/service/service_manager.h"
#include "ipc/testing/subprocess.h"
#include "key_value_sluice.h"
#include "listener_sluice.h"
#include "tests/testing/status_matchers.h"

namespace sluice::testing {
namespace {

using example::kv::KeyValueStoreProxy;
using example::listener::FeedProxy;

// Keeps the text of every event it is called back with.
class RecordingListener : public example::listener::ListenerStub {
 public:
  absl::StatusOr<flatbuffers::Offset<example::listener::Ack>> OnEvent(
      const rpc::CallContext&, const example::listener::Event& request,
      flatbuffers::FlatBufferBuilder& reply) override {
    MutexLock lock(&mu_);
    texts_.push_back(request.text() != nullptr ? request.text()->str() : "");
    return example::listener::CreateAck(reply, ::getpid());
  }
  // The texts received so far that start with `prefix`.
  std::vector<std::string> TakeStartingWith(const std::string& prefix) {
    MutexLock lock(&mu_);
    std::vector<std::string> out;
    for (std::string& text : texts_) {
      if (text.rfind(prefix, 0) == 0) out.push_back(std::move(text));
    }
    texts_.clear();
    return out;
  }

 private:
  Mutex mu_;
  std::vector<std::string> texts_ ABSL_GUARDED_BY(mu_);
};

int HostileSeconds() {
  const char* value = std::getenv("SLUICE_HOSTILE_SECONDS");
  const int seconds = value != nullptr ? std::atoi(value) : 0;
  return seconds > 0 ? seconds : 3;
}

class HostilePeerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/sluice-hostile-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    socket_ = dir_ + "/sm.sock";
    ASSERT_OK_AND_ASSIGN(Subprocess manager, Subprocess::SpawnAndWaitReady(
                                                 {SLUICE_SERVICEMANAGER_BIN, "--socket=" + socket_,
                                                  "--log_level=error"}));
    manager_.emplace(std::move(manager));
    ASSERT_OK_AND_ASSIGN(manager_client_, ServiceManager::Connect({.socket_path = socket_}));
  }
  void TearDown() override {
    manager_client_.reset();
    if (manager_) {
      EXPECT_OK(manager_->Kill(SIGTERM));
      EXPECT_OK(manager_->Wait().status());
    }
    (void)!std::system(("rm -rf " + dir_).c_str());
  }

  absl::StatusOr<Subprocess> SpawnScribbler(const std::string& mode, const std::string& name) {
    std::vector<std::string> argv = {SLUICE_SCRIBBLER_BIN, "--mode=" + mode, "--socket=" + socket_,
                                     "--name=" + name,
                                     absl::StrCat("--seconds=", HostileSeconds())};
    if (mode == "server") return Subprocess::SpawnAndWaitReady(argv);
    return Subprocess::Spawn(argv);
  }

  // The scribbler may have crashed itself; it must never have been allowed
  // to write the victim's memory (exit code 3).
  static void ExpectNoForbiddenWrite(Subprocess& scribbler) {
    ASSERT_OK_AND_ASSIGN(int status, scribbler.Wait(absl::Seconds(HostileSeconds() + 60)));
    EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 3)
        << "the kernel let the hostile peer write memory its victim builds in";
  }

  std::string dir_;
  std::string socket_;
  std::optional<Subprocess> manager_;
  std::unique_ptr<ServiceManager> manager_client_;
};

TEST_F(HostilePeerTest, ScribblingClientNeverCrashesTheServerAndOthersKeepBeingServed) {
  ASSERT_OK_AND_ASSIGN(
      Subprocess server,
      Subprocess::SpawnAndWaitReady({SLUICE_KV_SERVER_BIN, "--socket=" + socket_,
                                     "--trust_same_user=false", "--max_value_bytes=67108864"}));
  ASSERT_OK_AND_ASSIGN(Subprocess scribbler, SpawnScribbler("client", "example.kv.KeyValueStore"));
  ASSERT_OK_AND_ASSIGN(auto kv, Connect<KeyValueStoreProxy>(*manager_client_));
  const absl::Time end = absl::Now() + absl::Seconds(HostileSeconds());
  int calls = 0;
  for (uint32_t i = 0; absl::Now() < end; ++i) {
    // Small (copied), large (sealed) and arena-overflowing values, and now
    // and then one of 64 MiB.
    const size_t size = i % 16 == 15 ? size_t{64} << 20
                        : i % 3 == 0 ? 200
                        : i % 3 == 1 ? 100'000
                                     : 1 << 20;
    std::vector<uint8_t> value(size);
    for (size_t k = 0; k < size; k += 4096) value[k] = static_cast<uint8_t>(i + k);
    const std::string key = absl::StrCat("good/", i % 8);
    const rpc::CallOptions options{.deadline = absl::Now() + absl::Seconds(30)};
    ASSERT_OK(kv->Put(key, value, options).status()) << "call " << i;
    ASSERT_OK_AND_ASSIGN(auto got, kv->Get(key, options));
    ASSERT_TRUE(got->found());
    ASSERT_EQ(got->value()->size(), size);
    ASSERT_TRUE(std::equal(value.begin(), value.end(), got->value()->begin())) << "call " << i;
    ++calls;
  }
  EXPECT_GT(calls, 0);
  ExpectNoForbiddenWrite(scribbler);
  // Still alive, still serving.
  EXPECT_THAT(server.Wait(absl::Milliseconds(1)), StatusIs(absl::StatusCode::kDeadlineExceeded))
      << "kv_server exited";
  EXPECT_OK(kv->Get("good/0").status());
  ASSERT_OK(server.Kill(SIGTERM));
  ASSERT_OK_AND_ASSIGN(int status, server.Wait());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "kv_server status " << status;
}

// Object channels: the scribbler holds a Listener of its own subscribed to
// feed_server, which calls it back on the scribbler's reverse channel while
// the scribbler writes over that channel's memory (its replies, built in
// its own arena, included) and publishes events of up to 1 MiB. Another
// subscriber gets every event of its own intact, and the feed stays up.
TEST_F(HostilePeerTest, ScribblingListenerNeverCrashesTheFeedAndOthersKeepReceiving) {
  ASSERT_OK_AND_ASSIGN(Subprocess server,
                       Subprocess::SpawnAndWaitReady({SLUICE_FEED_SERVER_BIN, "--socket=" + socket_,
                                                      "--call_timeout_ms=2000"}));
  std::optional<Subprocess> scribbler;
  {
    ASSERT_OK_AND_ASSIGN(Subprocess first, SpawnScribbler("listener", "example.listener.Feed"));
    scribbler.emplace(std::move(first));
  }
  ASSERT_OK_AND_ASSIGN(auto feed, Connect<FeedProxy>(*manager_client_));
  auto listener = std::make_shared<RecordingListener>();
  ASSERT_OK(feed->Subscribe("t", listener).status());
  const absl::Time end = absl::Now() + absl::Seconds(HostileSeconds());
  int published = 0;
  int scribblers = 1;
  for (uint32_t i = 0; absl::Now() < end; ++i) {
    // It soon wrecks itself (its own builders are scribbled on too): a new
    // one takes its place, so the feed is under attack the whole time.
    if (absl::StatusOr<int> exited = scribbler->Wait(absl::ZeroDuration()); exited.ok()) {
      EXPECT_FALSE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 3)
          << "the kernel let the hostile peer write memory its victim builds in";
      ASSERT_OK_AND_ASSIGN(Subprocess next, SpawnScribbler("listener", "example.listener.Feed"));
      scribbler.emplace(std::move(next));
      ++scribblers;
    }
    const std::string prefix = absl::StrCat("good/", i, "/");
    const size_t size = i % 3 == 0 ? 200 : i % 3 == 1 ? 100'000 : 1 << 20;
    std::string text = prefix;
    for (size_t k = text.size(); k < size; ++k)
      text.push_back(static_cast<char>('a' + (i + k) % 26));
    auto response = feed->Publish("t", text, {.deadline = absl::Now() + absl::Seconds(30)});
    ASSERT_OK(response.status()) << "publish " << i;
    // Publish returns once every listener answered: ours has it by now.
    const std::vector<std::string> got = listener->TakeStartingWith(prefix);
    ASSERT_EQ(got.size(), 1u) << "publish " << i << " delivered " << (*response)->delivered();
    ASSERT_EQ(got[0], text) << "publish " << i;
    ++published;
  }
  EXPECT_GT(published, 0);
  ExpectNoForbiddenWrite(*scribbler);
  std::printf("%d events published and received intact beside %d scribblers\n", published,
              scribblers);
  EXPECT_THAT(server.Wait(absl::Milliseconds(1)), StatusIs(absl::StatusCode::kDeadlineExceeded))
      << "feed_server exited";
  EXPECT_OK(feed->Publish("t", "after").status());
  ASSERT_OK(server.Kill(SIGTERM));
  ASSERT_OK_AND_ASSIGN(int status, server.Wait());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "feed_server status " << status;
}

TEST_F(HostilePeerTest, ScribblingServerNeverCrashesOrHangsItsClient) {
  ASSERT_OK_AND_ASSIGN(Subprocess scribbler, SpawnScribbler("server", "hostile.kv"));
  const int fds_before = CountOpenFds();
  const absl::Time end = absl::Now() + absl::Seconds(HostileSeconds());
  const size_t sizes[] = {10, 5'000, 70'000, 1 << 20, 3 << 20, 64 << 20};
  int calls = 0;
  int ok = 0;
  int refused = 0;
  uint32_t i = 0;
  while (absl::Now() < end) {
    LookupOptions untrusting;
    untrusting.trust = TrustPolicy::kNobody;
    auto kv = Connect<KeyValueStoreProxy>(*manager_client_, "hostile.kv", std::move(untrusting));
    if (!kv.ok()) {
      // A scribbled header is refused at open (DATA_LOSS); NOT_FOUND once
      // the scribbler has crashed itself and its name went.
      if (absl::IsNotFound(kv.status())) break;
      ++refused;
      continue;
    }
    while (absl::Now() < end && kv->channel().health().ok()) {
      const absl::Time deadline = absl::Now() + absl::Seconds(2);
      auto got =
          (*kv)->Get(absl::StrCat("size:", sizes[i++ % std::size(sizes)]), {.deadline = deadline});
      // Whatever it answers, the call returns, and never long after its deadline.
      EXPECT_LT(absl::Now(), deadline + absl::Seconds(10));
      ++calls;
      if (got.ok()) {
        ++ok;
        // Verified, so every field reads safely, whatever the bytes are.
        if (got->get()->value() != nullptr) (void)got->get()->value()->size();
      }
    }
  }
  EXPECT_GT(calls + refused, 0);
  ExpectNoForbiddenWrite(scribbler);
  // Every mapping and descriptor of the dead connections is gone.
  EXPECT_EQ(CountOpenFds(), fds_before);
  RecordProperty("ok_calls", ok);
  std::printf("%d calls, %d answered OK, %d connections refused\n", calls, ok, refused);
}

}  // namespace
}  // namespace sluice::testing
