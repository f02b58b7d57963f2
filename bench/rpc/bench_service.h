// The BenchService implementation every rpc benchmark serves, and the
// channel options both ends of a benchmark channel use.
//
// Send and Probe do the work every baseline does for a request: read each
// byte (a sum of 64-bit words, bench/harness.h SumWords) and answer with the
// sum and the length seen, so the client can check that nothing was
// skipped. The stub is stateless: one instance may serve any number of
// channels and threads.
#ifndef SLUICE_BENCH_RPC_BENCH_SERVICE_H_
#define SLUICE_BENCH_RPC_BENCH_SERVICE_H_

#include "bench_sluice.h"
#include "ipc/channel/channel_options.h"

namespace sluice::bench {

class BenchServer final : public BenchServiceStub {
 public:
  absl::StatusOr<flatbuffers::Offset<Ack>> Send(const rpc::CallContext& context,
                                                const Payload& request,
                                                flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<Timing>> Probe(const rpc::CallContext& context,
                                                    const Payload& request,
                                                    flatbuffers::FlatBufferBuilder& reply) override;
};

// Both ends are one benchmark's processes, one user: the trust ServiceHost
// gives same-user peers by default, so large messages stay in place (the
// sealed path is sluice_large_bench's).
ChannelOptions SameUserTrust();

}  // namespace sluice::bench

#endif  // SLUICE_BENCH_RPC_BENCH_SERVICE_H_
