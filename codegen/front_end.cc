#include "codegen/front_end.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "flatbuffers/idl.h"
#include "ipc/rpc/wire.h"

namespace sluice::idlc {
namespace {

std::string Stem(const std::string& path) {
  std::string base = path.substr(path.find_last_of('/') + 1);
  return base.substr(0, base.find_last_of('.'));
}

std::string CppName(const std::string& fqn) {
  return "::" + absl::StrReplaceAll(fqn, {{".", "::"}});
}

std::string Location(const flatbuffers::Definition& def, const std::string& fallback) {
  return def.file.empty() ? fallback : def.file;
}

const char* ScalarCppType(flatbuffers::BaseType type) {
  switch (type) {
    case flatbuffers::BASE_TYPE_BOOL:
      return "bool";
    case flatbuffers::BASE_TYPE_CHAR:
      return "int8_t";
    case flatbuffers::BASE_TYPE_UCHAR:
      return "uint8_t";
    case flatbuffers::BASE_TYPE_SHORT:
      return "int16_t";
    case flatbuffers::BASE_TYPE_USHORT:
      return "uint16_t";
    case flatbuffers::BASE_TYPE_INT:
      return "int32_t";
    case flatbuffers::BASE_TYPE_UINT:
      return "uint32_t";
    case flatbuffers::BASE_TYPE_LONG:
      return "int64_t";
    case flatbuffers::BASE_TYPE_ULONG:
      return "uint64_t";
    case flatbuffers::BASE_TYPE_FLOAT:
      return "float";
    case flatbuffers::BASE_TYPE_DOUBLE:
      return "double";
    default:
      return nullptr;
  }
}

bool IsIntegerField(flatbuffers::BaseType type) {
  return flatbuffers::IsInteger(type) && type != flatbuffers::BASE_TYPE_BOOL;
}

// Checks the Sluice field attributes of every table: an (sluice_interface)
// names a known service and sits on an unsigned integer of 32 or 64 bits;
// an (sluice_fd) or (sluice_blob) sits on an integer of 32 or 64 bits.
absl::Status ValidateFieldAttributes(const flatbuffers::Parser& parser, const std::string& path) {
  for (const flatbuffers::StructDef* table : parser.structs_.vec) {
    for (const flatbuffers::FieldDef* field : table->fields.vec) {
      const flatbuffers::Value* iface = field->attributes.Lookup(kInterfaceAttribute);
      const flatbuffers::Value* fd = field->attributes.Lookup(kFdAttribute);
      const flatbuffers::Value* blob = field->attributes.Lookup(kBlobAttribute);
      if (blob != nullptr && (fd != nullptr || iface != nullptr)) {
        return absl::InvalidArgumentError(
            absl::StrCat(Location(*table, path), ": ", table->name, ".", field->name,
                         ": a field is one of (sluice_interface), (sluice_fd), (sluice_blob)"));
      }
      if (fd == nullptr) fd = blob;  // Held the same way: an attachment index.
      if (iface == nullptr && fd == nullptr) continue;
      const std::string where =
          absl::StrCat(Location(*table, path), ": ", table->name, ".", field->name);
      const flatbuffers::BaseType type = field->value.type.base_type;
      if (iface != nullptr && fd != nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": a field is either (sluice_interface) or (sluice_fd)"));
      }
      if (table->fixed) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": references and descriptors go in table fields, not in structs"));
      }
      if (!IsIntegerField(type) || flatbuffers::SizeOf(type) < 4 ||
          (iface != nullptr && !flatbuffers::IsUnsigned(type)) ||
          field->value.type.enum_def != nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, iface != nullptr ? ": (sluice_interface) needs a uint or ulong field"
                                    : ": (sluice_fd) needs an int, uint, long or "
                                      "ulong field"));
      }
      if (iface != nullptr && parser.services_.Lookup(iface->constant) == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": (sluice_interface: \"", iface->constant,
                         "\") names no rpc_service of this schema or its includes (use the full "
                         "name, e.g. \"pkg.Listener\")"));
      }
    }
  }
  return absl::OkStatus();
}

// The C++ default argument for a non-optional scalar field: its schema
// default, spelled so that every value of the type is a valid literal.
std::string ScalarDefault(const flatbuffers::FieldDef& field, const std::string& cpp_type) {
  const flatbuffers::Type& type = field.value.type;
  const std::string& constant = field.value.constant;
  if (type.enum_def != nullptr && !type.enum_def->is_union) {
    if (const flatbuffers::EnumVal* value = type.enum_def->FindByValue(constant)) {
      return absl::StrCat(cpp_type, "::", value->name);
    }
    return absl::StrCat("static_cast<", cpp_type, ">(", constant, ")");  // e.g. bit_flags 0.
  }
  if (type.base_type == flatbuffers::BASE_TYPE_BOOL) {
    return constant == "0" || constant == "false" ? "false" : "true";
  }
  if (flatbuffers::IsFloat(type.base_type)) {
    if (absl::StrContains(constant, "nan")) {
      return absl::StrCat("std::numeric_limits<", cpp_type, ">::quiet_NaN()");
    }
    if (absl::StrContains(constant, "inf")) {
      return absl::StrCat(constant[0] == '-' ? "-" : "", "std::numeric_limits<", cpp_type,
                          ">::infinity()");
    }
    const bool has_point = constant.find_first_of(".eE") != std::string::npos;
    return absl::StrCat(constant, has_point ? "" : ".0",
                        type.base_type == flatbuffers::BASE_TYPE_FLOAT ? "f" : "");
  }
  // Integers: the literal's own type must hold the value (no -9223372036854775808).
  if (type.base_type == flatbuffers::BASE_TYPE_LONG && constant == "-9223372036854775808") {
    return "std::numeric_limits<int64_t>::min()";
  }
  if (flatbuffers::SizeOf(type.base_type) == 8) {
    return absl::StrCat(constant, flatbuffers::IsUnsigned(type.base_type) ? "ull" : "ll");
  }
  return absl::StrCat(constant, flatbuffers::IsUnsigned(type.base_type) ? "u" : "");
}

// Maps a request table's fields to plain parameters, or nullopt if any field
// needs the builder (tables, structs, unions, vectors of non-scalars).
// Fields the schema lets a writer leave out can be left out of the call.
std::optional<std::vector<FlatParam>> FlattenFields(const flatbuffers::StructDef& table) {
  std::vector<FlatParam> params;
  for (const flatbuffers::FieldDef* field : table.fields.vec) {
    if (field->deprecated) continue;
    // Names the generated method uses itself (its CallOptions parameter,
    // locals ending in "_"): such a table gets only the builder overload.
    if (field->name == "options" || absl::EndsWith(field->name, "_")) return std::nullopt;
    const flatbuffers::Type& type = field->value.type;
    if (const flatbuffers::Value* iface = field->attributes.Lookup(kInterfaceAttribute)) {
      FlatParam param{FlatParam::Kind::kObject, field->name, "const ::sluice::rpc::ObjectRef&", 0};
      param.default_value = "nullptr";
      param.interface_fqn = iface->constant;
      param.interface_id = rpc::Fnv1a64(iface->constant);
      params.push_back(std::move(param));
      continue;
    }
    if (field->attributes.Lookup(kFdAttribute) != nullptr) {
      FlatParam param{FlatParam::Kind::kFd, field->name, "int", 0};
      param.default_value = "-1";
      params.push_back(std::move(param));
      continue;
    }
    if (field->attributes.Lookup(kBlobAttribute) != nullptr) {
      FlatParam param{FlatParam::Kind::kBlob, field->name, "const ::sluice::rpc::Blob&", 0};
      param.default_value = "{}";
      params.push_back(std::move(param));
      continue;
    }
    FlatParam param{FlatParam::Kind::kScalar, field->name, "", 0};
    if (type.base_type == flatbuffers::BASE_TYPE_STRING) {
      param.kind = FlatParam::Kind::kString;
      param.cpp_type = "absl::string_view";
    } else if (type.base_type == flatbuffers::BASE_TYPE_VECTOR) {
      const char* element = ScalarCppType(type.element);
      if (element == nullptr || type.enum_def != nullptr) return std::nullopt;
      param.kind = FlatParam::Kind::kScalarVector;
      param.cpp_type = absl::StrCat("absl::Span<const ", element, ">");
      param.element_cpp = element;
      param.element_size = flatbuffers::SizeOf(type.element);
    } else {
      const char* scalar = ScalarCppType(type.base_type);
      if (scalar == nullptr) return std::nullopt;
      param.cpp_type = scalar;
      if (type.enum_def != nullptr && !type.enum_def->is_union) {
        param.cpp_type =
            CppName(type.enum_def->defined_namespace->GetFullyQualifiedName(type.enum_def->name));
      }
      param.element_size = flatbuffers::SizeOf(type.base_type);
    }
    // Strings and vectors are absent unless (required); scalars are absent
    // only when declared `= null` (else they read as their default).
    param.optional =
        param.kind == FlatParam::Kind::kScalar ? field->IsOptional() : !field->IsRequired();
    if (param.optional) {
      param.cpp_type = absl::StrCat("std::optional<", param.cpp_type, ">");
      param.default_value = "std::nullopt";
    } else if (param.kind == FlatParam::Kind::kScalar) {
      param.default_value = ScalarDefault(*field, param.cpp_type);
    }
    params.push_back(std::move(param));
  }
  return params;
}

// What a schema's wire compatibility depends on, as text: tables and
// structs (sorted by name) with their fields in id order and types, then
// services with their methods. Doc comments and attributes other than the
// field ids do not count.
uint64_t StructuralHash(const flatbuffers::Parser& parser) {
  std::vector<std::string> parts;
  for (const flatbuffers::StructDef* def : parser.structs_.vec) {
    std::string part = absl::StrCat(def->fixed ? "struct " : "table ",
                                    def->defined_namespace->GetFullyQualifiedName(def->name), "{");
    for (const flatbuffers::FieldDef* field : def->fields.vec) {
      const flatbuffers::Type& type = field->value.type;
      absl::StrAppend(
          &part, field->name, ":", static_cast<int>(type.base_type), "/",
          static_cast<int>(type.element), type.struct_def != nullptr ? type.struct_def->name : "",
          type.enum_def != nullptr ? type.enum_def->name : "", field->deprecated ? "!" : "", ";");
    }
    parts.push_back(part + "}");
  }
  for (const flatbuffers::ServiceDef* def : parser.services_.vec) {
    std::string part =
        absl::StrCat("service ", def->defined_namespace->GetFullyQualifiedName(def->name), "{");
    for (const flatbuffers::RPCCall* call : def->calls.vec) {
      absl::StrAppend(&part, call->name, ":", call->request->name, "->", call->response->name, ";");
    }
    parts.push_back(part + "}");
  }
  std::sort(parts.begin(), parts.end());
  return rpc::Fnv1a64(absl::StrJoin(parts, "\n"));
}

absl::StatusOr<Schema> BuildModel(flatbuffers::Parser& parser, const std::string& path) {
  if (absl::Status valid = ValidateFieldAttributes(parser, path); !valid.ok()) return valid;
  Schema schema;
  schema.source = path;
  schema.stem = Stem(path);
  schema.flatc_header = schema.stem + "_generated.h";
  for (const flatbuffers::ServiceDef* service_def : parser.services_.vec) {
    // Services from included files belong to those files' generated headers.
    if (service_def->file != parser.file_being_parsed_ && !service_def->file.empty()) continue;
    Service service;
    service.name = service_def->name;
    service.fqn = service_def->defined_namespace->GetFullyQualifiedName(service_def->name);
    service.namespaces = service_def->defined_namespace->components;
    service.doc = service_def->doc_comment;
    service.interface_id = rpc::Fnv1a64(service.fqn);
    absl::flat_hash_map<uint32_t, std::string> ids;
    for (const flatbuffers::RPCCall* call : service_def->calls.vec) {
      Method method;
      method.name = call->name;
      method.doc = call->doc_comment;
      method.request_fqn =
          call->request->defined_namespace->GetFullyQualifiedName(call->request->name);
      method.response_fqn =
          call->response->defined_namespace->GetFullyQualifiedName(call->response->name);
      method.request_cpp = CppName(method.request_fqn);
      method.response_cpp = CppName(method.response_fqn);
      for (const auto& [key, value] : call->attributes.dict) {
        if (key == kOnewayAttribute) {
          method.oneway = true;
        } else if (key == "streaming") {
          return absl::InvalidArgumentError(
              absl::StrCat(Location(*service_def, path), ": ", service.name, ".", method.name,
                           ": streaming RPCs are not supported; use oneway calls or a callback"));
        }
      }
      method.method_id = rpc::Fnv1a32(method.name);
      method.signature = rpc::Fnv1a32(absl::StrCat(method.request_fqn, "->", method.response_fqn,
                                                   method.oneway ? ",oneway" : ""));
      if (auto [it, inserted] = ids.emplace(method.method_id, method.name); !inserted) {
        return absl::InvalidArgumentError(
            absl::StrCat(Location(*service_def, path), ": ", service.name, ": methods ", it->second,
                         " and ", method.name, " hash to the same id; rename one"));
      }
      method.flat_params = FlattenFields(*call->request);
      service.methods.push_back(std::move(method));
    }
    schema.services.push_back(std::move(service));
  }
  return schema;
}

}  // namespace

absl::StatusOr<Schema> ParseSchemaText(const std::string& text, const std::string& path,
                                       const std::vector<std::string>& include_dirs) {
  flatbuffers::IDLOptions options;
  options.lang_to_generate = flatbuffers::IDLOptions::kCpp;
  // Doc comments go into the binary schema, for `sluicectl describe`.
  options.binary_schema_comments = true;
  flatbuffers::Parser parser(options);
  std::vector<const char*> includes;
  for (const std::string& dir : include_dirs) includes.push_back(dir.c_str());
  // The schema's own directory resolves relative includes, as flatc does.
  const std::string own_dir =
      path.find('/') == std::string::npos ? "." : path.substr(0, path.find_last_of('/'));
  includes.push_back(own_dir.c_str());
  includes.push_back(nullptr);
  if (!parser.Parse(text.c_str(), includes.data(), path.c_str())) {
    // The parser's message already reads "file:line: col: error: ...".
    std::string message = parser.error_;
    while (!message.empty() && message.back() == '\n') message.pop_back();
    return absl::InvalidArgumentError(message);
  }
  absl::StatusOr<Schema> schema = BuildModel(parser, path);
  if (!schema.ok()) return schema;
  parser.Serialize();
  schema->binary_schema.assign(reinterpret_cast<const char*>(parser.builder_.GetBufferPointer()),
                               parser.builder_.GetSize());
  schema->structural_hash = StructuralHash(parser);
  return schema;
}

absl::StatusOr<Schema> ParseSchema(const std::string& path,
                                   const std::vector<std::string>& include_dirs) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open schema"));
  std::stringstream text;
  text << in.rdbuf();
  return ParseSchemaText(text.str(), path, include_dirs);
}

}  // namespace sluice::idlc
