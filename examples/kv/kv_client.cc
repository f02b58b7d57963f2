// kv_client: a short session with example.kv.KeyValueStore through the
// generated proxy, printing each call and its result.
//
//   kv_client [--socket=PATH] [--name=NAME] [--wait_ms=MS]
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "ipc/host/service_host.h"
#include "key_value_sluice.h"

ABSL_FLAG(std::string, socket, "", "Service manager socket (default: the usual path rules)");
ABSL_FLAG(std::string, name, "", "Service name (default: example.kv.KeyValueStore)");
ABSL_FLAG(int, wait_ms, 5000, "How long to wait for the service to appear");
ABSL_FLAG(std::string, key_prefix, "",
          "Put before every key, so several clients can share a store");

namespace {

using example::kv::KeyValueStoreProxy;

std::vector<uint8_t> Bytes(absl::string_view text) { return {text.begin(), text.end()}; }

std::string Text(const flatbuffers::Vector<uint8_t>* bytes) {
  return bytes == nullptr ? "" : std::string(bytes->begin(), bytes->end());
}

int Run() {
  auto manager = sluice::ServiceManager::Connect({.socket_path = absl::GetFlag(FLAGS_socket)});
  if (!manager.ok()) {
    std::fprintf(stderr, "kv_client: %s\n", manager.status().ToString().c_str());
    return 1;
  }
  const std::string name = absl::GetFlag(FLAGS_name).empty()
                               ? std::string(example::kv::KeyValueStoreInterface::kName)
                               : absl::GetFlag(FLAGS_name);
  if (absl::Status up = (*manager)->WaitFor(name, absl::Milliseconds(absl::GetFlag(FLAGS_wait_ms)));
      !up.ok()) {
    std::fprintf(stderr, "kv_client: %s\n", up.ToString().c_str());
    return 1;
  }
  // Connect says what this client was built from: the manager refuses a
  // server whose schema is incompatible, naming the method and field.
  auto kv = sluice::Connect<KeyValueStoreProxy>(**manager, name);
  if (!kv.ok()) {
    std::fprintf(stderr, "kv_client: %s\n", kv.status().ToString().c_str());
    return 1;
  }
  std::printf("kv_client: connected to %s, served by pid %d uid %d\n", name.c_str(),
              kv->server().pid, kv->server().uid);

  const std::string p = absl::GetFlag(FLAGS_key_prefix);
  int failures = 0;
  auto check = [&](bool ok, const std::string& line) {
    std::printf("  %s %s\n", ok ? "ok  " : "FAIL", line.c_str());
    failures += ok ? 0 : 1;
  };

  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {p + "fruit/apple", "red"}, {p + "fruit/banana", "yellow"}, {p + "veg/leek", "green"}}) {
    auto put = (*kv)->Put(key, Bytes(value));
    check(put.ok(), absl::StrCat("Put(", key, ", \"", value, "\") -> ",
                                 put.ok() ? (put->get()->replaced() ? "replaced" : "new")
                                          : put.status().ToString()));
  }
  auto get = (*kv)->Get(p + "fruit/banana");
  check(get.ok() && (*get)->found() && Text((*get)->value()) == "yellow",
        absl::StrCat("Get(fruit/banana) -> \"", get.ok() ? Text((*get)->value()) : "", "\""));

  auto list = (*kv)->List(p + "fruit/", 10);
  std::string keys;
  if (list.ok() && (*list)->entries() != nullptr) {
    for (const auto* entry : *(*list)->entries()) absl::StrAppend(&keys, entry->key()->str(), " ");
  }
  check(list.ok() && keys == absl::StrCat(p, "fruit/apple ", p, "fruit/banana "),
        absl::StrCat("List(fruit/) -> ", keys));

  auto deleted = (*kv)->Delete(p + "veg/leek");
  check(deleted.ok() && (*deleted)->deleted(), "Delete(veg/leek) -> deleted");
  auto missing = (*kv)->Get(p + "veg/leek");
  check(missing.ok() && !(*missing)->found(),
        absl::StrCat("Get(veg/leek) -> ", !missing.ok()         ? missing.status().ToString()
                                          : (*missing)->found() ? "found"
                                                                : "not found"));

  // A server-side error arrives with its code and message.
  auto empty_key = (*kv)->Put("", Bytes("x"));
  check(absl::IsInvalidArgument(empty_key.status()),
        absl::StrCat("Put(\"\") -> ", empty_key.status().ToString()));

  // A large value, written once, straight into the shared region.
  constexpr size_t kBig = 512 * 1024;
  auto big = (*kv)->Put(
      [&](flatbuffers::FlatBufferBuilder& fbb) {
        uint8_t* out = nullptr;
        auto value = fbb.CreateUninitializedVector(kBig, &out);
        for (size_t i = 0; i < kBig; ++i) out[i] = static_cast<uint8_t>(i);
        auto key = fbb.CreateString(p + "blob/big");
        return example::kv::CreatePutRequest(fbb, key, value);
      },
      {.size_hint = kBig + 256});
  auto big_back = (*kv)->Get(p + "blob/big");
  check(big.ok() && big_back.ok() && (*big_back)->value() != nullptr &&
            (*big_back)->value()->size() == kBig,
        absl::StrCat("Put/Get of a ", kBig / 1024, " KiB value written in place",
                     big.ok() ? "" : " -> Put: " + big.status().ToString(),
                     big_back.ok() ? "" : " -> Get: " + big_back.status().ToString()));

  // Oneway: returns as soon as it is queued; the server prints its audit log on exit.
  check((*kv)->Audit("demo session done").ok(), "Audit(\"demo session done\") (oneway)");

  std::printf("kv_client: %s\n", failures == 0 ? "all calls succeeded" : "some calls FAILED");
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return Run();
}
