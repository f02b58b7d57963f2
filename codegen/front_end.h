// Front end of sluice-idlc: parses a schema with the FlatBuffers library's
// own parser and validates what Sluice adds to it (attributes, ids).
#ifndef SLUICE_CODEGEN_FRONT_END_H_
#define SLUICE_CODEGEN_FRONT_END_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/model.h"

namespace sluice::idlc {

// Attributes Sluice gives meaning to. A schema declares them
// (`attribute "oneway";`) so that flatc accepts the file too.
inline constexpr char kOnewayAttribute[] = "oneway";
// On an integer field: it holds a reference to an object implementing the
// named service (ipc/rpc/object.h). Value: the service's full name.
inline constexpr char kInterfaceAttribute[] = "sluice_interface";
// On an integer field: it holds a file descriptor sent with the message.
inline constexpr char kFdAttribute[] = "sluice_fd";
inline constexpr char kBlobAttribute[] = "sluice_blob";

// Parses `path` (include directories searched in order) into the model.
// Schema errors come back as INVALID_ARGUMENT "file:line: message".
absl::StatusOr<Schema> ParseSchema(const std::string& path,
                                   const std::vector<std::string>& include_dirs);

// Same, from text (for tests); `path` is only used in messages and names.
absl::StatusOr<Schema> ParseSchemaText(const std::string& text, const std::string& path,
                                       const std::vector<std::string>& include_dirs);

}  // namespace sluice::idlc

#endif  // SLUICE_CODEGEN_FRONT_END_H_
