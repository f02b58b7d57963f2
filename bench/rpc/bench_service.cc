#include "bench/rpc/bench_service.h"

#include <cstddef>
#include <span>

#include "bench/harness.h"

namespace sluice::bench {
namespace {

std::span<const std::byte> DataOf(const Payload& request) {
  if (request.data() == nullptr) return {};
  return std::as_bytes(std::span(request.data()->data(), request.data()->size()));
}

}  // namespace

absl::StatusOr<flatbuffers::Offset<Ack>> BenchServer::Send(const rpc::CallContext&,
                                                           const Payload& request,
                                                           flatbuffers::FlatBufferBuilder& reply) {
  const std::span<const std::byte> data = DataOf(request);
  return CreateAck(reply, SumWords(data), data.size());
}

absl::StatusOr<flatbuffers::Offset<Timing>> BenchServer::Probe(
    const rpc::CallContext&, const Payload& request, flatbuffers::FlatBufferBuilder& reply) {
  const int64_t entered = NowNanos();
  const std::span<const std::byte> data = DataOf(request);
  const uint64_t sum = SumWords(data);
  return CreateTiming(reply, sum, data.size(), entered, NowNanos());
}

ChannelOptions SameUserTrust() {
  ChannelOptions options;
  options.trust_peer = true;
  return options;
}

}  // namespace sluice::bench
