// An in-memory implementation of example.kv.KeyValueStore
// (idl/example/key_value.fbs), shared by the example server and the tests.
#ifndef SLUICE_EXAMPLES_KV_KEY_VALUE_STORE_H_
#define SLUICE_EXAMPLES_KV_KEY_VALUE_STORE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ipc/base/mutex.h"
#include "key_value_sluice.h"

namespace example::kv {

class KeyValueStore : public KeyValueStoreStub {
 public:
  static constexpr size_t kDefaultMaxValue = 1 << 20;

  // Puts of values over `max_value` bytes fail with INVALID_ARGUMENT.
  explicit KeyValueStore(size_t max_value = kDefaultMaxValue) : max_value_(max_value) {}

  absl::StatusOr<flatbuffers::Offset<PutResponse>> Put(
      const sluice::rpc::CallContext& context, const PutRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<GetResponse>> Get(
      const sluice::rpc::CallContext& context, const GetRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<DeleteResponse>> Delete(
      const sluice::rpc::CallContext& context, const DeleteRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<ListResponse>> List(
      const sluice::rpc::CallContext& context, const ListRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::Status Audit(const sluice::rpc::CallContext& context, const AuditEvent& request) override;

  // Audit lines received so far, "pid <pid> uid <uid>: <what>".
  std::vector<std::string> audit_log();

 private:
  const size_t max_value_;
  sluice::Mutex mu_;
  std::map<std::string, std::vector<uint8_t>, std::less<>> values_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> audit_ ABSL_GUARDED_BY(mu_);
};

}  // namespace example::kv

#endif  // SLUICE_EXAMPLES_KV_KEY_VALUE_STORE_H_
