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
  absl::Status Notify(const rpc::CallContext& context, const objects::Ping& request) override;
  // The sum of the values notified.
  int64_t notified() const { return notified_.load(); }
  int64_t offset() const { return offset_; }

 private:
  const int64_t offset_;
  std::atomic<int64_t> notified_{0};
};

// A Callback kept past the call that passed it (Give or Take with keep):
// the last one kept, for any thread.
class HeldCallback {
 public:
  std::optional<rpc::Remote<objects::CallbackProxy>> get();
  // Keeps `callback` instead of the one held, which goes outside the lock.
  void Keep(rpc::Remote<objects::CallbackProxy> callback);
  void Drop();

 private:
  Mutex mu_;
  std::optional<rpc::Remote<objects::CallbackProxy>> held_ ABSL_GUARDED_BY(mu_);
};

class HolderService : public objects::HolderStub {
 public:
  absl::StatusOr<flatbuffers::Offset<objects::GiveResponse>> Give(
      const rpc::CallContext& context, const objects::GiveRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::Status Hand(const rpc::CallContext& context, const objects::GiveRequest& request) override;
  absl::StatusOr<flatbuffers::Offset<objects::Empty>> Notify(
      const rpc::CallContext& context, const objects::GiveRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
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
  absl::StatusOr<flatbuffers::Offset<objects::ObjectResponse>> Forge(
      const rpc::CallContext& context, const objects::Ping& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<objects::ObjectResponse>> Echo(
      const rpc::CallContext& context, const objects::GiveRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<objects::FdResponse>> ReadFd(
      const rpc::CallContext& context, const objects::FdRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<objects::Stats>> Stats(
      const rpc::CallContext& context, const objects::Empty& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<objects::GiveResponse>> Offer(
      const rpc::CallContext& context, const objects::OfferRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<objects::Empty>> OfferLater(
      const rpc::CallContext& context, const objects::OfferRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<objects::GiveResponse>> Fetch(
      const rpc::CallContext& context, const objects::OfferRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<objects::GiveResponse>> Own(
      const rpc::CallContext& context, const objects::GiveRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;

 private:
  HeldCallback held_;
};

// Takes the Callbacks a peer passes it (keeping the last one it is asked
// to), and makes new ones for the asking.
class TakerObject : public objects::TakerStub {
 public:
  absl::StatusOr<flatbuffers::Offset<objects::GiveResponse>> Take(
      const rpc::CallContext& context, const objects::GiveRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::Status TakeLater(const rpc::CallContext& context,
                         const objects::GiveRequest& request) override;
  absl::StatusOr<flatbuffers::Offset<objects::ObjectResponse>> Make(
      const rpc::CallContext& context, const objects::Empty& request,
      flatbuffers::FlatBufferBuilder& reply) override;

  std::optional<rpc::Remote<objects::CallbackProxy>> kept() { return kept_.get(); }
  void Drop() { kept_.Drop(); }
  // How many callbacks came by handle, and how many as dedicated channels.
  int by_handle() const { return by_handle_.load(); }
  int dedicated() const { return dedicated_.load(); }

 private:
  void Count(const objects::GiveRequest& request);

  HeldCallback kept_;
  std::atomic<int> by_handle_{0};
  std::atomic<int> dedicated_{0};
};

// Copies a Pong from a response into `fbb`.
flatbuffers::Offset<objects::Pong> CopyPong(flatbuffers::FlatBufferBuilder& fbb,
                                            const objects::Pong& pong);

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_OBJECTS_OBJECTS_SERVICE_H_
