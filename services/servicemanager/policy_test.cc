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

TEST(PolicyTest, LimitLinesSetEachServicesRequestLimitByTheFirstMatchingPattern) {
  auto policy = Policy::Parse(R"(
allow  *      *            uid:self
limit  audio.mixer  64KiB        # the mixer takes small requests only
limit  audio.*      16MiB
limit  bulk         1GiB
limit  exact        65536
)",
                              1000);
  ASSERT_OK(policy.status());
  EXPECT_EQ(policy->MaxRequestSize("audio.mixer"), uint64_t{64} << 10);
  EXPECT_EQ(policy->MaxRequestSize("audio.out"), uint64_t{16} << 20);
  EXPECT_EQ(policy->MaxRequestSize("bulk"), uint64_t{1} << 30);
  EXPECT_EQ(policy->MaxRequestSize("exact"), 65536u);
  EXPECT_EQ(policy->MaxRequestSize("bulk.x"), std::nullopt);
  EXPECT_EQ(policy->MaxRequestSize("other"), std::nullopt);
  EXPECT_EQ(Policy::Default(1000).MaxRequestSize("anything"), std::nullopt);
  // Settings grant nothing: access is still the rules' business.
  EXPECT_FALSE(policy->Allows(Action::kLookup, "audio.out", Uid(1001)));
  EXPECT_TRUE(policy->Allows(Action::kLookup, "audio.out", Uid(1000)));
}

TEST(PolicyTest, TrustLinesNameTheClientsWhoseLargeRequestsMayStayInPlace) {
  auto policy = Policy::Parse(R"(
trust  audio.mixer  uid:1001,gid:29
trust  audio.*      none
trust  mine         uid:self
trust  open         *
)",
                              1000);
  ASSERT_OK(policy.status());
  EXPECT_TRUE(policy->MayTrust("audio.mixer", Uid(1001)));
  EXPECT_TRUE(policy->MayTrust("audio.mixer", Uid(2000, 29)));
  EXPECT_FALSE(policy->MayTrust("audio.mixer", Uid(2000, 30)));
  EXPECT_FALSE(policy->MayTrust("audio.out", Uid(1001)));
  EXPECT_FALSE(policy->MayTrust("audio.out", Uid(0)));  // Root is not special here.
  EXPECT_TRUE(policy->MayTrust("mine", Uid(1000)));
  EXPECT_FALSE(policy->MayTrust("mine", Uid(1001)));
  EXPECT_TRUE(policy->MayTrust("open", Uid(4242)));
  // No line: the server's own TrustPolicy decides alone.
  EXPECT_TRUE(policy->MayTrust("elsewhere", Uid(4242)));
  EXPECT_EQ(policy->rule_count(), 4u);
  // The deciding line, as sluicectl info shows it (the text starts with a
  // newline: line 1 is empty).
  EXPECT_EQ(policy->TrustLine("audio.mixer"), 2);
  EXPECT_EQ(policy->TrustLine("audio.out"), 3);
  EXPECT_EQ(policy->TrustLine("open"), 5);
  EXPECT_EQ(policy->TrustLine("elsewhere"), 0);
}

TEST(PolicyTest, MalformedSettingsAreRejectedWithTheLineNumber) {
  auto fails = [](const std::string& text, const std::string& why) {
    EXPECT_THAT(Policy::Parse(text, 0),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(why)))
        << text;
  };
  fails("limit audio.*\n", "line 1: expected 'limit <name|prefix*|*> <size>'");
  fails("\nlimit audio.* 1MiB extra\n", "line 2: expected 'limit");
  fails("limit audio.* lots\n", "line 1: limit 'lots': expected a size");
  fails("limit audio.* 1TiB\n", "limit '1TiB': expected a size");
  fails("limit audio.* -5\n", "expected a size");
  fails("limit audio.* 0\n", "a limit of 0 bytes");
  fails("limit audio.* 3GiB\n", "line 1: limit '3GiB': over the largest message");
  fails("limit audio.* 99999999999999999999\n", "expected a size");
  fails("limit bad!name 1MiB\n", "line 1: ");
  fails("\n\n\ntrust audio.*\n", "line 4: expected 'trust <name|prefix*|*> <none|principals>'");
  fails("trust audio.* user:bob\n", "line 1: unknown principal 'user:bob'");
  fails("trust audio.* uid:x\n", "bad id in principal 'uid:x'");
  fails("trust audio.* ,\n", "line 1: no principals");
  fails("trust * none\nlimit x 1KiB\nallow lookup\n", "line 3: expected '<allow|deny>");
}

TEST(PolicyTest, LintNamesSettingsAnEarlierLineAlreadyDecides) {
  auto policy = Policy::Parse(R"(
limit  audio.*      16MiB
limit  audio.mixer  64KiB
trust  audio.mixer  uid:1001
trust  *            none
trust  scratch.*    *
limit  other        1MiB
)",
                              1000);
  ASSERT_OK(policy.status());
  EXPECT_THAT(policy->Lint(),
              ::testing::ElementsAre(
                  HasSubstr("policy line 3: never applies: line 2 already sets the limit"),
                  HasSubstr("policy line 6: never applies: line 5 already sets the trust")));
}

}  // namespace
}  // namespace sluice
