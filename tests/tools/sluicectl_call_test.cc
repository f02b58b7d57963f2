// `sluicectl call` against the real manager and the key-value example:
// JSON in, JSON out, and precise exit codes for what goes wrong.
#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/testing/subprocess.h"
#include "tests/testing/status_matchers.h"

namespace sluice::testing {
namespace {

using ::testing::HasSubstr;

struct Result {
  int exit_code = -1;
  std::string out;
};

class SluicectlCallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/sluicectl-call-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    socket_ = dir_ + "/sm.sock";
    ASSERT_OK_AND_ASSIGN(Subprocess manager, Subprocess::SpawnAndWaitReady(
                                                 {SLUICE_SERVICEMANAGER_BIN, "--socket=" + socket_,
                                                  "--log_level=error"}));
    manager_.emplace(std::move(manager));
    ASSERT_OK_AND_ASSIGN(Subprocess server, Subprocess::SpawnAndWaitReady(
                                                {SLUICE_KV_SERVER_BIN, "--socket=" + socket_}));
    server_.emplace(std::move(server));
  }
  void TearDown() override {
    if (server_) (void)server_->Kill(SIGTERM), (void)server_->Wait();
    if (manager_) (void)manager_->Kill(SIGTERM), (void)manager_->Wait();
    (void)!std::system(("rm -rf " + dir_).c_str());
  }

  // Runs sluicectl call with `method` and `json`; stdout and the exit code.
  Result Call(const std::string& method, const std::string& json,
              const std::string& service = "example.kv.KeyValueStore") {
    return Run("call " + service + " " + method + " '" + json +
               "' --schema=" + SLUICE_KEY_VALUE_FBS + " 2>/dev/null");
  }
  // Runs sluicectl with `args` (a shell fragment); stdout and the exit code.
  Result Run(const std::string& args) {
    const std::string command = std::string(SLUICECTL_BIN) + " --socket=" + socket_ + " " + args;
    Result result;
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) return result;
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.out.append(buffer, n);
    const int status = pclose(pipe);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return result;
  }

  std::string dir_;
  std::string socket_;
  std::optional<Subprocess> manager_;
  std::optional<Subprocess> server_;
};

TEST_F(SluicectlCallTest, JsonRequestsGetJsonResponses) {
  Result put = Call("Put", R"({"key": "color", "value": [114, 101, 100]})");
  EXPECT_EQ(put.exit_code, 0);
  EXPECT_THAT(put.out, HasSubstr(R"("replaced": false)"));
  Result get = Call("Get", R"({key: "color"})");  // Unquoted keys are accepted too.
  EXPECT_EQ(get.exit_code, 0);
  EXPECT_THAT(get.out, HasSubstr(R"("found": true)"));
  EXPECT_THAT(get.out, HasSubstr("114"));
  Result audit = Call("Audit", R"({"what": "oneway from the cli"})");
  EXPECT_EQ(audit.exit_code, 0);
  EXPECT_EQ(audit.out, "{}\n");
}

TEST_F(SluicectlCallTest, MistakesFailWithTheDocumentedExitCodes) {
  EXPECT_EQ(Call("Put", R"({"key": ""})").exit_code, 1);   // The server's INVALID_ARGUMENT.
  EXPECT_EQ(Call("NoSuchMethod", "{}").exit_code, 1);      // Not in the schema.
  EXPECT_EQ(Call("Get", "{not json").exit_code, 1);        // Does not parse.
  EXPECT_EQ(Call("Get", R"({"nokey": 1})").exit_code, 1);  // Unknown field.
  EXPECT_EQ(Call("Get", R"({"key": "x"})", "no.such.Service").exit_code, 4);  // NOT_FOUND.
}

// kv_server registers the binary schema sluice-idlc embedded in it; this
// test never hands sluicectl a schema.
TEST_F(SluicectlCallTest, DescribeAndCallNeedNoLocalSchema) {
  Result describe = Run("describe example.kv.KeyValueStore 2>/dev/null");
  EXPECT_EQ(describe.exit_code, 0);
  EXPECT_THAT(describe.out, HasSubstr("service example.kv.KeyValueStore {"));
  EXPECT_THAT(describe.out, HasSubstr("Put(example.kv.PutRequest): example.kv.PutResponse;"));
  EXPECT_THAT(describe.out, HasSubstr("Audit(example.kv.AuditEvent): example.kv.Empty (oneway);"));
  EXPECT_THAT(describe.out, HasSubstr("table example.kv.PutRequest {"));
  EXPECT_THAT(describe.out, HasSubstr("value: [ubyte];  // id 1"));
  EXPECT_THAT(describe.out, HasSubstr("entries: [example.kv.Entry];"));
  EXPECT_THAT(describe.out, HasSubstr("// Sets `key` to `value`."));  // Doc comments too.

  const std::string kv = "call example.kv.KeyValueStore ";
  Result put = Run(kv + R"(Put '{"key": "k", "value": [1, 2]}' 2>/dev/null)");
  EXPECT_EQ(put.exit_code, 0);
  EXPECT_THAT(put.out, HasSubstr(R"("replaced": false)"));
  Result get = Run(kv + R"(Get '{key: "k"}' 2>/dev/null)");
  EXPECT_EQ(get.exit_code, 0);
  EXPECT_THAT(get.out, HasSubstr(R"("found": true)"));
  // Mistakes name the service and the method, not hashes.
  Result unknown = Run(kv + "Frobnicate '{}' 2>&1");
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.out, HasSubstr("no method Frobnicate in example.kv.KeyValueStore (it has: "
                                     "Audit, Delete, Get, List, Put)"));
  // The server's own error comes back under the method's name.
  Result refused = Run(kv + R"(Put '{"key": ""}' 2>&1)");
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.out, HasSubstr("INVALID_ARGUMENT: example.kv.KeyValueStore.Put: "));
  Result bad_field = Run(kv + R"(Get '{"nokey": 1}' 2>&1)");
  EXPECT_EQ(bad_field.exit_code, 1);
  EXPECT_THAT(bad_field.out, HasSubstr("example.kv.KeyValueStore.Get"));
}

}  // namespace
}  // namespace sluice::testing
