// Service manager scenarios with the daemon on a thread of the test process
// (debuggable, sanitizer-visible): the protocol, its errors, and robustness
// against bad or silent clients.
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "flatbuffers/idl.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/base/notification.h"
#include "ipc/service/service_manager.h"
#include "ipc/service/wire.h"
#include "tests/servicemanager/echo.h"
#include "tests/servicemanager/test_util.h"
#include "tests/testing/status_matchers.h"

namespace sluice {
namespace {

using ::sluice::testing::EchoCall;
using ::sluice::testing::EchoServer;
using ::sluice::testing::InProcessDaemon;
using ::sluice::testing::StatusIs;
using ::sluice::testing::TempDir;
using ::testing::HasSubstr;
namespace wire = ::sluice::servicemanager::wire;

// Small regions keep thousands of look-ups cheap.
channel_layout::Geometry SmallGeometry() {
  channel_layout::Geometry g;
  g.slot_count = 4;
  g.request_arena_size = 64 * 1024;
  g.reply_arena_size = 64 * 1024;
  return g;
}

class ServiceManagerTest : public ::testing::Test {
 protected:
  void SetUp() override { StartDaemon({}); }
  void StartDaemon(DaemonOptions options) {
    daemon_.reset();
    options.socket_path = dir_.File("sm.sock");
    options.logger = &logger_;
    daemon_ = InProcessDaemon::Start(std::move(options));
    ASSERT_NE(daemon_, nullptr);
  }
  absl::StatusOr<std::unique_ptr<ServiceManager>> Connect() {
    ServiceManagerOptions options;
    options.socket_path = dir_.File("sm.sock");
    return ServiceManager::Connect(options);
  }
  UniqueFd RawConnect() {
    UniqueFd fd = testing::RawConnect(dir_.File("sm.sock"));
    if (!fd.valid()) ADD_FAILURE() << "connect: " << std::strerror(errno);
    return fd;
  }
  static bool HungUp(int fd) { return testing::HungUp(fd); }
  static std::vector<std::byte> HelloBytes(uint64_t id = 1) { return testing::HelloBytes(id); }

  Logger logger_{Logger::Level::kError};
  TempDir dir_;
  std::unique_ptr<InProcessDaemon> daemon_;
};

TEST_F(ServiceManagerTest, RegisterLookupCallListAndInfo) {
  ASSERT_OK_AND_ASSIGN(auto server, Connect());
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  EchoServer echo;
  RegisterOptions options;
  options.geometry = SmallGeometry();
  ASSERT_OK(server->Register("test.echo", echo.Handler(), std::move(options)));

  ASSERT_OK_AND_ASSIGN(ServiceConnection connection, client->Lookup("test.echo"));
  EXPECT_EQ(connection.server.pid, ::getpid());
  EXPECT_EQ(connection.server.uid, ::geteuid());
  EXPECT_EQ(connection.channel->request_arena_size(), 64 * 1024u);
  ASSERT_OK_AND_ASSIGN(std::string reply, EchoCall(*connection.channel, "hello"));
  EXPECT_EQ(reply, "hello");
  ASSERT_EQ(echo.clients().size(), 1u);
  EXPECT_EQ(echo.clients()[0].pid, ::getpid());

  ASSERT_OK_AND_ASSIGN(auto list, client->List());
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].name, "test.echo");
  EXPECT_EQ(list[0].owner.pid, ::getpid());
  EXPECT_EQ(list[0].connections, 1u);

  ASSERT_OK_AND_ASSIGN(ServiceDetails info, client->Info("test.echo"));
  ASSERT_EQ(info.connections.size(), 1u);
  EXPECT_EQ(info.connections[0].connection_id, connection.connection_id);
  EXPECT_THAT(client->Info("test.nothing"), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(ServiceManagerTest, ClientMayOverrideGeometryWithinLimits) {
  ASSERT_OK_AND_ASSIGN(auto server, Connect());
  EchoServer echo;
  ASSERT_OK(server->Register("test.echo", echo.Handler()));
  LookupOptions small;
  small.geometry = SmallGeometry();
  ASSERT_OK_AND_ASSIGN(auto connection, server->Lookup("test.echo", small));
  EXPECT_EQ(connection.channel->request_arena_size(), 64 * 1024u);
  EXPECT_EQ(connection.channel->slot_count(), 4u);

  LookupOptions huge;
  huge.geometry = SmallGeometry();
  huge.geometry->request_arena_size = uint64_t{1} << 29;
  EXPECT_THAT(server->Lookup("test.echo", huge),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
}

TEST_F(ServiceManagerTest, SameNameTwiceIsAlreadyExists) {
  ASSERT_OK_AND_ASSIGN(auto first, Connect());
  ASSERT_OK_AND_ASSIGN(auto second, Connect());
  ASSERT_OK(first->Register("test.dup", [](IncomingConnection) {}));
  EXPECT_THAT(second->Register("test.dup", [](IncomingConnection) {}),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("test.dup")));
  EXPECT_THAT(first->Register("test.dup", [](IncomingConnection) {}),
              StatusIs(absl::StatusCode::kAlreadyExists));
}

TEST_F(ServiceManagerTest, UnknownAndInvalidNames) {
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  EXPECT_THAT(client->Lookup("test.missing"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("test.missing")));
  EXPECT_THAT(client->Lookup(""), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client->Register("bad name", [](IncomingConnection) {}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client->Lookup(std::string(300, 'a')), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(ServiceManagerTest, ConnectWithoutManagerIsUnavailable) {
  ServiceManagerOptions options;
  options.socket_path = dir_.File("nobody.sock");
  EXPECT_THAT(ServiceManager::Connect(options),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("nobody.sock")));
}

TEST_F(ServiceManagerTest, ManagerGoingAwayFailsLaterCallsWithUnavailable) {
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  daemon_.reset();
  EXPECT_THAT(client->Lookup("test.any"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(client->health(), StatusIs(absl::StatusCode::kUnavailable));
}

// The same scenario as servicemanager_restart_test, on threads: a manager
// restart costs nothing but time. Registrations come back by themselves, a
// pending WaitFor and a subscription carry on, an open channel never
// notices, and the epoch says it was a restart.
TEST_F(ServiceManagerTest, RestartedManagerGetsNamesWaitsAndSubscriptionsBack) {
  absl::Mutex mu;
  std::vector<std::string> events;
  ASSERT_OK_AND_ASSIGN(auto server, Connect());
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  EchoServer echo;
  ASSERT_OK(client
                ->Subscribe("test.",
                            [&](const NameEvent& e) {
                              absl::MutexLock lock(&mu);
                              events.push_back(absl::StrCat(
                                  e.change == NameChange::kAppeared ? "+" : "-", e.name));
                            })
                .status());
  ASSERT_OK(server->Register("test.kept", echo.Handler()));
  ASSERT_OK_AND_ASSIGN(ServiceConnection open, client->Lookup("test.kept"));
  const uint64_t epoch = server->manager_epoch();
  EXPECT_NE(epoch, 0u);

  absl::Status waited = absl::UnknownError("not run");
  std::thread waiter([&] { waited = client->WaitFor("test.later", absl::Seconds(30)); });
  StartDaemon({});  // Stops the old daemon (every connection drops), starts a new one.
  // New look-ups work once the server's registration is back.
  ASSERT_OK_AND_ASSIGN(auto probe, Connect());
  ASSERT_OK(probe->WaitFor("test.kept", absl::Seconds(10)));
  ASSERT_OK_AND_ASSIGN(ServiceConnection fresh, probe->Lookup("test.kept"));
  EXPECT_EQ(EchoCall(*fresh.channel, "fresh").value_or(""), "fresh");
  // The channel opened before the restart never noticed.
  EXPECT_EQ(EchoCall(*open.channel, "open").value_or(""), "open");

  absl::Status registered;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    registered = server->Register("test.later", [](IncomingConnection) {});
    if (!absl::IsUnavailable(registered)) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_OK(registered);
  waiter.join();
  EXPECT_OK(waited);
  EXPECT_NE(server->manager_epoch(), epoch);
  EXPECT_EQ(server->manager_restarts(), 1u);
  EXPECT_OK(client->health());

  absl::MutexLock lock(&mu);
  auto seen = [&] {
    return std::find(events.begin(), events.end(), "+test.later") != events.end();
  };
  ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&seen), absl::Seconds(10)));
  // Appeared, gone with the old manager, back with the new one, then later.
  EXPECT_EQ(events.front(), "+test.kept");
  EXPECT_EQ(std::count(events.begin(), events.end(), "-test.kept"), 1);
  EXPECT_EQ(std::count(events.begin(), events.end(), "+test.kept"), 2);
}

// A registration's schema is checked (a reflection schema declaring the
// interface it names) and handed back by Describe unchanged.
TEST_F(ServiceManagerTest, RegisteredSchemaIsCheckedAndDescribed) {
  flatbuffers::Parser parser;
  ASSERT_TRUE(
      parser.Parse("namespace t; table Req { a:int; } table Resp { b:string; } rpc_service S { "
                   "Call(Req):Resp; }"))
      << parser.error_;
  parser.Serialize();
  const std::span<const uint8_t> bfbs(parser.builder_.GetBufferPointer(),
                                      parser.builder_.GetSize());
  ASSERT_OK_AND_ASSIGN(auto server, Connect());
  auto with = [&](std::string interface, std::span<const uint8_t> schema) {
    RegisterOptions options;
    options.interface = std::move(interface);
    options.schema = schema;
    options.schema_hash = 0x1234;
    return options;
  };
  const std::string garbage = "definitely not a schema";
  EXPECT_THAT(
      server->Register(
          "test.bad", [](IncomingConnection) {},
          with("t.S", std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(garbage.data()),
                                               garbage.size()))),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a binary schema")));
  EXPECT_THAT(server->Register(
                  "test.other", [](IncomingConnection) {}, with("t.Other", bfbs)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("declares no service")));
  ASSERT_OK(server->Register("test.plain", [](IncomingConnection) {}));
  ASSERT_OK(server->Register(
      "test.typed", [](IncomingConnection) {}, with("t.S", bfbs)));

  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  ASSERT_OK_AND_ASSIGN(ServiceDescription description, client->Describe("test.typed"));
  EXPECT_EQ(description.interface, "t.S");
  EXPECT_EQ(description.schema_hash, 0x1234u);
  EXPECT_EQ(description.schema,
            std::string(reinterpret_cast<const char*>(bfbs.data()), bfbs.size()));
  EXPECT_THAT(client->Describe("test.plain"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("without a schema")));
  EXPECT_THAT(client->Describe("test.none"), StatusIs(absl::StatusCode::kNotFound));
}

// Compatibility is checked at connect, when both sides say what they were
// built from: an incompatible client is refused naming method and field; an
// older compatible one, and one that sends nothing, connect.
TEST_F(ServiceManagerTest, LookupWithAnIncompatibleSchemaIsRefusedNamingTheField) {
  auto bfbs = [](const char* text) {
    flatbuffers::Parser parser;
    EXPECT_TRUE(parser.Parse(text)) << parser.error_;
    parser.Serialize();
    return std::string(reinterpret_cast<const char*>(parser.builder_.GetBufferPointer()),
                       parser.builder_.GetSize());
  };
  const std::string server_schema = bfbs(
      "namespace t; table Req { a:int; b:string; c:long; } table Resp { ok:bool; }"
      "rpc_service S { Call(Req):Resp; }");
  const std::string older = bfbs(
      "namespace t; table Req { a:int; b:string; } table Resp { ok:bool; }"
      "rpc_service S { Call(Req):Resp; }");
  const std::string changed = bfbs(
      "namespace t; table Req { a:int; b:[ubyte]; } table Resp { ok:bool; }"
      "rpc_service S { Call(Req):Resp; }");
  auto span = [](const std::string& bytes) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  };
  ASSERT_OK_AND_ASSIGN(auto server, Connect());
  EchoServer echo;
  RegisterOptions options;
  options.geometry = SmallGeometry();
  options.interface = "t.S";
  options.schema = span(server_schema);
  ASSERT_OK(server->Register("test.typed", echo.Handler(), std::move(options)));

  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  LookupOptions incompatible;
  incompatible.schema = span(changed);
  EXPECT_THAT(client->Lookup("test.typed", incompatible),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::AllOf(HasSubstr("test.typed"), HasSubstr("t.S.Call"),
                                        HasSubstr("t.Req.b"))));
  LookupOptions compatible;
  compatible.interface = "t.S";
  compatible.schema = span(older);
  ASSERT_OK_AND_ASSIGN(ServiceConnection ok, client->Lookup("test.typed", compatible));
  EXPECT_EQ(EchoCall(*ok.channel, "older client").value_or(""), "older client");
  EXPECT_OK(client->Lookup("test.typed").status());  // Sends nothing: no check.
  LookupOptions other_interface;
  other_interface.interface = "t.Other";
  other_interface.schema = span(older);
  EXPECT_THAT(client->Lookup("test.typed", other_interface),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("serves t.S")));
}

TEST_F(ServiceManagerTest, UnregisterFreesTheNameOnlyForItsOwner) {
  ASSERT_OK_AND_ASSIGN(auto owner, Connect());
  ASSERT_OK_AND_ASSIGN(auto other, Connect());
  ASSERT_OK(owner->Register("test.name", [](IncomingConnection) {}));
  EXPECT_THAT(other->Unregister("test.name"), StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(other->Unregister("test.none"), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(owner->Unregister("test.name"));
  EXPECT_THAT(other->Lookup("test.name"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_OK(other->Register("test.name", [](IncomingConnection) {}));
}

TEST_F(ServiceManagerTest, NameIsFreedWhenOwnerDisconnects) {
  ASSERT_OK_AND_ASSIGN(auto owner, Connect());
  ASSERT_OK_AND_ASSIGN(auto other, Connect());
  ASSERT_OK(owner->Register("test.name", [](IncomingConnection) {}));
  // Stats are published at the end of the daemon's loop iteration, after the
  // reply went out: wait to see the registration, or services == 0 below
  // could be the snapshot from before it (flaked 2 in 300 runs under load).
  ASSERT_TRUE(daemon_->WaitForStats([](const auto& s) { return s.services == 1; }));
  owner.reset();
  ASSERT_TRUE(daemon_->WaitForStats([](const auto& s) { return s.services == 0; }));
  EXPECT_OK(other->Register("test.name", [](IncomingConnection) {}));
}

TEST_F(ServiceManagerTest, WaitForReturnsWhenNameAppearsOrTimesOut) {
  ASSERT_OK_AND_ASSIGN(auto waiter, Connect());
  ASSERT_OK_AND_ASSIGN(auto server, Connect());
  const absl::Time start = absl::Now();
  EXPECT_THAT(waiter->WaitFor("test.later", absl::Milliseconds(100)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("test.later")));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(100));
  EXPECT_THAT(waiter->WaitFor("test.later", absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kDeadlineExceeded));

  absl::Status waited;
  std::thread t([&] { waited = waiter->WaitFor("test.later", absl::Seconds(30)); });
  ASSERT_TRUE(daemon_->WaitForStats([](const auto& s) { return s.waits == 1; }));
  ASSERT_OK(server->Register("test.later", [](IncomingConnection) {}));
  t.join();
  EXPECT_OK(waited);
  EXPECT_OK(waiter->WaitFor("test.later", absl::ZeroDuration()));
}

TEST_F(ServiceManagerTest, SubscribersSeeNamesAppearAndDisappear) {
  absl::Mutex mu;
  std::vector<NameEvent> events;
  ASSERT_OK_AND_ASSIGN(auto watcher, Connect());
  ASSERT_OK_AND_ASSIGN(auto server, Connect());
  ASSERT_OK_AND_ASSIGN(SubscriptionId id, watcher->Subscribe("test.", [&](const NameEvent& e) {
    absl::MutexLock lock(&mu);
    events.push_back(e);
  }));
  ASSERT_OK(server->Register("other.x", [](IncomingConnection) {}));
  ASSERT_OK(server->Register("test.x", [](IncomingConnection) {}));
  server.reset();
  {
    absl::MutexLock lock(&mu);
    ASSERT_TRUE(
        mu.AwaitWithTimeout(absl::Condition(
                                +[](std::vector<NameEvent>* e) { return e->size() >= 2; }, &events),
                            absl::Seconds(10)));
    EXPECT_EQ(events[0].change, NameChange::kAppeared);
    EXPECT_EQ(events[0].name, "test.x");
    EXPECT_EQ(events[0].owner.pid, ::getpid());
    EXPECT_EQ(events[1].change, NameChange::kDisappeared);
    EXPECT_EQ(events[1].name, "test.x");
    EXPECT_EQ(events.size(), 2u);
  }
  EXPECT_OK(watcher->Unsubscribe(id));
  EXPECT_THAT(watcher->Unsubscribe(id), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(ServiceManagerTest, ServerIsToldWhenAClientDisconnects) {
  Notification gone;  // Outlives the reader thread that notifies it.
  uint64_t gone_id = 0;
  ASSERT_OK_AND_ASSIGN(auto server, Connect());
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  EchoServer echo;
  RegisterOptions options;
  options.geometry = SmallGeometry();
  options.on_client_gone = [&](absl::string_view name, uint64_t id, const PeerCredentials&) {
    EXPECT_EQ(name, "test.echo");
    gone_id = id;
    gone.Notify();
  };
  ASSERT_OK(server->Register("test.echo", echo.Handler(), std::move(options)));
  ASSERT_OK_AND_ASSIGN(auto connection, client->Lookup("test.echo"));
  const uint64_t id = connection.connection_id;
  connection.channel.reset();
  client.reset();
  ASSERT_TRUE(gone.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(gone_id, id);
}

// Regression: a client that made ~1,400 look-ups and then exited made the
// manager send one ClientGoneEvent per connection in one burst; the server's
// queue overflowed and the manager dropped it, names and all. Now the server
// gets one event listing every connection, and keeps its names.
TEST_F(ServiceManagerTest, BusyClientsExitNeverCostsTheServerItsNames) {
  ASSERT_OK_AND_ASSIGN(auto server, Connect());
  absl::Mutex mu;
  absl::flat_hash_set<uint64_t> gone;
  RegisterOptions options;
  options.geometry = SmallGeometry();
  options.on_client_gone = [&](absl::string_view, uint64_t id, const PeerCredentials&) {
    absl::MutexLock lock(&mu);
    gone.insert(id);
  };
  ASSERT_OK(server->Register(
      "test.busy", [](IncomingConnection) {}, std::move(options)));
  constexpr int kLookups = 3000;
  {
    ASSERT_OK_AND_ASSIGN(auto client, Connect());
    for (int i = 0; i < kLookups; ++i) {
      ASSERT_OK(client->Lookup("test.busy").status()) << "lookup " << i;
    }
  }
  {
    absl::MutexLock lock(&mu);
    auto all_gone = [&] { return gone.size() == kLookups; };
    EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all_gone), absl::Seconds(30)));
  }
  EXPECT_OK(server->health());
  ASSERT_OK_AND_ASSIGN(auto names, server->List("test.busy"));
  ASSERT_EQ(names.size(), 1u);
  EXPECT_EQ(names[0].connections, 0u);
}

TEST_F(ServiceManagerTest, HandlersCannotCallBackIntoTheManager) {
  Notification done;
  absl::Status inner;
  ASSERT_OK_AND_ASSIGN(auto server, Connect());
  ServiceManager* raw = server.get();
  ASSERT_OK(server->Register("test.reentrant", [&](IncomingConnection) {
    inner = raw->Lookup("test.reentrant").status();
    done.Notify();
  }));
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  ASSERT_OK_AND_ASSIGN(auto connection, client->Lookup("test.reentrant"));
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_THAT(inner, StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(ServiceManagerTest, GarbageTruncatedAndOversizedRequestsDisconnectOnlyTheSender) {
  ASSERT_OK_AND_ASSIGN(auto good, Connect());
  EchoServer echo;
  ASSERT_OK(good->Register("test.echo", echo.Handler()));

  {  // Random bytes.
    UniqueFd fd = RawConnect();
    const char garbage[] = "\x13\x37 definitely not a flatbuffer";
    ASSERT_EQ(::send(fd.get(), garbage, sizeof(garbage), 0), ssize_t{sizeof(garbage)});
    EXPECT_TRUE(HungUp(fd.get()));
  }
  {  // A valid Hello, cut short.
    UniqueFd fd = RawConnect();
    auto hello = HelloBytes();
    ASSERT_GT(::send(fd.get(), hello.data(), hello.size() / 2, 0), 0);
    EXPECT_TRUE(HungUp(fd.get()));
  }
  {  // Larger than any request.
    UniqueFd fd = RawConnect();
    std::vector<char> big(64 * 1024, 'x');
    ASSERT_EQ(::send(fd.get(), big.data(), big.size(), 0), ssize_t(big.size()));
    EXPECT_TRUE(HungUp(fd.get()));
  }
  {  // An empty message.
    UniqueFd fd = RawConnect();
    ASSERT_EQ(::send(fd.get(), "", 0, 0), 0);
    EXPECT_TRUE(HungUp(fd.get()));
  }
  {  // A request carrying descriptors.
    UniqueFd fd = RawConnect();
    auto hello = HelloBytes();
    int pass = fd.get();
    ASSERT_OK(SendMessage(fd.get(), hello, std::span<const int>(&pass, 1)));
    EXPECT_TRUE(HungUp(fd.get()));
  }
  {  // Anything but Hello first: an error reply, then a hang-up.
    UniqueFd fd = RawConnect();
    flatbuffers::FlatBufferBuilder builder;
    auto body = wire::CreateLookupRequest(builder, builder.CreateString("test.echo"));
    service_wire::FinishEnvelope(builder, 7, absl::OkStatus(), wire::Body::LookupRequest,
                                 body.Union());
    ASSERT_OK(SendMessage(fd.get(), service_wire::Bytes(builder)));
    ASSERT_OK_AND_ASSIGN(auto reply, ReceiveMessage(fd.get(), 4096));
    ASSERT_OK_AND_ASSIGN(auto envelope, service_wire::VerifyEnvelope(reply.bytes));
    EXPECT_EQ(envelope->request_id(), 7u);
    EXPECT_THAT(service_wire::StatusFromWire(envelope->status()),
                StatusIs(absl::StatusCode::kFailedPrecondition));
    EXPECT_TRUE(HungUp(fd.get()));
  }
  {  // A reply kind sent as a request: UNIMPLEMENTED, connection kept.
    UniqueFd fd = RawConnect();
    ASSERT_OK(SendMessage(fd.get(), HelloBytes(1)));
    ASSERT_OK(ReceiveMessage(fd.get(), 4096).status());
    flatbuffers::FlatBufferBuilder builder;
    auto body = wire::CreateListReply(builder);
    service_wire::FinishEnvelope(builder, 2, absl::OkStatus(), wire::Body::ListReply, body.Union());
    ASSERT_OK(SendMessage(fd.get(), service_wire::Bytes(builder)));
    ASSERT_OK_AND_ASSIGN(auto reply, ReceiveMessage(fd.get(), 4096));
    ASSERT_OK_AND_ASSIGN(auto envelope, service_wire::VerifyEnvelope(reply.bytes));
    EXPECT_THAT(service_wire::StatusFromWire(envelope->status()),
                StatusIs(absl::StatusCode::kUnimplemented));
  }
  // Everyone else is still served.
  ASSERT_OK_AND_ASSIGN(auto connection, good->Lookup("test.echo"));
  EXPECT_OK(EchoCall(*connection.channel, "still here").status());
  EXPECT_TRUE(daemon_->WaitForStats([](const auto& s) { return s.connections == 1; }));
}

// The daemon receives every request into one buffer it reuses without
// clearing. A request cut short right after the whole of it arrived would,
// if read through the leftovers, be the whole request again: it must be
// read at its own length, fail to verify and close the connection.
TEST_F(ServiceManagerTest, RequestCutShortAfterTheWholeOneIsReadAtItsOwnLength) {
  UniqueFd fd = RawConnect();
  ASSERT_OK(SendMessage(fd.get(), HelloBytes(1)));
  ASSERT_OK(ReceiveMessage(fd.get(), 4096).status());
  flatbuffers::FlatBufferBuilder builder;
  auto body = wire::CreateListRequest(builder, builder.CreateString(std::string(200, 'p')));
  service_wire::FinishEnvelope(builder, 2, absl::OkStatus(), wire::Body::ListRequest, body.Union());
  const std::span<const std::byte> whole = service_wire::Bytes(builder);
  ASSERT_OK(SendMessage(fd.get(), whole));
  ASSERT_OK_AND_ASSIGN(auto reply, ReceiveMessage(fd.get(), 4096));
  ASSERT_OK_AND_ASSIGN(auto envelope, service_wire::VerifyEnvelope(reply.bytes));
  EXPECT_EQ(envelope->request_id(), 2u);
  // The prefix string is built first, so it is what the cut takes away.
  ASSERT_OK(SendMessage(fd.get(), whole.first(whole.size() - 16)));
  EXPECT_TRUE(HungUp(fd.get()));
}

// Regression: a valid Hello, then an envelope whose body_type names a request
// but whose body is absent, used to dereference the null body and kill the
// daemon with SIGSEGV, for each of the 8 request kinds.
TEST_F(ServiceManagerTest, RequestOfEveryKindWithoutABodyClosesOnlyThatConnection) {
  ASSERT_OK_AND_ASSIGN(auto good, Connect());
  EchoServer echo;
  ASSERT_OK(good->Register("test.echo", echo.Handler()));
  for (wire::Body kind : testing::kRequestKinds) {
    SCOPED_TRACE(wire::EnumNameBody(kind));
    UniqueFd fd = RawConnect();
    ASSERT_OK(SendMessage(fd.get(), HelloBytes(1)));
    ASSERT_OK(ReceiveMessage(fd.get(), 4096).status());
    ASSERT_OK(SendMessage(fd.get(), testing::RequestWithoutBody(kind, 2)));
    ASSERT_OK_AND_ASSIGN(auto reply, ReceiveMessage(fd.get(), 4096));
    ASSERT_OK_AND_ASSIGN(auto envelope, service_wire::VerifyEnvelope(reply.bytes));
    EXPECT_EQ(envelope->request_id(), 2u);
    EXPECT_THAT(service_wire::StatusFromWire(envelope->status()),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("no body")));
    EXPECT_TRUE(HungUp(fd.get()));
  }
  ASSERT_OK_AND_ASSIGN(auto connection, good->Lookup("test.echo"));
  EXPECT_EQ(EchoCall(*connection.channel, "alive").value_or(""), "alive");
}

// Every request table with every combination of its fields absent gets
// exactly one reply (whatever its status) and leaves the connection in step.
TEST_F(ServiceManagerTest, RequestOfEveryKindWithAnyFieldsAbsentGetsOneReply) {
  UniqueFd fd = RawConnect();
  ASSERT_OK(SendMessage(fd.get(), HelloBytes(1)));
  ASSERT_OK(ReceiveMessage(fd.get(), 4096).status());
  uint64_t id = 10;
  int requests = 0;
  for (wire::Body kind : testing::kRequestKinds) {
    // Each bit of `mask` says whether one field of the table is present.
    for (unsigned mask = 0; mask < 8; ++mask) {
      SCOPED_TRACE(absl::StrCat(wire::EnumNameBody(kind), " fields ", mask));
      flatbuffers::FlatBufferBuilder b;
      auto name =
          (mask & 1) ? b.CreateString("test.absent") : flatbuffers::Offset<flatbuffers::String>();
      auto second =
          (mask & 2) ? b.CreateString("test.") : flatbuffers::Offset<flatbuffers::String>();
      // A geometry table whose own fields are all absent, when bit 1 is set.
      auto geometry =
          (mask & 2) ? wire::GeometryBuilder(b).Finish() : flatbuffers::Offset<wire::Geometry>();
      flatbuffers::Offset<void> body;
      switch (kind) {
        case wire::Body::RegisterRequest: {
          wire::RegisterRequestBuilder t(b);
          if (mask & 1) t.add_name(name);
          if (mask & 2) t.add_geometry(geometry);
          body = t.Finish().Union();
          break;
        }
        case wire::Body::UnregisterRequest: {
          wire::UnregisterRequestBuilder t(b);
          if (mask & 1) t.add_name(name);
          body = t.Finish().Union();
          break;
        }
        case wire::Body::LookupRequest: {
          wire::LookupRequestBuilder t(b);
          if (mask & 1) t.add_name(name);
          if (mask & 2) t.add_geometry(geometry);
          body = t.Finish().Union();
          break;
        }
        case wire::Body::WaitRequest: {
          wire::WaitRequestBuilder t(b);
          if (mask & 1) t.add_name(name);
          if (mask & 4) t.add_timeout_ms(1);  // Absent: 0, which polls.
          body = t.Finish().Union();
          break;
        }
        case wire::Body::ListRequest: {
          wire::ListRequestBuilder t(b);
          if (mask & 1) t.add_prefix(name);
          if (mask & 2) t.add_start_after(second);
          if (mask & 4) t.add_limit(3);
          body = t.Finish().Union();
          break;
        }
        case wire::Body::InfoRequest: {
          wire::InfoRequestBuilder t(b);
          if (mask & 1) t.add_name(name);
          body = t.Finish().Union();
          break;
        }
        case wire::Body::SubscribeRequest: {
          wire::SubscribeRequestBuilder t(b);
          if (mask & 2) t.add_prefix(second);
          if (mask & 4) t.add_subscription_id(mask);
          body = t.Finish().Union();
          break;
        }
        case wire::Body::UnsubscribeRequest: {
          wire::UnsubscribeRequestBuilder t(b);
          if (mask & 4) t.add_subscription_id(mask);
          body = t.Finish().Union();
          break;
        }
        default:
          FAIL() << "no builder for this kind";
      }
      ++id;
      service_wire::FinishEnvelope(b, id, absl::OkStatus(), kind, body);
      ASSERT_OK(SendMessage(fd.get(), service_wire::Bytes(b)));
      // Skips events: this connection owns test.absent once registered, so
      // a Lookup of it sends us a NewConnectionEvent first.
      const wire::Envelope* envelope = nullptr;
      ReceivedMessage reply;
      do {
        ASSERT_OK_AND_ASSIGN(reply, ReceiveMessage(fd.get(), service_wire::kMaxReplyBytes));
        ASSERT_OK_AND_ASSIGN(envelope, service_wire::VerifyEnvelope(reply.bytes));
      } while (envelope->request_id() == 0);
      EXPECT_EQ(envelope->request_id(), id);
      // Absent fields read as their defaults; they are never malformed.
      EXPECT_FALSE(absl::IsDataLoss(service_wire::StatusFromWire(envelope->status())));
      ++requests;
    }
  }
  EXPECT_EQ(requests, 64);
  // Still the same connection, still in step.
  ASSERT_OK(SendMessage(fd.get(), testing::RequestWithoutBody(wire::Body::ListRequest, 99)));
  ASSERT_OK_AND_ASSIGN(auto last, ReceiveMessage(fd.get(), 4096));
  ASSERT_OK_AND_ASSIGN(auto envelope, service_wire::VerifyEnvelope(last.bytes));
  EXPECT_EQ(envelope->request_id(), 99u);
}

// The client side of the same defect: events whose union value is absent.
TEST_F(ServiceManagerTest, ClientSurvivesEventsWithoutABody) {
  daemon_.reset();  // A fake manager speaks on the socket instead.
  const std::string path = dir_.File("fake.sock");
  UniqueFd listener(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener.get(), 4), 0);
  std::thread fake([&] {
    UniqueFd peer(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    auto hello = ReceiveMessage(peer.get(), 4096);
    if (!hello.ok()) return;
    flatbuffers::FlatBufferBuilder b;
    auto body = wire::CreateHelloReply(b, 1, ::getpid());
    service_wire::FinishEnvelope(b, 1, absl::OkStatus(), wire::Body::HelloReply, body.Union());
    (void)SendMessage(peer.get(), service_wire::Bytes(b));
    for (wire::Body kind :
         {wire::Body::NewConnectionEvent, wire::Body::ClientGoneEvent, wire::Body::NameEvent}) {
      (void)SendMessage(peer.get(), testing::RequestWithoutBody(kind, 0));
    }
    // Then a List reply without its body.
    auto list = ReceiveMessage(peer.get(), 4096);
    if (!list.ok()) return;
    auto envelope = service_wire::VerifyEnvelope(list->bytes);
    if (!envelope.ok()) return;
    (void)SendMessage(
        peer.get(), testing::RequestWithoutBody(wire::Body::ListReply, (*envelope)->request_id()));
    (void)ReceiveMessage(peer.get(), 4096);  // Until the client hangs up.
  });
  ServiceManagerOptions options;
  options.socket_path = path;
  {
    ASSERT_OK_AND_ASSIGN(auto client, ServiceManager::Connect(options));
    EXPECT_THAT(client->List(), StatusIs(absl::StatusCode::kDataLoss));
  }
  fake.join();
}

TEST_F(ServiceManagerTest, RandomlyMutatedRequestsNeverHurtTheDaemon) {
  ASSERT_OK_AND_ASSIGN(auto good, Connect());
  EchoServer echo;
  ASSERT_OK(good->Register("test.echo", echo.Handler()));
  // Valid requests of every kind, to mutate.
  std::vector<std::vector<std::byte>> seeds;
  auto add = [&](flatbuffers::FlatBufferBuilder& b) {
    auto bytes = service_wire::Bytes(b);
    seeds.emplace_back(bytes.begin(), bytes.end());
  };
  {
    flatbuffers::FlatBufferBuilder b;
    auto body =
        wire::CreateRegisterRequest(b, b.CreateString("test.fuzz"),
                                    service_wire::GeometryToWire(b, channel_layout::Geometry{}));
    service_wire::FinishEnvelope(b, 2, absl::OkStatus(), wire::Body::RegisterRequest, body.Union());
    add(b);
  }
  {
    flatbuffers::FlatBufferBuilder b;
    auto body = wire::CreateLookupRequest(b, b.CreateString("test.echo"));
    service_wire::FinishEnvelope(b, 3, absl::OkStatus(), wire::Body::LookupRequest, body.Union());
    add(b);
  }
  {
    flatbuffers::FlatBufferBuilder b;
    auto body = wire::CreateListRequest(b, b.CreateString("test."), b.CreateString(""), 5);
    service_wire::FinishEnvelope(b, 4, absl::OkStatus(), wire::Body::ListRequest, body.Union());
    add(b);
  }
  {
    flatbuffers::FlatBufferBuilder b;
    auto body = wire::CreateWaitRequest(b, b.CreateString("test.never"), 1);
    service_wire::FinishEnvelope(b, 5, absl::OkStatus(), wire::Body::WaitRequest, body.Union());
    add(b);
  }
  std::mt19937 rng(12345);  // Fixed seed: the same inputs every run.
  UniqueFd fd;
  int disconnects = 0;
  for (int i = 0; i < 3000; ++i) {
    if (!fd.valid()) {
      fd = RawConnect();
      ASSERT_OK(SendMessage(fd.get(), HelloBytes()));
      ASSERT_OK(ReceiveMessage(fd.get(), service_wire::kMaxReplyBytes).status());
    }
    std::vector<std::byte> bytes = seeds[rng() % seeds.size()];
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] = std::byte(rng() & 0xff);
    if (rng() % 4 == 0) bytes.resize(rng() % bytes.size() + 1);
    ASSERT_OK(SendMessage(fd.get(), bytes));
    // Follow with a valid List and read until its reply (or a hang-up):
    // whatever the mutant was, the daemon must still be in step. (A mutant
    // that became a Wait may answer later or never; its reply is skipped.)
    const uint64_t marker_id = 1000000 + static_cast<uint64_t>(i);
    flatbuffers::FlatBufferBuilder b;
    auto body = wire::CreateListRequest(b, b.CreateString("zzz"));
    service_wire::FinishEnvelope(b, marker_id, absl::OkStatus(), wire::Body::ListRequest,
                                 body.Union());
    if (!SendMessage(fd.get(), service_wire::Bytes(b)).ok()) {
      ++disconnects;
      fd.reset();
      continue;
    }
    for (;;) {
      auto reply = ReceiveMessage(fd.get(), service_wire::kMaxReplyBytes);
      if (!reply.ok()) {
        ++disconnects;
        fd.reset();
        break;
      }
      ASSERT_OK_AND_ASSIGN(auto envelope, service_wire::VerifyEnvelope(reply->bytes));
      if (envelope->request_id() == marker_id) break;
    }
  }
  std::printf("3000 mutated requests: %d disconnects\n", disconnects);
  fd.reset();
  ASSERT_OK_AND_ASSIGN(auto connection, good->Lookup("test.echo"));
  EXPECT_EQ(EchoCall(*connection.channel, "alive").value_or(""), "alive");
}

TEST_F(ServiceManagerTest, SilentClientIsDroppedAfterHelloTimeout) {
  DaemonOptions options;
  options.hello_timeout = absl::Milliseconds(100);
  StartDaemon(std::move(options));
  UniqueFd silent = RawConnect();
  EXPECT_TRUE(HungUp(silent.get()));
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  // A client that said Hello stays however long it idles.
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_OK(client->List().status());
}

TEST_F(ServiceManagerTest, ConnectionsBeyondTheLimitAreRefusedAndOthersServed) {
  DaemonOptions options;
  options.max_connections = 8;
  StartDaemon(std::move(options));
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 8; ++i) idle.push_back(RawConnect());
  ASSERT_TRUE(daemon_->WaitForStats([](const auto& s) { return s.connections == 8; }));
  UniqueFd refused = RawConnect();
  EXPECT_TRUE(HungUp(refused.get()));
  idle.pop_back();
  ASSERT_TRUE(daemon_->WaitForStats([](const auto& s) { return s.connections == 7; }));
  EXPECT_OK(Connect().status());
}

TEST_F(ServiceManagerTest, ThousandIdleConnectionsThenAllResourcesReturn) {
  ASSERT_OK_AND_ASSIGN(auto client, Connect());
  ASSERT_TRUE(daemon_->WaitForStats([](const auto& s) { return s.connections == 1; }));
  const int fds_before = ::sluice::testing::CountOpenFds();
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 1000; ++i) idle.push_back(RawConnect());
  ASSERT_TRUE(daemon_->WaitForStats([](const auto& s) { return s.connections == 1001; }));
  EXPECT_OK(client->List().status());  // Still serving.
  idle.clear();
  ASSERT_TRUE(daemon_->WaitForStats([](const auto& s) { return s.connections == 1; }));
  EXPECT_EQ(::sluice::testing::CountOpenFds(), fds_before);
}

TEST_F(ServiceManagerTest, ListPagesThroughManyNames) {
  ASSERT_OK_AND_ASSIGN(auto server, Connect());
  for (int i = 0; i < 600; ++i) {
    ASSERT_OK(server->Register(absl::StrCat("test.many.", 1000 + i), [](IncomingConnection) {}));
  }
  ASSERT_OK(server->Register("zzz.other", [](IncomingConnection) {}));
  ASSERT_OK_AND_ASSIGN(auto all, server->List());
  EXPECT_EQ(all.size(), 601u);
  ASSERT_OK_AND_ASSIGN(auto some, server->List("test.many."));
  ASSERT_EQ(some.size(), 600u);
  EXPECT_EQ(some.front().name, "test.many.1000");
  EXPECT_EQ(some.back().name, "test.many.1599");
}

TEST_F(ServiceManagerTest, LiveSocketIsNeverStolenAndStaleOneIsReplaced) {
  DaemonOptions second;
  second.socket_path = dir_.File("sm.sock");
  second.logger = &logger_;
  EXPECT_THAT(ServiceManagerDaemon::Create(second), StatusIs(absl::StatusCode::kAlreadyExists));
  ASSERT_OK(Connect().status());

  // A stale socket: bound, then its owner vanished without unlinking.
  const std::string stale = dir_.File("stale.sock");
  {
    UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, stale.data(), stale.size());
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }
  DaemonOptions third;
  third.socket_path = stale;
  third.logger = &logger_;
  EXPECT_OK(ServiceManagerDaemon::Create(third).status());

  // Not a socket: left alone.
  const std::string file = dir_.File("file.sock");
  std::ofstream(file) << "x";
  third.socket_path = file;
  EXPECT_THAT(ServiceManagerDaemon::Create(third), StatusIs(absl::StatusCode::kFailedPrecondition));
}

}  // namespace
}  // namespace sluice
