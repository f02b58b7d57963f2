// Whether a client built from one binary schema can talk to a server built
// from another, by FlatBuffers' schema-evolution rules, method by method.
//
// Compatible: fields added at the end of a table (new ids), methods added on
// either side (a call to a method the server lacks fails UNIMPLEMENTED on its
// own), doc comments and attributes. Incompatible: a field whose id holds a
// different name (a field removed or reordered) or a different type, a
// request or response table under another name (renamed), a struct of
// another layout.
#ifndef SLUICE_SERVICES_SERVICEMANAGER_COMPATIBILITY_H_
#define SLUICE_SERVICES_SERVICEMANAGER_COMPATIBILITY_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "flatbuffers/reflection.h"

namespace sluice {

// Both schemas must be verified. OK, or FAILED_PRECONDITION naming the
// interface, the method and the table field that differ, e.g.
//   "example.kv.KeyValueStore.Put: request field example.kv.PutRequest.value
//    (id 1) is [ubyte] in the server's schema but string in the client's".
// NOT_FOUND if either schema lacks `interface`.
absl::Status CheckCompatible(const reflection::Schema& server, const reflection::Schema& client,
                             absl::string_view interface);

}  // namespace sluice

#endif  // SLUICE_SERVICES_SERVICEMANAGER_COMPATIBILITY_H_
