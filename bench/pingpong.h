// The transports the benchmark compares, behind one client interface.
//
// Every transport does the same work per call, so their ratios are fair: the
// client moves an N-byte payload from a private buffer into the transport
// (memcpy into shared memory, or write()), the server reads every byte (a sum
// of 64-bit words) and answers with a 16-byte ReplyWords, and the client
// checks the sum.
//
// One case = one transport at one payload size, against a fresh server child
// started for it (re-exec of this binary with --role=server). The benchmark
// process keeps the client end; the child is killed and reaped if the client
// is destroyed without Stop().
#ifndef SLUICE_BENCH_PINGPONG_H_
#define SLUICE_BENCH_PINGPONG_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ipc/channel/channel_options.h"
#include "ipc/channel/peer_watcher.h"

namespace sluice::bench {

enum class Transport : uint8_t {
  kRawSpin,       // Seq words on a shared page, both sides busy-wait: the physical floor.
  kRawFutex,      // The same words, both sides sleep in FUTEX_WAIT: the blocking floor.
  kRawSpinFutex,  // Spin up to kRawSpinBudgetNs, then futex.
  kUnixSocket,    // socketpair(AF_UNIX, SOCK_STREAM).
  kPipe,          // Two pipes.
  kChannel,       // sluice::ClientChannel / ServerChannel (spin budgets: CaseSetup).
};

inline constexpr Transport kAllTransports[] = {
    Transport::kRawSpin,    Transport::kRawFutex, Transport::kRawSpinFutex,
    Transport::kUnixSocket, Transport::kPipe,     Transport::kChannel,
};

// The spin budget of the raw spin-then-futex baseline (MACHINE-NOTES: longer
// than a cross-core wake-up, or it degrades to futex speed).
inline constexpr int64_t kRawSpinBudgetNs = 50'000;

absl::string_view TransportName(Transport transport);
std::optional<Transport> ParseTransport(absl::string_view name);

class PingPongClient {
 public:
  virtual ~PingPongClient() = default;

  // One round trip: sends `payload` (the case's size), waits for the reply,
  // and returns the sum the server computed over it.
  virtual absl::StatusOr<uint64_t> RoundTrip(std::span<const std::byte> payload) = 0;

  // Tells the server to exit and reaps it; an error if it did not exit 0.
  virtual absl::Status Stop() = 0;

  virtual pid_t server_pid() const = 0;
};

// Where and how one case runs.
struct CaseSetup {
  size_t payload = 64;
  std::optional<int> server_cpu;  // Pin the server child to this CPU.
  SpinPolicy channel_spin;        // Both channel sides' budgets (default options).
};

// Starts a server child for `transport` and returns the connected client.
// `watcher` serves the channel's liveness and must outlive the client.
absl::StatusOr<std::unique_ptr<PingPongClient>> StartPingPong(Transport transport,
                                                              const CaseSetup& setup,
                                                              PeerWatcher& watcher);

// The --role=server body: serves `transport` on the descriptors the parent
// passed (from fd 3) until told to stop. Returns the exit code.
int ServeMain(Transport transport, const CaseSetup& setup);

// The server child's command line for a case; main() parses it back into the
// CaseSetup it hands to ServeMain.
std::vector<std::string> ServerArgv(Transport transport, const CaseSetup& setup);

}  // namespace sluice::bench

#endif  // SLUICE_BENCH_PINGPONG_H_
