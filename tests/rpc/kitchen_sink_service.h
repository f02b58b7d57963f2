// The implementation of the kitchen-sink services that the RPC tests call,
// shared by the in-process tests and rpc_test_peer.
#ifndef SLUICE_TESTS_RPC_KITCHEN_SINK_SERVICE_H_
#define SLUICE_TESTS_RPC_KITCHEN_SINK_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <span>

#include "kitchen_sink_sluice.h"

namespace sluice::testing {

uint64_t Fnv64(std::span<const uint8_t> bytes);

class PainterService : public ::sluice::test::sink::PainterStub {
 public:
  absl::StatusOr<flatbuffers::Offset<::sluice::test::sink::DrawingSummary>> Summarize(
      const rpc::CallContext& context, const ::sluice::test::sink::Drawing& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<::sluice::test::sink::EchoResponse>> Echo(
      const rpc::CallContext& context, const ::sluice::test::sink::EchoRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<::sluice::test::sink::Empty>> Fail(
      const rpc::CallContext& context, const ::sluice::test::sink::FailRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::Status Note(const rpc::CallContext& context,
                    const ::sluice::test::sink::Counter& request) override;
  absl::StatusOr<flatbuffers::Offset<::sluice::test::sink::Counter>> Total(
      const rpc::CallContext& context, const ::sluice::test::sink::Empty& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<::sluice::test::sink::Digest>> Upload(
      const rpc::CallContext& context, const ::sluice::test::sink::Blob& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<::sluice::test::sink::Blob>> Download(
      const rpc::CallContext& context, const ::sluice::test::sink::Counter& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<::sluice::test::sink::Digest>> Inspect(
      const rpc::CallContext& context, const ::sluice::test::sink::SealedBlob& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<::sluice::test::sink::SealedBlob>> Produce(
      const rpc::CallContext& context, const ::sluice::test::sink::Counter& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<::sluice::test::sink::Empty>> Hang(
      const rpc::CallContext& context, const ::sluice::test::sink::Empty& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<::sluice::test::sink::Counter>> Sleep(
      const rpc::CallContext& context, const ::sluice::test::sink::Counter& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<::sluice::test::sink::Caller>> WhoAmI(
      const rpc::CallContext& context, const ::sluice::test::sink::Empty& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<::sluice::test::sink::Blob>> ReadFd(
      const rpc::CallContext& context, const ::sluice::test::sink::Empty& request,
      flatbuffers::FlatBufferBuilder& reply) override;

 private:
  std::atomic<uint64_t> total_{0};
  std::atomic<uint64_t> notes_{0};
  // Notes must arrive in order: each carries the previous total + 1.
  std::atomic<uint64_t> out_of_order_{0};
};

class CalculatorService : public ::sluice::test::sink::CalculatorStub {
 public:
  absl::StatusOr<flatbuffers::Offset<::sluice::test::sink::AddResponse>> Add(
      const rpc::CallContext& context, const ::sluice::test::sink::AddRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<::sluice::test::sink::AddResponse>> Negate(
      const rpc::CallContext& context, const ::sluice::test::sink::AddRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
};

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_RPC_KITCHEN_SINK_SERVICE_H_
