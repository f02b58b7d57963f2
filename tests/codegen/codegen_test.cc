// sluice-idlc: the front end's model and errors, and golden files that pin
// the generated code (review a change to the generator by its golden diff;
// regenerate with SLUICE_UPDATE_GOLDENS=1).
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "codegen/cpp_generator.h"
#include "codegen/front_end.h"
#include "codegen/schema_generator.h"
#include "flatbuffers/reflection.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/rpc/wire.h"
#include "tests/testing/status_matchers.h"

namespace sluice::idlc {
namespace {

using ::sluice::testing::StatusIs;
using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(FrontEnd, ModelsServicesMethodsAndAttributes) {
  ASSERT_OK_AND_ASSIGN(Schema schema, ParseSchema(SLUICE_KEY_VALUE_FBS, {}));
  EXPECT_EQ(schema.stem, "key_value");
  ASSERT_EQ(schema.services.size(), 1u);
  const Service& kv = schema.services[0];
  EXPECT_EQ(kv.fqn, "example.kv.KeyValueStore");
  EXPECT_EQ(kv.interface_id, rpc::Fnv1a64("example.kv.KeyValueStore"));
  EXPECT_THAT(kv.namespaces, ::testing::ElementsAre("example", "kv"));
  ASSERT_EQ(kv.methods.size(), 5u);
  EXPECT_EQ(kv.methods[0].name, "Put");
  EXPECT_FALSE(kv.methods[0].oneway);
  EXPECT_TRUE(kv.methods[4].oneway);
  EXPECT_EQ(kv.methods[0].request_cpp, "::example::kv::PutRequest");
  ASSERT_TRUE(kv.methods[0].flat_params.has_value());
  EXPECT_EQ(kv.methods[0].flat_params->size(), 2u);
  EXPECT_EQ((*kv.methods[0].flat_params)[1].cpp_type, "std::optional<absl::Span<const uint8_t>>");
}

TEST(SchemaBackEnd, EmbedsAVerifiableBinarySchemaAndItsStructuralHash) {
  ASSERT_OK_AND_ASSIGN(Schema schema, ParseSchema(SLUICE_KEY_VALUE_FBS, {}));
  const auto* data = reinterpret_cast<const uint8_t*>(schema.binary_schema.data());
  flatbuffers::Verifier verifier(data, schema.binary_schema.size());
  ASSERT_TRUE(reflection::VerifySchemaBuffer(verifier));
  const reflection::Schema* bfbs = reflection::GetSchema(data);
  ASSERT_NE(bfbs->services(), nullptr);
  ASSERT_EQ(bfbs->services()->size(), 1u);
  EXPECT_EQ(bfbs->services()->Get(0)->name()->str(), "example.kv.KeyValueStore");
  std::vector<std::string> calls;
  for (const reflection::RPCCall* call : *bfbs->services()->Get(0)->calls()) {
    calls.push_back(call->name()->str());
  }
  EXPECT_THAT(calls, ::testing::Contains("Put"));
  EXPECT_NE(bfbs->objects()->LookupByKey("example.kv.PutRequest"), nullptr);

  EXPECT_EQ(SchemaHeaderName(schema), "key_value_schema.h");
  const std::string header = GenerateSchemaHeader(schema);
  EXPECT_THAT(header, HasSubstr("namespace sluice_schema::key_value {"));
  EXPECT_THAT(header,
              HasSubstr(absl::StrFormat("kStructuralHash = 0x%016xull", schema.structural_hash)));
  // One byte literal per schema byte (plus the hash's "0x").
  size_t literals = 0;
  for (size_t at = header.find(" 0x"); at != std::string::npos; at = header.find(" 0x", at + 1)) {
    ++literals;
  }
  EXPECT_EQ(literals, schema.binary_schema.size() + 1);
}

TEST(SchemaBackEnd, StructuralHashFollowsFieldsTypesAndMethodsButNotComments) {
  auto hash = [](const std::string& text) {
    auto schema = ParseSchemaText(text, "t.fbs", {});
    EXPECT_OK(schema.status());
    return schema.ok() ? schema->structural_hash : 0;
  };
  const std::string base =
      "namespace t; table Req { a:int; b:string; } table Resp { ok:bool; }\n"
      "rpc_service S { Call(Req):Resp; }";
  const uint64_t h = hash(base);
  EXPECT_NE(h, 0u);
  EXPECT_EQ(hash("/// A comment.\n" + base), h);
  EXPECT_NE(hash(absl::StrReplaceAll(base, {{"b:string", "b:int"}})), h);  // Changed type.
  EXPECT_NE(hash(absl::StrReplaceAll(base, {{"a:int; ", ""}})), h);        // Removed field.
  EXPECT_NE(hash(absl::StrReplaceAll(base, {{"b:string;", "b:string; c:int;"}})), h);  // Added.
  EXPECT_NE(hash(absl::StrReplaceAll(base, {{"Call(", "Other("}})), h);  // Renamed method.
}

TEST(FrontEnd, TablesWithNestedFieldsTakeOnlyABuildFunction) {
  ASSERT_OK_AND_ASSIGN(Schema schema, ParseSchema(SLUICE_KITCHEN_SINK_FBS, {}));
  ASSERT_EQ(schema.services.size(), 2u);
  const Method& summarize = schema.services[0].methods[0];
  EXPECT_EQ(summarize.name, "Summarize");
  EXPECT_FALSE(summarize.flat_params.has_value());  // Drawing has a union and nested tables.
  const Method& echo = schema.services[0].methods[1];
  ASSERT_TRUE(echo.flat_params.has_value());
  EXPECT_EQ((*echo.flat_params)[3].cpp_type, "::sluice::test::sink::Color");
}

// What a caller may leave out, and what it then sends.
TEST(FrontEnd, FlatParamsCarrySchemaDefaultsAndPresence) {
  ASSERT_OK_AND_ASSIGN(Schema schema, ParseSchema(SLUICE_DEFAULTS_FBS, {}));
  const Method& count = schema.services[0].methods[0];
  ASSERT_TRUE(count.flat_params.has_value());
  const std::vector<FlatParam>& p = *count.flat_params;
  ASSERT_EQ(p.size(), 8u);
  auto expect = [](const FlatParam& param, const char* cpp_type, bool optional,
                   const char* default_value) {
    EXPECT_EQ(param.cpp_type, cpp_type) << param.field;
    EXPECT_EQ(param.optional, optional) << param.field;
    EXPECT_EQ(param.default_value, default_value) << param.field;
  };
  expect(p[0], "absl::string_view", false, "");  // (required)
  expect(p[1], "int64_t", false, "0ll");
  expect(p[2], "uint32_t", false, "100u");
  expect(p[3], "::sluice::test::defaults::Level", false, "::sluice::test::defaults::Level::Mid");
  expect(p[4], "double", false, "0.5");
  expect(p[5], "std::optional<absl::string_view>", true, "std::nullopt");
  expect(p[6], "std::optional<absl::Span<const uint8_t>>", true, "std::nullopt");
  expect(p[7], "std::optional<int32_t>", true, "std::nullopt");  // = null

  const Method& extremes = schema.services[0].methods[2];
  ASSERT_TRUE(extremes.flat_params.has_value());
  const std::vector<FlatParam>& e = *extremes.flat_params;
  ASSERT_EQ(e.size(), 4u);
  EXPECT_EQ(e[0].default_value, "std::numeric_limits<int64_t>::min()");
  EXPECT_EQ(e[1].default_value, "18446744073709551615ull");
  EXPECT_EQ(e[2].default_value, "1.0f");
  EXPECT_EQ(e[3].default_value, "-std::numeric_limits<double>::infinity()");
}

TEST(FrontEnd, SyntaxErrorsNameFileAndLine) {
  const std::string text =
      "namespace a;\ntable T { x:int; }\nrpc_service S {\n  M(T):Missing;\n}\n";
  EXPECT_THAT(ParseSchemaText(text, "broken.fbs", {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("broken.fbs:4"), HasSubstr("Missing"))));
}

TEST(FrontEnd, UndeclaredAttributeIsAnError) {
  const std::string text = "table T {}\nrpc_service S { M(T):T (oneway); }\n";
  EXPECT_THAT(ParseSchemaText(text, "undeclared.fbs", {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("oneway")));
}

TEST(FrontEnd, StreamingIsRejectedWithAReason) {
  const std::string text = "table T {}\nrpc_service S { M(T):T (streaming: \"server\"); }\n";
  EXPECT_THAT(ParseSchemaText(text, "streaming.fbs", {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not supported")));
}

TEST(FrontEnd, ServicesOfIncludedFilesAreNotRegenerated) {
  ASSERT_OK_AND_ASSIGN(Schema schema, ParseSchema(SLUICE_INCLUDER_FBS, {}));
  ASSERT_EQ(schema.services.size(), 1u);
  EXPECT_EQ(schema.services[0].name, "Includer");
}

TEST(FrontEnd, MissingFileIsNotFound) {
  EXPECT_THAT(ParseSchema("/nonexistent/x.fbs", {}), StatusIs(absl::StatusCode::kNotFound));
}

// ---------------------------------------------------------------------------
// (sluice_interface) and (sluice_fd) fields.

// A schema with one service to refer to and a request whose fields are
// `fields`.
std::string AttachmentSchema(const std::string& fields) {
  return absl::StrCat(
      "namespace a.b;\n"
      "attribute \"sluice_interface\";\n"
      "attribute \"sluice_fd\";\n"
      "table Ping {}\n"
      "rpc_service Listener { On(Ping):Ping; }\n"
      "table Req { ",
      fields,
      " }\n"
      "rpc_service Feed { Subscribe(Req):Ping; }\n");
}

absl::Status ParseFields(const std::string& fields) {
  return ParseSchemaText(AttachmentSchema(fields), "fields.fbs", {}).status();
}

TEST(FieldAttributes, InterfaceOnAStringIsAnError) {
  EXPECT_THAT(ParseFields("listener:string (sluice_interface: \"a.b.Listener\");"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "fields.fbs: Req.listener: (sluice_interface) needs a uint or ulong field"));
}

TEST(FieldAttributes, InterfaceOnASignedOrNarrowIntegerIsAnError) {
  for (const char* type : {"int", "long", "ushort", "ubyte", "bool", "float"}) {
    EXPECT_THAT(
        ParseFields(absl::StrCat("listener:", type, " (sluice_interface: \"a.b.Listener\");")),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 "fields.fbs: Req.listener: (sluice_interface) needs a uint or ulong field"))
        << type;
  }
}

TEST(FieldAttributes, InterfaceOnAVectorOrEnumIsAnError) {
  EXPECT_THAT(ParseFields("listeners:[ulong] (sluice_interface: \"a.b.Listener\");"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("Req.listeners: (sluice_interface) needs a uint or ulong field")));
  const std::string with_enum =
      absl::StrReplaceAll(AttachmentSchema("kind:Kind (sluice_interface: \"a.b.Listener\");"),
                          {{"table Ping {}", "enum Kind:uint { A }\ntable Ping {}"}});
  EXPECT_THAT(ParseSchemaText(with_enum, "enum.fbs", {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "enum.fbs: Req.kind: (sluice_interface) needs a uint or ulong field"));
}

TEST(FieldAttributes, InterfaceNamingAnUnknownServiceIsAnError) {
  EXPECT_THAT(ParseFields("listener:ulong (sluice_interface: \"a.b.Nobody\");"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "fields.fbs: Req.listener: (sluice_interface: \"a.b.Nobody\") names no "
                       "rpc_service of this schema or its includes (use the full name, e.g. "
                       "\"pkg.Listener\")"));
  // Services are named in full, whatever namespace the field's table is in.
  EXPECT_THAT(ParseFields("listener:ulong (sluice_interface: \"Listener\");"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("(sluice_interface: \"Listener\") names no rpc_service")));
  // A table is not a service.
  EXPECT_THAT(ParseFields("listener:ulong (sluice_interface: \"a.b.Ping\");"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("(sluice_interface: \"a.b.Ping\") names no rpc_service")));
}

TEST(FieldAttributes, BothAttributesOnOneFieldIsAnError) {
  EXPECT_THAT(ParseFields("x:ulong (sluice_interface: \"a.b.Listener\", sluice_fd);"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "fields.fbs: Req.x: a field is either (sluice_interface) or (sluice_fd)"));
}

TEST(FieldAttributes, DescriptorOnANonIntegerOrNarrowFieldIsAnError) {
  for (const char* type : {"bool", "short", "ushort", "byte", "float", "double", "string"}) {
    EXPECT_THAT(ParseFields(absl::StrCat("fd:", type, " (sluice_fd);")),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         "fields.fbs: Req.fd: (sluice_fd) needs an int, uint, long or ulong field"))
        << type;
  }
}

TEST(FieldAttributes, AttributesInStructsAreAnError) {
  const std::string text =
      absl::StrReplaceAll(AttachmentSchema("p:P;"),
                          {{"table Ping {}", "struct P { fd:int (sluice_fd); }\ntable Ping {}"}});
  EXPECT_THAT(ParseSchemaText(text, "struct.fbs", {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "struct.fbs: P.fd: references and descriptors go in table fields, not in "
                       "structs"));
}

// Checked in every table, not only in requests.
TEST(FieldAttributes, TablesNoMethodUsesAreCheckedToo) {
  const std::string text = absl::StrReplaceAll(
      AttachmentSchema("n:int;"),
      {{"table Ping {}", "table Unused { fd:bool (sluice_fd); }\ntable Ping {}"}});
  EXPECT_THAT(ParseSchemaText(text, "unused.fbs", {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("Unused.fd: (sluice_fd) needs an int")));
}

TEST(FieldAttributes, EveryAllowedTypeIsAccepted) {
  for (const char* type : {"uint", "ulong"}) {
    EXPECT_OK(
        ParseFields(absl::StrCat("listener:", type, " (sluice_interface: \"a.b.Listener\");")))
        << type;
  }
  for (const char* type : {"int", "uint", "long", "ulong"}) {
    EXPECT_OK(ParseFields(absl::StrCat("fd:", type, " (sluice_fd);"))) << type;
  }
}

TEST(FieldAttributes, FlatOverloadTakesAnObjectRefAndADescriptor) {
  ASSERT_OK_AND_ASSIGN(
      Schema schema,
      ParseSchemaText(AttachmentSchema("topic:string; listener:uint (sluice_interface: "
                                       "\"a.b.Listener\"); log:long (sluice_fd); n:int;"),
                      "flat.fbs", {}));
  ASSERT_EQ(schema.services.size(), 2u);
  const Service& listener = schema.services[0];
  const Method& subscribe = schema.services[1].methods[0];
  ASSERT_TRUE(subscribe.flat_params.has_value());
  const std::vector<FlatParam>& params = *subscribe.flat_params;
  ASSERT_EQ(params.size(), 4u);
  EXPECT_EQ(params[1].kind, FlatParam::Kind::kObject);
  EXPECT_EQ(params[1].cpp_type, "const ::sluice::rpc::ObjectRef&");
  EXPECT_EQ(params[1].interface_fqn, "a.b.Listener");
  EXPECT_EQ(params[1].interface_id, listener.interface_id);
  EXPECT_EQ(params[2].kind, FlatParam::Kind::kFd);
  EXPECT_EQ(params[2].cpp_type, "int");
  EXPECT_EQ(params[3].kind, FlatParam::Kind::kScalar);
  EXPECT_EQ(params[3].cpp_type, "int32_t");

  const std::string header = GenerateCppHeader(schema);
  EXPECT_THAT(header, HasSubstr("Subscribe(std::optional<absl::string_view> topic = std::nullopt, "
                                "const ::sluice::rpc::ObjectRef& listener = nullptr, int log = -1, "
                                "int32_t n = 0, const ::sluice::rpc::CallOptions& options = {})"));
  EXPECT_THAT(header, HasSubstr(absl::StrFormat("attachments_.AddObject(listener, 0x%016xull",
                                                listener.interface_id)));
  EXPECT_THAT(header, HasSubstr("attachments_.AddFd(log)"));
  EXPECT_THAT(header, HasSubstr("#include \"ipc/rpc/object.h\""));
}

// Without attachments a flat overload sends only what the caller passes.
TEST(FieldAttributes, PlainRequestsMakeNoAttachments) {
  ASSERT_OK_AND_ASSIGN(Schema schema, ParseSchemaText(AttachmentSchema("n:int;"), "plain.fbs", {}));
  EXPECT_THAT(GenerateCppHeader(schema), ::testing::Not(HasSubstr("Attachments")));
}

class GoldenTest : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(GoldenTest, GeneratedHeaderMatchesGolden) {
  const auto& [schema_path, golden_path] = GetParam();
  ASSERT_OK_AND_ASSIGN(Schema schema, ParseSchema(schema_path, {}));
  const std::string generated = GenerateCppHeader(schema);
  if (std::getenv("SLUICE_UPDATE_GOLDENS") != nullptr) {
    std::ofstream(golden_path, std::ios::trunc) << generated;
    GTEST_SKIP() << "updated " << golden_path;
  }
  EXPECT_EQ(generated, ReadFile(golden_path))
      << "generated code changed; if intended, run with SLUICE_UPDATE_GOLDENS=1 and review the "
         "diff of "
      << golden_path;
}

INSTANTIATE_TEST_SUITE_P(
    Schemas, GoldenTest,
    ::testing::Values(
        std::make_pair(SLUICE_KEY_VALUE_FBS, SLUICE_GOLDEN_DIR "/key_value_sluice.h"),
        std::make_pair(SLUICE_KITCHEN_SINK_FBS, SLUICE_GOLDEN_DIR "/kitchen_sink_sluice.h"),
        std::make_pair(SLUICE_ATTACHMENTS_FBS, SLUICE_GOLDEN_DIR "/attachments_sluice.h"),
        std::make_pair(SLUICE_DEFAULTS_FBS, SLUICE_GOLDEN_DIR "/defaults_sluice.h")));

}  // namespace
}  // namespace sluice::idlc
