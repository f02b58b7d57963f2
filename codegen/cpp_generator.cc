#include "codegen/cpp_generator.h"

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "codegen/schema_generator.h"

namespace sluice::idlc {
namespace {

// Accumulates generated text with indentation.
class Writer {
 public:
  void Line(absl::string_view text = "") {
    if (!text.empty()) absl::StrAppend(&out_, std::string(indent_ * 2, ' '), text);
    out_ += '\n';
  }
  void Indent() { ++indent_; }
  void Outdent() { --indent_; }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
  int indent_ = 0;
};

// The one naming authority for generated identifiers.
struct Namer {
  static std::string Interface(const Service& s) { return s.name + "Interface"; }
  static std::string Proxy(const Service& s) { return s.name + "Proxy"; }
  static std::string Stub(const Service& s) { return s.name + "Stub"; }
  static std::string MethodConstant(const Method& m) { return "k" + m.name; }
  // Generated locals end in "_" and parameters (field names) never do
  // (FlattenFields), so the two cannot collide.
  static std::string Local(absl::string_view field) { return absl::StrCat(field, "_offset_"); }
  static std::string Guard(const Schema& schema) {
    std::string guard = "SLUICE_GENERATED_" + absl::AsciiStrToUpper(schema.stem) + "_SLUICE_H_";
    for (char& c : guard) {
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    }
    return guard;
  }
};

void Doc(Writer& w, const std::vector<std::string>& doc) {
  for (const std::string& line : doc) w.Line(absl::StrCat("//", line));
}

std::string ResponseType(const Method& m) {
  return absl::StrCat("::sluice::rpc::Response<", m.response_cpp, ">");
}

std::string ResultType(const Method& m) {
  return m.oneway ? "absl::Status" : absl::StrCat("absl::StatusOr<", ResponseType(m), ">");
}

std::string FullMethodName(const Service& s, const Method& m) {
  return absl::StrCat(s.fqn, ".", m.name);
}

void GenerateInterface(Writer& w, const Schema& schema, const Service& s) {
  w.Line(absl::StrCat("// Identity of ", s.fqn, " on the wire (ipc/rpc/wire.h)."));
  w.Line(absl::StrCat("struct ", Namer::Interface(s), " {"));
  w.Indent();
  w.Line(absl::StrCat("static constexpr absl::string_view kName = \"", s.fqn, "\";"));
  w.Line(absl::StrFormat("static constexpr uint64_t kInterfaceId = 0x%016xull;", s.interface_id));
  w.Line("// The schema it was generated from: registration and Lookup carry it, so the");
  w.Line("// service manager can describe the service and check clients at connect.");
  w.Line("static constexpr ::sluice::rpc::InterfaceSchema kSchema{");
  w.Line(absl::StrCat("    ::", SchemaNamespace(schema),
                      "::kBinarySchema, ::", SchemaNamespace(schema), "::kStructuralHash};"));
  w.Line(absl::StrCat("static constexpr size_t kMethodCount = ", s.methods.size(), ";"));
  for (const Method& m : s.methods) {
    w.Line(absl::StrFormat("// %s(%s) -> %s%s", m.name, m.request_fqn, m.response_fqn,
                           m.oneway ? ", oneway" : ""));
    w.Line(absl::StrFormat("static constexpr uint64_t %s = 0x%08xull << 32 | 0x%08xu;",
                           Namer::MethodConstant(m), m.method_id, m.signature));
  }
  w.Outdent();
  w.Line("};");
  w.Line();
}

// A member of the parameter's value, through the std::optional when it is
// one (used only where it holds a value): "key.size()" or "note->size()".
std::string Member(const FlatParam& p, absl::string_view member) {
  return absl::StrCat(p.field, p.optional ? "->" : ".", member);
}

// How a proxy method calls its method: the header it sends.
std::string HeaderOf(const Method& m) {
  return absl::StrCat(
      "::sluice::CallHeader{Interface::kInterfaceId, Interface::", Namer::MethodConstant(m), "}");
}

void GenerateFlatOverload(Writer& w, const Service& s, const Method& m) {
  const std::vector<FlatParam>& params = *m.flat_params;
  // C++ takes default arguments on a trailing run of parameters only: the
  // defaults after the last parameter without one.
  size_t first_default = params.size();
  while (first_default > 0 && !params[first_default - 1].default_value.empty()) --first_default;
  std::vector<std::string> decl;
  for (size_t i = 0; i < params.size(); ++i) {
    const FlatParam& p = params[i];
    decl.push_back(absl::StrCat(p.cpp_type, " ", p.field,
                                i >= first_default ? absl::StrCat(" = ", p.default_value) : ""));
  }
  decl.push_back("const ::sluice::rpc::CallOptions& options = {}");
  Doc(w, m.doc);
  w.Line(absl::StrCat(ResultType(m), " ", m.name, "(", absl::StrJoin(decl, ", "), ") {"));
  w.Indent();
  // Table, vtable and alignment overhead, plus what each argument brings.
  std::string hint = absl::StrCat("size_t hint_ = 64 + ", 8 * params.size());
  for (const FlatParam& p : params) {
    std::string size;
    if (p.kind == FlatParam::Kind::kString) size = Member(p, "size()");
    if (p.kind == FlatParam::Kind::kScalarVector) {
      size = absl::StrCat(Member(p, "size()"), " * ", p.element_size);
    }
    if (size.empty()) continue;
    absl::StrAppend(&hint, " + ",
                    p.optional ? absl::StrCat("(", p.field, " ? ", size, " : 0)") : size);
  }
  w.Line(hint + ";");
  w.Line("::sluice::rpc::CallOptions sized_ = options;");
  w.Line("if (sized_.size_hint < hint_) sized_.size_hint = hint_;");
  // Descriptors and references travel beside the message; the fields hold
  // their indices. Made before the build, which may run twice.
  bool attaches = false;
  for (const FlatParam& p : params) {
    attaches = attaches || p.kind == FlatParam::Kind::kObject || p.kind == FlatParam::Kind::kFd ||
               p.kind == FlatParam::Kind::kBlob;
  }
  if (attaches) {
    // Local objects are lent by handle when the proxy's connection carries
    // them: for a synchronous call until it returns, for a oneway one under
    // a ticket until the receiver has served it.
    w.Line(m.oneway
               ? "::sluice::rpc::Attachments attachments_(*this, options.fds, /*oneway=*/true);"
               : "::sluice::rpc::Attachments attachments_(*this, options.fds);");
    for (const FlatParam& p : params) {
      if (p.kind == FlatParam::Kind::kObject) {
        w.Line(absl::StrFormat(
            "auto %s = attachments_.AddObject(%s, 0x%016xull /* %s */, options.deadline);",
            Namer::Local(p.field), p.field, p.interface_id, p.interface_fqn));
      } else if (p.kind == FlatParam::Kind::kFd) {
        w.Line(
            absl::StrCat("auto ", Namer::Local(p.field), " = attachments_.AddFd(", p.field, ");"));
      } else if (p.kind == FlatParam::Kind::kBlob) {
        w.Line(absl::StrCat("auto ", Namer::Local(p.field), " = attachments_.AddBlob(", p.field,
                            ");"));
      } else {
        continue;
      }
      w.Line(absl::StrCat("if (!", Namer::Local(p.field), ".ok()) return ", Namer::Local(p.field),
                          ".status();"));
    }
    w.Line("sized_.fds = attachments_.fds();");
  }
  // A oneway call's loans ride on its request word: it goes out through
  // InvokeOneway with them rather than through the build overload.
  const bool lends_oneway = attaches && m.oneway;
  w.Line(lends_oneway ? std::string("return InvokeOneway(") : absl::StrCat("return ", m.name, "("));
  w.Indent();
  if (lends_oneway) w.Line(absl::StrCat(HeaderOf(m), ", \"", FullMethodName(s, m), "\", 0,"));
  w.Line("[&](::flatbuffers::FlatBufferBuilder& fbb_) {");
  w.Indent();
  for (const FlatParam& p : params) {
    std::string create;
    std::string offset_type;
    if (p.kind == FlatParam::Kind::kString) {
      create =
          absl::StrCat("fbb_.CreateString(", Member(p, "data()"), ", ", Member(p, "size()"), ")");
      offset_type = "::flatbuffers::Offset<::flatbuffers::String>";
    } else if (p.kind == FlatParam::Kind::kScalarVector) {
      create =
          absl::StrCat("fbb_.CreateVector(", Member(p, "data()"), ", ", Member(p, "size()"), ")");
      offset_type =
          absl::StrCat("::flatbuffers::Offset<::flatbuffers::Vector<", p.element_cpp, ">>");
    } else {
      continue;
    }
    if (p.optional) {
      // A null offset: the builder's add_ leaves the field out.
      w.Line(absl::StrCat(offset_type, " ", Namer::Local(p.field), ";"));
      w.Line(absl::StrCat("if (", p.field, ") ", Namer::Local(p.field), " = ", create, ";"));
    } else {
      w.Line(absl::StrCat("auto ", Namer::Local(p.field), " = ", create, ";"));
    }
  }
  w.Line(absl::StrCat(m.request_cpp, "Builder builder_(fbb_);"));
  for (const FlatParam& p : params) {
    std::string value = Namer::Local(p.field);
    if (p.kind == FlatParam::Kind::kScalar) value = p.optional ? "*" + p.field : p.field;
    if (p.kind == FlatParam::Kind::kObject || p.kind == FlatParam::Kind::kFd ||
        p.kind == FlatParam::Kind::kBlob) {
      value = absl::StrCat("*", value);
    }
    const std::string add = absl::StrCat("builder_.add_", p.field, "(", value, ");");
    // An optional scalar's add_ always writes: call it only with a value.
    w.Line(p.kind == FlatParam::Kind::kScalar && p.optional
               ? absl::StrCat("if (", p.field, ") ", add)
               : add);
  }
  w.Line("return builder_.Finish();");
  w.Outdent();
  w.Line("},");
  w.Line(lends_oneway ? "sized_, &attachments_);" : "sized_);");
  w.Outdent();
  w.Outdent();
  w.Line("}");
}

void GenerateProxy(Writer& w, const Service& s) {
  Doc(w, s.doc);
  w.Line(absl::StrCat("// Client side of ", s.fqn, ": typed calls over a ClientChannel."));
  w.Line("// Requests are built in place in the channel's region; responses are verified.");
  w.Line(absl::StrCat("class ", Namer::Proxy(s), " : public ::sluice::rpc::ProxyBase {"));
  w.Line(" public:");
  w.Indent();
  w.Line(absl::StrCat("using Interface = ", Namer::Interface(s), ";"));
  w.Line("using ProxyBase::ProxyBase;");
  for (const Method& m : s.methods) {
    w.Line();
    if (m.flat_params) GenerateFlatOverload(w, s, m);
    w.Line(absl::StrCat("// ", m.name, ", with the request built by `build(fbb) -> Offset<",
                        m.request_fqn, ">`"));
    w.Line("// directly in region memory (e.g. CreateUninitializedVector for large fields).");
    w.Line("// `build` may run more than once if options.size_hint is too small.");
    w.Line("template <typename Build>");
    w.Line("  requires std::is_invocable_v<Build&, ::flatbuffers::FlatBufferBuilder&>");
    w.Line(absl::StrCat(ResultType(m), " ", m.name,
                        "(Build&& build, const ::sluice::rpc::CallOptions& options = {}) {"));
    w.Indent();
    const std::string header = HeaderOf(m);
    if (m.oneway) {
      w.Line(absl::StrCat("return InvokeOneway(", header, ", \"", FullMethodName(s, m),
                          "\", 0, build, options);"));
    } else {
      w.Line(absl::StrCat("return Invoke<", m.response_cpp, ">(", header, ", \"",
                          FullMethodName(s, m), "\", 0, build, options);"));
    }
    w.Outdent();
    w.Line("}");
  }
  w.Outdent();
  w.Line("};");
  w.Line();
}

void GenerateStub(Writer& w, const Service& s) {
  Doc(w, s.doc);
  w.Line(absl::StrCat("// Server side of ", s.fqn, ": derive, implement each method, and serve"));
  w.Line("// it with ::sluice::ServiceHost::Publish (or ::sluice::rpc::ServerPool::Add");
  w.Line("// for a channel of your own). Methods may run on several threads at once,");
  w.Line("// also for one channel.");
  w.Line(absl::StrCat("class ", Namer::Stub(s), " : public ::sluice::rpc::ServiceStub {"));
  w.Line(" public:");
  w.Indent();
  w.Line(absl::StrCat("using Interface = ", Namer::Interface(s), ";"));
  w.Line();
  w.Line("absl::string_view service_name() const override { return Interface::kName; }");
  w.Line("uint64_t interface_id() const override { return Interface::kInterfaceId; }");
  w.Line("::sluice::rpc::InterfaceSchema schema() const override { return Interface::kSchema; }");
  for (const Method& m : s.methods) {
    w.Line();
    Doc(w, m.doc);
    if (m.oneway) {
      w.Line("// Oneway: the caller does not wait; a returned error is dropped.");
      w.Line(absl::StrCat("virtual absl::Status ", m.name,
                          "(const ::sluice::rpc::CallContext& context, const ", m.request_cpp,
                          "& request) = 0;"));
    } else {
      w.Line("// Build the response in `reply` (region memory) and return its root, or an error.");
      w.Line(absl::StrCat("virtual absl::StatusOr<::flatbuffers::Offset<", m.response_cpp, ">> ",
                          m.name, "("));
      w.Line(absl::StrCat("    const ::sluice::rpc::CallContext& context, const ", m.request_cpp,
                          "& request,"));
      w.Line("    ::flatbuffers::FlatBufferBuilder& reply) = 0;");
    }
  }
  w.Line();
  w.Line("absl::Status Dispatch(::sluice::IncomingCall& call,");
  w.Line("                      const ::sluice::rpc::CallContext& context) final {");
  w.Indent();
  w.Line("if (::sluice::rpc::TargetInterface(call, context) != Interface::kInterfaceId) {");
  w.Line(
      "  return ::sluice::rpc::RejectInterface(call, Interface::kName, Interface::kInterfaceId);");
  w.Line("}");
  w.Line("switch (::sluice::rpc::MethodIdOf(call.header().method)) {");
  w.Indent();
  for (size_t i = 0; i < s.methods.size(); ++i) {
    const Method& m = s.methods[i];
    const std::string constant = absl::StrCat("Interface::", Namer::MethodConstant(m));
    w.Line(absl::StrCat("case ::sluice::rpc::MethodIdOf(", constant, "):"));
    w.Indent();
    if (m.oneway) {
      w.Line(absl::StrCat("return ::sluice::rpc::HandleOneway<", m.request_cpp, ">("));
      w.Line(absl::StrCat("    call, context, ", constant, ", \"", FullMethodName(s, m),
                          "\", stats_[", i, "],"));
      w.Line(absl::StrCat("    [this](const auto& c, const auto& r) { return ", m.name,
                          "(c, r); });"));
    } else {
      w.Line(absl::StrCat("return ::sluice::rpc::HandleCall<", m.request_cpp, ", ", m.response_cpp,
                          ">("));
      w.Line(absl::StrCat("    call, context, ", constant, ", \"", FullMethodName(s, m),
                          "\", stats_[", i, "],"));
      w.Line(absl::StrCat("    [this](const auto& c, const auto& r, auto& b) { return ", m.name,
                          "(c, r, b); });"));
    }
    w.Outdent();
  }
  w.Line("default:");
  w.Line("  return ::sluice::rpc::RejectMethod(call, Interface::kName);");
  w.Outdent();
  w.Line("}");
  w.Outdent();
  w.Line("}");
  w.Line();
  w.Line("// Counters for method `index` (declaration order).");
  w.Line("const ::sluice::rpc::MethodStats& stats(size_t index) const { return stats_[index]; }");
  w.Outdent();
  w.Line();
  w.Line(" private:");
  w.Line(absl::StrCat("  ::sluice::rpc::MethodStats stats_[", std::max<size_t>(1, s.methods.size()),
                      "];"));
  w.Line("};");
  w.Line();
}

}  // namespace

std::string CppHeaderName(const Schema& schema) { return schema.stem + "_sluice.h"; }

std::string GenerateCppHeader(const Schema& schema) {
  Writer w;
  const std::string source = schema.source.substr(schema.source.find_last_of('/') + 1);
  w.Line(absl::StrCat("// Generated by sluice-idlc from ", source, ". Do not edit."));
  w.Line(absl::StrCat("#ifndef ", Namer::Guard(schema)));
  w.Line(absl::StrCat("#define ", Namer::Guard(schema)));
  w.Line();
  w.Line("#include <cstddef>");
  w.Line("#include <cstdint>");
  w.Line("#include <limits>");
  w.Line("#include <optional>");
  w.Line("#include <type_traits>");
  w.Line();
  w.Line("#include \"absl/status/status.h\"");
  w.Line("#include \"absl/status/statusor.h\"");
  w.Line("#include \"absl/strings/string_view.h\"");
  w.Line("#include \"absl/types/span.h\"");
  w.Line("#include \"ipc/rpc/object.h\"");
  w.Line("#include \"ipc/rpc/proxy.h\"");
  w.Line("#include \"ipc/rpc/stub.h\"");
  w.Line(absl::StrCat("#include \"", schema.flatc_header, "\""));
  w.Line(absl::StrCat("#include \"", SchemaHeaderName(schema), "\""));
  for (const Service& s : schema.services) {
    w.Line();
    for (const std::string& ns : s.namespaces) w.Line(absl::StrCat("namespace ", ns, " {"));
    w.Line();
    GenerateInterface(w, schema, s);
    GenerateProxy(w, s);
    GenerateStub(w, s);
    for (auto it = s.namespaces.rbegin(); it != s.namespaces.rend(); ++it) {
      w.Line(absl::StrCat("}  // namespace ", *it));
    }
  }
  w.Line();
  w.Line(absl::StrCat("#endif  // ", Namer::Guard(schema)));
  return w.Take();
}

}  // namespace sluice::idlc
