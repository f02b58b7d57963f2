// Schema back end of sluice-idlc: one header per schema embedding its binary
// schema (.bfbs, FlatBuffers reflection, from Parser::Serialize) and a
// structural hash, so a running service can describe its interface (and the
// service manager can check a client's compatibility) with no .fbs at hand.
//
//   // key_value_schema.h
//   namespace sluice_schema::key_value {
//   inline constexpr unsigned char kBinarySchema[] = {...};
//   inline constexpr uint64_t kStructuralHash = 0x...;
//   }
//
// A header of its own, beside <stem>_sluice.h (which includes it: each
// Interface's kSchema points at these constants), so a tool can embed the
// schema without the proxies and stubs.
#ifndef SLUICE_CODEGEN_SCHEMA_GENERATOR_H_
#define SLUICE_CODEGEN_SCHEMA_GENERATOR_H_

#include <string>

#include "codegen/model.h"

namespace sluice::idlc {

// "<stem>_schema.h".
std::string SchemaHeaderName(const Schema& schema);
// The C++ namespace the constants live in: "sluice_schema::<stem>", the
// stem with every character outside [A-Za-z0-9_] replaced by '_'.
std::string SchemaNamespace(const Schema& schema);
std::string GenerateSchemaHeader(const Schema& schema);

}  // namespace sluice::idlc

#endif  // SLUICE_CODEGEN_SCHEMA_GENERATOR_H_
