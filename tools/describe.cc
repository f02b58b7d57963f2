#include "tools/describe.h"

#include <algorithm>
#include <cctype>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "flatbuffers/reflection.h"

namespace sluice::tools {
namespace {

std::string TypeName(const reflection::Schema& schema, const reflection::Type& type) {
  auto named = [&](reflection::BaseType base, int32_t index) -> std::string {
    if (base == reflection::Obj && index >= 0 &&
        static_cast<uint32_t>(index) < schema.objects()->size()) {
      return schema.objects()->Get(index)->name()->str();
    }
    if ((base == reflection::Union || flatbuffers::IsInteger(base)) && index >= 0 &&
        static_cast<uint32_t>(index) < schema.enums()->size()) {
      return schema.enums()->Get(index)->name()->str();
    }
    std::string name = reflection::EnumNameBaseType(base);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return name;
  };
  if (type.base_type() == reflection::Vector) {
    return absl::StrCat("[", named(type.element(), type.index()), "]");
  }
  return named(type.base_type(), type.index());
}

std::string Attributes(
    const flatbuffers::Vector<flatbuffers::Offset<reflection::KeyValue>>* attributes) {
  if (attributes == nullptr || attributes->size() == 0) return "";
  std::string out = " (";
  for (uint32_t i = 0; i < attributes->size(); ++i) {
    const reflection::KeyValue* kv = attributes->Get(i);
    absl::StrAppend(&out, i == 0 ? "" : ", ", kv->key()->str());
    // FlatBuffers stores a bare attribute (`(oneway)`) with the value "0".
    if (kv->value() != nullptr && kv->value()->size() > 0 && kv->value()->str() != "0") {
      absl::StrAppend(&out, ": \"", kv->value()->str(), "\"");
    }
  }
  return out + ")";
}

void Comment(std::string& out,
             const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>* doc,
             absl::string_view indent) {
  if (doc == nullptr) return;
  for (const flatbuffers::String* line : *doc)
    absl::StrAppend(&out, indent, "//", line->str(), "\n");
}

}  // namespace

absl::StatusOr<std::string> DescribeInterface(absl::string_view bfbs, absl::string_view interface) {
  const reflection::Schema& schema = *reflection::GetSchema(bfbs.data());
  const reflection::Service* service = nullptr;
  if (schema.services() != nullptr) {
    for (const reflection::Service* s : *schema.services()) {
      if (absl::string_view(s->name()->c_str(), s->name()->size()) == interface) service = s;
    }
  }
  if (service == nullptr) {
    return absl::NotFoundError(absl::StrCat("the schema declares no service '", interface, "'"));
  }
  std::string out;
  Comment(out, service->documentation(), "");
  absl::StrAppend(&out, "service ", interface, Attributes(service->attributes()), " {\n");
  // Tables to print: every request and response, then what they contain.
  std::vector<const reflection::Object*> pending;
  std::set<std::string> seen;
  auto want = [&](const reflection::Object* object) {
    if (object != nullptr && seen.insert(object->name()->str()).second) pending.push_back(object);
  };
  if (service->calls() != nullptr) {
    for (const reflection::RPCCall* call : *service->calls()) {
      Comment(out, call->documentation(), "  ");
      absl::StrAppend(&out, "  ", call->name()->str(), "(", call->request()->name()->str(),
                      "): ", call->response()->name()->str(), Attributes(call->attributes()),
                      ";\n");
      want(call->request());
      want(call->response());
    }
  }
  absl::StrAppend(&out, "}\n");
  for (size_t i = 0; i < pending.size(); ++i) {
    const reflection::Object* object = pending[i];
    absl::StrAppend(&out, "\n");
    Comment(out, object->documentation(), "");
    absl::StrAppend(&out, object->is_struct() ? "struct " : "table ", object->name()->str(),
                    Attributes(object->attributes()), " {\n");
    // Fields are stored sorted by name; print them in id (wire) order.
    std::vector<const reflection::Field*> fields(object->fields()->begin(),
                                                 object->fields()->end());
    std::sort(
        fields.begin(), fields.end(),
        [](const reflection::Field* a, const reflection::Field* b) { return a->id() < b->id(); });
    for (const reflection::Field* field : fields) {
      if (field->type()->base_type() == reflection::UType) continue;  // A union's hidden tag.
      Comment(out, field->documentation(), "  ");
      absl::StrAppend(&out, "  ", field->name()->str(), ": ", TypeName(schema, *field->type()),
                      field->deprecated() ? " (deprecated)" : "", Attributes(field->attributes()),
                      ";  // id ", field->id(), "\n");
      const reflection::Type& type = *field->type();
      const int32_t index = type.index();
      const bool object_type =
          type.base_type() == reflection::Obj ||
          (type.base_type() == reflection::Vector && type.element() == reflection::Obj);
      if (object_type && index >= 0 && static_cast<uint32_t>(index) < schema.objects()->size()) {
        want(schema.objects()->Get(index));
      }
    }
    absl::StrAppend(&out, "}\n");
  }
  return out;
}

}  // namespace sluice::tools
