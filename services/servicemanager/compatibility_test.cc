#include "services/servicemanager/compatibility.h"

#include <string>

#include "flatbuffers/idl.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace sluice {
namespace {

using ::sluice::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

// The binary schema of `text`.
std::string Bfbs(const std::string& text) {
  flatbuffers::Parser parser;
  EXPECT_TRUE(parser.Parse(text.c_str())) << parser.error_;
  parser.Serialize();
  return std::string(reinterpret_cast<const char*>(parser.builder_.GetBufferPointer()),
                     parser.builder_.GetSize());
}

absl::Status Check(const std::string& server, const std::string& client) {
  const std::string s = Bfbs(server), c = Bfbs(client);
  return CheckCompatible(*reflection::GetSchema(s.data()), *reflection::GetSchema(c.data()), "t.S");
}

const char kV1[] =
    "namespace t; struct P { x:int; y:int; } table Inner { p:P; tag:string; }\n"
    "table Req { a:int; b:string; inner:Inner; } table Resp { ok:bool; }\n"
    "rpc_service S { Call(Req):Resp; Ping(Resp):Resp; }";

std::string V1With(const std::string& from, const std::string& to) {
  std::string text = kV1;
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return text.replace(at, from.size(), to);
}

TEST(CompatibilityTest, SameAddedFieldsAndAddedMethodsAreCompatible) {
  EXPECT_OK(Check(kV1, kV1));
  // A newer server (a field at the end, a new method) and an older client.
  const std::string newer =
      V1With("inner:Inner; }", "inner:Inner; c:long; }").replace(0, 0, "// v2\n");
  EXPECT_OK(Check(newer, kV1));
  EXPECT_OK(Check(kV1, newer));
  EXPECT_OK(Check(V1With("Ping(Resp):Resp; }", "Ping(Resp):Resp; More(Req):Resp; }"), kV1));
}

TEST(CompatibilityTest, ChangedTypeIsRefusedNamingMethodAndField) {
  EXPECT_THAT(Check(kV1, V1With("b:string", "b:int")),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("t.S.Call: request field t.Req.b (id 1)"),
                             HasSubstr("string in the server's schema but int in the client's"))));
}

TEST(CompatibilityTest, RemovedOrReorderedFieldIsRefused) {
  EXPECT_THAT(Check(kV1, V1With("a:int; b:string;", "b:string;")),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("t.S.Call:"), HasSubstr("field id 0 of t.Req is a"),
                             HasSubstr("removed or reordered"))));
  EXPECT_THAT(Check(kV1, V1With("a:int; b:string;", "b:string; a:int;")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("field id 0 of t.Req")));
}

TEST(CompatibilityTest, RenamedTableAndNestedChangesAreRefused) {
  const std::string renamed =
      "namespace t; struct P { x:int; y:int; } table Inner { p:P; tag:string; }\n"
      "table Req { a:int; b:string; inner:Inner; } table Answer { ok:bool; }\n"
      "rpc_service S { Call(Req):Answer; Ping(Answer):Answer; }";
  EXPECT_THAT(Check(kV1, renamed),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("t.S.Call: response table is t.Resp"),
                             HasSubstr("t.Answer in the client's (renamed)"))));
  // Inside a nested table, and a struct's layout.
  EXPECT_THAT(Check(kV1, V1With("tag:string", "tag:[ubyte]")),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("(in t.Req.inner) field t.Inner.tag")));
  EXPECT_THAT(Check(kV1, V1With("struct P { x:int; y:int; }", "struct P { x:int; y:long; }")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("struct t.P")));
}

}  // namespace
}  // namespace sluice
