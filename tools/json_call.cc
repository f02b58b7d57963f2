#include "tools/json_call.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "codegen/front_end.h"
#include "flatbuffers/idl.h"
#include "flatbuffers/reflection.h"
#include "ipc/rpc/wire.h"

namespace sluice::tools {

namespace {

// What a call needs to know about its method, from either kind of schema.
struct MethodInfo {
  std::string interface;
  uint64_t interface_id = 0;
  uint32_t method_id = 0;
  uint32_t signature = 0;
  bool oneway = false;
  std::string request_fqn;
  std::string response_fqn;
};

absl::Status Ambiguous(const std::string& method, const std::string& a, const std::string& b) {
  return absl::InvalidArgumentError(absl::StrCat("method ", method, " is in both ", a, " and ", b,
                                                 "; say which with --interface"));
}

// From the .fbs: the model gives the method's ids exactly as generated code
// computes them.
absl::StatusOr<MethodInfo> FromSourceSchema(const JsonCallRequest& request) {
  absl::StatusOr<idlc::Schema> model = idlc::ParseSchema(request.schema_path, request.include_dirs);
  if (!model.ok()) return model.status();
  std::optional<MethodInfo> found;
  for (const idlc::Service& s : model->services) {
    if (!request.interface.empty() && s.fqn != request.interface) continue;
    for (const idlc::Method& m : s.methods) {
      if (m.name != request.method) continue;
      if (found.has_value()) return Ambiguous(request.method, found->interface, s.fqn);
      found = MethodInfo{s.fqn,    s.interface_id, m.method_id,   m.signature,
                         m.oneway, m.request_fqn,  m.response_fqn};
    }
  }
  if (!found.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no method ", request.method, " in ", request.schema_path));
  }
  return *found;
}

// From a binary schema: the same ids, computed the way sluice-idlc does
// (ipc/rpc/wire.h).
absl::StatusOr<MethodInfo> FromBinarySchema(const JsonCallRequest& request) {
  const reflection::Schema* schema = reflection::GetSchema(request.binary_schema.data());
  std::optional<MethodInfo> found;
  std::vector<std::string> methods;
  if (schema->services() != nullptr) {
    for (const reflection::Service* s : *schema->services()) {
      const std::string fqn = s->name()->str();
      if (!request.interface.empty() && fqn != request.interface) continue;
      if (s->calls() == nullptr) continue;
      for (const reflection::RPCCall* call : *s->calls()) {
        methods.push_back(call->name()->str());
        if (call->name()->str() != request.method) continue;
        if (found.has_value()) return Ambiguous(request.method, found->interface, fqn);
        MethodInfo info;
        info.interface = fqn;
        info.interface_id = rpc::Fnv1a64(fqn);
        info.method_id = rpc::Fnv1a32(request.method);
        info.oneway =
            call->attributes() != nullptr && call->attributes()->LookupByKey("oneway") != nullptr;
        info.request_fqn = call->request()->name()->str();
        info.response_fqn = call->response()->name()->str();
        info.signature = rpc::Fnv1a32(
            absl::StrCat(info.request_fqn, "->", info.response_fqn, info.oneway ? ",oneway" : ""));
        found = std::move(info);
      }
    }
  }
  if (!found.has_value()) {
    std::sort(methods.begin(), methods.end());
    return absl::InvalidArgumentError(
        absl::StrCat("no method ", request.method, " in ",
                     request.interface.empty() ? "the service's schema" : request.interface,
                     " (it has: ", absl::StrJoin(methods, ", "), ")"));
  }
  return *found;
}

}  // namespace

absl::StatusOr<std::string> CallWithJson(ClientChannel& channel, const JsonCallRequest& request) {
  const bool binary = !request.binary_schema.empty();
  absl::StatusOr<MethodInfo> found = binary ? FromBinarySchema(request) : FromSourceSchema(request);
  if (!found.ok()) return found.status();
  const MethodInfo* method = &*found;

  // The schema once more, for FlatBuffers' JSON and reflection.
  flatbuffers::IDLOptions options;
  options.strict_json = false;
  options.output_default_scalars_in_json = true;
  flatbuffers::Parser parser(options);
  std::string bfbs;
  if (binary) {
    if (!parser.Deserialize(reinterpret_cast<const uint8_t*>(request.binary_schema.data()),
                            request.binary_schema.size())) {
      return absl::DataLossError("the service's binary schema does not load");
    }
    bfbs = request.binary_schema;
  } else {
    std::ifstream in(request.schema_path);
    std::stringstream text;
    text << in.rdbuf();
    std::vector<const char*> includes;
    for (const std::string& dir : request.include_dirs) includes.push_back(dir.c_str());
    includes.push_back(nullptr);
    if (!parser.Parse(text.str().c_str(), includes.data(), request.schema_path.c_str())) {
      return absl::InvalidArgumentError(parser.error_);
    }
    parser.Serialize();
    bfbs.assign(reinterpret_cast<const char*>(parser.builder_.GetBufferPointer()),
                parser.builder_.GetSize());
  }
  if (!parser.SetRootType(method->request_fqn.c_str()) || !parser.Parse(request.json.c_str())) {
    return absl::InvalidArgumentError(absl::StrCat("request JSON for ", method->interface, ".",
                                                   request.method, " (", method->request_fqn,
                                                   "): ", parser.error_));
  }
  const uint8_t* message = parser.builder_.GetBufferPointer();
  const size_t size = parser.builder_.GetSize();

  absl::StatusOr<OutgoingCall> call = channel.BeginCall(size, request.deadline);
  // Errors name the method and the interface (the runtime's own say only
  // ids); the code and any payload (the peer-dead marker) are kept.
  auto named = [&](const absl::Status& status) {
    absl::Status out(status.code(),
                     absl::StrCat(method->interface, ".", request.method, ": ", status.message()));
    status.ForEachPayload(
        [&](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
    return out;
  };
  if (!call.ok()) return named(call.status());
  std::memcpy(call->buffer().data(), message, size);
  call->header() =
      CallHeader{method->interface_id, rpc::MethodWord(method->method_id, method->signature)};
  if (method->oneway) {
    absl::Status sent = channel.Send(*std::move(call), call->buffer().first(size));
    if (!sent.ok()) return named(sent);
    return std::string("{}\n");
  }
  absl::StatusOr<Reply> reply =
      channel.Call(*std::move(call), call->buffer().first(size), request.deadline);
  if (!reply.ok()) return named(reply.status());
  // Verify a private copy, then print it.
  const std::string bytes(reinterpret_cast<const char*>(reply->data().data()),
                          reply->data().size());
  const reflection::Schema* schema = reflection::GetSchema(bfbs.data());
  const reflection::Object* root = schema->objects()->LookupByKey(method->response_fqn.c_str());
  if (root == nullptr ||
      !flatbuffers::Verify(*schema, *root, reinterpret_cast<const uint8_t*>(bytes.data()),
                           bytes.size())) {
    return absl::DataLossError(absl::StrCat("the response is not a valid ", method->response_fqn));
  }
  std::string json;
  parser.opts.strict_json = true;  // Print real JSON (quoted keys); input may be lax.
  if (!parser.SetRootType(method->response_fqn.c_str()) ||
      !flatbuffers::GenerateText(parser, bytes.data(), &json)) {
    return absl::InternalError(absl::StrCat("could not print a ", method->response_fqn));
  }
  return json;
}

}  // namespace sluice::tools
