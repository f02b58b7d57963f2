// The registry on its own: no sockets, no daemon, no clock. A fake outbox
// collects what would be sent to each connection; channel material is a pair
// of /dev/null descriptors per side.
#include "services/servicemanager/registry.h"

#include <fcntl.h>

#include <map>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace sluice {
namespace {

namespace wire = ::sluice::servicemanager::wire;
using ::sluice::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// One message as a test reads it.
struct Sent {
  std::vector<std::byte> bytes;
  size_t fds = 0;
  const wire::Envelope& envelope() const { return *wire::GetEnvelope(bytes.data()); }
  uint64_t request_id() const { return envelope().request_id(); }
  absl::Status status() const { return service_wire::StatusFromWire(envelope().status()); }
};

class FakeOutbox : public Outbox {
 public:
  bool Send(uint64_t id, OutgoingMessage message) override {
    if (closed.contains(id)) return false;
    // Everything the registry sends must be a valid Envelope.
    EXPECT_OK(service_wire::VerifyEnvelope(message.bytes).status());
    sent[id].push_back({std::move(message.bytes), message.fds.size()});
    return true;
  }
  // Takes what was sent to `id`.
  std::vector<Sent> Take(uint64_t id) {
    std::vector<Sent> out = std::move(sent[id]);
    sent[id].clear();
    return out;
  }
  std::map<uint64_t, std::vector<Sent>> sent;
  absl::flat_hash_set<uint64_t> closed;
};

absl::StatusOr<ChannelMaterial> FakeMaterial(const channel_layout::Geometry&) {
  ChannelMaterial out;
  out.region_size = 4096;
  for (int i = 0; i < 2; ++i) {
    out.client_fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    out.server_fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  }
  return out;
}

constexpr uint64_t kServer = 100;
constexpr uint64_t kClient = 200;
constexpr uint64_t kOther = 300;

class RegistryTest : public ::testing::Test {
 protected:
  RegistryTest() : registry_(limits_, outbox_, policy_, FakeMaterial, log_) {}
  // Connections with distinct pids, so messages can name them.
  void Add(uint64_t id, bool acks = true) {
    registry_.AddClient(id, {static_cast<pid_t>(id), 1000, 1000}, acks);
  }
  // Registers `name` for kServer and drops the replies.
  void Serve(const std::string& name) {
    registry_.Register(kServer, 1, name, channel_layout::Geometry{});
    ASSERT_EQ(outbox_.Take(kServer).size(), 1u);
  }
  // The record id of the NewConnectionEvent just sent to kServer.
  uint64_t TakeNewConnection() {
    std::vector<Sent> sent = outbox_.Take(kServer);
    EXPECT_EQ(sent.size(), 1u);
    if (sent.empty()) return 0;
    const auto* event = sent[0].envelope().body_as_NewConnectionEvent();
    EXPECT_NE(event, nullptr);
    EXPECT_EQ(sent[0].fds, 2u);
    return event == nullptr ? 0 : event->connection_id();
  }

  Registry::Limits limits_;
  FakeOutbox outbox_;
  Policy policy_ = Policy::Default(1000);
  Logger log_{Logger::Level::kOff};
  Registry registry_;
};

TEST_F(RegistryTest, LookupIsAnsweredOnlyOnceTheServerAcknowledges) {
  Add(kServer);
  Add(kClient);
  Serve("svc");
  registry_.Lookup(kClient, 7, "svc", {});
  const uint64_t record = TakeNewConnection();
  EXPECT_TRUE(outbox_.Take(kClient).empty());
  EXPECT_EQ(registry_.counts().pending_lookups, 1u);
  registry_.AcknowledgeConnection(kServer, record, absl::OkStatus());
  std::vector<Sent> reply = outbox_.Take(kClient);
  ASSERT_EQ(reply.size(), 1u);
  EXPECT_EQ(reply[0].request_id(), 7u);
  ASSERT_NE(reply[0].envelope().body_as_LookupReply(), nullptr);
  EXPECT_EQ(reply[0].envelope().body_as_LookupReply()->connection_id(), record);
  EXPECT_EQ(reply[0].fds, 2u);
  EXPECT_EQ(registry_.counts().pending_lookups, 0u);
}

TEST_F(RegistryTest, LookupOfAServerThatDoesNotAcknowledgeIsAnsweredAtOnce) {
  Add(kServer, /*acks=*/false);
  Add(kClient);
  Serve("svc");
  registry_.Lookup(kClient, 7, "svc", {});
  TakeNewConnection();
  std::vector<Sent> reply = outbox_.Take(kClient);
  ASSERT_EQ(reply.size(), 1u);
  EXPECT_NE(reply[0].envelope().body_as_LookupReply(), nullptr);
}

TEST_F(RegistryTest, RefusalFailsTheLookupWithTheServersCodeNamingServiceAndServer) {
  Add(kServer);
  Add(kClient);
  Serve("svc");
  registry_.Lookup(kClient, 7, "svc", {});
  const uint64_t record = TakeNewConnection();
  // Another connection's ack for it is ignored.
  Add(kOther);
  registry_.AcknowledgeConnection(kOther, record, absl::OkStatus());
  EXPECT_TRUE(outbox_.Take(kClient).empty());
  registry_.AcknowledgeConnection(kServer, record, absl::ResourceExhaustedError("out of fds"));
  std::vector<Sent> reply = outbox_.Take(kClient);
  ASSERT_EQ(reply.size(), 1u);
  EXPECT_THAT(reply[0].status(), StatusIs(absl::StatusCode::kResourceExhausted,
                                          ::testing::AllOf(HasSubstr("'svc'"), HasSubstr("pid 100"),
                                                           HasSubstr("out of fds"))));
  EXPECT_EQ(registry_.counts().records, 0u);
}

TEST_F(RegistryTest, ServerGoneBeforeAcknowledgingFailsTheLookupUnavailable) {
  Add(kServer);
  Add(kClient);
  Serve("svc");
  registry_.Lookup(kClient, 7, "svc", {});
  TakeNewConnection();
  registry_.RemoveClient(kServer);
  std::vector<Sent> reply = outbox_.Take(kClient);
  ASSERT_EQ(reply.size(), 1u);
  EXPECT_THAT(reply[0].status(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("svc")));
  EXPECT_EQ(registry_.counts().pending_lookups, 0u);
  EXPECT_EQ(registry_.counts().services, 0u);
}

TEST_F(RegistryTest, UnacknowledgedLookupsAreBoundedPerServer) {
  limits_.unacked_connections = 2;
  Registry registry(limits_, outbox_, policy_, FakeMaterial, log_);
  registry.AddClient(kServer, {1, 1, 1}, true);
  registry.AddClient(kClient, {2, 1, 1}, true);
  registry.Register(kServer, 1, "svc", {});
  for (uint64_t id = 10; id < 13; ++id) registry.Lookup(kClient, id, "svc", {});
  std::vector<Sent> replies = outbox_.Take(kClient);
  ASSERT_EQ(replies.size(), 1u);  // The first two wait for their acks.
  EXPECT_EQ(replies[0].request_id(), 12u);
  EXPECT_THAT(replies[0].status(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("not yet accepted")));
}

TEST_F(RegistryTest, ClientsExitSendsOneClientGoneEventPerServerAndNameListingEveryConnection) {
  Add(kServer);
  Add(kClient);
  Serve("a");
  Serve("b");
  std::vector<uint64_t> a_records;
  for (int i = 0; i < 3; ++i) {
    registry_.Lookup(kClient, 10 + i, "a", {});
    a_records.push_back(TakeNewConnection());
    registry_.AcknowledgeConnection(kServer, a_records.back(), absl::OkStatus());
  }
  registry_.Lookup(kClient, 20, "b", {});
  const uint64_t b_record = TakeNewConnection();
  registry_.AcknowledgeConnection(kServer, b_record, absl::OkStatus());
  registry_.RemoveClient(kClient);
  std::vector<Sent> events = outbox_.Take(kServer);
  ASSERT_EQ(events.size(), 2u);
  std::map<std::string, std::vector<uint64_t>> ids;
  for (const Sent& sent : events) {
    const auto* gone = sent.envelope().body_as_ClientGoneEvent();
    ASSERT_NE(gone, nullptr);
    ASSERT_NE(gone->connection_ids(), nullptr);
    EXPECT_EQ(gone->connection_id(), gone->connection_ids()->Get(0));
    ids[std::string(service_wire::View(gone->name()))].assign(gone->connection_ids()->begin(),
                                                              gone->connection_ids()->end());
  }
  EXPECT_EQ(ids["a"], a_records);
  EXPECT_THAT(ids["b"], ElementsAre(b_record));
  EXPECT_EQ(registry_.counts().records, 0u);
}

TEST_F(RegistryTest, OldestRecordsAreForgottenBeyondTheLimit) {
  limits_.records_per_client = 2;
  Registry registry(limits_, outbox_, policy_, FakeMaterial, log_);
  registry.AddClient(kServer, {1, 1, 1}, false);
  registry.AddClient(kClient, {2, 1, 1}, false);
  registry.Register(kServer, 1, "svc", {});
  for (uint64_t id = 10; id < 15; ++id) registry.Lookup(kClient, id, "svc", {});
  EXPECT_EQ(registry.counts().records, 2u);
}

TEST_F(RegistryTest, WaitIsAnsweredWhenTheNameAppearsOrAtItsDeadline) {
  Add(kServer);
  Add(kClient);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  registry_.Wait(kClient, 5, "later", 100, t0);
  registry_.Wait(kClient, 6, "never", 100, t0);
  registry_.Wait(kClient, 7, "forever", -1, t0);
  registry_.Wait(kClient, 8, "now", 0, t0);
  std::vector<Sent> polled = outbox_.Take(kClient);
  ASSERT_EQ(polled.size(), 1u);
  EXPECT_EQ(polled[0].request_id(), 8u);
  EXPECT_THAT(polled[0].status(), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(registry_.NextDeadline(), t0 + absl::Milliseconds(100));

  Serve("later");
  std::vector<Sent> appeared = outbox_.Take(kClient);
  ASSERT_EQ(appeared.size(), 1u);
  EXPECT_EQ(appeared[0].request_id(), 5u);
  EXPECT_OK(appeared[0].status());

  registry_.ExpireWaits(t0 + absl::Milliseconds(99));
  EXPECT_TRUE(outbox_.Take(kClient).empty());
  registry_.ExpireWaits(t0 + absl::Milliseconds(100));
  std::vector<Sent> expired = outbox_.Take(kClient);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].request_id(), 6u);
  EXPECT_THAT(expired[0].status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("never")));
  EXPECT_EQ(registry_.NextDeadline(), absl::InfiniteFuture());
  EXPECT_EQ(registry_.counts().waits, 1u);  // "forever"
  registry_.RemoveClient(kClient);
  EXPECT_EQ(registry_.counts().waits, 0u);
}

TEST_F(RegistryTest, OwnersExitFreesItsNamesAndTellsSubscribersWhoMaySeeThem) {
  Add(kServer);
  Add(kClient);
  registry_.Subscribe(kClient, 3, "s", 42, /*existing=*/false);
  ASSERT_EQ(outbox_.Take(kClient).size(), 1u);
  Serve("svc");
  Serve("other");
  std::vector<Sent> appeared = outbox_.Take(kClient);
  ASSERT_EQ(appeared.size(), 1u);  // "other" does not match the prefix.
  ASSERT_NE(appeared[0].envelope().body_as_NameEvent(), nullptr);
  EXPECT_EQ(appeared[0].envelope().body_as_NameEvent()->subscription_id(), 42u);
  registry_.RemoveClient(kServer);
  std::vector<Sent> gone = outbox_.Take(kClient);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].envelope().body_as_NameEvent()->change(), wire::NameChange::kDisappeared);
  EXPECT_EQ(registry_.counts().services, 0u);
  registry_.Lookup(kClient, 9, "svc", {});
  EXPECT_THAT(outbox_.Take(kClient).at(0).status(), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(RegistryTest, SubscriptionGetsTheMatchingNamesAlreadyThereBeforeItsReplyThenChanges) {
  Add(kServer);
  Add(kClient);
  Serve("s.one");
  Serve("s.two");
  Serve("t.other");
  registry_.Subscribe(kClient, 3, "s.", 42, /*existing=*/true);
  std::vector<Sent> sent = outbox_.Take(kClient);
  ASSERT_EQ(sent.size(), 3u);
  std::vector<std::string> snapshot;
  for (int i = 0; i < 2; ++i) {
    const auto* event = sent[i].envelope().body_as_NameEvent();
    ASSERT_NE(event, nullptr);
    EXPECT_EQ(sent[i].request_id(), 0u);
    EXPECT_EQ(event->subscription_id(), 42u);
    EXPECT_EQ(event->change(), wire::NameChange::kAppeared);
    EXPECT_TRUE(event->existing());
    EXPECT_EQ(event->owner()->pid(), static_cast<pid_t>(kServer));
    snapshot.push_back(event->name()->str());
  }
  EXPECT_THAT(snapshot, ElementsAre("s.one", "s.two"));
  // The reply comes last, so a client holding it has seen the snapshot.
  EXPECT_EQ(sent[2].request_id(), 3u);
  EXPECT_OK(sent[2].status());
  // What changes from then on is reported once, as a change.
  Serve("s.three");
  std::vector<Sent> appeared = outbox_.Take(kClient);
  ASSERT_EQ(appeared.size(), 1u);
  EXPECT_EQ(appeared[0].envelope().body_as_NameEvent()->name()->str(), "s.three");
  EXPECT_FALSE(appeared[0].envelope().body_as_NameEvent()->existing());
  // Without `existing` (an older client), only the reply.
  registry_.Subscribe(kClient, 4, "s.", 43, /*existing=*/false);
  std::vector<Sent> plain = outbox_.Take(kClient);
  ASSERT_EQ(plain.size(), 1u);
  EXPECT_EQ(plain[0].request_id(), 4u);
}

TEST_F(RegistryTest, SnapshotShowsOnlyNamesThePolicyLetsTheSubscriberLookUp) {
  ASSERT_OK_AND_ASSIGN(policy_, Policy::Parse("allow * s.open* uid:2000\n", 1000));
  Add(kServer);
  registry_.AddClient(kOther, {static_cast<pid_t>(kOther), 2000, 2000}, true);
  Serve("s.open");
  Serve("s.closed");
  registry_.Subscribe(kOther, 3, "s.", 42, /*existing=*/true);
  std::vector<Sent> sent = outbox_.Take(kOther);
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].envelope().body_as_NameEvent()->name()->str(), "s.open");
  EXPECT_EQ(sent[1].request_id(), 3u);
}

TEST_F(RegistryTest, NewConnectionCarriesThePolicysLimitAndTrustForThatClient) {
  ASSERT_OK_AND_ASSIGN(policy_, Policy::Parse("allow * * uid:1000\nlimit s.small 64KiB\n"
                                              "trust s.* uid:1000\n",
                                              1000));
  Add(kServer);
  Add(kClient);  // uid 1000: trusted by the trust line.
  registry_.AddClient(kOther, {static_cast<pid_t>(kOther), 2000, 2000}, true);
  Serve("s.small");
  Serve("t.free");
  struct Case {
    uint64_t client;
    std::string name;
    uint64_t limit;
    bool distrust;
  };
  for (const Case& c :
       {Case{kClient, "s.small", 64 * 1024, false}, Case{kOther, "s.small", 64 * 1024, true},
        Case{kClient, "t.free", 0, false}, Case{kOther, "t.free", 0, false}}) {
    SCOPED_TRACE(absl::StrCat(c.name, " for ", c.client));
    registry_.Lookup(c.client, 7, c.name, {});
    std::vector<Sent> sent = outbox_.Take(kServer);
    ASSERT_EQ(sent.size(), 1u);
    const auto* event = sent[0].envelope().body_as_NewConnectionEvent();
    ASSERT_NE(event, nullptr);
    EXPECT_EQ(event->max_request_size(), c.limit);
    EXPECT_EQ(event->distrust_client(), c.distrust);
    registry_.AcknowledgeConnection(kServer, event->connection_id(), absl::OkStatus());
    outbox_.Take(c.client);
  }
}

TEST_F(RegistryTest, OnlyTheOwnerMayUnregisterAndNamesAreUnique) {
  Add(kServer);
  Add(kClient);
  Serve("svc");
  registry_.Register(kClient, 2, "svc", {});
  EXPECT_THAT(outbox_.Take(kClient).at(0).status(),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("pid 100")));
  registry_.Unregister(kClient, 3, "svc");
  EXPECT_THAT(outbox_.Take(kClient).at(0).status(), StatusIs(absl::StatusCode::kPermissionDenied));
  registry_.Unregister(kServer, 4, "svc");
  EXPECT_OK(outbox_.Take(kServer).at(0).status());
  EXPECT_EQ(registry_.counts().services, 0u);
}

}  // namespace
}  // namespace sluice
