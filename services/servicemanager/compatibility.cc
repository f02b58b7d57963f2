#include "services/servicemanager/compatibility.h"

#include <set>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace sluice {
namespace {

absl::string_view View(const flatbuffers::String* s) {
  return s == nullptr ? absl::string_view() : absl::string_view(s->c_str(), s->size());
}

const reflection::Service* FindService(const reflection::Schema& schema, absl::string_view name) {
  if (schema.services() == nullptr) return nullptr;
  for (const reflection::Service* s : *schema.services()) {
    if (View(s->name()) == name) return s;
  }
  return nullptr;
}

const reflection::Object* ObjectAt(const reflection::Schema& schema, int32_t index) {
  if (index < 0 || schema.objects() == nullptr ||
      static_cast<uint32_t>(index) >= schema.objects()->size()) {
    return nullptr;
  }
  return schema.objects()->Get(index);
}

std::string TypeText(const reflection::Schema& schema, const reflection::Type& type) {
  auto named = [&](reflection::BaseType base) -> std::string {
    if (base == reflection::Obj) {
      const reflection::Object* object = ObjectAt(schema, type.index());
      return object == nullptr ? "?" : object->name()->str();
    }
    std::string name = reflection::EnumNameBaseType(base);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return name;
  };
  if (type.base_type() == reflection::Vector) return absl::StrCat("[", named(type.element()), "]");
  return named(type.base_type());
}

// Compares one table (or struct) of each schema, and what they contain.
class Comparer {
 public:
  Comparer(const reflection::Schema& server, const reflection::Schema& client)
      : server_(server), client_(client) {}

  // `where` names the place for messages ("…Put: request").
  absl::Status Compare(const reflection::Object& s, const reflection::Object& c,
                       const std::string& where) {
    if (View(s.name()) != View(c.name())) {
      return absl::FailedPreconditionError(
          absl::StrCat(where, " table is ", View(s.name()), " in the server's schema but ",
                       View(c.name()), " in the client's (renamed)"));
    }
    if (!compared_.insert(std::string(View(s.name()))).second) return absl::OkStatus();
    if (s.is_struct() != c.is_struct() || (s.is_struct() && s.bytesize() != c.bytesize())) {
      return absl::FailedPreconditionError(absl::StrCat(where, " struct ", View(s.name()),
                                                        " has another layout in the client's "
                                                        "schema"));
    }
    for (const reflection::Field* sf : *s.fields()) {
      const reflection::Field* cf = nullptr;
      for (const reflection::Field* f : *c.fields()) {
        if (f->id() == sf->id()) cf = f;
      }
      if (cf == nullptr) continue;  // Added on the server's side: compatible.
      const std::string field = absl::StrCat(View(s.name()), ".", View(sf->name()));
      if (View(sf->name()) != View(cf->name())) {
        return absl::FailedPreconditionError(
            absl::StrCat(where, " field id ", sf->id(), " of ", View(s.name()), " is ",
                         View(sf->name()), " in the server's schema but ", View(cf->name()),
                         " in the client's (a field removed or reordered)"));
      }
      const reflection::Type& st = *sf->type();
      const reflection::Type& ct = *cf->type();
      const std::string s_text = TypeText(server_, st), c_text = TypeText(client_, ct);
      if (st.base_type() != ct.base_type() || st.element() != ct.element() || s_text != c_text) {
        return absl::FailedPreconditionError(
            absl::StrCat(where, " field ", field, " (id ", sf->id(), ") is ", s_text,
                         " in the server's schema but ", c_text, " in the client's"));
      }
      if (s.is_struct() && sf->offset() != cf->offset()) {
        return absl::FailedPreconditionError(
            absl::StrCat(where, " field ", field, " moved within its struct"));
      }
      const bool nested = st.base_type() == reflection::Obj ||
                          (st.base_type() == reflection::Vector && st.element() == reflection::Obj);
      if (nested) {
        const reflection::Object* so = ObjectAt(server_, st.index());
        const reflection::Object* co = ObjectAt(client_, ct.index());
        if (so != nullptr && co != nullptr) {
          if (absl::Status ok = Compare(*so, *co, absl::StrCat(where, " (in ", field, ")"));
              !ok.ok()) {
            return ok;
          }
        }
      }
    }
    return absl::OkStatus();
  }

 private:
  const reflection::Schema& server_;
  const reflection::Schema& client_;
  std::set<std::string> compared_;  // Tables already checked (recursion, cycles).
};

}  // namespace

absl::Status CheckCompatible(const reflection::Schema& server, const reflection::Schema& client,
                             absl::string_view interface) {
  const reflection::Service* s = FindService(server, interface);
  const reflection::Service* c = FindService(client, interface);
  if (s == nullptr || c == nullptr) {
    return absl::NotFoundError(absl::StrCat("the ", s == nullptr ? "server's" : "client's",
                                            " schema declares no service ", interface));
  }
  if (s->calls() == nullptr || c->calls() == nullptr) return absl::OkStatus();
  for (const reflection::RPCCall* call : *c->calls()) {
    const reflection::RPCCall* served = nullptr;
    for (const reflection::RPCCall* candidate : *s->calls()) {
      if (View(candidate->name()) == View(call->name())) served = candidate;
    }
    if (served == nullptr) continue;  // Calls to it fail UNIMPLEMENTED, on their own.
    const std::string where = absl::StrCat(interface, ".", View(call->name()), ":");
    Comparer comparer(server, client);
    if (absl::Status ok =
            comparer.Compare(*served->request(), *call->request(), where + " request");
        !ok.ok()) {
      return ok;
    }
    Comparer responses(server, client);
    if (absl::Status ok =
            responses.Compare(*served->response(), *call->response(), where + " response");
        !ok.ok()) {
      return ok;
    }
  }
  return absl::OkStatus();
}

}  // namespace sluice
