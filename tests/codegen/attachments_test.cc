// The code sluice-idlc generates for (sluice_interface) and (sluice_fd)
// fields (testdata/attachments.fbs, pinned by golden/attachments_sluice.h),
// compiled and called over a channel in this process: the flat overloads
// take an rpc::ObjectRef and a descriptor, send them beside the message, and
// the fields hold 1 + their index (0 for none).
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "attachments_sluice.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/base/mutex.h"
#include "ipc/base/notification.h"
#include "ipc/rpc/object.h"
#include "ipc/rpc/server_pool.h"
#include "tests/testing/channel_pair.h"
#include "tests/testing/status_matchers.h"

namespace sluice::test::attach {
namespace {

using ::sluice::testing::StatusIs;
using ::testing::HasSubstr;

// The flat overloads exist with exactly these parameters (a reference field
// takes an ObjectRef, a descriptor field an int), whatever the fields' own
// integer types; a string that is not (required) may be left unset.
// (Overload resolution in the casts fails to compile if they are missing.)
using FlatSubscribe = absl::StatusOr<rpc::Response<SubscribeResponse>> (FeedProxy::*)(
    std::optional<absl::string_view>, const rpc::ObjectRef&, int, const rpc::ObjectRef&, int,
    const rpc::CallOptions&);
using FlatPost = absl::Status (FeedProxy::*)(int, const rpc::CallOptions&);
static_assert(
    std::is_same_v<decltype(static_cast<FlatSubscribe>(&FeedProxy::Subscribe)), FlatSubscribe>);
static_assert(std::is_same_v<decltype(static_cast<FlatPost>(&FeedProxy::Post)), FlatPost>);

UniqueFd MemfdHolding(const std::string& text) {
  UniqueFd fd(::memfd_create("attachment", MFD_CLOEXEC));
  EXPECT_TRUE(fd);
  EXPECT_EQ(::write(fd.get(), text.data(), text.size()), static_cast<ssize_t>(text.size()));
  return fd;
}

std::string ContentOf(const UniqueFd& fd) {
  char buffer[64] = {};
  const ssize_t got = ::pread(fd.get(), buffer, sizeof(buffer), 0);
  return std::string(buffer, got > 0 ? static_cast<size_t>(got) : 0);
}

class CountingListener : public ListenerStub {
 public:
  absl::StatusOr<flatbuffers::Offset<Ack>> OnEvent(const rpc::CallContext& /*context*/,
                                                   const Event& request,
                                                   flatbuffers::FlatBufferBuilder& reply) override {
    total_.fetch_add(request.value());
    return CreateAck(reply);
  }
  int64_t total() const { return total_.load(); }

 private:
  std::atomic<int64_t> total_{0};
};

// Reports what arrived: the raw field values, how many descriptors came,
// what the log descriptor holds, and whether the listener could be called.
class RecordingFeed : public FeedStub {
 public:
  absl::StatusOr<flatbuffers::Offset<SubscribeResponse>> Subscribe(
      const rpc::CallContext& context, const SubscribeRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override {
    const auto fd_count = static_cast<uint32_t>(context.call->fd_count());
    std::string log_text;
    if (request.log() != 0) {
      absl::StatusOr<UniqueFd> log = rpc::TakeFd(context, static_cast<uint64_t>(request.log()));
      if (!log.ok()) return log.status();
      log_text = ContentOf(*log);
    }
    bool listener_called = false;
    if (request.listener() != 0) {
      absl::StatusOr<rpc::Remote<ListenerProxy>> listener =
          rpc::TakeObject<ListenerProxy>(context, request.listener());
      if (!listener.ok()) return listener.status();
      auto ack = (*listener)->OnEvent(42);
      if (!ack.ok()) return ack.status();
      listener_called = true;
    }
    return CreateSubscribeResponseDirect(reply, request.listener(), request.log(), request.backup(),
                                         request.spare(), fd_count, log_text.c_str(),
                                         listener_called);
  }

  absl::Status Post(const rpc::CallContext& context, const Handle& request) override {
    absl::StatusOr<UniqueFd> fd = rpc::TakeFd(context, request.fd());
    {
      MutexLock lock(&mu_);
      post_field_ = request.fd();
      post_text_ = fd.ok() ? ContentOf(*fd) : std::string(fd.status().message());
    }
    posted_.Notify();
    return absl::OkStatus();
  }

  // The blob arrives sealed; the reply echoes no bytes, so the test can only
  // pass if the server read them from the blob itself.
  absl::StatusOr<flatbuffers::Offset<Ack>> Show(const rpc::CallContext& context,
                                                const Picture& request,
                                                flatbuffers::FlatBufferBuilder& reply) override {
    absl::StatusOr<rpc::Blob> blob = rpc::TakeBlob(context, request.pixels());
    if (!blob.ok()) return blob.status();
    MutexLock lock(&mu_);
    shown_.assign(reinterpret_cast<const char*>(blob->data().data()), blob->size());
    return CreateAck(reply);
  }
  std::string shown() {
    MutexLock lock(&mu_);
    return shown_;
  }

  // The field and content of the first Post, once it has run.
  std::pair<uint64_t, std::string> AwaitPost() {
    EXPECT_TRUE(posted_.WaitForNotificationWithTimeout(absl::Seconds(20)));
    MutexLock lock(&mu_);
    return {post_field_, post_text_};
  }

 private:
  Notification posted_;
  Mutex mu_;
  uint64_t post_field_ ABSL_GUARDED_BY(mu_) = 0;
  std::string post_text_ ABSL_GUARDED_BY(mu_);
  std::string shown_ ABSL_GUARDED_BY(mu_);
};

class AttachmentsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(watcher_, PeerWatcher::Create());
    ASSERT_OK_AND_ASSIGN(pair_, sluice::testing::MakeLocalPair(*watcher_));
    ASSERT_OK(pool_.Add(std::move(pair_.server), feed_));
    proxy_.emplace(*pair_.client);
  }
  void TearDown() override {
    proxy_.reset();
    pair_.client.reset();
    pool_.Shutdown();
  }

  std::unique_ptr<PeerWatcher> watcher_;
  sluice::testing::LocalPair pair_;
  std::shared_ptr<RecordingFeed> feed_ = std::make_shared<RecordingFeed>();
  rpc::ServerPool pool_;
  std::optional<FeedProxy> proxy_;
};

TEST_F(AttachmentsTest, ABlobFieldCarriesTheSealedBytesAndAnEmptyBlobNone) {
  ASSERT_OK_AND_ASSIGN(rpc::BlobWriter writer, rpc::BlobWriter::Create(6));
  std::memcpy(writer.data(), "pixels", 6);
  ASSERT_OK_AND_ASSIGN(rpc::Blob blob, std::move(writer).Seal());
  ASSERT_OK(proxy_->Show(blob, "caption").status());
  EXPECT_EQ(feed_->shown(), "pixels");
  ASSERT_OK(proxy_->Show({}, "no picture").status());
  EXPECT_EQ(feed_->shown(), "");
}

TEST_F(AttachmentsTest, NullReferencesAndNoDescriptorsLeaveTheFieldsZero) {
  ASSERT_OK_AND_ASSIGN(auto response, proxy_->Subscribe("news", nullptr, -1, nullptr, -1));
  EXPECT_EQ(response->listener(), 0u);
  EXPECT_EQ(response->log(), 0);
  EXPECT_EQ(response->backup(), 0u);
  EXPECT_EQ(response->spare(), 0);
  EXPECT_EQ(response->fd_count(), 0u);
  EXPECT_FALSE(response->listener_called());
}

TEST_F(AttachmentsTest, DescriptorFieldsHoldOnePlusTheirIndexAfterLeadingDescriptors) {
  UniqueFd log = MemfdHolding("log text");
  UniqueFd spare = MemfdHolding("spare");
  ASSERT_OK_AND_ASSIGN(auto response,
                       proxy_->Subscribe("news", nullptr, log.get(), nullptr, spare.get()));
  EXPECT_EQ(response->log(), 1);
  EXPECT_EQ(response->spare(), 2);
  EXPECT_EQ(response->fd_count(), 2u);
  EXPECT_EQ(response->log_text()->str(), "log text");

  // Descriptors of CallOptions::fds keep the front indices.
  UniqueFd leading = MemfdHolding("leading");
  const int fds[] = {leading.get()};
  rpc::CallOptions options;
  options.fds = fds;
  ASSERT_OK_AND_ASSIGN(
      response, proxy_->Subscribe("news", nullptr, log.get(), nullptr, spare.get(), options));
  EXPECT_EQ(response->log(), 2);
  EXPECT_EQ(response->spare(), 3);
  EXPECT_EQ(response->fd_count(), 3u);
  EXPECT_EQ(response->log_text()->str(), "log text");
}

TEST_F(AttachmentsTest, AReferenceTravelsAsTwoDescriptorsAndReachesTheObject) {
  auto listener = std::make_shared<CountingListener>();
  UniqueFd log = MemfdHolding("after the reference");
  ASSERT_OK_AND_ASSIGN(auto response, proxy_->Subscribe("news", listener, log.get(), nullptr, -1));
  EXPECT_EQ(response->listener(), 1u);
  EXPECT_EQ(response->log(), 3);  // Behind the reference's region and liveness socket.
  EXPECT_EQ(response->fd_count(), 3u);
  EXPECT_EQ(response->log_text()->str(), "after the reference");
  EXPECT_TRUE(response->listener_called());
  EXPECT_EQ(listener->total(), 42);
}

// The generated call checks a local object against the field's interface
// before anything is sent.
TEST_F(AttachmentsTest, AnObjectOfAnotherInterfaceIsRefusedBeforeSending) {
  auto not_a_listener = std::make_shared<RecordingFeed>();
  EXPECT_THAT(proxy_->Subscribe("news", nullptr, -1, not_a_listener, -1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(absl::StrCat(absl::Hex(ListenerInterface::kInterfaceId)))));
  EXPECT_EQ(feed_->stats(0).calls.load(), 0u);
}

TEST_F(AttachmentsTest, ADescriptorThatIsNotOpenIsRefusedBeforeSending) {
  EXPECT_THAT(proxy_->Subscribe("news", nullptr, 987654, nullptr, -1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("987654")));
  EXPECT_EQ(feed_->stats(0).calls.load(), 0u);
}

TEST_F(AttachmentsTest, AOnewayCallCarriesItsDescriptor) {
  UniqueFd fd = MemfdHolding("posted");
  ASSERT_OK(proxy_->Post(fd.get()));
  fd.reset();  // The call sent a duplicate.
  const auto [field, text] = feed_->AwaitPost();
  EXPECT_EQ(field, 1u);
  EXPECT_EQ(text, "posted");
}

}  // namespace
}  // namespace sluice::test::attach
