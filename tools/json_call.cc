#include "tools/json_call.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "codegen/front_end.h"
#include "flatbuffers/idl.h"
#include "flatbuffers/reflection.h"
#include "ipc/rpc/wire.h"

namespace sluice::tools {

absl::StatusOr<std::string> CallWithJson(ClientChannel& channel, const JsonCallRequest& request) {
  // The model gives the method's ids exactly as generated code computes them.
  absl::StatusOr<idlc::Schema> model = idlc::ParseSchema(request.schema_path, request.include_dirs);
  if (!model.ok()) return model.status();
  const idlc::Service* service = nullptr;
  const idlc::Method* method = nullptr;
  for (const idlc::Service& s : model->services) {
    if (!request.interface.empty() && s.fqn != request.interface) continue;
    for (const idlc::Method& m : s.methods) {
      if (m.name != request.method) continue;
      if (method != nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("method ", request.method, " is in both ",
                                                       service->fqn, " and ", s.fqn,
                                                       "; say which with --interface"));
      }
      service = &s;
      method = &m;
    }
  }
  if (method == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("no method ", request.method, " in ", request.schema_path));
  }

  // The same schema once more, this time for FlatBuffers' JSON and reflection.
  std::ifstream in(request.schema_path);
  std::stringstream text;
  text << in.rdbuf();
  flatbuffers::IDLOptions options;
  options.strict_json = false;
  options.output_default_scalars_in_json = true;
  flatbuffers::Parser parser(options);
  std::vector<const char*> includes;
  for (const std::string& dir : request.include_dirs) includes.push_back(dir.c_str());
  includes.push_back(nullptr);
  if (!parser.Parse(text.str().c_str(), includes.data(), request.schema_path.c_str())) {
    return absl::InvalidArgumentError(parser.error_);
  }
  parser.Serialize();
  const std::string bfbs(reinterpret_cast<const char*>(parser.builder_.GetBufferPointer()),
                         parser.builder_.GetSize());
  if (!parser.SetRootType(method->request_fqn.c_str()) || !parser.Parse(request.json.c_str())) {
    return absl::InvalidArgumentError(
        absl::StrCat("request JSON for ", method->request_fqn, ": ", parser.error_));
  }
  const uint8_t* message = parser.builder_.GetBufferPointer();
  const size_t size = parser.builder_.GetSize();

  absl::StatusOr<OutgoingCall> call = channel.BeginCall(size, request.deadline);
  if (!call.ok()) return call.status();
  std::memcpy(call->buffer().data(), message, size);
  call->header() =
      CallHeader{service->interface_id, rpc::MethodWord(method->method_id, method->signature)};
  if (method->oneway) {
    absl::Status sent = channel.Send(*std::move(call), call->buffer().first(size));
    if (!sent.ok()) return sent;
    return std::string("{}\n");
  }
  absl::StatusOr<Reply> reply =
      channel.Call(*std::move(call), call->buffer().first(size), request.deadline);
  if (!reply.ok()) return reply.status();
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
