// C++ back end of sluice-idlc: one header per schema with, per service, an
// interface description, a proxy class and a stub base class. The tables
// themselves come from flatc --cpp (<stem>_generated.h), which it includes.
#ifndef SLUICE_CODEGEN_CPP_GENERATOR_H_
#define SLUICE_CODEGEN_CPP_GENERATOR_H_

#include <string>

#include "codegen/model.h"

namespace sluice::idlc {

// The file name the header for `schema` is written to: "<stem>_sluice.h".
std::string CppHeaderName(const Schema& schema);

std::string GenerateCppHeader(const Schema& schema);

}  // namespace sluice::idlc

#endif  // SLUICE_CODEGEN_CPP_GENERATOR_H_
