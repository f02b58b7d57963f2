#include "services/servicemanager/policy.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace sluice {
namespace {

using ::sluice::testing::StatusIs;
using ::testing::HasSubstr;
using Action = Policy::Action;

PeerCredentials Uid(uid_t uid, gid_t gid = 100) { return {1, uid, gid}; }

TEST(PolicyTest, DefaultAllowsSameUidAndRootOnly) {
  const Policy policy = Policy::Default(1000);
  EXPECT_TRUE(policy.Allows(Action::kRegister, "a", Uid(1000)));
  EXPECT_TRUE(policy.Allows(Action::kLookup, "a", Uid(1000)));
  EXPECT_TRUE(policy.Allows(Action::kLookup, "a", Uid(0)));
  EXPECT_FALSE(policy.Allows(Action::kLookup, "a", Uid(1001)));
  EXPECT_FALSE(policy.Allows(Action::kRegister, "a", Uid(1001)));
}

TEST(PolicyTest, FirstMatchingRuleWinsAndNoMatchDenies) {
  auto policy = Policy::Parse(R"(
# comment
deny   lookup    audio.secret     *          # trailing comment
allow  lookup    audio.*          gid:29,uid:1001
allow  register  audio.mixer      uid:self
allow  *         shared           *
)",
                              1000);
  ASSERT_OK(policy.status());
  EXPECT_FALSE(policy->Allows(Action::kLookup, "audio.secret", Uid(1001)));
  EXPECT_TRUE(policy->Allows(Action::kLookup, "audio.out", Uid(1001)));
  EXPECT_TRUE(policy->Allows(Action::kLookup, "audio.out", Uid(2000, 29)));
  EXPECT_FALSE(policy->Allows(Action::kLookup, "audio.out", Uid(2000, 30)));
  EXPECT_FALSE(policy->Allows(Action::kRegister, "audio.out", Uid(1001)));
  EXPECT_TRUE(policy->Allows(Action::kRegister, "audio.mixer", Uid(1000)));
  EXPECT_FALSE(policy->Allows(Action::kRegister, "audio.mixer2", Uid(1000)));
  EXPECT_TRUE(policy->Allows(Action::kRegister, "shared", Uid(4242)));
  EXPECT_FALSE(policy->Allows(Action::kRegister, "shared.x", Uid(4242)));
  EXPECT_TRUE(policy->Allows(Action::kRegister, "anything", Uid(0)));  // Root.
}

TEST(PolicyTest, MalformedLinesAreRejectedWithTheLineNumber) {
  EXPECT_THAT(Policy::Parse("allow lookup x\n", 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 1")));
  EXPECT_THAT(Policy::Parse("\n\npermit lookup x *\n", 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 3")));
  EXPECT_THAT(Policy::Parse("allow call x *\n", 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("verb")));
  EXPECT_THAT(Policy::Parse("allow lookup x uid:abc\n", 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("uid:abc")));
  EXPECT_THAT(Policy::Parse("allow lookup x user:bob\n", 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("principal")));
  EXPECT_THAT(Policy::Parse("allow lookup bad!name *\n", 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Policy::Load("/nonexistent/policy", 0), StatusIs(absl::StatusCode::kNotFound));
}

TEST(PolicyTest, LintNamesRulesThatCanNeverApply) {
  auto policy = Policy::Parse(R"(
deny   lookup    secret     uid:0
allow  *         scratch.*  *
deny   lookup    scratch.x  uid:1001
allow  lookup    other      uid:1001
allow  register  other      uid:1001
deny   *         *          uid:0,uid:1002
)",
                              1000);
  ASSERT_OK(policy.status());
  EXPECT_THAT(policy->Lint(),
              ::testing::ElementsAre(HasSubstr("policy line 2: this deny never applies: uid 0"),
                                     HasSubstr("policy line 4: never applies: line 3")));
  EXPECT_THAT(Policy::Default(1000).Lint(), ::testing::IsEmpty());
}

}  // namespace
}  // namespace sluice
