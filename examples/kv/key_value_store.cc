#include "examples/kv/key_value_store.h"

#include "absl/strings/str_cat.h"

namespace example::kv {

absl::StatusOr<flatbuffers::Offset<PutResponse>> KeyValueStore::Put(
    const sluice::rpc::CallContext&, const PutRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  if (request.key()->size() == 0) return absl::InvalidArgumentError("Put: empty key");
  const size_t size = request.value() != nullptr ? request.value()->size() : 0;
  if (size > max_value_) {
    return absl::InvalidArgumentError(
        absl::StrCat("Put: value of ", size, " bytes exceeds ", max_value_));
  }
  std::vector<uint8_t> value;
  if (size > 0) value.assign(request.value()->begin(), request.value()->end());
  bool replaced;
  {
    sluice::MutexLock lock(&mu_);
    auto [it, inserted] = values_.insert_or_assign(request.key()->str(), std::move(value));
    replaced = !inserted;
  }
  return CreatePutResponse(reply, replaced);
}

absl::StatusOr<flatbuffers::Offset<GetResponse>> KeyValueStore::Get(
    const sluice::rpc::CallContext&, const GetRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  sluice::MutexLock lock(&mu_);
  auto it = values_.find(request.key()->string_view());
  if (it == values_.end()) return CreateGetResponse(reply, false);
  // Written straight into the reply's region memory.
  auto value = reply.CreateVector(it->second);
  return CreateGetResponse(reply, true, value);
}

absl::StatusOr<flatbuffers::Offset<DeleteResponse>> KeyValueStore::Delete(
    const sluice::rpc::CallContext&, const DeleteRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  sluice::MutexLock lock(&mu_);
  auto it = values_.find(request.key()->string_view());
  const bool deleted = it != values_.end();
  if (deleted) values_.erase(it);
  return CreateDeleteResponse(reply, deleted);
}

absl::StatusOr<flatbuffers::Offset<ListResponse>> KeyValueStore::List(
    const sluice::rpc::CallContext&, const ListRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  const std::string prefix = request.prefix() != nullptr ? request.prefix()->str() : "";
  std::vector<flatbuffers::Offset<Entry>> entries;
  sluice::MutexLock lock(&mu_);
  for (auto it = values_.lower_bound(prefix);
       it != values_.end() && it->first.compare(0, prefix.size(), prefix) == 0 &&
       entries.size() < request.limit();
       ++it) {
    entries.push_back(CreateEntryDirect(reply, it->first.c_str(), it->second.size()));
  }
  return CreateListResponseDirect(reply, &entries);
}

absl::Status KeyValueStore::Audit(const sluice::rpc::CallContext& context,
                                  const AuditEvent& request) {
  sluice::MutexLock lock(&mu_);
  audit_.push_back(absl::StrCat("pid ", context.caller.pid, " uid ", context.caller.uid, ": ",
                                request.what() != nullptr ? request.what()->c_str() : ""));
  return absl::OkStatus();
}

std::vector<std::string> KeyValueStore::audit_log() {
  sluice::MutexLock lock(&mu_);
  return audit_;
}

}  // namespace example::kv
