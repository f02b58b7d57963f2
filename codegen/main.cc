// sluice-idlc: compiles FlatBuffers rpc_service definitions into Sluice
// proxies and stubs.
//
//   sluice-idlc [-I DIR]... -o OUT_DIR SCHEMA.fbs...
//
// Writes OUT_DIR/<stem>_sluice.h (proxies, stubs) and OUT_DIR/<stem>_schema.h
// (the embedded binary schema) per schema, next to flatc's <stem>_generated.h
// (run flatc --cpp on the same schema). Exit status: 0 on
// success, 1 on a schema error (printed as file:line: message), 2 on usage
// or I/O errors.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "codegen/cpp_generator.h"
#include "codegen/front_end.h"
#include "codegen/schema_generator.h"

namespace {

int Usage() {
  std::fprintf(stderr, "usage: sluice-idlc [-I DIR]... -o OUT_DIR SCHEMA.fbs...\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> include_dirs;
  std::vector<std::string> schemas;
  std::string out_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "-I" || arg == "-o") && i + 1 < argc) {
      (arg == "-I" ? include_dirs.emplace_back() : out_dir) = argv[++i];
    } else if (arg.rfind("-I", 0) == 0 && arg.size() > 2) {
      include_dirs.push_back(arg.substr(2));
    } else if (arg == "-h" || arg == "--help") {
      Usage();
      return 0;
    } else if (!arg.empty() && arg[0] == '-') {
      return Usage();
    } else {
      schemas.push_back(arg);
    }
  }
  if (out_dir.empty() || schemas.empty()) return Usage();
  for (const std::string& path : schemas) {
    auto schema = sluice::idlc::ParseSchema(path, include_dirs);
    if (!schema.ok()) {
      std::fprintf(stderr, "%s\n", std::string(schema.status().message()).c_str());
      return schema.status().code() == absl::StatusCode::kNotFound ? 2 : 1;
    }
    const std::pair<std::string, std::string> files[] = {
        {sluice::idlc::CppHeaderName(*schema), sluice::idlc::GenerateCppHeader(*schema)},
        {sluice::idlc::SchemaHeaderName(*schema), sluice::idlc::GenerateSchemaHeader(*schema)},
    };
    for (const auto& [name, text] : files) {
      const std::string out_path = out_dir + "/" + name;
      std::ofstream out(out_path, std::ios::trunc);
      out << text;
      if (!out.good()) {
        std::fprintf(stderr, "%s: cannot write\n", out_path.c_str());
        return 2;
      }
    }
  }
  return 0;
}
