// sluice-idlc: the front end's model and errors, and golden files that pin
// the generated code (review a change to the generator by its golden diff;
// regenerate with SLUICE_UPDATE_GOLDENS=1).
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "codegen/cpp_generator.h"
#include "codegen/front_end.h"
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
  EXPECT_EQ((*kv.methods[0].flat_params)[1].cpp_type, "absl::Span<const uint8_t>");
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

INSTANTIATE_TEST_SUITE_P(Schemas, GoldenTest,
                         ::testing::Values(std::make_pair(SLUICE_KEY_VALUE_FBS,
                                                          SLUICE_GOLDEN_DIR "/key_value_sluice.h"),
                                           std::make_pair(SLUICE_KITCHEN_SINK_FBS, SLUICE_GOLDEN_DIR
                                                          "/kitchen_sink_sluice.h")));

}  // namespace
}  // namespace sluice::idlc
