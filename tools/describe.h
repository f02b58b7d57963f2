// The text `sluicectl describe` prints for a service: its methods with their
// request and response tables and attributes, then every table and struct
// they use with its fields, read from the binary schema the service
// registered (no .fbs needed).
#ifndef SLUICE_TOOLS_DESCRIBE_H_
#define SLUICE_TOOLS_DESCRIBE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sluice::tools {

// `bfbs` must be a verified reflection schema (ServiceManager::Describe
// verifies it). NOT_FOUND if it declares no service `interface`.
absl::StatusOr<std::string> DescribeInterface(absl::string_view bfbs, absl::string_view interface);

}  // namespace sluice::tools

#endif  // SLUICE_TOOLS_DESCRIBE_H_
