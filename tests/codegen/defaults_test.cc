// The flat overloads honour the schema (testdata/defaults.fbs, pinned by
// golden/defaults_sluice.h): a parameter left out sends the field's schema
// default, a string, vector or `= null` scalar left out is absent on the
// server, and one passed empty is present. Built with flatc's object API
// (sluice_add_idl FLATC_ARGS), which the last test uses.
#include <limits>
#include <memory>
#include <optional>
#include <vector>

#include "defaults_sluice.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/rpc/server_pool.h"
#include "tests/testing/channel_pair.h"
#include "tests/testing/status_matchers.h"

namespace sluice::test::defaults {
namespace {

// Echoes what it read, telling absent fields from present ones.
class EchoingTelemetry : public TelemetryStub {
 public:
  absl::StatusOr<flatbuffers::Offset<CountEcho>> Count(
      const rpc::CallContext& /*context*/, const CountRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override {
    const flatbuffers::String* label = request.label();
    const flatbuffers::Vector<uint8_t>* tags = request.tags();
    const std::optional<int32_t> max_age = request.max_age();
    const auto vehicle_copy = reply.CreateString(request.vehicle());
    flatbuffers::Offset<flatbuffers::String> label_copy;
    if (label != nullptr) label_copy = reply.CreateString(label);
    return CreateCountEcho(reply, vehicle_copy, request.since_ns(), request.limit(),
                           request.level(), request.ratio(), label != nullptr, label_copy,
                           tags != nullptr, tags != nullptr ? tags->size() : 0, max_age.has_value(),
                           max_age.value_or(0));
  }

  absl::StatusOr<flatbuffers::Offset<MixedEcho>> Mixed(
      const rpc::CallContext& /*context*/, const MixedRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override {
    return CreateMixedEcho(reply, request.first(), reply.CreateString(request.key()),
                           request.last());
  }

  absl::StatusOr<flatbuffers::Offset<ExtremesRequest>> Extremes(
      const rpc::CallContext& /*context*/, const ExtremesRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override {
    return CreateExtremesRequest(reply, request.low(), request.high(), request.one(),
                                 request.cold());
  }
};

class DefaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(watcher_, PeerWatcher::Create());
    ASSERT_OK_AND_ASSIGN(pair_, sluice::testing::MakeLocalPair(*watcher_));
    ASSERT_OK(pool_.Add(std::move(pair_.server), stub_));
    proxy_.emplace(*pair_.client);
  }
  void TearDown() override {
    proxy_.reset();
    pair_.client.reset();
    pool_.Shutdown();
  }

  std::unique_ptr<PeerWatcher> watcher_;
  sluice::testing::LocalPair pair_;
  std::shared_ptr<EchoingTelemetry> stub_ = std::make_shared<EchoingTelemetry>();
  rpc::ServerPool pool_;
  std::optional<TelemetryProxy> proxy_;
};

TEST_F(DefaultsTest, LeftOutScalarsArriveWithTheirSchemaDefaults) {
  ASSERT_OK_AND_ASSIGN(auto echo, proxy_->Count("car-1"));
  EXPECT_EQ(echo->vehicle()->str(), "car-1");
  EXPECT_EQ(echo->since_ns(), 0);
  EXPECT_EQ(echo->limit(), 100u);
  EXPECT_EQ(echo->level(), Level::Mid);
  EXPECT_EQ(echo->ratio(), 0.5);
}

TEST_F(DefaultsTest, LeftOutStringsVectorsAndNullScalarsAreAbsent) {
  ASSERT_OK_AND_ASSIGN(auto echo, proxy_->Count("car-1", 5));
  EXPECT_FALSE(echo->has_label());
  EXPECT_FALSE(echo->has_tags());
  EXPECT_FALSE(echo->has_max_age());
}

TEST_F(DefaultsTest, EmptyValuesArePresentAndZeroIsSent) {
  const std::vector<uint8_t> no_tags;
  ASSERT_OK_AND_ASSIGN(auto echo, proxy_->Count("car-1", 5, 0, Level::Low, 0.0, "", no_tags, 0));
  EXPECT_EQ(echo->limit(), 0u);  // Not the default: what the caller passed.
  EXPECT_EQ(echo->level(), Level::Low);
  EXPECT_EQ(echo->ratio(), 0.0);
  EXPECT_TRUE(echo->has_label());
  EXPECT_EQ(echo->label()->str(), "");
  EXPECT_TRUE(echo->has_tags());
  EXPECT_EQ(echo->tag_count(), 0u);
  EXPECT_TRUE(echo->has_max_age());
  EXPECT_EQ(echo->max_age(), 0);
}

TEST_F(DefaultsTest, PassedValuesArriveAsPassed) {
  const std::vector<uint8_t> tags = {1, 2, 3};
  ASSERT_OK_AND_ASSIGN(auto echo,
                       proxy_->Count("truck-9", -42, 7, Level::High, 2.25, "north", tags, 3600));
  EXPECT_EQ(echo->vehicle()->str(), "truck-9");
  EXPECT_EQ(echo->since_ns(), -42);
  EXPECT_EQ(echo->limit(), 7u);
  EXPECT_EQ(echo->level(), Level::High);
  EXPECT_EQ(echo->ratio(), 2.25);
  EXPECT_EQ(echo->label()->str(), "north");
  EXPECT_EQ(echo->tag_count(), 3u);
  EXPECT_EQ(echo->max_age(), 3600);
}

// Unset in the middle, by name of the thing: std::nullopt.
TEST_F(DefaultsTest, AnOptionalBeforeOthersIsLeftOutWithNullopt) {
  ASSERT_OK_AND_ASSIGN(
      auto echo, proxy_->Count("car-1", 0, 100, Level::Mid, 0.5, std::nullopt, std::nullopt, 12));
  EXPECT_FALSE(echo->has_label());
  EXPECT_FALSE(echo->has_tags());
  EXPECT_TRUE(echo->has_max_age());
  EXPECT_EQ(echo->max_age(), 12);
}

// `first` has a schema default but a required field follows it, so the
// caller passes it (a C++ default there would not compile); `last`,
// trailing, may be left out.
TEST_F(DefaultsTest, OnlyTheTrailingDefaultsMayBeLeftOut) {
  ASSERT_OK_AND_ASSIGN(auto echo, proxy_->Mixed(1, "k"));
  EXPECT_EQ(echo->first(), 1u);
  EXPECT_EQ(echo->key()->str(), "k");
  EXPECT_EQ(echo->last(), -3);
}

// A wrong C++ default would be written (it differs from the schema's) and
// come back; the right one is elided and reads as the schema default.
TEST_F(DefaultsTest, DefaultsAtTheEndsOfTheirTypesAreSpelledExactly) {
  ASSERT_OK_AND_ASSIGN(auto echo, proxy_->Extremes());
  EXPECT_EQ(echo->low(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(echo->high(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(echo->one(), 1.0f);
  EXPECT_EQ(echo->cold(), -std::numeric_limits<double>::infinity());
}

// sluice_add_idl(... FLATC_ARGS --gen-object-api): received tables unpack
// into owning structs that outlive the response.
TEST_F(DefaultsTest, TheObjectApiIsOneOptionAway) {
  std::unique_ptr<CountEchoT> kept;
  {
    ASSERT_OK_AND_ASSIGN(auto echo, proxy_->Count("car-1", 5, 9));
    kept.reset(echo->UnPack());
  }
  EXPECT_EQ(kept->vehicle, "car-1");
  EXPECT_EQ(kept->limit, 9u);
  EXPECT_EQ(kept->level, Level::Mid);
}

}  // namespace
}  // namespace sluice::test::defaults
