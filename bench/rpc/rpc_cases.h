// The RPC benchmark's own cases, as ping-pong clients (bench/pingpong.h) so
// they are measured by the same loop as the channel benchmark's baselines:
// the request carries the payload, the server sums every 64-bit word of it
// and answers with a small Ack {checksum, size}.
//
//   sluice RPC   BenchServiceProxy::Send -> generated BenchServiceStub, over a
//                channel whose server runs in a child (--role=rpc-server)
//   gRPC         the same interface (bench.proto) over a Unix socket, sync
//                API, insecure credentials (--role=grpc-server)
#ifndef SLUICE_BENCH_RPC_RPC_CASES_H_
#define SLUICE_BENCH_RPC_RPC_CASES_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "bench/pingpong.h"
#include "ipc/channel/peer_watcher.h"

namespace sluice::bench {

enum class RpcBuild : uint8_t {
  // The generated flattened overload Send(absl::Span<const uint8_t>): the
  // proxy copies the caller's buffer into the region (CreateVector).
  kFlattened,
  // A build function that reserves the field with CreateUninitializedVector
  // and writes it there, with a size hint so the first build fits.
  kInPlace,
};

// Starts an RPC server child and returns the connected proxy as a client.
absl::StatusOr<std::unique_ptr<PingPongClient>> StartSluiceRpc(RpcBuild build,
                                                               PeerWatcher& watcher);
// The --role=rpc-server body. Returns the exit code.
int ServeSluiceRpc();

// Times, in this process, what a generated stub does to a request of
// `payload` bytes before the implementation sees it: the private copy (only
// up to kPrivateCopyLimit) and the FlatBuffers verification. Median ns each.
struct StubPathCost {
  size_t message_bytes = 0;
  bool private_copy = false;
  double copy_ns = 0;
  double verify_ns = 0;
};
StubPathCost MeasureStubPath(size_t payload);

// Where a call's time goes: medians over Probe calls with an in-place build,
// stamped on both sides with the shared CLOCK_MONOTONIC. The parts' medians
// need not add up to the total's.
struct RpcBreakdown {
  size_t calls = 0;
  double total_ns = 0;    // Probe() entered -> its Response destroyed.
  double begin_ns = 0;    // Probe() entered -> build entered: slot + arena (BeginCall).
  double build_ns = 0;    // The build function: the payload's one write.
  double request_ns = 0;  // Build returned -> handler entered: publish, wake or
                          // spin handoff, claim, private copy, verify.
  double handler_ns = 0;  // The server's read of every byte.
  double reply_ns = 0;    // Handler left -> Probe() returned: finish, reply,
                          // handoff back, take, copy and verify the reply.
  double release_ns = 0;  // Destroying the Response: the slot goes back.
};
absl::StatusOr<RpcBreakdown> MeasureRpcBreakdown(size_t payload, size_t calls,
                                                 PeerWatcher& watcher);

// Starts a gRPC server child on a fresh Unix socket path and returns a
// connected client.
absl::StatusOr<std::unique_ptr<PingPongClient>> StartGrpc();
// The --role=grpc-server body: serves on `socket_path` until fd 3 reaches end
// of stream. Returns the exit code.
int ServeGrpc(const std::string& socket_path);

}  // namespace sluice::bench

#endif  // SLUICE_BENCH_RPC_RPC_CASES_H_
