// Calls a method of a Sluice service with a JSON request and returns the
// JSON response, translating with the service's schema (FlatBuffers' own
// JSON support). What `sluicectl call` runs; handy in tests and scripts.
#ifndef SLUICE_TOOLS_JSON_CALL_H_
#define SLUICE_TOOLS_JSON_CALL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "ipc/channel/client_channel.h"

namespace sluice::tools {

struct JsonCallRequest {
  // The schema: a binary one (.bfbs, e.g. from ServiceManager::Describe),
  // or else the .fbs at schema_path.
  std::string binary_schema;
  std::string schema_path;                // The .fbs declaring the service.
  std::vector<std::string> include_dirs;  // For the schema's includes.
  std::string interface;                  // Full service name; empty: the one with `method`.
  std::string method;
  std::string json;  // The request table as JSON.
  absl::Time deadline = absl::InfiniteFuture();
};

// The response table as JSON ("{}" for a oneway method). INVALID_ARGUMENT
// for an unknown method or JSON that does not fit the request table;
// DATA_LOSS for a response that does not verify; otherwise the call's status.
absl::StatusOr<std::string> CallWithJson(ClientChannel& channel, const JsonCallRequest& request);

}  // namespace sluice::tools

#endif  // SLUICE_TOOLS_JSON_CALL_H_
