#include "ipc/base/errors.h"

#include <utility>

#include "absl/strings/cord.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace sluice {
namespace {

using ::sluice::testing::StatusIs;

TEST(PeerDeadErrorTest, IsUnavailableAndSaysWhatDied) {
  EXPECT_THAT(PeerDeadError("server pid 42"),
              StatusIs(absl::StatusCode::kUnavailable, "peer dead: server pid 42"));
}

TEST(PeerDeadErrorTest, IsRecognizedByIsPeerDead) {
  EXPECT_TRUE(IsPeerDead(PeerDeadError("client")));
}

TEST(PeerDeadErrorTest, MarkSurvivesCopyAndMove) {
  const absl::Status original = PeerDeadError("client");
  absl::Status copy = original;
  EXPECT_TRUE(IsPeerDead(copy));
  const absl::Status moved = std::move(copy);
  EXPECT_TRUE(IsPeerDead(moved));
}

TEST(IsPeerDeadTest, PlainUnavailableIsNotPeerDead) {
  EXPECT_FALSE(IsPeerDead(absl::UnavailableError("peer dead: but not marked")));
}

TEST(IsPeerDeadTest, OkIsNotPeerDead) { EXPECT_FALSE(IsPeerDead(absl::OkStatus())); }

TEST(IsPeerDeadTest, MarkOnAnotherCodeIsNotPeerDead) {
  absl::Status status = absl::InternalError("server bug");
  status.SetPayload(kPeerDeadPayloadUrl, absl::Cord("1"));
  EXPECT_FALSE(IsPeerDead(status));
}

TEST(IsPeerDeadTest, MarkIsNotConfusedWithOtherPayloads) {
  absl::Status status = absl::UnavailableError("server busy");
  status.SetPayload("sluice.dev/something-else", absl::Cord("1"));
  EXPECT_FALSE(IsPeerDead(status));
}

}  // namespace
}  // namespace sluice
