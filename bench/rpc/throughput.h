// sluice_throughput_bench's pieces shared by its processes: the run control
// block every process of one measurement maps, the per-call latency
// histogram, and the cases.
//
// One measurement is one case at one client count and payload size, with
// fresh processes (re-execs of the benchmark binary):
//
//   benchmark (parent)                  run control (a memfd, fd 3 of every child)
//     creates the run control             phase ........... parent
//     Start(): 1 server, N clients  --->  ready ........... each client, once
//     waits until ready == N              clients[i].calls  client i, every call
//     phase: warm-up, measure, stop       latency[i] ...... client i, while measuring
//     reads every calls counter at        server_threads .. the server, at exit
//     the measured window's edges
//
//   server child: ONE thread serving all N connections (fds from 4, per case)
//   client child i: one connection (fds from 4), calls in a closed loop
//
// The parent reads a client's latency histogram only once that client has
// exited; every other field is an atomic with the one writer named above.
#ifndef SLUICE_BENCH_RPC_THROUGHPUT_H_
#define SLUICE_BENCH_RPC_THROUGHPUT_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ipc/shm/region.h"
#include "ipc/sync/futex.h"
#include "ipc/testing/subprocess.h"

namespace sluice::bench::throughput {

enum class Case : uint8_t {
  // Generated BenchServiceProxy::Send -> stub, served by an rpc::ServerPool
  // held to one thread: the path ServiceHost serves.
  kRpc,
  // One mailbox (seq words on a shared page, payload beside them) per
  // client; the server spins over all of them for kRawSpinBudgetNs after its
  // last request, then sleeps in one futex_waitv on every request word.
  // Clients spin as long for their reply, then sleep. The floor.
  kRawSpinFutex,
  // A stream socketpair per client; the server waits in epoll: what a
  // kernel-mediated handoff costs.
  kUnixSocket,
};

inline constexpr Case kAllCases[] = {Case::kRpc, Case::kRawSpinFutex, Case::kUnixSocket};

absl::string_view CaseName(Case c);
std::optional<Case> ParseCase(absl::string_view name);

inline constexpr int kMaxClients = 32;

// A measurement's progress, written by the parent only.
enum Phase : uint32_t {
  kSetup = 0,    // Clients connect, make one call each, and wait.
  kWarmup = 1,   // Clients call; nothing is counted.
  kMeasure = 2,  // Calls are counted and their latency recorded.
  kStop = 3,     // Clients finish the call they are in, disconnect and exit.
};

// Per-call latency in nanoseconds, log-linear: 16 buckets per power of two,
// so a percentile is off by at most 1/32 of its value. Zero-filled is empty,
// so a histogram can live in a fresh memfd. One writer.
class LatencyHistogram {
 public:
  void Add(int64_t nanos) { ++counts_[Bucket(nanos < 0 ? 0 : static_cast<uint64_t>(nanos))]; }
  void Merge(const LatencyHistogram& other);
  uint64_t count() const;
  // Nearest-rank percentile (q in (0, 1]) in microseconds, as the middle of
  // its bucket; 0 when empty.
  double PercentileUs(double q) const;

 private:
  static constexpr int kSubBits = 4;
  static constexpr int kBuckets = 64 << kSubBits;
  static int Bucket(uint64_t nanos);
  static double Middle(int bucket);
  uint64_t counts_[kBuckets] = {};
};

struct RunControl {
  alignas(64) FutexWord phase;
  // Clients that made their first call (so the server is up) and wait.
  alignas(64) FutexWord ready;
  // The most threads the server ever ran calls on.
  alignas(64) std::atomic<uint32_t> server_threads;
  struct alignas(64) Client {
    std::atomic<uint64_t> calls;  // Completed since the setup call.
  };
  Client clients[kMaxClients];
  LatencyHistogram latency[kMaxClients];
};

RunControl& ControlOf(const Region& run);
// A child's view of the run control at fd 3.
absl::StatusOr<Region> AdoptRunControl();

// The processes of one measurement. Destroying it kills whatever still runs.
struct Processes {
  testing::Subprocess server;
  std::vector<testing::Subprocess> clients;
  // Tells the server to exit, once every client has exited. Empty when the
  // clients' disconnecting tells it (channels, sockets).
  absl::AnyInvocable<void()> stop_server;
};

// Starts `c`'s server and `clients` clients for `payload`-byte calls, each
// with `run_fd` at fd 3.
absl::StatusOr<Processes> Start(Case c, int clients, size_t payload, int run_fd);

// The child command lines Start uses; main() parses them back.
std::vector<std::string> ServerArgv(Case c, int connections, size_t payload);
std::vector<std::string> ClientArgv(Case c, int index, size_t payload);

// The --role=server body: serves `connections` connections of `c` on one
// thread until every client is gone (or told to stop). Returns the exit code.
int ServeMain(Case c, int connections, size_t payload);
// The --role=client body: client `index`'s closed loop (see RunControl).
int ClientMain(Case c, int index, size_t payload);

// One client's connection, as each case makes it.
class Caller {
 public:
  virtual ~Caller() = default;
  // One call carrying `payload`; the sum the server computed over it.
  virtual absl::StatusOr<uint64_t> Call(std::span<const std::byte> payload) = 0;
};

// Per case (throughput_rpc.cc, throughput_baselines.cc).
absl::StatusOr<Processes> StartRpc(int clients, size_t payload, int run_fd);
absl::StatusOr<Processes> StartRawSpinFutex(int clients, size_t payload, int run_fd);
absl::StatusOr<Processes> StartUnixSocket(int clients, size_t payload, int run_fd);
int ServeRpc(RunControl& run, int connections);
int ServeRawSpinFutex(RunControl& run, int connections, size_t payload);
int ServeUnixSocket(RunControl& run, int connections, size_t payload);
absl::StatusOr<std::unique_ptr<Caller>> ConnectRpc();
absl::StatusOr<std::unique_ptr<Caller>> ConnectRawSpinFutex(int index, size_t payload);
absl::StatusOr<std::unique_ptr<Caller>> ConnectUnixSocket();

}  // namespace sluice::bench::throughput

#endif  // SLUICE_BENCH_RPC_THROUGHPUT_H_
