// Object references across real processes: passing a local object and
// calling it back while the caller waits, handing a remote object on to a
// third process, identity of the holder, release when the holder drops the
// reference or dies, descriptor fields, and no leak over many cycles.
#include "ipc/rpc/object.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "ipc/base/errors.h"
#include "ipc/base/notification.h"
#include "ipc/host/service_host.h"
#include "ipc/rpc/server_pool.h"
#include "ipc/testing/subprocess.h"
#include "tests/objects/objects_service.h"
#include "tests/testing/channel_pair.h"
#include "tests/testing/status_matchers.h"

namespace sluice::testing {
namespace {

using ::testing::HasSubstr;

// Polls `condition` until it holds or `timeout` passes: releases happen on
// the host's watcher thread, a moment after the holder lets go.
template <typename Condition>
bool Eventually(Condition condition, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return condition();
}

class ObjectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/sluice-objects-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    socket_ = dir_ + "/sm.sock";
    ASSERT_OK_AND_ASSIGN(
        manager_, Subprocess::SpawnAndWaitReady(
                      {SLUICE_SERVICEMANAGER_BIN, "--socket=" + socket_, "--log_level=error"}));
    ASSERT_OK_AND_ASSIGN(sm_, ServiceManager::Connect({.socket_path = socket_}));
  }
  void TearDown() override {
    sm_.reset();
    if (manager_) {
      (void)manager_->Kill(SIGTERM);
      (void)manager_->Wait();
    }
    const std::string cleanup = "rm -rf " + dir_;
    (void)!std::system(cleanup.c_str());
  }

  absl::StatusOr<Subprocess> StartPeer(const std::string& name) {
    return Subprocess::SpawnAndWaitReady({SLUICE_OBJECT_PEER, socket_, name});
  }
  absl::StatusOr<Connection<objects::HolderProxy>> Holder(const std::string& name) {
    return Connect<objects::HolderProxy>(*sm_, name);
  }

  // Descriptors and memfd mappings here and in the peer behind a holder:
  // what many pass-and-drop cycles must leave as they found it.
  struct Footprint {
    int fds = 0;
    int maps = 0;
    int peer_fds = 0;
    int peer_maps = 0;
  };
  static absl::StatusOr<Footprint> FootprintOf(Connection<objects::HolderProxy>& holder) {
    auto peer = holder->Stats();
    if (!peer.ok()) return peer.status();
    return Footprint{CountOpenFds(), CountMappings("memfd:"), (*peer)->open_fds(),
                     (*peer)->memfd_mappings()};
  }
  // This side's descriptors go a moment after its pool drops a channel.
  static void ExpectBackAt(Connection<objects::HolderProxy>& holder, const Footprint& before) {
    EXPECT_TRUE(Eventually([&] { return CountOpenFds() == before.fds; }))
        << CountOpenFds() << " fds vs " << before.fds;
    EXPECT_TRUE(Eventually([&] { return CountMappings("memfd:") == before.maps; }))
        << CountMappings("memfd:") << " memfd mappings vs " << before.maps;
    ASSERT_OK_AND_ASSIGN(Footprint after, FootprintOf(holder));
    EXPECT_EQ(after.peer_fds, before.peer_fds);
    EXPECT_EQ(after.peer_maps, before.peer_maps);
  }

  std::string dir_;
  std::string socket_;
  std::optional<Subprocess> manager_;
  std::unique_ptr<ServiceManager> sm_;
};

TEST_F(ObjectTest, LocalObjectIsCalledBackOnTheWaitingThreadWithTheHoldersIdentity) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  auto callback = std::make_shared<CallbackObject>(5);
  ASSERT_OK_AND_ASSIGN(auto given, holder->Give(callback, 37, /*keep=*/false));
  const objects::Pong* pong = given->pong();
  ASSERT_NE(pong, nullptr);
  EXPECT_EQ(pong->value(), 42);
  EXPECT_EQ(pong->host_pid(), getpid());
  // The holder's identity, from the kernel (SCM_CREDENTIALS on its hello).
  EXPECT_EQ(pong->caller_pid(), peer.pid());
  // Served by this thread while it waited for Give's reply (nested call).
  EXPECT_EQ(pong->tid(), static_cast<int32_t>(gettid()));
}

TEST_F(ObjectTest, ReleasedWhenTheHolderDropsItAndWhenTheHolderDies) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  const int64_t live_before = CallbackObject::live();
  const size_t references_before = rpc::ObjectHost::Get().reference_count();
  {
    auto callback = std::make_shared<CallbackObject>();
    ASSERT_OK(holder->Give(callback, 1, /*keep=*/true).status());
  }
  // Only the holder keeps it alive now.
  EXPECT_EQ(CallbackObject::live(), live_before + 1);
  ASSERT_OK_AND_ASSIGN(auto pong, holder->CallHeld(10));
  EXPECT_EQ(pong->value(), 11);
  ASSERT_OK(holder->Drop().status());
  EXPECT_TRUE(Eventually([&] { return CallbackObject::live() == live_before; }));
  EXPECT_EQ(rpc::ObjectHost::Get().reference_count(), references_before);

  {
    auto callback = std::make_shared<CallbackObject>();
    ASSERT_OK(holder->Give(callback, 1, /*keep=*/true).status());
  }
  EXPECT_EQ(CallbackObject::live(), live_before + 1);
  ASSERT_OK(peer.Kill(SIGKILL));
  EXPECT_TRUE(Eventually([&] { return CallbackObject::live() == live_before; }));
  EXPECT_EQ(rpc::ObjectHost::Get().reference_count(), references_before);
}

TEST_F(ObjectTest, AResultCanBeAnObjectAndItsDeathIsNotified) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  ASSERT_OK_AND_ASSIGN(auto made, holder->Make());
  ASSERT_OK_AND_ASSIGN(auto remote,
                       rpc::TakeObject<objects::CallbackProxy>(made, made->callback()));
  ASSERT_OK_AND_ASSIGN(auto pong, remote->Call(1));
  EXPECT_EQ(pong->value(), 101);
  EXPECT_EQ(pong->host_pid(), peer.pid());
  EXPECT_EQ(pong->caller_pid(), getpid());

  std::atomic<int> deaths{0};
  ASSERT_OK(remote->LinkToDeath([&] { deaths.fetch_add(1); }).status());
  ASSERT_OK(peer.Kill(SIGKILL));
  EXPECT_TRUE(Eventually([&] { return deaths.load() == 1; }));
  EXPECT_TRUE(IsPeerDead(remote->Call(2).status()));
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(deaths.load(), 1);
}

// A gives B's object to C; C calls B directly, and B knows it is C calling.
TEST_F(ObjectTest, ThreeProcessHandOff) {
  ASSERT_OK_AND_ASSIGN(Subprocess b, StartPeer("b"));
  ASSERT_OK_AND_ASSIGN(Subprocess c, StartPeer("c"));
  ASSERT_OK_AND_ASSIGN(auto holder_b, Holder("b"));
  ASSERT_OK_AND_ASSIGN(auto holder_c, Holder("c"));
  ASSERT_OK_AND_ASSIGN(auto made, holder_b->Make());
  ASSERT_OK_AND_ASSIGN(auto object_b,
                       rpc::TakeObject<objects::CallbackProxy>(made, made->callback()));

  ASSERT_OK_AND_ASSIGN(auto given, holder_c->Give(object_b, 7, /*keep=*/true));
  EXPECT_EQ(given->pong()->value(), 107);
  EXPECT_EQ(given->pong()->host_pid(), b.pid());
  EXPECT_EQ(given->pong()->caller_pid(), c.pid());

  // A lets go (of the reference and of the reply that lent it); C's
  // reference keeps B's object alive.
  {
    auto drop = std::move(object_b);
    auto drop_reply = std::move(made);
  }
  ASSERT_OK_AND_ASSIGN(auto stats_b, holder_b->Stats());
  EXPECT_EQ(stats_b->live_objects(), 1);
  ASSERT_OK_AND_ASSIGN(auto pong, holder_c->CallHeld(8));
  EXPECT_EQ(pong->value(), 108);
  EXPECT_EQ(pong->caller_pid(), c.pid());

  // C passes it back to A as a result: still B's object.
  ASSERT_OK_AND_ASSIGN(auto held, holder_c->Held());
  ASSERT_OK_AND_ASSIGN(auto again, rpc::TakeObject<objects::CallbackProxy>(held, held->callback()));
  ASSERT_OK_AND_ASSIGN(auto direct, again->Call(9));
  EXPECT_EQ(direct->host_pid(), b.pid());
  EXPECT_EQ(direct->caller_pid(), getpid());

  // C dies and A drops its reference: B releases its object once the last
  // reply of that reference goes too (a reply keeps its channel).
  ASSERT_OK(c.Kill(SIGKILL));
  { auto drop = std::move(again); }
  EXPECT_EQ(direct->value(), 109);
  { auto drop_reply = std::move(direct); }
  EXPECT_TRUE(Eventually([&] {
    auto stats = holder_b->Stats();
    return stats.ok() && (*stats)->live_objects() == 0 && (*stats)->exported_references() == 0;
  }));
}

// The Stats of `holder` once its live objects and exported references are
// `live` and `references` (releases arrive oneway, a moment after).
bool PeerSettlesAt(Connection<objects::HolderProxy>& holder, int64_t live, uint64_t references) {
  return Eventually([&] {
    auto stats = holder->Stats();
    return stats.ok() && (*stats)->live_objects() == live &&
           (*stats)->exported_references() == references;
  });
}

// An object in a result goes by handle over the connection itself: no
// descriptor, no channel; lent while its Response lives, held once the
// Response goes if taken, released when the last Remote<> goes.
TEST_F(ObjectTest, AnObjectInAResultGoesByHandleAndLivesOnlyWhileHeld) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  ASSERT_OK_AND_ASSIGN(auto base, holder->Stats());
  const int64_t live = base->live_objects();
  const uint64_t references = base->exported_references();
  const int fds_before = CountOpenFds();

  {
    ASSERT_OK_AND_ASSIGN(auto made, holder->Make());
    EXPECT_TRUE(rpc::object_wire::IsHandleField(made->callback())) << made->callback();
    EXPECT_TRUE(made.TakeFds().empty());
    ASSERT_OK_AND_ASSIGN(auto stats, holder->Stats());
    EXPECT_EQ(stats->live_objects(), live + 1);
    EXPECT_EQ(stats->exported_references(), references + 1);
  }
  // Never taken: its loan ended with the Response.
  EXPECT_TRUE(PeerSettlesAt(holder, live, references));

  std::optional<rpc::Remote<objects::CallbackProxy>> remote;
  {
    ASSERT_OK_AND_ASSIGN(auto made, holder->Make());
    ASSERT_OK_AND_ASSIGN(remote, rpc::TakeObject<objects::CallbackProxy>(made, made->callback()));
    // Taking it twice gives the same reference.
    ASSERT_OK_AND_ASSIGN(auto twice,
                         rpc::TakeObject<objects::CallbackProxy>(made, made->callback()));
    EXPECT_EQ(twice.object(), remote->object());
  }
  // Kept past its Response: still there, and called with our identity.
  ASSERT_OK_AND_ASSIGN(auto pong, (*remote)->Call(1));
  EXPECT_EQ(pong->value(), 101);
  EXPECT_EQ(pong->host_pid(), peer.pid());
  EXPECT_EQ(pong->caller_pid(), getpid());
  ASSERT_OK_AND_ASSIGN(auto stats, holder->Stats());
  EXPECT_EQ(stats->live_objects(), live + 1);
  EXPECT_EQ(CountOpenFds(), fds_before);
  { auto drop_reply = std::move(pong); }
  remote.reset();
  EXPECT_TRUE(PeerSettlesAt(holder, live, references));
}

// A holder of an object from a result that dies (SIGKILL: no Release, no
// settle) releases it all the same: its connection ends.
TEST_F(ObjectTest, AnObjectInAResultIsReleasedWhenItsHolderDies) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  ASSERT_OK_AND_ASSIGN(auto base, holder->Stats());
  ASSERT_OK_AND_ASSIGN(Subprocess client, Subprocess::SpawnAndWaitReady(
                                              {SLUICE_OBJECT_PEER, socket_, "--keep_made=holder"}));
  EXPECT_TRUE(PeerSettlesAt(holder, base->live_objects() + 1, base->exported_references() + 1));
  ASSERT_OK(client.Kill(SIGKILL));
  EXPECT_TRUE(PeerSettlesAt(holder, base->live_objects(), base->exported_references()));
}

// A proxy that does not keep its channel (here over a bare Lookup) never
// announced that it takes objects by handle in replies: it gets them as
// dedicated channels, as a peer from before handles in replies would.
TEST_F(ObjectTest, AProxyThatCannotKeepItsChannelGetsResultObjectsAsDedicatedChannels) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(ServiceConnection connection, sm_->Lookup("holder"));
  objects::HolderProxy bare(*connection.channel);
  ASSERT_OK_AND_ASSIGN(auto made, bare.Make());
  EXPECT_FALSE(rpc::object_wire::IsHandleField(made->callback())) << made->callback();
  ASSERT_OK_AND_ASSIGN(auto remote,
                       rpc::TakeObject<objects::CallbackProxy>(made, made->callback()));
  ASSERT_OK_AND_ASSIGN(auto pong, remote->Call(2));
  EXPECT_EQ(pong->value(), 102);
}

// A hostile reply: a handle field in a reply that lends nothing.
TEST_F(ObjectTest, AHandleInAReplyThatLendsNothingIsDataLoss) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  ASSERT_OK_AND_ASSIGN(auto stats, holder->Stats());
  // Stats lends nothing; read its open_fds field as if it were an object.
  EXPECT_THAT(
      rpc::TakeObject<objects::CallbackProxy>(stats, rpc::object_wire::HandleField(3)).status(),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("lends no objects")));
}

TEST_F(ObjectTest, DescriptorFieldArrivesOwnedAndBadOnesAreRefused) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  UniqueFd memfd(::memfd_create("blob", MFD_CLOEXEC));
  ASSERT_TRUE(memfd);
  ASSERT_EQ(::write(memfd.get(), "hello from a memfd", 18), 18);
  ASSERT_OK_AND_ASSIGN(auto read, holder->ReadFd(memfd.get()));
  EXPECT_EQ(read->content()->str(), "hello from a memfd");

  const int closed = ::dup(memfd.get());
  ::close(closed);
  EXPECT_THAT(holder->ReadFd(closed).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  // No descriptor (-1): the receiver sees an empty field.
  EXPECT_THAT(holder->ReadFd(-1).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no descriptor")));
  // A null object likewise.
  EXPECT_THAT(holder->Give(nullptr, 1, false).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("null")));
}

TEST_F(ObjectTest, AFieldPointingAtNoReferenceIsDataLoss) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  // A hand-built request whose field claims a reference the call lacks.
  auto reply = holder->Give([](flatbuffers::FlatBufferBuilder& fbb) {
    return objects::CreateGiveRequest(fbb, /*callback=*/3, 1, false);
  });
  EXPECT_THAT(reply.status(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("index 3")));
  // The connection is still good.
  EXPECT_OK(holder->Stats().status());
}

// A request whose callback field holds object handle `handle`, built by hand
// (as a hostile client would).
auto HandleRequest(uint32_t handle) {
  return [handle](flatbuffers::FlatBufferBuilder& fbb) {
    return objects::CreateGiveRequest(fbb, rpc::object_wire::HandleField(handle), 1, false);
  };
}

TEST_F(ObjectTest, AHandleWithoutAReverseChannelIsDataLossAndAForgedOrStaleOneNotFound) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  // Nothing passed on this connection yet: the peer has no reverse channel.
  EXPECT_THAT(holder->Give(HandleRequest(1)).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("no reverse channel")));
  // The first object passed opens it; its handle (1) ends with the call.
  auto callback = std::make_shared<CallbackObject>();
  ASSERT_OK(holder->Give(callback, 1, /*keep=*/false).status());
  EXPECT_THAT(holder->Give(HandleRequest(1)).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("handle 1 ")));
  EXPECT_THAT(holder->Give(HandleRequest(12345)).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("handle 12345")));
  // The connection is still good.
  ASSERT_OK_AND_ASSIGN(auto given, holder->Give(callback, 2, /*keep=*/false));
  EXPECT_EQ(given->pong()->value(), 3);
}

TEST_F(ObjectTest, AnObjectPassedAgainWhileHeldIsStillOneReference) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  const size_t references_before = rpc::ObjectHost::Get().reference_count();
  auto callback = std::make_shared<CallbackObject>();
  ASSERT_OK(holder->Give(callback, 1, /*keep=*/true).status());
  ASSERT_OK(holder->Give(callback, 2, /*keep=*/true).status());
  EXPECT_EQ(rpc::ObjectHost::Get().reference_count(), references_before + 1);
  ASSERT_OK_AND_ASSIGN(auto pong, holder->CallHeld(3));
  EXPECT_EQ(pong->value(), 4);
  EXPECT_EQ(pong->caller_pid(), peer.pid());
  ASSERT_OK(holder->Drop().status());
  EXPECT_TRUE(
      Eventually([&] { return rpc::ObjectHost::Get().reference_count() == references_before; }));
}

// A oneway call lends its objects by handle too, under a ticket the
// receiver settles once it has served the call: no descriptor or channel per
// pass; held afterwards if the handler kept it, let go otherwise.
TEST_F(ObjectTest, AnObjectInAOnewayCallGoesByHandleAndIsKeptOnlyIfTheHandlerKeepsIt) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  const size_t references_before = rpc::ObjectHost::Get().reference_count();
  auto callback = std::make_shared<CallbackObject>(20);
  // Opens the connection's reverse channel, which every later pass reuses.
  ASSERT_OK(holder->Give(callback, 0, /*keep=*/false).status());
  ASSERT_TRUE(
      Eventually([&] { return rpc::ObjectHost::Get().reference_count() == references_before; }));
  ASSERT_OK_AND_ASSIGN(auto peer_before, holder->Stats());
  const int fds_before = CountOpenFds();

  ASSERT_OK(holder->Hand(callback, 1, /*keep=*/true));
  // A synchronous call may overtake a oneway one: wait until it was served.
  ASSERT_TRUE(Eventually([&] { return holder->CallHeld(2).ok(); }));
  ASSERT_OK_AND_ASSIGN(auto pong, holder->CallHeld(3));
  EXPECT_EQ(pong->value(), 23);
  EXPECT_EQ(pong->host_pid(), getpid());
  EXPECT_EQ(pong->caller_pid(), peer.pid());
  // Held by handle: one table entry, and no descriptor on either side (a
  // dedicated channel costs each side one).
  EXPECT_TRUE(Eventually(
      [&] { return rpc::ObjectHost::Get().reference_count() == references_before + 1; }));
  EXPECT_EQ(CountOpenFds(), fds_before);
  ASSERT_OK_AND_ASSIGN(auto peer_holding, holder->Stats());
  EXPECT_EQ(peer_holding->open_fds(), peer_before->open_fds());

  ASSERT_OK(holder->Drop().status());
  EXPECT_TRUE(
      Eventually([&] { return rpc::ObjectHost::Get().reference_count() == references_before; }));

  // Taken and let go, or never taken: its loan ends all the same.
  ASSERT_OK(holder->Hand(callback, 4, /*keep=*/false));
  ASSERT_OK(holder->Hand(callback, -1, /*keep=*/false));
  EXPECT_TRUE(
      Eventually([&] { return rpc::ObjectHost::Get().reference_count() == references_before; }));
  EXPECT_THAT(holder->CallHeld(5).status(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

// Regression: a handler that makes a oneway call on an object it was lent
// for its call (a result receiver) and returns. The object's loan ends when
// the call returns, which can be before the host serves the oneway call:
// it then found the handle gone (NOT_FOUND, and a oneway error goes
// nowhere), so notifications were lost. The oneway call keeps the object
// first (one Acquire), and the Release follows it in order.
TEST_F(ObjectTest, AOnewayCallOnABorrowedObjectIsServedAfterItsLoanEnds) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  const size_t references_before = rpc::ObjectHost::Get().reference_count();
  auto callback = std::make_shared<CallbackObject>();
  constexpr int kCalls = 500;
  for (int i = 1; i <= kCalls; ++i) ASSERT_OK(holder->Notify(callback, i).status()) << i;
  EXPECT_TRUE(Eventually([&] { return callback->notified() == kCalls * (kCalls + 1) / 2; }))
      << callback->notified();
  EXPECT_TRUE(
      Eventually([&] { return rpc::ObjectHost::Get().reference_count() == references_before; }));
}

// A client built from a newer interface: it calls a oneway method this
// server does not have, passing an object (with `options`, e.g. a size hint
// over the server's limit, which refuses the call before it is sent).
class NewerHolderProxy : public objects::HolderProxy {
 public:
  using HolderProxy::HolderProxy;
  absl::Status HandLater(const rpc::ObjectRef& callback, const rpc::CallOptions& options = {}) {
    rpc::Attachments attachments(*this, {}, /*oneway=*/true);
    absl::StatusOr<uint32_t> field = attachments.AddObject(callback);
    if (!field.ok()) return field.status();
    const CallHeader header{
        Interface::kInterfaceId,
        rpc::MethodWord(rpc::Fnv1a32("HandLater"), rpc::Fnv1a32("GiveRequest->Empty,oneway"))};
    return InvokeOneway(
        header, "sluice.test.objects.Holder.HandLater", 0,
        [&](flatbuffers::FlatBufferBuilder& fbb) {
          objects::GiveRequestBuilder request(fbb);
          request.add_callback(*field);
          return request.Finish();
        },
        options, &attachments);
  }
};

// The ticket of a oneway call is settled whatever comes of the call, here
// refused before any handler runs: nothing stays lent.
TEST_F(ObjectTest, AOnewayCallRefusedBeforeAnyHandlerRunsStillEndsItsLoans) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Connect<NewerHolderProxy>(*sm_, "holder"));
  const size_t references_before = rpc::ObjectHost::Get().reference_count();
  auto callback = std::make_shared<CallbackObject>();
  ASSERT_OK(holder->HandLater(callback));
  EXPECT_TRUE(
      Eventually([&] { return rpc::ObjectHost::Get().reference_count() == references_before; }));
  // The connection goes on, reverse channel and all.
  ASSERT_OK_AND_ASSIGN(auto given, holder->Give(callback, 1, /*keep=*/false));
  EXPECT_EQ(given->pong()->value(), 2);
}

// A oneway call that never went out (its request could not get space)
// ends its loans at once: nobody will settle its ticket.
TEST_F(ObjectTest, AOnewayCallThatIsNeverSentEndsItsLoansAtOnce) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Connect<NewerHolderProxy>(*sm_, "holder"));
  const size_t references_before = rpc::ObjectHost::Get().reference_count();
  auto callback = std::make_shared<CallbackObject>();
  const uint64_t too_large = holder.channel().max_request_size() + 1;
  EXPECT_THAT(holder->HandLater(callback, {.size_hint = too_large}),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(rpc::ObjectHost::Get().reference_count(), references_before);
  ASSERT_OK_AND_ASSIGN(auto given, holder->Give(callback, 1, /*keep=*/false));
  EXPECT_EQ(given->pong()->value(), 2);
}

// The holder of a handle passes it on (here back to us, as a result): the
// host makes a dedicated channel for it, as for any proxy passed on.
// Objects the holder passes back in calls on what it was lent (B passing
// its own object to A in a callback) go by handle too, lent in the table of
// A's connection to B: A calls them there. No channel or descriptor on
// either side; kept only if A's handler keeps them.
TEST_F(ObjectTest, AnObjectPassedInACallOnALentObjectGoesByHandleOnTheConnection) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  auto taker = std::make_shared<TakerObject>();
  // Opens the reverse channel, which every later pass reuses.
  ASSERT_OK(holder->Offer(taker, 0, /*keep=*/false).status());
  ASSERT_OK_AND_ASSIGN(auto base, holder->Stats());
  ASSERT_TRUE(PeerSettlesAt(holder, base->live_objects(), base->exported_references()));
  const int fds_before = CountOpenFds();

  ASSERT_OK_AND_ASSIGN(auto offered, holder->Offer(taker, 5, /*keep=*/false));
  EXPECT_TRUE(offered->by_handle());
  EXPECT_EQ(offered->pong()->value(), 1005);
  EXPECT_EQ(offered->pong()->host_pid(), peer.pid());
  // Called on the connection, whose caller we are.
  EXPECT_EQ(offered->pong()->caller_pid(), getpid());
  // Never kept: its loan ended with the call.
  EXPECT_TRUE(PeerSettlesAt(holder, base->live_objects(), base->exported_references()));

  ASSERT_OK(holder->Offer(taker, 6, /*keep=*/true).status());
  EXPECT_TRUE(PeerSettlesAt(holder, base->live_objects() + 1, base->exported_references() + 1));
  std::optional<rpc::Remote<objects::CallbackProxy>> kept = taker->kept();
  ASSERT_TRUE(kept.has_value());
  // Outside any call now: still there.
  ASSERT_OK_AND_ASSIGN(auto pong, (*kept)->Call(7));
  EXPECT_EQ(pong->value(), 1007);
  EXPECT_EQ(pong->host_pid(), peer.pid());
  EXPECT_EQ(CountOpenFds(), fds_before);
  ASSERT_OK_AND_ASSIGN(auto holding, holder->Stats());
  EXPECT_EQ(holding->open_fds(), base->open_fds());
  EXPECT_EQ(holding->memfd_mappings(), base->memfd_mappings());
  { auto drop_reply = std::move(pong); }
  kept.reset();
  taker->Drop();
  EXPECT_TRUE(PeerSettlesAt(holder, base->live_objects(), base->exported_references()));
  EXPECT_EQ(taker->dedicated(), 0);
}

// The same in a oneway call on a lent object: lent under a ticket in the
// connection's table, settled on the connection once the call was served.
TEST_F(ObjectTest, AnObjectInAOnewayCallOnALentObjectIsKeptOnlyIfTheHandlerKeepsIt) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  auto taker = std::make_shared<TakerObject>();
  ASSERT_OK(holder->Offer(taker, 0, /*keep=*/false).status());
  ASSERT_OK_AND_ASSIGN(auto base, holder->Stats());
  ASSERT_TRUE(PeerSettlesAt(holder, base->live_objects(), base->exported_references()));

  ASSERT_OK(holder->OfferLater(taker, 1, /*keep=*/true).status());
  ASSERT_TRUE(Eventually([&] { return taker->kept().has_value(); }));
  ASSERT_OK_AND_ASSIGN(auto pong, (*taker->kept())->Call(2));
  EXPECT_EQ(pong->value(), 1002);
  EXPECT_TRUE(PeerSettlesAt(holder, base->live_objects() + 1, base->exported_references() + 1));
  { auto drop_reply = std::move(pong); }
  taker->Drop();
  EXPECT_TRUE(PeerSettlesAt(holder, base->live_objects(), base->exported_references()));

  // Taken and let go, or never taken: its loan ends all the same.
  ASSERT_OK(holder->OfferLater(taker, 3, /*keep=*/false).status());
  ASSERT_OK(holder->OfferLater(taker, -1, /*keep=*/false).status());
  EXPECT_TRUE(PeerSettlesAt(holder, base->live_objects(), base->exported_references()));
  EXPECT_EQ(taker->dedicated(), 0);
  EXPECT_GE(taker->by_handle(), 2);
}

// Objects in the replies of calls on a lent object (A's Make answering B on
// the reverse channel) are lent in the reverse channel's table: B calls them
// on it, and keeps them only while it holds them.
TEST_F(ObjectTest, AnObjectInAReplyOnAReverseChannelGoesByHandle) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  auto taker = std::make_shared<TakerObject>();
  ASSERT_OK(holder->Offer(taker, 0, /*keep=*/false).status());
  const int64_t live = CallbackObject::live();
  const size_t references = rpc::ObjectHost::Get().reference_count();
  ASSERT_OK_AND_ASSIGN(auto base, holder->Stats());
  const int fds_before = CountOpenFds();

  ASSERT_OK_AND_ASSIGN(auto fetched, holder->Fetch(taker, 4, /*keep=*/false));
  EXPECT_TRUE(fetched->by_handle());
  EXPECT_EQ(fetched->pong()->value(), 104);
  EXPECT_EQ(fetched->pong()->host_pid(), getpid());
  EXPECT_EQ(fetched->pong()->caller_pid(), peer.pid());
  EXPECT_TRUE(Eventually([&] {
    return CallbackObject::live() == live && rpc::ObjectHost::Get().reference_count() == references;
  }));

  ASSERT_OK(holder->Fetch(taker, 5, /*keep=*/true).status());
  ASSERT_OK_AND_ASSIGN(auto pong, holder->CallHeld(6));
  EXPECT_EQ(pong->value(), 106);
  EXPECT_EQ(pong->host_pid(), getpid());
  EXPECT_TRUE(Eventually([&] {
    return CallbackObject::live() == live + 1 &&
           rpc::ObjectHost::Get().reference_count() == references + 1;
  }));
  EXPECT_EQ(CountOpenFds(), fds_before);
  ASSERT_OK_AND_ASSIGN(auto holding, holder->Stats());
  EXPECT_EQ(holding->open_fds(), base->open_fds());
  ASSERT_OK(holder->Drop().status());
  EXPECT_TRUE(Eventually([&] {
    return CallbackObject::live() == live && rpc::ObjectHost::Get().reference_count() == references;
  }));
}

// The holder of what A lent it dies while A holds an object the holder
// passed back (and the holder holds one of A's replies): each side lets go.
TEST_F(ObjectTest, ObjectsPassedBackAreReleasedWhenTheirHostDies) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  auto taker = std::make_shared<TakerObject>();
  const int64_t live = CallbackObject::live();
  const size_t references = rpc::ObjectHost::Get().reference_count();
  ASSERT_OK(holder->Offer(taker, 1, /*keep=*/true).status());
  ASSERT_OK(holder->Fetch(taker, 2, /*keep=*/true).status());
  ASSERT_TRUE(taker->kept().has_value());
  ASSERT_OK(peer.Kill(SIGKILL));
  (void)peer.Wait();
  // Our object the peer held goes with its reverse channel...
  EXPECT_TRUE(Eventually([&] { return CallbackObject::live() == live; }));
  // ... and the one we hold of the peer's fails as dead.
  EXPECT_TRUE(Eventually([&] {
    auto called = (*taker->kept())->Call(3);
    return !called.ok() && IsPeerDead(called.status());
  }));
  taker->Drop();
  taker.reset();
  EXPECT_TRUE(Eventually([&] { return rpc::ObjectHost::Get().reference_count() == references; }));
}

// A proxy passed back to its host on the channel it was lent on (a session
// given back to be closed) is the host's own object again (TakeLocal), as
// in Binder: no Clone, no channel. It can still be taken as a proxy.
TEST_F(ObjectTest, AProxyPassedBackToItsHostIsItsLocalObject) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  ASSERT_OK_AND_ASSIGN(auto base, holder->Stats());
  std::optional<rpc::Remote<objects::CallbackProxy>> made_object;
  {
    ASSERT_OK_AND_ASSIGN(auto made, holder->Make());
    ASSERT_OK_AND_ASSIGN(made_object,
                         rpc::TakeObject<objects::CallbackProxy>(made, made->callback()));
  }
  const int fds_before = CountOpenFds();
  ASSERT_OK_AND_ASSIGN(auto own, holder->Own(*made_object, 7));
  EXPECT_TRUE(own->by_handle());
  EXPECT_EQ(own->pong()->value(), 107);
  EXPECT_EQ(own->pong()->host_pid(), peer.pid());
  EXPECT_EQ(own->pong()->caller_pid(), getpid());
  // No Clone: nothing was made on this side.
  EXPECT_EQ(CountOpenFds(), fds_before);
  { auto drop_reply = std::move(own); }
  made_object.reset();
  EXPECT_TRUE(PeerSettlesAt(holder, base->live_objects(), base->exported_references()));

  // Our own object is not the peer's: NOT_FOUND, as is a handle it never
  // lent us (forged) or no longer does.
  EXPECT_THAT(holder->Own(std::make_shared<CallbackObject>(), 1).status(),
              StatusIs(absl::StatusCode::kNotFound));
  auto forged = [](flatbuffers::FlatBufferBuilder& fbb) {
    objects::GiveRequestBuilder request(fbb);
    request.add_callback(rpc::object_wire::ReturnedField(12345));
    return request.Finish();
  };
  EXPECT_THAT(holder->Own(forged).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("12345")));
}

// B returns A's own object to A (a listener it was given, handed back):
// the reply holds A's handle and A gets its local object back (TakeLocal),
// as Binder hands a host its own binder: no Clone, no channel. B's
// reference rides with the reply's ticket, so B letting go at once cannot
// end the handle's loan before A has looked it up.
TEST_F(ObjectTest, AProxyReturnedInAReplyIsItsHostsLocalObject) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  const size_t baseline = rpc::ObjectHost::Get().reference_count();
  auto callback = std::make_shared<CallbackObject>(10);
  ASSERT_OK(holder->Give(callback, 1, /*keep=*/true).status());
  const int fds_before = CountOpenFds();
  {
    ASSERT_OK_AND_ASSIGN(auto held, holder->Held());
    EXPECT_TRUE(rpc::object_wire::IsReturnedField(held->callback()));
    // The peer drops its reference; were its Release not held back by the
    // reply, it would reach us well within this pause and end the loan.
    ASSERT_OK(holder->Drop().status());
    absl::SleepFor(absl::Milliseconds(50));
    EXPECT_EQ(rpc::ObjectHost::Get().reference_count(), baseline + 1);
    ASSERT_OK_AND_ASSIGN(std::shared_ptr<CallbackObject> local,
                         rpc::TakeLocal<CallbackObject>(held, held->callback()));
    EXPECT_EQ(local, callback);
    EXPECT_EQ(CountOpenFds(), fds_before);
    // As a proxy it still works: a dedicated channel to ourselves.
    ASSERT_OK_AND_ASSIGN(auto again,
                         rpc::TakeObject<objects::CallbackProxy>(held, held->callback()));
    ASSERT_OK_AND_ASSIGN(auto pong, again->Call(5));
    EXPECT_EQ(pong->value(), 15);
    EXPECT_EQ(pong->host_pid(), getpid());
    EXPECT_EQ(pong->caller_pid(), getpid());
  }
  // The reply settled its ticket and the peer's last reference went.
  EXPECT_TRUE(Eventually([&] { return rpc::ObjectHost::Get().reference_count() == baseline; }));
  EXPECT_TRUE(Eventually([&] { return CountOpenFds() == fds_before; }));

  // Returned in the reply of the very call that lent it: the peer's
  // borrowed reference outlives its handler (in the reply's ticket), so it
  // is kept like any other, and let go once our reply goes.
  {
    ASSERT_OK_AND_ASSIGN(auto echoed, holder->Echo(callback, 0));
    ASSERT_OK_AND_ASSIGN(std::shared_ptr<CallbackObject> local,
                         rpc::TakeLocal<CallbackObject>(echoed, echoed->callback()));
    EXPECT_EQ(local, callback);
  }
  EXPECT_TRUE(Eventually([&] { return rpc::ObjectHost::Get().reference_count() == baseline; }));

  // A returned handle without a ticket, or one we never lent: NOT_FOUND,
  // never another object.
  ASSERT_OK(holder->Give(callback, 1, /*keep=*/true).status());
  ASSERT_OK_AND_ASSIGN(auto forged, holder->Forge(rpc::object_wire::ReturnedField(1)));
  EXPECT_THAT(rpc::TakeLocal<CallbackObject>(forged, forged->callback()).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no ticket")));
  EXPECT_THAT(rpc::TakeObject<objects::CallbackProxy>(forged, forged->callback()).status(),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(auto held, holder->Held());
  EXPECT_THAT(rpc::TakeLocal<CallbackObject>(held, rpc::object_wire::ReturnedField(4321)).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("4321")));
  // Another process's object (or null) is not ours.
  EXPECT_THAT(rpc::TakeLocal<CallbackObject>(held, 0).status(),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(holder->Drop().status());
}

// A proxy that cannot keep its channel (a bare Lookup) never announced that
// it takes its own objects back by handle: the peer passes a clone, a
// dedicated channel to the caller's own object, as it did before.
TEST_F(ObjectTest, AProxyThatCannotKeepItsChannelGetsItsOwnObjectBackAsAClone) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(ServiceConnection connection, sm_->Lookup("holder"));
  objects::HolderProxy bare(*connection.channel);
  auto callback = std::make_shared<CallbackObject>(10);
  ASSERT_OK(bare.Give(callback, 1, /*keep=*/true).status());
  {
    ASSERT_OK_AND_ASSIGN(auto held, bare.Held());
    EXPECT_FALSE(rpc::object_wire::IsReturnedField(held->callback())) << held->callback();
    EXPECT_FALSE(rpc::object_wire::IsHandleField(held->callback())) << held->callback();
    EXPECT_THAT(rpc::TakeLocal<CallbackObject>(held, held->callback()).status(),
                StatusIs(absl::StatusCode::kNotFound));
    ASSERT_OK_AND_ASSIGN(auto clone,
                         rpc::TakeObject<objects::CallbackProxy>(held, held->callback()));
    ASSERT_OK_AND_ASSIGN(auto pong, clone->Call(5));
    EXPECT_EQ(pong->value(), 15);
    EXPECT_EQ(pong->host_pid(), getpid());
  }
  ASSERT_OK(bare.Drop().status());
}

TEST_F(ObjectTest, TenThousandPassAndDropCyclesLeakNothing) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  auto callback = std::make_shared<CallbackObject>();
  // Warm up both sides (threads, watcher, buffers) before measuring.
  ASSERT_OK(holder->Give(callback, 0, false).status());
  ASSERT_TRUE(Eventually([&] { return rpc::ObjectHost::Get().reference_count() == 0; }));
  ASSERT_OK_AND_ASSIGN(const Footprint before, FootprintOf(holder));
  const int64_t live_before = CallbackObject::live();

  constexpr int kCycles = 10'000;
  for (int i = 0; i < kCycles; ++i) {
    auto given = holder->Give(callback, i, /*keep=*/false);
    ASSERT_OK(given.status()) << "cycle " << i;
    ASSERT_EQ(given->get()->pong()->value(), i + 1);
  }
  callback.reset();
  EXPECT_TRUE(Eventually([&] { return CallbackObject::live() == live_before - 1; }));
  EXPECT_TRUE(Eventually([&] { return rpc::ObjectHost::Get().reference_count() == 0; }));
  ExpectBackAt(holder, before);
  ASSERT_OK_AND_ASSIGN(auto peer_after, holder->Stats());
  EXPECT_EQ(peer_after->exported_references(), 0u);
}

// The same for objects in oneway calls, kept and let go in turn.
TEST_F(ObjectTest, ThousandsOfOnewayPassesLeakNothing) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  auto callback = std::make_shared<CallbackObject>();
  ASSERT_OK(holder->Give(callback, 0, false).status());
  ASSERT_TRUE(Eventually([&] { return rpc::ObjectHost::Get().reference_count() == 0; }));
  ASSERT_OK_AND_ASSIGN(const Footprint before, FootprintOf(holder));
  const int64_t live_before = CallbackObject::live();

  constexpr int kCycles = 3'000;
  for (int i = 0; i < kCycles; ++i) {
    // A new object every other pass: the one held before is let go.
    if (i % 2 == 0) callback = std::make_shared<CallbackObject>();
    ASSERT_OK(holder->Hand(callback, i, /*keep=*/i % 3 == 0)) << "pass " << i;
  }
  callback.reset();
  ASSERT_OK(holder->Drop().status());
  // The Drop may overtake the last Hands, which then keep theirs: drop again
  // once every ticket is settled.
  EXPECT_TRUE(Eventually([&] {
    if (rpc::ObjectHost::Get().reference_count() == 0) return true;
    (void)holder->Drop();
    return false;
  }));
  EXPECT_TRUE(Eventually([&] { return CallbackObject::live() == live_before - 1; }));
  ExpectBackAt(holder, before);
  ASSERT_OK_AND_ASSIGN(auto peer_after, holder->Stats());
  EXPECT_EQ(peer_after->live_objects(), 0);
}

// The same for objects in results: taken, called, kept past the Response
// or not, dropped.
TEST_F(ObjectTest, TenThousandResultObjectCyclesLeakNothing) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  ASSERT_OK_AND_ASSIGN(auto warm, holder->Make());
  { auto drop = std::move(warm); }
  ASSERT_TRUE(PeerSettlesAt(holder, 0, 0));
  ASSERT_OK_AND_ASSIGN(auto peer_before, holder->Stats());
  const int fds_before = CountOpenFds();
  const int maps_before = CountMappings("memfd:");

  constexpr int kCycles = 10'000;
  for (int i = 0; i < kCycles; ++i) {
    std::optional<rpc::Remote<objects::CallbackProxy>> kept;
    {
      auto made = holder->Make();
      ASSERT_OK(made.status()) << "cycle " << i;
      if (i % 3 == 2) continue;  // Not taken.
      auto remote = rpc::TakeObject<objects::CallbackProxy>(*made, (*made)->callback());
      ASSERT_OK(remote.status()) << "cycle " << i;
      if (i % 3 == 1) kept = *std::move(remote);  // Outlives the Response.
    }
    if (kept) {
      auto pong = (*kept)->Call(i);
      ASSERT_OK(pong.status()) << "cycle " << i;
      ASSERT_EQ(pong->get()->value(), i + 100);
    }
  }
  EXPECT_TRUE(PeerSettlesAt(holder, 0, 0));
  EXPECT_EQ(CountOpenFds(), fds_before);
  EXPECT_EQ(CountMappings("memfd:"), maps_before);
  ASSERT_OK_AND_ASSIGN(auto peer_after, holder->Stats());
  EXPECT_EQ(peer_after->open_fds(), peer_before->open_fds());
  EXPECT_EQ(peer_after->memfd_mappings(), peer_before->memfd_mappings());
}

// The same for objects passed back in calls on lent objects, and in the
// replies of such calls: kept and let go in turn, both ways.
TEST_F(ObjectTest, ThousandsOfObjectsPassedBackLeakNothing) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  // Counted before the warm-up: its Fetch's object here goes when the
  // peer's Settle of it is served, which may be after the peer's own
  // objects are gone (a loaded run caught it alive).
  const int64_t live_before = CallbackObject::live();
  auto taker = std::make_shared<TakerObject>();
  ASSERT_OK(holder->Offer(taker, 0, false).status());
  ASSERT_OK(holder->Fetch(taker, 0, false).status());
  ASSERT_TRUE(PeerSettlesAt(holder, 0, 0));
  ASSERT_OK_AND_ASSIGN(const Footprint before, FootprintOf(holder));

  constexpr int kCycles = 3'000;
  for (int i = 0; i < kCycles; ++i) {
    const bool keep = i % 3 == 0;
    auto offered = holder->Offer(taker, i, keep);
    ASSERT_OK(offered.status()) << "cycle " << i;
    ASSERT_EQ(offered->get()->pong()->value(), i + 1000);
    auto fetched = holder->Fetch(taker, i, keep);
    ASSERT_OK(fetched.status()) << "cycle " << i;
    ASSERT_EQ(fetched->get()->pong()->value(), i + 100);
    if (i % 5 == 0) taker->Drop();
  }
  taker->Drop();
  ASSERT_OK(holder->Drop().status());
  EXPECT_TRUE(PeerSettlesAt(holder, 0, 0));
  EXPECT_TRUE(Eventually([&] { return CallbackObject::live() == live_before; }));
  EXPECT_EQ(taker->dedicated(), 0);
  taker.reset();
  EXPECT_TRUE(Eventually([&] { return rpc::ObjectHost::Get().reference_count() == 0; }));
  ExpectBackAt(holder, before);
}

// Our objects returned to us in replies, borrowed (Echo) and held (Held),
// with the peer letting go before or after: nothing stays lent, no channel
// is made.
TEST_F(ObjectTest, ThousandsOfObjectsReturnedInRepliesLeakNothing) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  auto callback = std::make_shared<CallbackObject>();
  ASSERT_OK(holder->Echo(callback, 0).status());
  ASSERT_TRUE(Eventually([&] { return rpc::ObjectHost::Get().reference_count() == 0; }));
  ASSERT_OK_AND_ASSIGN(const Footprint before, FootprintOf(holder));

  constexpr int kCycles = 3'000;
  for (int i = 0; i < kCycles; ++i) {
    auto echoed = holder->Echo(callback, i);
    ASSERT_OK(echoed.status()) << "cycle " << i;
    auto local = rpc::TakeLocal<CallbackObject>(*echoed, echoed->get()->callback());
    ASSERT_OK(local.status()) << "cycle " << i;
    ASSERT_EQ(*local, callback);
    if (i % 2 == 0) {
      ASSERT_OK(holder->Give(callback, i, /*keep=*/true).status()) << "cycle " << i;
      auto held = holder->Held();
      ASSERT_OK(held.status()) << "cycle " << i;
      if (i % 4 == 0) {
        ASSERT_OK(holder->Drop().status());
      }
      ASSERT_OK(rpc::TakeLocal<CallbackObject>(*held, held->get()->callback()).status())
          << "cycle " << i;
    }
  }
  ASSERT_OK(holder->Drop().status());
  EXPECT_TRUE(Eventually([&] { return rpc::ObjectHost::Get().reference_count() == 0; }));
  ExpectBackAt(holder, before);
}

// Lends a new Callback in each ReadFd reply, which is 16 KiB: over a
// caller's reply limit of 4 KiB it fails after the loan was made.
class OversizedLender : public HolderService {
 public:
  absl::StatusOr<flatbuffers::Offset<objects::FdResponse>> ReadFd(
      const rpc::CallContext& context, const objects::FdRequest& /*request*/,
      flatbuffers::FlatBufferBuilder& reply) override {
    absl::StatusOr<uint32_t> field = rpc::AttachObject(context, std::make_shared<CallbackObject>());
    if (!field.ok()) return field.status();
    EXPECT_TRUE(rpc::object_wire::IsHandleField(*field)) << *field;
    return objects::CreateFdResponseDirect(reply, std::string(16 * 1024, 'x').c_str());
  }
};

// Regression (fuzz/object_protocol_fuzzer): a reply that lent objects but
// went as an error (here it outgrew the caller's reply limit) left its
// ticket open, and no caller ever learns that ticket, so its objects stayed
// lent until the connection ended. Its loans end with the failed reply.
// Keeping a borrowed object is a round trip to its host (Acquire), made
// between a handler and its reply, or before a oneway call: a host that
// never answers fails it after the object protocol's patience (5 s), with
// the object still borrowed, instead of holding the thread for ever.
TEST(BorrowedObjects, AnAcquireItsHostNeverAnswersGivesUp) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  ASSERT_OK_AND_ASSIGN(LocalPair pair, MakeLocalPair(*watcher));
  // The host's end is never served.
  std::shared_ptr<ClientChannel> channel = std::move(pair.client);
  auto link = std::make_shared<rpc::ImportLink>(channel);
  rpc::BorrowedObjects borrowed;
  std::shared_ptr<rpc::RemoteObject> object = link->Import(7, &borrowed);
  borrowed.Settle();
  EXPECT_FALSE(object->held());
  ASSERT_OK_AND_ASSIGN(auto unanswered, pair.server->Receive(absl::Now() + absl::Seconds(10)));
  EXPECT_EQ(unanswered.header().method, rpc::object_wire::kAcquireMethod);

  // Answered after all, as a host answers (AnswerAcquire): the hold it made
  // would keep the object until the channel ends. The holder's next call on
  // the channel gives it back.
  unanswered.set_reply_word(rpc::object_wire::HoldWord(7));
  ASSERT_OK(unanswered.Reply({}));
  objects::CallbackProxy proxy(*channel, channel);
  auto notify = [&] {
    ASSERT_OK(proxy.Notify(1));
    ASSERT_OK_AND_ASSIGN(auto call, pair.server->Receive(absl::Now() + absl::Seconds(10)));
    EXPECT_NE(call.header().interface_id, rpc::object_wire::kControlInterfaceId);
  };
  // The late answer may not have been seen by the first call's end.
  std::optional<IncomingCall> release;
  for (int i = 0; i < 100 && !release.has_value(); ++i) {
    notify();
    auto next = pair.server->Receive(absl::Now() + absl::Milliseconds(20));
    if (next.ok()) release.emplace(*std::move(next));
  }
  ASSERT_TRUE(release.has_value()) << "the late hold was never released";
  EXPECT_EQ(release->header().interface_id, rpc::object_wire::kControlInterfaceId);
  EXPECT_EQ(release->header().method, rpc::object_wire::kReleaseMethod);
  ASSERT_EQ(release->request().size(), sizeof(uint32_t));
  uint32_t handle = 0;
  std::memcpy(&handle, release->request().data(), sizeof(handle));
  EXPECT_EQ(handle, 7u);
}

// Regression (a review of the oneway keep): a thread keeping a borrowed
// object for a oneway call (its Acquire in flight) and the handler's own
// settle at its return raced. The settle skipped the object as being
// settled and let the reply go, ending the loan, so the Acquire could
// arrive after it: NOT_FOUND, and the kept object was dead. The settle now
// waits for the Acquire's answer.
TEST(BorrowedObjects, ASettleWaitsForAnAcquireUnderWayOnAnotherThread) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  ASSERT_OK_AND_ASSIGN(LocalPair pair, MakeLocalPair(*watcher));
  std::shared_ptr<ClientChannel> channel = std::move(pair.client);
  auto link = std::make_shared<rpc::ImportLink>(channel);
  rpc::BorrowedObjects borrowed;
  std::shared_ptr<rpc::RemoteObject> object = link->Import(7, &borrowed);
  std::thread keeper([&] { object->KeepForOneway(absl::InfiniteFuture()); });
  // The host holds the Acquire unanswered for now.
  ASSERT_OK_AND_ASSIGN(auto acquire, pair.server->Receive(absl::Now() + absl::Seconds(10)));
  ASSERT_EQ(acquire.header().method, rpc::object_wire::kAcquireMethod);
  std::atomic<bool> settled{false};
  std::thread handler([&] {
    borrowed.Settle();
    settled.store(true);
  });
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_FALSE(settled.load()) << "the settle went ahead of the Acquire under way";
  ASSERT_OK(acquire.Reply({}));
  handler.join();
  keeper.join();
  EXPECT_TRUE(settled.load());
  EXPECT_TRUE(object->held());
}

TEST(ObjectsInResults, AReplyThatFailsAfterLendingEndsItsLoans) {
  ASSERT_OK_AND_ASSIGN(auto watcher, PeerWatcher::Create());
  ChannelOptions small_replies;
  small_replies.max_message_size = 4096;
  ASSERT_OK_AND_ASSIGN(LocalPair pair, MakeLocalPair(*watcher, {}, small_replies));
  rpc::ServerPool pool;
  ASSERT_OK(pool.Add(std::move(pair.server),
                     rpc::ServeWithObjectProtocol(std::make_shared<OversizedLender>())));
  // Owned, as by a Connection<>, so the proxy takes objects by handle.
  std::shared_ptr<ClientChannel> channel = std::move(pair.client);
  objects::HolderProxy holder(*channel, channel);
  const int64_t live = CallbackObject::live();
  const uint64_t references = rpc::ObjectHost::Get().reference_count();
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT(holder.ReadFd(),
                StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("limit")));
  }
  EXPECT_TRUE(Eventually([&] { return CallbackObject::live() == live; }))
      << CallbackObject::live() - live << " objects of failed replies still lent";
  EXPECT_EQ(rpc::ObjectHost::Get().reference_count(), references);
  // The connection itself is fine, and lends what fits.
  ASSERT_OK_AND_ASSIGN(auto made, holder.Make());
  EXPECT_TRUE(rpc::object_wire::IsHandleField(made->callback()));
  EXPECT_NE(made.lent_objects(), nullptr);
}

// A caller that gave up at its deadline never reads the reply that comes
// after it, so nothing settled the objects that reply lent: they stayed lent
// (and alive) until the connection ended. The channel keeps the unread
// reply's word when it reclaims the slot, and the proxy's next call ends
// those loans.
TEST_F(ObjectTest, AReplyItsCallerGaveUpOnEndsItsLoansAtTheNextCall) {
  ASSERT_OK_AND_ASSIGN(Subprocess peer, StartPeer("holder"));
  ASSERT_OK_AND_ASSIGN(auto holder, Holder("holder"));
  // Watched over a connection of its own: calls on `holder` would reclaim
  // the slot themselves.
  ASSERT_OK_AND_ASSIGN(auto observer, Holder("holder"));
  ASSERT_OK_AND_ASSIGN(auto base, observer->Stats());
  EXPECT_THAT(holder->MakeLate(300, {.deadline = absl::Now() + absl::Milliseconds(20)}),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  // The late reply lends its object; nobody takes it.
  EXPECT_TRUE(Eventually([&] {
    auto stats = observer->Stats();
    return stats.ok() && (*stats)->live_objects() == base->live_objects() + 1;
  }));
  // The next call once the late reply is in its slot reclaims the slot and,
  // with it, ends the reply's loan. (The object exists a moment before its
  // reply is published: a call in between finds nothing to reclaim, which
  // a loaded ASan run once showed.)
  EXPECT_TRUE(Eventually([&] {
    if (!holder->Stats().ok()) return false;
    auto stats = observer->Stats();
    return stats.ok() && (*stats)->live_objects() == base->live_objects() &&
           (*stats)->exported_references() == base->exported_references();
  })) << "the object of an unread reply is still lent";
}

}  // namespace
}  // namespace sluice::testing
