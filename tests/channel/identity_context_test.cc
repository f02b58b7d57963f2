// What the channel gives the RPC layer for object references and nested
// calls: the client's hello (its identity from the kernel, for channels
// nobody vouches for), the call-chain id carried in every slot, receives
// that take only chosen calls, and descriptors taken by index.
//
// The hello scenarios run twice: with the client on a thread of this process
// (TSan-visible) and in a separate process started from channel_test_peer,
// where the identity the server learns must be the child's, not ours.
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/base/errors.h"
#include "ipc/channel/channel_region.h"
#include "ipc/channel/client_channel.h"
#include "ipc/channel/server_channel.h"
#include "ipc/channel/server_waiting.h"
#include "ipc/socket/unix_socket.h"
#include "ipc/testing/subprocess.h"
#include "tests/channel/echo_protocol.h"
#include "tests/testing/channel_pair.h"
#include "tests/testing/status_matchers.h"

namespace sluice::testing {
namespace {

using ::testing::HasSubstr;

// What "whoever set the channel up" claims in ChannelOptions::peer; with
// hello_identity the kernel's word must replace it.
constexpr PeerCredentials kVouched{1, 4242, 4343};

// A channel region and its liveness socket pair, neither side open yet.
struct Wiring {
  Region region;
  UniqueFd client_end;
  UniqueFd server_end;
};

absl::StatusOr<Wiring> Wire(const channel_layout::Geometry& geometry = {}) {
  auto region = CreateChannelRegion(geometry);
  if (!region.ok()) return region.status();
  auto sockets = SeqPacketPair();
  if (!sockets.ok()) return sockets.status();
  return Wiring{*std::move(region), std::move(sockets->first), std::move(sockets->second)};
}

// A second mapping of `region` for the other side.
absl::StatusOr<Region> SecondMapping(const Region& region) {
  auto fd = region.DuplicateFd();
  if (!fd.ok()) return fd.status();
  return Region::Adopt(*std::move(fd), 0, Region::kMaxSize);
}

// The server side of an object-reference-like channel: hello_identity, and
// SO_PASSCRED on its socket unless `passcred` is false.
absl::StatusOr<std::unique_ptr<ServerChannel>> OpenHelloServer(Region region, UniqueFd server_end,
                                                               PeerWatcher& watcher,
                                                               bool passcred = true) {
  if (passcred) {
    if (absl::Status enabled = EnableSenderCredentials(server_end.get()); !enabled.ok()) {
      return enabled;
    }
  }
  ChannelOptions options;
  options.peer = kVouched;
  options.hello_identity = true;
  return ServerChannel::Open(std::move(region), std::move(server_end), watcher, options);
}

void ExpectSameProcess(const PeerCredentials& got, pid_t pid) {
  EXPECT_EQ(got.pid, pid);
  EXPECT_EQ(got.uid, ::getuid());
  EXPECT_EQ(got.gid, ::getgid());
}

enum class Mode { kThread, kProcess };

std::string ModeName(const ::testing::TestParamInfo<Mode>& info) {
  return info.param == Mode::kThread ? "ClientThread" : "ClientProcess";
}

// A client running RunIdentityClient, with or without its hello, on a
// thread of this process or in a channel_test_peer child.
class IdentityClient {
 public:
  // `region_fd`: the channel region, for the client to map.
  static absl::StatusOr<std::unique_ptr<IdentityClient>> Start(Mode mode, bool hello, int calls,
                                                               UniqueFd region_fd,
                                                               UniqueFd client_end,
                                                               PeerWatcher& watcher) {
    auto client = std::unique_ptr<IdentityClient>(new IdentityClient());
    if (mode == Mode::kProcess) {
      auto child =
          Subprocess::Spawn({SLUICE_CHANNEL_TEST_PEER, hello ? "hello-client" : "no-hello-client",
                             absl::StrCat(calls)},
                            {region_fd.get(), client_end.get()});
      if (!child.ok()) return child.status();
      client->child_.emplace(*std::move(child));
      return client;  // Our copies close: only the child holds its end.
    }
    auto region = Region::Adopt(std::move(region_fd), 0, Region::kMaxSize);
    if (!region.ok()) return region.status();
    client->thread_ =
        std::thread([raw = client.get(), hello, calls, &watcher, region = *std::move(region),
                     client_end = std::move(client_end)]() mutable {
          ChannelOptions options;
          options.hello_identity = hello;
          auto channel =
              ClientChannel::Open(std::move(region), std::move(client_end), watcher, options);
          raw->result_ = channel.ok() ? RunIdentityClient(**channel, calls) : channel.status();
        });
    return client;
  }

  ~IdentityClient() {
    if (thread_.joinable()) thread_.join();
  }

  pid_t pid() const { return child_.has_value() ? child_->pid() : ::getpid(); }

  // Waits for the client to finish; its IdentityExitCode.
  int Finish() {
    if (thread_.joinable()) {
      thread_.join();
      return IdentityExitCode(result_);
    }
    absl::StatusOr<int> status = child_->Wait(absl::Seconds(20));
    EXPECT_OK(status);
    if (!status.ok() || !WIFEXITED(*status)) return -1;
    return WEXITSTATUS(*status);
  }

 private:
  IdentityClient() = default;
  std::thread thread_;
  absl::Status result_;  // Written by thread_ only, read after joining it.
  std::optional<Subprocess> child_;
};

class HelloIdentityTest : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    auto watcher = PeerWatcher::Create();
    ASSERT_OK(watcher);
    watcher_ = *std::move(watcher);
  }
  std::unique_ptr<PeerWatcher> watcher_;
};

INSTANTIATE_TEST_SUITE_P(BothSides, HelloIdentityTest,
                         ::testing::Values(Mode::kThread, Mode::kProcess), ModeName);

TEST_P(HelloIdentityTest, ServerLearnsTheClientProcessFromTheKernel) {
  constexpr int kCalls = 3;
  ASSERT_OK_AND_ASSIGN(Wiring wiring, Wire());
  ASSERT_OK_AND_ASSIGN(UniqueFd region_fd, wiring.region.DuplicateFd());
  // Declared first so that the server goes first: a client thread still
  // waiting for an answer (only if the test failed) then sees it gone.
  std::unique_ptr<IdentityClient> client;
  // The server asks for credentials before the client can say hello.
  ASSERT_OK_AND_ASSIGN(auto server, OpenHelloServer(std::move(wiring.region),
                                                    std::move(wiring.server_end), *watcher_));
  // Until the first call only the vouched-for identity is known.
  EXPECT_EQ(server->peer().pid, kVouched.pid);
  ASSERT_OK_AND_ASSIGN(
      client, IdentityClient::Start(GetParam(), /*hello=*/true, kCalls, std::move(region_fd),
                                    std::move(wiring.client_end), *watcher_));
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_OK_AND_ASSIGN(IncomingCall call, server->Receive(absl::Now() + absl::Seconds(20)));
    ExpectSameProcess(call.caller(), client->pid());
    ExpectSameProcess(server->peer(), client->pid());
    const absl::Status answered = AnswerWithCaller(call);
    if (i + 1 < kCalls) {
      ASSERT_OK(answered);
    } else {
      // The client exits as soon as it has the last answer, and Reply
      // reports the channel's health once it has published.
      EXPECT_TRUE(answered.ok() || IsPeerDead(answered)) << answered;
    }
  }
  // The client checked every answer named it.
  EXPECT_EQ(client->Finish(), 0);
  if (GetParam() == Mode::kProcess) {
    EXPECT_NE(server->peer().pid, ::getpid());
  }
  // And it hung up as it finished.
  absl::StatusOr<IncomingCall> next = server->Receive(absl::Now() + absl::Seconds(20));
  EXPECT_TRUE(IsPeerDead(next.status())) << next.status();
}

// The hostile path: a client that never introduces itself gets nothing
// served. The server's Receive reports DATA_LOSS and the channel is over;
// the caller learns it when the server drops the channel (its end of the
// liveness socket hangs up), as for every request the server refuses as
// malformed.
TEST_P(HelloIdentityTest, ClientWithoutAHelloIsRefusedWithDataLoss) {
  ASSERT_OK_AND_ASSIGN(Wiring wiring, Wire());
  ASSERT_OK_AND_ASSIGN(UniqueFd region_fd, wiring.region.DuplicateFd());
  std::unique_ptr<IdentityClient> client;  // Outlives the server, as above.
  ASSERT_OK_AND_ASSIGN(auto server, OpenHelloServer(std::move(wiring.region),
                                                    std::move(wiring.server_end), *watcher_));
  ASSERT_OK_AND_ASSIGN(client,
                       IdentityClient::Start(GetParam(), /*hello=*/false, 1, std::move(region_fd),
                                             std::move(wiring.client_end), *watcher_));
  EXPECT_THAT(server->Receive(absl::Now() + absl::Seconds(20)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("introducing itself")));
  EXPECT_THAT(server->health(), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(server->Receive(absl::Now() + absl::Seconds(1)),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(ServerWaiting(*server).TryReceive(), StatusIs(absl::StatusCode::kDataLoss));
  // Nothing the client did replaced the vouched-for identity.
  EXPECT_EQ(server->peer().pid, kVouched.pid);
  server.reset();
  EXPECT_EQ(client->Finish(), IdentityExitCode(absl::UnavailableError("")));
}

// ---------------------------------------------------------------------------
// Hello corner cases, both sides in this process.

class HelloLocalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(watcher_, PeerWatcher::Create());
    ASSERT_OK_AND_ASSIGN(Wiring wiring, Wire());
    ASSERT_OK_AND_ASSIGN(Region client_region, SecondMapping(wiring.region));
    region_.emplace(std::move(wiring.region));
    client_region_.emplace(std::move(client_region));
    client_end_ = std::move(wiring.client_end);
    server_end_ = std::move(wiring.server_end);
  }

  absl::StatusOr<std::unique_ptr<ServerChannel>> OpenServer(bool passcred = true) {
    return OpenHelloServer(*std::move(region_), std::move(server_end_), *watcher_, passcred);
  }
  absl::StatusOr<std::unique_ptr<ClientChannel>> OpenClient(bool hello) {
    ChannelOptions options;
    options.hello_identity = hello;
    return ClientChannel::Open(*std::move(client_region_), std::move(client_end_), *watcher_,
                               options);
  }

  std::unique_ptr<PeerWatcher> watcher_;
  std::optional<Region> region_;
  std::optional<Region> client_region_;
  UniqueFd client_end_;
  UniqueFd server_end_;
};

// A oneway first call is identified too, and every later call of any kind.
TEST_F(HelloLocalTest, OnewayFirstCallCarriesTheIdentity) {
  ASSERT_OK_AND_ASSIGN(auto server, OpenServer());
  ASSERT_OK_AND_ASSIGN(auto client, OpenClient(/*hello=*/true));
  ASSERT_OK_AND_ASSIGN(OutgoingCall oneway, client->BeginCall(8));
  ASSERT_OK(client->Send(std::move(oneway), oneway.buffer().first(8)));
  {
    ASSERT_OK_AND_ASSIGN(IncomingCall call, server->Receive(absl::Now() + absl::Seconds(20)));
    EXPECT_TRUE(call.oneway());
    ExpectSameProcess(call.caller(), ::getpid());
  }
  std::thread asker([&] {
    absl::StatusOr<PeerCredentials> seen = AskCaller(*client, absl::Now() + absl::Seconds(20));
    ASSERT_OK(seen);
    ExpectSameProcess(*seen, ::getpid());
  });
  absl::StatusOr<IncomingCall> call = server->Receive(absl::Now() + absl::Seconds(20));
  EXPECT_OK(call);
  if (call.ok()) {
    ExpectSameProcess(call->caller(), ::getpid());
    EXPECT_OK(AnswerWithCaller(*call));
  }
  asker.join();
}

// A server waiting on its bell (a pool with many channels) reads the
// liveness socket before it looks at the slots, so it meets the hello there
// first: it keeps it for the first call instead of taking it for a
// malformed message, and each request still rings.
TEST_F(HelloLocalTest, AServerOnItsBellKeepsTheHelloItDrainsFirst) {
  ASSERT_OK_AND_ASSIGN(auto server, OpenServer());
  ASSERT_OK_AND_ASSIGN(auto client, OpenClient(/*hello=*/true));
  ServerWaiting waiting(*server);
  waiting.ListenOnBell([] {});
  // The hello and the client's arena are queued already: a first drain
  // takes them (as a pool's first look does) and leaves nothing to read.
  waiting.DrainBell();
  ASSERT_OK_AND_ASSIGN(std::optional<IncomingCall> none, waiting.TryReceive());
  EXPECT_FALSE(none.has_value());
  pollfd drained = {.fd = waiting.bell(), .events = POLLIN, .revents = 0};
  EXPECT_EQ(::poll(&drained, 1, 0), 0) << "the drain left messages queued";
  for (int i = 0; i < 3; ++i) {
    std::thread asker([&] {
      absl::StatusOr<PeerCredentials> seen = AskCaller(*client, absl::Now() + absl::Seconds(20));
      ASSERT_OK(seen);
      ExpectSameProcess(*seen, ::getpid());
    });
    pollfd bell = {.fd = waiting.bell(), .events = POLLIN, .revents = 0};
    ASSERT_EQ(::poll(&bell, 1, 20'000), 1) << "call " << i << " did not ring";
    waiting.DrainBell();
    ASSERT_OK_AND_ASSIGN(std::optional<IncomingCall> call, waiting.TryReceive());
    ASSERT_TRUE(call.has_value()) << "call " << i;
    ExpectSameProcess(call->caller(), ::getpid());
    EXPECT_OK(AnswerWithCaller(*call));
    asker.join();
  }
  EXPECT_OK(server->health());
}

// A hello received without SO_PASSCRED names nobody: the server must not
// serve the channel as if it knew who calls.
TEST_F(HelloLocalTest, HelloWithoutSenderCredentialsIsRefused) {
  ASSERT_OK_AND_ASSIGN(auto server, OpenServer(/*passcred=*/false));
  ASSERT_OK_AND_ASSIGN(auto client, OpenClient(/*hello=*/true));
  ASSERT_OK_AND_ASSIGN(OutgoingCall oneway, client->BeginCall(8));
  ASSERT_OK(client->Send(std::move(oneway), oneway.buffer().first(8)));
  EXPECT_THAT(server->Receive(absl::Now() + absl::Seconds(20)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("EnableSenderCredentials")));
  EXPECT_EQ(server->peer().pid, kVouched.pid);
}

// Regression: a hello the client sent before the server's socket asked for
// credentials came out of the kernel as pid 0, uid and gid 65534, and the
// channel was served as that "caller".
TEST_F(HelloLocalTest, HelloSentBeforeTheServerAskedForCredentialsIsRefused) {
  ASSERT_OK_AND_ASSIGN(auto client, OpenClient(/*hello=*/true));
  ASSERT_OK_AND_ASSIGN(auto server, OpenServer());  // Enables SO_PASSCRED only now.
  ASSERT_OK_AND_ASSIGN(OutgoingCall oneway, client->BeginCall(8));
  ASSERT_OK(client->Send(std::move(oneway), oneway.buffer().first(8)));
  EXPECT_THAT(server->Receive(absl::Now() + absl::Seconds(20)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("no credentials")));
  EXPECT_EQ(server->peer().pid, kVouched.pid);
}

// Forged hellos: one that carries descriptors, and a client whose first
// message is a call's descriptors. Both are refused, and the descriptors
// read on the way are closed (the pipe's last write end goes away).
TEST_F(HelloLocalTest, HelloCarryingDescriptorsIsRefusedAndTheyAreClosed) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);
  ASSERT_OK_AND_ASSIGN(auto server, OpenServer());
  // The hello's exact bytes (so the descriptors alone give it away), sent
  // once the server asks for credentials (so they cannot).
  const uint64_t hello_tag = ~uint64_t{0};
  const int attach[] = {write_end.get()};
  ASSERT_OK(SendMessage(client_end_.get(), std::as_bytes(std::span<const uint64_t>(&hello_tag, 1)),
                        attach));
  write_end.reset();
  ASSERT_OK_AND_ASSIGN(auto client, OpenClient(/*hello=*/false));
  ASSERT_OK_AND_ASSIGN(OutgoingCall oneway, client->BeginCall(8));
  ASSERT_OK(client->Send(std::move(oneway), oneway.buffer().first(8)));
  EXPECT_THAT(server->Receive(absl::Now() + absl::Seconds(20)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("introducing itself")));
  EXPECT_EQ(server->peer().pid, kVouched.pid);
  pollfd hung_up{read_end.get(), POLLIN, 0};
  EXPECT_EQ(::poll(&hung_up, 1, 5000), 1);
  EXPECT_NE(hung_up.revents & POLLHUP, 0) << "the forged hello's descriptor is still open";
}

TEST_F(HelloLocalTest, DescriptorsInPlaceOfTheHelloAreRefusedAndClosed) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);
  ASSERT_OK_AND_ASSIGN(auto server, OpenServer());
  ASSERT_OK_AND_ASSIGN(auto client, OpenClient(/*hello=*/false));
  ASSERT_OK_AND_ASSIGN(OutgoingCall oneway, client->BeginCall(8));
  const int attach[] = {write_end.get()};
  ASSERT_OK(oneway.AttachFds(attach));
  ASSERT_OK(client->Send(std::move(oneway), oneway.buffer().first(8)));
  write_end.reset();
  EXPECT_THAT(server->Receive(absl::Now() + absl::Seconds(20)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("introducing itself")));
  pollfd hung_up{read_end.get(), POLLIN, 0};
  EXPECT_EQ(::poll(&hung_up, 1, 5000), 1);
  EXPECT_NE(hung_up.revents & POLLHUP, 0) << "the call's descriptor is still open";
}

// ---------------------------------------------------------------------------
// Call context, nested receives and indexed descriptors: a local pair.

class LocalChannelTest : public ::testing::Test {
 protected:
  // (Re)opens the pair with `geometry`.
  void Open(const channel_layout::Geometry& geometry = {}) {
    Stop();
    ASSERT_OK_AND_ASSIGN(Wiring wiring, Wire(geometry));
    ASSERT_OK_AND_ASSIGN(Region client_region, SecondMapping(wiring.region));
    ASSERT_OK_AND_ASSIGN(server_, ServerChannel::Open(std::move(wiring.region),
                                                      std::move(wiring.server_end), *watcher_));
    ASSERT_OK_AND_ASSIGN(client_, ClientChannel::Open(std::move(client_region),
                                                      std::move(wiring.client_end), *watcher_));
  }
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(watcher_, PeerWatcher::Create());
    Open();
  }
  void TearDown() override { Stop(); }
  // Ends calls still waiting (only a failed test leaves any) and the pair.
  void Stop() {
    if (client_ != nullptr) client_->Close();
    for (std::thread& caller : callers_) caller.join();
    callers_.clear();
    client_.reset();
    server_.reset();
  }

  // Sends a oneway call with `header`.
  void SendOneway(const CallHeader& header) {
    ASSERT_OK_AND_ASSIGN(OutgoingCall call, client_->BeginCall(8));
    call.header() = header;
    ASSERT_OK(client_->Send(std::move(call), call.buffer().first(8)));
  }
  // Starts a sync call with `header` on a thread of its own; it expects an
  // empty reply (or the end of the channel, when the test has stopped).
  void StartCall(const CallHeader& header) {
    callers_.emplace_back([this, header] {
      auto call = client_->BeginCall(8);
      ASSERT_OK(call);
      call->header() = header;
      absl::StatusOr<Reply> reply =
          client_->Call(*std::move(call), call->buffer().first(8), absl::Now() + absl::Seconds(30));
      EXPECT_OK(reply);
    });
  }
  // Waits until the server has a sync request pending that `accept` takes.
  void AwaitPending(absl::FunctionRef<bool(uint64_t)> accept) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (!ServerWaiting(*server_).ChainedRequestPending(accept)) {
      ASSERT_LT(absl::Now(), deadline) << "request never became pending";
      absl::SleepFor(absl::Milliseconds(1));
    }
  }

  std::unique_ptr<PeerWatcher> watcher_;
  std::unique_ptr<ServerChannel> server_;
  std::unique_ptr<ClientChannel> client_;
  std::vector<std::thread> callers_;
};

TEST_F(LocalChannelTest, CallContextTravelsWithSyncAndOnewayRequests) {
  StartCall(CallHeader{0x11, 0x22, 0xfeedfacecafebeefull});
  ASSERT_OK_AND_ASSIGN(IncomingCall sync, server_->Receive(absl::Now() + absl::Seconds(20)));
  EXPECT_FALSE(sync.oneway());
  EXPECT_EQ(sync.header().interface_id, 0x11u);
  EXPECT_EQ(sync.header().method, 0x22u);
  EXPECT_EQ(sync.header().chain_id, 0xfeedfacecafebeefull);
  ASSERT_OK(sync.Reply({}));

  SendOneway(CallHeader{0x33, 0x44, 0x8000000000000001ull});
  ASSERT_OK_AND_ASSIGN(IncomingCall oneway, server_->Receive(absl::Now() + absl::Seconds(20)));
  EXPECT_TRUE(oneway.oneway());
  EXPECT_EQ(oneway.header().chain_id, 0x8000000000000001ull);
}

// Every call writes its context, so a slot reused by a call without one
// does not hand on the previous call's chain.
TEST_F(LocalChannelTest, ACallWithoutContextDoesNotInheritTheSlotsLastOne) {
  channel_layout::Geometry geometry;
  geometry.slot_count = 1;
  Open(geometry);
  SendOneway(CallHeader{1, 2, 0xabcdef});
  {
    ASSERT_OK_AND_ASSIGN(IncomingCall first, server_->Receive(absl::Now() + absl::Seconds(20)));
    EXPECT_EQ(first.header().chain_id, 0xabcdefu);
  }
  SendOneway(CallHeader{1, 2});
  ASSERT_OK_AND_ASSIGN(IncomingCall second, server_->Receive(absl::Now() + absl::Seconds(20)));
  EXPECT_EQ(second.header().chain_id, 0u);
}

TEST_F(LocalChannelTest, TryReceiveChainedTakesOnlyAcceptedSyncRequests) {
  constexpr uint64_t kMine = 7;
  constexpr uint64_t kOther = 5;
  auto mine = [](uint64_t chain_id) { return chain_id == kMine; };
  auto other = [](uint64_t chain_id) { return chain_id == kOther; };
  auto anything = [](uint64_t) { return true; };
  ServerWaiting waiting(*server_);
  // Nothing pending yet.
  EXPECT_FALSE(waiting.ChainedRequestPending(anything));
  ASSERT_OK_AND_ASSIGN(std::optional<IncomingCall> none, waiting.TryReceiveChained(anything));
  EXPECT_FALSE(none.has_value());

  // A oneway of the chain: never nested work.
  SendOneway(CallHeader{1, 1, kMine});
  EXPECT_FALSE(waiting.ChainedRequestPending(anything));
  ASSERT_OK_AND_ASSIGN(none, waiting.TryReceiveChained(anything));
  EXPECT_FALSE(none.has_value());

  StartCall(CallHeader{1, 2, kOther});
  AwaitPending(other);
  EXPECT_FALSE(waiting.ChainedRequestPending(mine));
  ASSERT_OK_AND_ASSIGN(none, waiting.TryReceiveChained(mine));
  EXPECT_FALSE(none.has_value()) << "took a request of another chain";

  StartCall(CallHeader{1, 3, kMine});
  AwaitPending(mine);
  ASSERT_OK_AND_ASSIGN(std::optional<IncomingCall> nested, waiting.TryReceiveChained(mine));
  ASSERT_TRUE(nested.has_value());
  EXPECT_FALSE(nested->oneway());
  EXPECT_EQ(nested->header().chain_id, kMine);
  EXPECT_EQ(nested->header().method, 3u);
  // Taken: neither pending nor offered again.
  EXPECT_FALSE(waiting.ChainedRequestPending(mine));
  ASSERT_OK_AND_ASSIGN(none, waiting.TryReceiveChained(mine));
  EXPECT_FALSE(none.has_value());
  ASSERT_OK(nested->Reply({}));

  // What was skipped is still there for an ordinary receive, exactly once.
  EXPECT_TRUE(waiting.ChainedRequestPending(other));
  std::vector<uint64_t> methods;
  for (int i = 0; i < 2; ++i) {
    ASSERT_OK_AND_ASSIGN(std::optional<IncomingCall> call, waiting.TryReceive());
    ASSERT_TRUE(call.has_value()) << "request " << i << " was lost";
    methods.push_back(call->header().method);
    if (!call->oneway()) {
      EXPECT_EQ(call->header().chain_id, kOther);
      ASSERT_OK(call->Reply({}));
    }
  }
  EXPECT_THAT(methods, ::testing::UnorderedElementsAre(1u, 2u));
  ASSERT_OK_AND_ASSIGN(none, waiting.TryReceive());
  EXPECT_FALSE(none.has_value());
  EXPECT_FALSE(waiting.ChainedRequestPending(anything));
}

TEST_F(LocalChannelTest, TryReceiveChainedReportsTheEndOfTheChannel) {
  server_->Close(absl::CancelledError("closed by the test"));
  EXPECT_THAT(ServerWaiting(*server_).TryReceiveChained([](uint64_t) { return true; }),
              StatusIs(absl::StatusCode::kCancelled, HasSubstr("closed by the test")));
}

UniqueFd MemfdHolding(const std::string& text) {
  UniqueFd fd(::memfd_create("indexed", MFD_CLOEXEC));
  EXPECT_TRUE(fd);
  EXPECT_EQ(::write(fd.get(), text.data(), text.size()), static_cast<ssize_t>(text.size()));
  return fd;
}

std::string ContentOf(const UniqueFd& fd) {
  char buffer[64] = {};
  const ssize_t got = ::pread(fd.get(), buffer, sizeof(buffer), 0);
  return std::string(buffer, got > 0 ? static_cast<size_t>(got) : 0);
}

TEST_F(LocalChannelTest, DescriptorsAreTakenByIndexOnBothSides) {
  std::vector<UniqueFd> sent;
  for (const char* text : {"zero", "one", "two"}) sent.push_back(MemfdHolding(text));
  std::vector<UniqueFd> answers;
  for (const char* text : {"a", "b", "c"}) answers.push_back(MemfdHolding(text));

  std::thread server([&] {
    absl::StatusOr<IncomingCall> call = server_->Receive(absl::Now() + absl::Seconds(20));
    ASSERT_OK(call);
    EXPECT_EQ(call->fd_count(), 3u);
    UniqueFd second = call->TakeFd(1);
    EXPECT_EQ(ContentOf(second), "one");
    EXPECT_FALSE(call->TakeFd(1)) << "taken twice";
    EXPECT_FALSE(call->TakeFd(3)) << "past the end";
    EXPECT_EQ(call->fd_count(), 3u) << "indices must not shift when one is taken";
    EXPECT_EQ(ContentOf(call->TakeFd(2)), "two");
    EXPECT_EQ(ContentOf(call->TakeFd(0)), "zero");

    EXPECT_EQ(call->reply_fd_count(), 0u);
    const int first[] = {answers[0].get()};
    ASSERT_OK(call->AttachReplyFds(first));
    EXPECT_EQ(call->reply_fd_count(), 1u);
    const int more[] = {answers[1].get(), answers[2].get()};
    ASSERT_OK(call->AttachReplyFds(more));
    EXPECT_EQ(call->reply_fd_count(), 3u);
    ASSERT_OK(call->Reply({}));
  });

  absl::StatusOr<Reply> answered = absl::UnknownError("not called");
  if (absl::StatusOr<OutgoingCall> call = client_->BeginCall(8); call.ok()) {
    const int attach[] = {sent[0].get(), sent[1].get(), sent[2].get()};
    EXPECT_OK(call->AttachFds(attach));
    answered =
        client_->Call(*std::move(call), call->buffer().first(8), absl::Now() + absl::Seconds(20));
  }
  server.join();
  ASSERT_OK_AND_ASSIGN(Reply reply, std::move(answered));
  EXPECT_EQ(reply.fd_count(), 3u);
  EXPECT_EQ(ContentOf(reply.TakeFd(2)), "c");
  EXPECT_FALSE(reply.TakeFd(2));
  EXPECT_FALSE(reply.TakeFd(7));
  EXPECT_EQ(ContentOf(reply.TakeFd(0)), "a");
  EXPECT_EQ(ContentOf(reply.TakeFd(1)), "b");
  EXPECT_EQ(reply.fd_count(), 3u);
}

}  // namespace
}  // namespace sluice::testing

namespace sluice::testing {
namespace {

// While a server thread polls (BeginPoll), clients skip their wake-up. A
// poller that stops without taking the request must hand the wake-up on to
// a thread asleep on the doorbell, or that request waits for nobody.
TEST(PollersTest, APollerThatStopsHandsTheWakeUpToASleeper) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  ASSERT_OK_AND_ASSIGN(LocalPair pair, MakeLocalPair(*watcher));
  ServerWaiting poller(*pair.server);
  poller.BeginPoll();
  absl::Status received = absl::UnknownError("not run");
  std::thread sleeper([&] {
    absl::StatusOr<IncomingCall> call = pair.server->Receive(absl::Now() + absl::Seconds(20));
    received = call.status();
    if (call.ok()) (void)call->Reply({});
  });
  // Let it fall asleep on the doorbell (if it has not, it finds the request
  // itself and the test passes without exercising the hand-off).
  absl::SleepFor(absl::Milliseconds(100));
  ASSERT_OK_AND_ASSIGN(OutgoingCall call, pair.client->BeginCall(64));
  ASSERT_OK(pair.client->Send(std::move(call), {}));
  absl::SleepFor(absl::Milliseconds(20));
  poller.EndPoll();
  sleeper.join();
  EXPECT_OK(received);
}

}  // namespace
}  // namespace sluice::testing
