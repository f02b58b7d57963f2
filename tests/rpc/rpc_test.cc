// Generated proxies and stubs end to end, each scenario with the server on a
// thread of this process and in a separate process (rpc_test_peer).
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/base/errors.h"
#include "ipc/base/notification.h"
#include "ipc/channel/channel_region.h"
#include "ipc/rpc/server_pool.h"
#include "tests/rpc/kitchen_sink_service.h"
#include "tests/testing/channel_pair.h"
#include "tests/testing/status_matchers.h"

namespace sluice::testing {
namespace {

namespace sink = ::sluice::test::sink;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

enum class Mode { kThread, kProcess };

std::string ModeName(const ::testing::TestParamInfo<Mode>& info) {
  return info.param == Mode::kThread ? "ServerThread" : "ServerProcess";
}

// A client channel to a Painter (or Calculator) server: a ServerPool on
// threads of this process, or rpc_test_peer (which serves with one too).
class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Start(Mode mode, PeerWatcher& watcher,
                                                       const std::string& service = "painter",
                                                       channel_layout::Geometry geometry = {}) {
    auto server = std::unique_ptr<Server>(new Server());
    if (mode == Mode::kProcess) {
      auto child = ConnectToChild({SLUICE_RPC_TEST_PEER, service}, watcher, geometry);
      if (!child.ok()) return child.status();
      server->client_ = std::move(child->client);
      server->child_.emplace(std::move(child->server));
      return server;
    }
    auto pair = MakeLocalPair(watcher, geometry);
    if (!pair.ok()) return pair.status();
    server->client_ = std::move(pair->client);
    std::shared_ptr<rpc::ServiceStub> stub;
    if (service == "calculator") {
      stub = std::make_shared<CalculatorService>();
    } else {
      stub = std::make_shared<PainterService>();
    }
    absl::Status added = server->pool_.Add(std::move(pair->server), std::move(stub),
                                           [raw = server.get()](absl::Status why) {
                                             raw->ended_why_ = std::move(why);
                                             raw->ended_.Notify();
                                           });
    if (!added.ok()) return added;
    return server;
  }

  // Hangs up: the pool must drop the channel as the client's death.
  ~Server() {
    client_.reset();
    if (child_) {
      EXPECT_OK(child_->Wait(absl::Seconds(10)));
      return;
    }
    if (!ended_.WaitForNotificationWithTimeout(absl::Seconds(10))) {
      ADD_FAILURE() << "the pool still serves a channel whose client is gone";
      return;
    }
    EXPECT_TRUE(IsPeerDead(ended_why_)) << ended_why_;
    EXPECT_EQ(pool_.channel_count(), 0u);
  }

  ClientChannel& channel() { return *client_; }
  Subprocess& child() { return *child_; }

 private:
  Server() = default;
  // Written by the pool before ended_ is notified; outlives the pool.
  absl::Status ended_why_;
  Notification ended_;
  rpc::ServerPool pool_;
  std::unique_ptr<ClientChannel> client_;
  std::optional<Subprocess> child_;
};

class RpcTest : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    auto watcher = PeerWatcher::Create();
    ASSERT_OK(watcher);
    watcher_ = *std::move(watcher);
  }
  std::unique_ptr<PeerWatcher> watcher_;
};

INSTANTIATE_TEST_SUITE_P(BothSides, RpcTest, ::testing::Values(Mode::kThread, Mode::kProcess),
                         ModeName);

TEST_P(RpcTest, TypedArgumentsRoundTrip) {
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_));
  sink::PainterProxy painter(server->channel());
  const std::vector<uint8_t> blob = {1, 2, 3, 250};
  const std::vector<int32_t> ints = {10, -3, 5};
  ASSERT_OK_AND_ASSIGN(auto echo, painter.Echo("hello", -42, true, sink::Color::Blue, blob, ints));
  EXPECT_EQ(echo->text()->str(), "hello");
  EXPECT_EQ(echo->number(), -42);
  EXPECT_TRUE(echo->flag());
  EXPECT_EQ(echo->color(), sink::Color::Blue);
  EXPECT_EQ(std::vector<uint8_t>(echo->blob()->begin(), echo->blob()->end()), blob);
  EXPECT_EQ(echo->ints_sum(), 12);
}

TEST_P(RpcTest, NestedTablesUnionsAndVectorsThroughABuildFunction) {
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_));
  sink::PainterProxy painter(server->channel());
  auto summary = painter.Summarize([](flatbuffers::FlatBufferBuilder& fbb) {
    const std::vector<sink::Point> points = {{0, 0}, {1, 1}, {2, 2}};
    auto inner_shapes = std::vector<flatbuffers::Offset<sink::Shape>>{
        sink::CreateShapeDirect(fbb, "dot", sink::Color::Red, &points)};
    auto inner = sink::CreateDrawingDirect(fbb, "inner", &inner_shapes, sink::Figure::Square,
                                           sink::CreateSquare(fbb, 2).Union());
    auto outer_shapes = std::vector<flatbuffers::Offset<sink::Shape>>{
        sink::CreateShapeDirect(fbb, "a", sink::Color::Blue, &points),
        sink::CreateShapeDirect(fbb, "b")};
    std::vector<flatbuffers::Offset<flatbuffers::String>> tags = {fbb.CreateString("x"),
                                                                  fbb.CreateString("y")};
    return sink::CreateDrawingDirect(fbb, "outer", &outer_shapes, sink::Figure::Circle,
                                     sink::CreateCircle(fbb, 1).Union(), &tags, inner);
  });
  ASSERT_OK(summary);
  EXPECT_EQ((*summary)->shape_count(), 3u);
  EXPECT_EQ((*summary)->point_count(), 6u);
  EXPECT_DOUBLE_EQ((*summary)->area(), 3.0 + 4.0);
  EXPECT_EQ((*summary)->tags()->str(), "x,y");
  EXPECT_EQ((*summary)->depth(), 2u);
  ASSERT_EQ((*summary)->colors()->size(), 3u);
  EXPECT_EQ((*summary)->colors()->Get(0), sink::Color::Blue);
  EXPECT_EQ((*summary)->colors()->Get(1), sink::Color::Green);  // The schema default.
  EXPECT_EQ((*summary)->colors()->Get(2), sink::Color::Red);
}

TEST_P(RpcTest, ServerErrorArrivesWithItsCodeAndMessage) {
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_));
  sink::PainterProxy painter(server->channel());
  EXPECT_THAT(painter.Fail(static_cast<int32_t>(absl::StatusCode::kNotFound), "no such key"),
              StatusIs(absl::StatusCode::kNotFound, "no such key"));
  EXPECT_THAT(painter.Fail(static_cast<int32_t>(absl::StatusCode::kPermissionDenied), "nope"),
              StatusIs(absl::StatusCode::kPermissionDenied, "nope"));
  // The connection stays usable.
  EXPECT_OK(painter.Total());
}

TEST_P(RpcTest, OnewayCallsRunInOrder) {
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_));
  sink::PainterProxy painter(server->channel());
  constexpr uint64_t kNotes = 2000;
  for (uint64_t i = 1; i <= kNotes; ++i) ASSERT_OK(painter.Note(i));
  const uint64_t expected = kNotes * (kNotes + 1) / 2;
  uint64_t total = 0;
  for (int attempt = 0; attempt < 10000 && total != expected; ++attempt) {
    ASSERT_OK_AND_ASSIGN(auto reply, painter.Total());
    total = reply->value();
    ASSERT_NE(total, ~uint64_t{0}) << "a oneway call ran out of order";
    if (total != expected) absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(total, expected);
}

TEST_P(RpcTest, ConcurrentCallersGetTheirOwnResponses) {
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_));
  sink::PainterProxy painter(server->channel());
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        const int64_t number = t * 100000 + i;
        const std::string text = absl::StrCat("thread ", t, " call ", i);
        auto echo = painter.Echo(text, number, false, sink::Color::Red, {}, {});
        if (!echo.ok() || (*echo)->number() != number || (*echo)->text()->str() != text) {
          failures.fetch_add(1);
          return;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_P(RpcTest, LargeFieldWrittenInPlaceArrivesIntact) {
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_));
  sink::PainterProxy painter(server->channel());
  constexpr size_t kSize = 1 << 20;
  int builds = 0;
  uint64_t expected = 0;
  auto digest = painter.Upload(
      [&](flatbuffers::FlatBufferBuilder& fbb) {
        ++builds;
        uint8_t* out = nullptr;
        auto data = fbb.CreateUninitializedVector(kSize, &out);
        for (size_t i = 0; i < kSize; ++i) out[i] = static_cast<uint8_t>(i * 7);
        expected = Fnv64({out, kSize});
        return sink::CreateBlob(fbb, data);
      },
      // Not a multiple of the builder's alignment: regression test for a
      // reservation the builder could never fit into.
      rpc::CallOptions{.size_hint = kSize + 61});
  ASSERT_OK(digest);
  EXPECT_EQ(builds, 1) << "the size hint should have made the first build fit";
  EXPECT_EQ((*digest)->size(), kSize);
  EXPECT_EQ((*digest)->checksum(), expected);
}

TEST_P(RpcTest, TooSmallAHintRebuildsWithEnoughRoom) {
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_));
  sink::PainterProxy painter(server->channel());
  int builds = 0;
  auto digest = painter.Upload([&](flatbuffers::FlatBufferBuilder& fbb) {
    ++builds;
    std::vector<uint8_t> data(100'000, 9);
    return sink::CreateBlobDirect(fbb, &data);
  });
  ASSERT_OK(digest);
  EXPECT_EQ(builds, 2);
  EXPECT_EQ((*digest)->size(), 100'000u);
}

TEST_P(RpcTest, LargeReplyLargerThanTheFirstReservation) {
  channel_layout::Geometry geometry;
  geometry.reply_arena_size = 8 << 20;
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_, "painter", geometry));
  sink::PainterProxy painter(server->channel());
  for (int round = 0; round < 3; ++round) {
    ASSERT_OK_AND_ASSIGN(auto blob, painter.Download(3 << 20));
    ASSERT_EQ(blob->data()->size(), 3u << 20);
    for (size_t i = 0; i < blob->data()->size(); i += 4093) {
      ASSERT_EQ(blob->data()->Get(i), static_cast<uint8_t>(i));
    }
  }
}

// Regression: a large reply taught the method a large reservation, and the
// small replies that followed, each reserving that much and held by idle
// slots, filled the reply arena (RESOURCE_EXHAUSTED for every later call).
TEST_P(RpcTest, ALargeReplyDoesNotStarveTheSmallOnesAfterIt) {
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_));  // 1 MiB reply arena.
  sink::PainterProxy painter(server->channel());
  for (int round = 0; round < 3; ++round) {
    ASSERT_OK_AND_ASSIGN(auto big, painter.Download(600 * 1024));
    ASSERT_EQ(big->data()->size(), 600u * 1024);
  }
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      std::vector<rpc::Response<sink::Counter>> held;
      for (int i = 0; i < 4; ++i) {  // Several small replies held at once.
        auto total = painter.Total();
        if (!total.ok()) {
          ADD_FAILURE() << total.status();
          failures.fetch_add(1);
          return;
        }
        held.push_back(*std::move(total));
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_OK(painter.Download(600 * 1024));
}

TEST_P(RpcTest, DescriptorsTravelThroughGeneratedCalls) {
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_));
  sink::PainterProxy painter(server->channel());
  UniqueFd memfd(memfd_create("to-server", MFD_CLOEXEC));
  ASSERT_TRUE(memfd);
  ASSERT_EQ(write(memfd.get(), "to the server", 13), 13);
  const int fds[] = {memfd.get()};
  ASSERT_OK_AND_ASSIGN(auto blob, painter.ReadFd(rpc::CallOptions{.fds = fds}));
  EXPECT_EQ(std::string(blob->data()->begin(), blob->data()->end()), "to the server");
  std::vector<UniqueFd> returned = blob.TakeFds();
  ASSERT_EQ(returned.size(), 1u);
  char text[32] = {};
  ASSERT_EQ(pread(returned[0].get(), text, sizeof(text), 0), 15);
  EXPECT_EQ(std::string(text, 15), "from the server");
  // Without a descriptor the implementation's own error comes back.
  EXPECT_THAT(painter.ReadFd(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0 descriptors")));
}

// Kept responses never make a later call wait (they used to pin their slot
// and their request's arena space: a 3 MiB request behind a kept 2 MiB one
// waited forever in a 4 MiB arena). More responses are kept here than the
// channel has slots, and mappings and descriptors come back afterwards.
TEST_P(RpcTest, KeptResponsesNeverHoldUpLaterCalls) {
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_));  // 16 slots.
  sink::PainterProxy painter(server->channel());
  // The channel's own descriptors first: the server's bell arrives with its
  // first reply.
  ASSERT_OK(painter.Total().status());
  const int fds_before = CountOpenFds();
  {
    std::vector<rpc::Response<sink::EchoResponse>> kept;
    std::vector<uint8_t> two_mib(2 << 20, 7);
    std::vector<uint8_t> three_mib(3 << 20, 9);
    for (int i = 0; i < 40; ++i) {
      const auto& payload = i % 2 == 0 ? two_mib : three_mib;
      ASSERT_OK_AND_ASSIGN(auto echoed,
                           painter.Echo("kept", i, false, sink::Color::Red, payload, {},
                                        {.deadline = absl::Now() + absl::Seconds(30)}));
      ASSERT_EQ(echoed->blob()->size(), payload.size());
      kept.push_back(std::move(echoed));
    }
    for (int i = 0; i < 40; ++i) {
      ASSERT_OK(painter.Total({.deadline = absl::Now() + absl::Seconds(30)}).status());
    }
    EXPECT_EQ(kept[39]->number(), 39);
  }
  EXPECT_EQ(CountOpenFds(), fds_before);
}

bool FullSizedBuild() {
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  return false;
#endif
#endif
  return true;
#else
  return false;
#endif
}

// Plain fields of 4 MiB, 64 MiB and (in optimized builds without
// sanitizers) 1 GiB less 1 MiB, there and back, compared byte for byte.
TEST_P(RpcTest, LargePayloadsBothWaysArriveIntact) {
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_));
  sink::PainterProxy painter(server->channel());
  std::vector<size_t> sizes = {size_t{4} << 20, size_t{64} << 20};
  if (FullSizedBuild()) sizes.push_back((size_t{1} << 30) - (size_t{1} << 20));
  for (size_t size : sizes) {
    std::vector<uint8_t> payload(size);
    for (size_t i = 0; i < size; i += 8) payload[i] = static_cast<uint8_t>(i >> 3);
    ASSERT_OK_AND_ASSIGN(auto echoed, painter.Echo("big", 1, false, sink::Color::Red, payload, {},
                                                   {.deadline = absl::Now() + absl::Seconds(120)}));
    ASSERT_EQ(echoed->blob()->size(), size);
    EXPECT_TRUE(std::equal(payload.begin(), payload.end(), echoed->blob()->begin())) << size;
  }
}

// Sealed blobs of 64 MiB and (in optimized builds without sanitizers)
// 1 GiB, to the server and back: each side reads them where they lie, in a
// memfd sealed against writes, and both checks cover every byte.
TEST_P(RpcTest, LargeSealedBlobsBothWaysArriveIntact) {
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_));
  sink::PainterProxy painter(server->channel());
  std::vector<size_t> sizes = {size_t{64} << 20};
  if (FullSizedBuild()) sizes.push_back(size_t{1} << 30);
  const rpc::CallOptions options{.deadline = absl::Now() + absl::Seconds(120)};
  for (size_t size : sizes) {
    ASSERT_OK_AND_ASSIGN(rpc::BlobWriter writer, rpc::BlobWriter::Create(size));
    for (size_t i = 0; i < size; ++i) writer.data()[i] = static_cast<uint8_t>(i * 7 + (i >> 20));
    ASSERT_OK_AND_ASSIGN(rpc::Blob sent, std::move(writer).Seal());
    ASSERT_OK_AND_ASSIGN(auto digest, painter.Inspect(sent, options));
    EXPECT_EQ(digest->size(), size);
    EXPECT_EQ(digest->checksum(), Fnv64(sent.data())) << size;

    ASSERT_OK_AND_ASSIGN(auto produced, painter.Produce(size, options));
    ASSERT_OK_AND_ASSIGN(rpc::Blob back, rpc::TakeBlob(produced, produced->bytes()));
    ASSERT_EQ(back.size(), size);
    EXPECT_EQ(::fcntl(back.fd(), F_GET_SEALS) & F_SEAL_WRITE, F_SEAL_WRITE);
    const uint8_t* bytes = back.data().data();
    size_t wrong = 0;
    for (size_t i = 0; i < size; ++i) wrong += bytes[i] != static_cast<uint8_t>(i);
    EXPECT_EQ(wrong, 0u) << size;
  }
}

// A request over the server's limit is refused before it is built.
TEST_P(RpcTest, RequestOverTheServersLimitIsResourceExhaustedBeforeItIsBuilt) {
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_));
  sink::PainterProxy painter(server->channel());
  int builds = 0;
  auto digest = painter.Upload(
      [&](flatbuffers::FlatBufferBuilder& fbb) {
        ++builds;
        return sink::CreateBlob(fbb);
      },
      {.size_hint = size_t{3} << 30});
  EXPECT_THAT(digest, StatusIs(absl::StatusCode::kResourceExhausted,
                               AllOf(HasSubstr("3221225472"), HasSubstr("limit"))));
  EXPECT_EQ(builds, 0);
}

// Larger than both arenas: the request and the reply spill to sealed
// memfds, and the bytes come back intact.
TEST_P(RpcTest, RequestAndReplyLargerThanTheArenasSpillAndArriveIntact) {
  channel_layout::Geometry geometry;
  geometry.request_arena_size = 64 * 1024;
  geometry.reply_arena_size = 64 * 1024;
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_, "painter", geometry));
  sink::PainterProxy painter(server->channel());
  for (size_t size : {size_t{100'000}, size_t{4} << 20}) {
    std::vector<uint8_t> big(size);
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 31 + size);
    ASSERT_OK_AND_ASSIGN(auto echoed, painter.Echo("x", 0, false, sink::Color::Red, big, {}));
    ASSERT_NE(echoed->blob(), nullptr);
    ASSERT_EQ(echoed->blob()->size(), big.size());
    EXPECT_TRUE(std::equal(big.begin(), big.end(), echoed->blob()->begin())) << size;
  }
}

TEST_P(RpcTest, WrongInterfaceIsFailedPrecondition) {
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_));
  sink::CalculatorProxy calculator(server->channel());  // But the server is a Painter.
  // The server names what it serves; the proxy names what was asked of it.
  EXPECT_THAT(calculator.Add(1, 2), StatusIs(absl::StatusCode::kFailedPrecondition,
                                             AllOf(StartsWith("sluice.test.sink.Calculator.Add: "),
                                                   HasSubstr("serves sluice.test.sink.Painter"))));
}

TEST_P(RpcTest, UnknownMethodIsUnimplementedAndMismatchedSignatureIsRejected) {
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_));
  ClientChannel& channel = server->channel();
  auto raw_call = [&](uint64_t method) {
    auto call = channel.BeginCall(64);
    if (!call.ok()) return call.status();
    flatbuffers::FlatBufferBuilder fbb;
    fbb.Finish(sink::CreateEmpty(fbb));
    std::memcpy(call->buffer().data(), fbb.GetBufferPointer(), fbb.GetSize());
    call->header() = CallHeader{sink::PainterInterface::kInterfaceId, method};
    return channel.Call(*std::move(call), call->buffer().first(fbb.GetSize())).status();
  };
  EXPECT_THAT(raw_call(rpc::MethodWord(0x12345678, 0)),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("no method")));
  const uint64_t wrong_signature =
      rpc::MethodWord(rpc::MethodIdOf(sink::PainterInterface::kTotal), 0xdead);
  EXPECT_THAT(raw_call(wrong_signature),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("types differ")));
  sink::PainterProxy painter(channel);
  EXPECT_OK(painter.Total());
}

// Regression: a rejected call (here a oneway method called synchronously)
// was answered with the error but then still run.
TEST_P(RpcTest, ARejectedCallIsNotRun) {
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(GetParam(), *watcher_));
  ClientChannel& channel = server->channel();
  ASSERT_OK_AND_ASSIGN(OutgoingCall call, channel.BeginCall(64));
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(sink::CreateCounter(fbb, 1));
  std::memcpy(call.buffer().data(), fbb.GetBufferPointer(), fbb.GetSize());
  call.header() = CallHeader{sink::PainterInterface::kInterfaceId, sink::PainterInterface::kNote};
  EXPECT_THAT(channel.Call(std::move(call), call.buffer().first(fbb.GetSize())),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("oneway")));
  sink::PainterProxy painter(channel);
  ASSERT_OK_AND_ASSIGN(auto total, painter.Total());
  EXPECT_EQ(total->value(), 0u) << "the rejected Note ran";
}

TEST(RpcProcessTest, ServerDeathFailsThePendingCallWithPeerDead) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(Mode::kProcess, *watcher));
  sink::PainterProxy painter(server->channel());
  std::thread killer([&] {
    absl::SleepFor(absl::Milliseconds(50));
    ASSERT_OK(server->child().Kill(SIGKILL));
  });
  auto result = painter.Hang();
  killer.join();
  EXPECT_TRUE(IsPeerDead(result.status())) << result.status();
  EXPECT_TRUE(IsPeerDead(painter.Total().status()));
}

TEST(RpcProcessTest, LinkToDeathFiresExactlyOnceWhenTheServerDies) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(Mode::kProcess, *watcher));
  sink::PainterProxy painter(server->channel());
  std::atomic<int> linked{0};
  std::atomic<int> unlinked{0};
  std::atomic<int64_t> fired_at_ns{0};
  ASSERT_OK_AND_ASSIGN(uint64_t kept, painter.LinkToDeath([&] {
    fired_at_ns = absl::GetCurrentTimeNanos();
    linked.fetch_add(1);
  }));
  ASSERT_OK_AND_ASSIGN(uint64_t dropped, painter.LinkToDeath([&] { unlinked.fetch_add(1); }));
  ASSERT_OK(painter.UnlinkToDeath(dropped));
  ASSERT_OK(painter.Total());

  const int64_t killed_at_ns = absl::GetCurrentTimeNanos();
  ASSERT_OK(server->child().Kill(SIGKILL));
  const absl::Time give_up = absl::Now() + absl::Seconds(2);
  while (linked.load() == 0 && absl::Now() < give_up) absl::SleepFor(absl::Microseconds(100));
  ASSERT_EQ(linked.load(), 1) << "no death notification within 2 s";
  std::printf("death notification %s after SIGKILL\n",
              absl::FormatDuration(absl::Nanoseconds(fired_at_ns.load() - killed_at_ns)).c_str());
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(linked.load(), 1);
  EXPECT_EQ(unlinked.load(), 0);
  // After death: linking reports it, the fired link is gone, calls fail fast.
  EXPECT_TRUE(IsPeerDead(painter.LinkToDeath([] {}).status()));
  EXPECT_THAT(painter.UnlinkToDeath(kept), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_TRUE(IsPeerDead(painter.Total().status()));
}

TEST(RpcDeath, ClosingOurOwnSideDoesNotFireDeathRecipients) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  std::atomic<int> fired{0};
  {
    ASSERT_OK_AND_ASSIGN(LocalPair pair, MakeLocalPair(*watcher));
    ASSERT_OK(pair.client->LinkToDeath([&] { fired.fetch_add(1); }));
    pair.client->Close();
    // Told at once: the server sees a death, we do not.
    EXPECT_TRUE(IsPeerDead(pair.server->Receive().status()));
    EXPECT_THAT(pair.client->LinkToDeath([] {}).status(), StatusIs(absl::StatusCode::kCancelled));
    // The server's end going is the answer to ours, seen while ours is
    // still watched: it is no death either.
    pair.server.reset();
    absl::SleepFor(absl::Milliseconds(50));
    pair.client.reset();
  }
  EXPECT_EQ(fired.load(), 0);
}

// A child forked without exec holds the same sockets: ending its copy of a
// channel must leave the parent's working.
TEST(RpcDeath, AForkedChildClosingItsCopyLeavesTheChannelOpen) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  rpc::ServerPool pool({.max_threads = 1});
  ASSERT_OK_AND_ASSIGN(LocalPair pair, MakeLocalPair(*watcher));
  ASSERT_OK(pool.Add(std::move(pair.server), std::make_shared<PainterService>()));
  sink::PainterProxy proxy(*pair.client);
  ASSERT_OK(proxy.Total());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    pair.client->Close();
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  absl::SleepFor(absl::Milliseconds(50));  // Time for a hang-up to be seen, if there were one.
  EXPECT_OK(pair.client->health());
  EXPECT_OK(proxy.Total().status());
}

// The server ending the channel (a malformed request, its shutdown) is an
// end for the client too, told at once through the liveness socket even
// while the server still holds its end.
TEST(RpcDeath, TheServerClosingTheChannelFiresDeathRecipients) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  Notification fired;  // Outlives the channel, whose recipient may run as it goes.
  ASSERT_OK_AND_ASSIGN(LocalPair pair, MakeLocalPair(*watcher));
  ASSERT_OK(pair.client->LinkToDeath([&] { fired.Notify(); }));
  pair.server->Close(absl::DataLossError("the client sent nonsense"));
  ASSERT_TRUE(fired.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(IsPeerDead(pair.client->health())) << pair.client->health();
  EXPECT_TRUE(IsPeerDead(pair.client->LinkToDeath([] {}).status()));
}

class HostileRequestTest : public ::testing::TestWithParam<std::string> {};

INSTANTIATE_TEST_SUITE_P(Variants, HostileRequestTest,
                         ::testing::Values("random", "root-outside", "truncated", "vector-length",
                                           "empty"));

TEST_P(HostileRequestTest, MalformedRequestIsRefusedAndTheServerSurvives) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  ASSERT_OK_AND_ASSIGN(Region region, CreateChannelRegion());
  ASSERT_OK_AND_ASSIGN(auto sockets, SeqPacketPair());
  ASSERT_OK_AND_ASSIGN(Subprocess child,
                       Subprocess::Spawn({SLUICE_RPC_TEST_PEER, "hostile", GetParam()},
                                         {region.fd(), sockets.first.get()}));
  sockets.first.reset();
  ASSERT_OK_AND_ASSIGN(auto channel,
                       ServerChannel::Open(std::move(region), std::move(sockets.second), *watcher));
  rpc::ServerPool pool;
  auto painter = std::make_shared<PainterService>();
  absl::Status ended_why;
  Notification ended;
  ASSERT_OK(pool.Add(std::move(channel), painter, [&](absl::Status why) {
    ended_why = std::move(why);
    ended.Notify();
  }));
  // The pool drops the channel as malformed; the child waits for that hang-up.
  ASSERT_TRUE(ended.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_THAT(ended_why, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_EQ(pool.channel_count(), 0u);
  ASSERT_OK_AND_ASSIGN(int status, child.Wait());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the hostile client did not see DATA_LOSS and then the connection close (status " << status
      << ")";
  // The pool itself goes on serving.
  ASSERT_OK_AND_ASSIGN(LocalPair next, MakeLocalPair(*watcher));
  ASSERT_OK(pool.Add(std::move(next.server), painter));
  sink::PainterProxy proxy(*next.client);
  EXPECT_OK(proxy.Total());
}

}  // namespace
}  // namespace sluice::testing
