// Serving at scale, as a user runs it: the real service manager and
// kv_server, and this process holding thousands of connections to the
// service at once, every one of them answered. It also reports what a
// connection costs the manager and the server in descriptors and memory.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "ipc/host/service_host.h"
#include "ipc/testing/subprocess.h"
#include "key_value_sluice.h"
#include "tests/examples/example_deployment.h"
#include "tests/testing/status_matchers.h"

namespace sluice::testing {
namespace {

#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SLUICE_SCALE_SANITIZED 1
#endif
#endif
#else
#define SLUICE_SCALE_SANITIZED 1
#endif

// Past 4 threads x 125 doorbells (where calls used to hang) in every build;
// the full ten thousand where the build is optimized and unsanitized.
#ifdef SLUICE_SCALE_SANITIZED
constexpr int kWantedConnections = 600;
#else
constexpr int kWantedConnections = 10'000;
#endif
// Descriptors a connection takes in each process that holds it: its
// liveness socket, the one descriptor of a channel once it is open
// (docs/shared-memory-layout.md); and room for a process's own.
constexpr rlim_t kFdsPerConnection = 1;
constexpr rlim_t kFdsBesides = 1024;

class KvScaleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Every connection is a few descriptors on each side; the children
    // inherit the raised limit, as a service started by systemd with
    // LimitNOFILE would have it.
    rlimit files;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &files), 0);
    const rlim_t wanted = kFdsPerConnection * kWantedConnections + kFdsBesides;
    if (files.rlim_max < wanted) {
      // Root may raise the hard limit too; anyone else gets what it allows.
      rlimit raised = {wanted, wanted};
      if (setrlimit(RLIMIT_NOFILE, &raised) == 0) files = raised;
    }
    files.rlim_cur = files.rlim_max;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &files), 0);
    connections_ = static_cast<int>(
        std::min<rlim_t>(kWantedConnections, (files.rlim_cur - kFdsBesides) / kFdsPerConnection));
    if (connections_ < kWantedConnections) {
      std::printf("RLIMIT_NOFILE %llu allows %d of %d connections\n",
                  static_cast<unsigned long long>(files.rlim_cur), connections_,
                  kWantedConnections);
    }
    // Still past 4 threads x 125 doorbells, where calls used to hang.
    ASSERT_GT(connections_, 520) << "RLIMIT_NOFILE is too low for this test";
    ASSERT_OK_AND_ASSIGN(deployment_,
                         ExampleDeployment::Start(SLUICE_SERVICEMANAGER_BIN, SLUICE_KV_SERVER_BIN));
  }

  int connections_ = 0;
  std::unique_ptr<ExampleDeployment> deployment_;
};

TEST_F(KvScaleTest, EveryOneOfThousandsOfConnectionsIsAnswered) {
  const int kConnections = connections_;
  ASSERT_OK_AND_ASSIGN(auto manager,
                       ServiceManager::Connect({.socket_path = deployment_->socket()}));
  const pid_t manager_pid = deployment_->manager().pid();
  const pid_t server_pid = deployment_->server().pid();
  const int manager_fds = CountFdsOf(manager_pid), server_fds = CountFdsOf(server_pid);
  const int64_t manager_rss = RssKibOf(manager_pid), server_rss = RssKibOf(server_pid);
  const int client_fds = CountFdsOf(::getpid());

  using Proxy = example::kv::KeyValueStoreProxy;
  std::vector<Connection<Proxy>> connections;
  connections.reserve(kConnections);
  for (int i = 0; i < kConnections; ++i) {
    absl::StatusOr<Connection<Proxy>> connection = Connect<Proxy>(*manager);
    ASSERT_OK(connection.status()) << "connection " << i;
    connections.push_back(*std::move(connection));
  }
  const rpc::CallOptions in_time{.deadline = absl::Now() + absl::Seconds(120)};
  // Newest first: those are the ones nobody used to watch.
  for (int i = kConnections - 1; i >= 0; --i) {
    const std::string key = absl::StrCat("k", i);
    ASSERT_OK(
        connections[i]->Put(key, std::vector<uint8_t>{static_cast<uint8_t>(i)}, in_time).status())
        << "connection " << i;
  }
  for (int i = 0; i < kConnections; ++i) {
    ASSERT_OK_AND_ASSIGN(auto got, connections[i]->Get(absl::StrCat("k", i), in_time));
    ASSERT_TRUE(got->found()) << "connection " << i;
    ASSERT_EQ(got->value()->Get(0), static_cast<uint8_t>(i));
  }

  const double n = kConnections;
  const double manager_fds_each = (CountFdsOf(manager_pid) - static_cast<double>(manager_fds)) / n;
  const double server_fds_each = (CountFdsOf(server_pid) - static_cast<double>(server_fds)) / n;
  const double manager_kib_each = (RssKibOf(manager_pid) - manager_rss) / n;
  const double server_kib_each = (RssKibOf(server_pid) - server_rss) / n;
  std::printf(
      "%d connections: per connection the manager holds %.2f descriptors and %.1f KiB RSS, "
      "kv_server %.2f descriptors and %.1f KiB RSS\n",
      kConnections, manager_fds_each, manager_kib_each, server_fds_each, server_kib_each);
  // One descriptor per connection on each side, as the limit above assumes
  // (and a few for the pool's epoll set and eventfds).
  const int most = kConnections * static_cast<int>(kFdsPerConnection) + 8;
  EXPECT_LE(CountFdsOf(server_pid) - server_fds, most);
  EXPECT_LE(CountFdsOf(::getpid()) - client_fds, most);
  RecordProperty("connections", kConnections);
  RecordProperty("server_fds_per_connection", absl::StrCat(server_fds_each));
  RecordProperty("server_rss_kib_per_connection", absl::StrCat(server_kib_each));
  RecordProperty("manager_fds_per_connection", absl::StrCat(manager_fds_each));
  RecordProperty("manager_rss_kib_per_connection", absl::StrCat(manager_kib_each));
  // Every connection ends with its client: the server lets them all go.
  connections.clear();
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (CountFdsOf(server_pid) > server_fds + 8 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_LE(CountFdsOf(server_pid), server_fds + 8) << "descriptors the server kept";
}

}  // namespace
}  // namespace sluice::testing
