// The objects the object-reference tests pass between processes, shared by
// the test process and object_peer.
#ifndef SLUICE_TESTS_OBJECTS_OBJECTS_SERVICE_H_
#define SLUICE_TESTS_OBJECTS_OBJECTS_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <optional>

#include "ipc/base/mutex.h"
#include "objects_sluice.h"

namespace sluice::testing {

namespace objects = ::sluice::test::objects;

// Answers Call(value) with value + offset, and who it is and who called.
class CallbackObject : public objects::CallbackStub {
 public:
  explicit CallbackObject(int64_t offset = 1);
  ~CallbackObject() override;
  // Instances alive in this process.
  static int64_t live();

  absl::StatusOr<flatbuffers::Offset<objects::Pong>> Call(
      const rpc::CallContext& context, const objects::Ping& request,
      flatbuffers::FlatBufferBuilder& reply) override;

 private:
  const int64_t offset_;
};

class HolderService : public objects::HolderStub {
 public:
  absl::StatusOr<flatbuffers::Offset<objects::GiveResponse>> Give(
      const rpc::CallContext& context, const objects::GiveRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::Status Hand(const rpc::CallContext& context, const objects::GiveRequest& request) override;
  absl::StatusOr<flatbuffers::Offset<objects::Pong>> CallHeld(
      const rpc::CallContext& context, const objects::Ping& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<objects::Empty>> Drop(
      const rpc::CallContext& context, const objects::Empty& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<objects::ObjectResponse>> Make(
      const rpc::CallContext& context, const objects::Empty& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<objects::ObjectResponse>> MakeLate(
      const rpc::CallContext& context, const objects::Ping& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<objects::ObjectResponse>> Held(
      const rpc::CallContext& context, const objects::Empty& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<objects::FdResponse>> ReadFd(
      const rpc::CallContext& context, const objects::FdRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<objects::Stats>> Stats(
      const rpc::CallContext& context, const objects::Empty& request,
      flatbuffers::FlatBufferBuilder& reply) override;

 private:
  Mutex mu_;
  std::optional<rpc::Remote<objects::CallbackProxy>> held_ ABSL_GUARDED_BY(mu_);
};

// Copies a Pong from a response into `fbb`.
flatbuffers::Offset<objects::Pong> CopyPong(flatbuffers::FlatBufferBuilder& fbb,
                                            const objects::Pong& pong);

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_OBJECTS_OBJECTS_SERVICE_H_
