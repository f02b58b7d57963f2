// The validated model of a schema's services that the back end generates
// from. The front end (front_end.h) fills it from flatbuffers::Parser; the
// C++ back end (cpp_generator.h) only reads it.
#ifndef SLUICE_CODEGEN_MODEL_H_
#define SLUICE_CODEGEN_MODEL_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sluice::idlc {

// A request field the proxy can take as a plain C++ parameter.
struct FlatParam {
  // kObject: an (sluice_interface) field, passed as an rpc::ObjectRef;
  // kFd: an (sluice_fd) field, passed as a descriptor the call duplicates.
  // kBlob: an (sluice_blob) field, passed as an rpc::Blob (its sealed memfd
  // travels beside the message).
  enum class Kind { kScalar, kString, kScalarVector, kObject, kFd, kBlob };
  Kind kind;
  std::string field;     // Schema field name (also the builder's add_<field>).
  std::string cpp_type;  // Parameter type as the proxy method declares it.
  size_t element_size;   // Scalars and vector elements; 0 for strings.
  // The caller may leave the field absent: cpp_type is std::optional<...> and
  // std::nullopt writes nothing (strings and vectors that are not
  // (required), scalars declared `= null`).
  bool optional = false;
  // The parameter's C++ default: the schema default of a scalar, std::nullopt
  // when `optional`, null/-1 for references and descriptors; empty for
  // (required) fields. The generator uses the trailing run of defaults only,
  // as C++ requires.
  std::string default_value = {};
  std::string element_cpp = {};    // kScalarVector: the element type.
  std::string interface_fqn = {};  // kObject: the interface the field refers to.
  uint64_t interface_id = 0;       // kObject: its id.
};

struct Method {
  std::string name;
  std::vector<std::string> doc;
  std::string request_fqn;  // Schema name, e.g. "example.kv.PutRequest".
  std::string response_fqn;
  std::string request_cpp;  // C++ name, e.g. "::example::kv::PutRequest".
  std::string response_cpp;
  bool oneway = false;
  uint32_t method_id = 0;
  uint32_t signature = 0;
  // Set when every request field maps to a plain parameter.
  std::optional<std::vector<FlatParam>> flat_params;
};

struct Service {
  std::string name;                     // "KeyValueStore"
  std::string fqn;                      // "example.kv.KeyValueStore"
  std::vector<std::string> namespaces;  // {"example", "kv"}
  std::vector<std::string> doc;
  uint64_t interface_id = 0;
  std::vector<Method> methods;
};

struct Schema {
  std::string source;        // Path of the .fbs as given.
  std::string stem;          // "kv" for kv.fbs.
  std::string flatc_header;  // "kv_generated.h"
  std::vector<Service> services;
  // The whole schema in binary form (.bfbs, from flatbuffers::Parser::
  // Serialize), and a hash of its structure: every table's and struct's
  // fields in id order with their types, every service's methods with
  // their request and response types (schema_generator.h).
  std::string binary_schema;
  uint64_t structural_hash = 0;
};

}  // namespace sluice::idlc

#endif  // SLUICE_CODEGEN_MODEL_H_
