// sluicectl: inspect the service manager from a shell.
//
//   sluicectl [--socket=PATH] [--json] list [PREFIX]
//   sluicectl [--socket=PATH] [--json] wait NAME [--timeout=10s]
//   sluicectl [--socket=PATH] [--json] info NAME
//   sluicectl [--socket=PATH] describe NAME
//       prints the interface NAME registered (methods, tables, attributes)
//   sluicectl [--socket=PATH] call NAME METHOD JSON [--schema=FILE.fbs] [--interface=FQN]
//             [--include_dirs=DIR,...] [--timeout=10s]
//       calls METHOD on the service registered as NAME with a JSON request and
//       prints the JSON response (the schema translates both ways: the one
//       the service registered, or --schema)
//
// Exit codes (docs/servicemanager.md): 0 ok, 1 other error, 2 usage,
// 3 no service manager (UNAVAILABLE), 4 NOT_FOUND, 5 PERMISSION_DENIED,
// 6 timed out (DEADLINE_EXCEEDED).
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "ipc/service/service_manager.h"
#include "tools/describe.h"
#include "tools/json_call.h"

ABSL_FLAG(std::string, socket, "",
          "Service manager socket; default from SLUICE_SERVICEMANAGER / XDG_RUNTIME_DIR");
ABSL_FLAG(bool, json, false, "Print results (and errors) as one JSON object on stdout");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(10),
          "For wait and call: how long ('inf' forever)");
ABSL_FLAG(std::string, schema, "",
          "For call: the .fbs that declares the service (default: the schema it registered)");
ABSL_FLAG(std::string, interface, "",
          "For call: the service's full name, if the schema has several with METHOD");
ABSL_FLAG(std::vector<std::string>, include_dirs, {}, "For call: the schema's include dirs");

namespace {

constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnavailable = 3;
constexpr int kExitNotFound = 4;
constexpr int kExitPermissionDenied = 5;
constexpr int kExitDeadline = 6;

std::string JsonString(absl::string_view text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string JsonCreds(const sluice::PeerCredentials& c) {
  return absl::StrCat("{\"pid\":", c.pid, ",\"uid\":", c.uid, ",\"gid\":", c.gid, "}");
}

std::string JsonEntry(const sluice::ServiceEntry& e) {
  return absl::StrCat("{\"name\":", JsonString(e.name), ",\"owner\":", JsonCreds(e.owner),
                      ",\"connections\":", e.connections,
                      ",\"total_connections\":", e.total_connections,
                      ",\"geometry\":{\"slot_count\":", e.geometry.slot_count,
                      ",\"request_arena_size\":", e.geometry.request_arena_size,
                      ",\"reply_arena_size\":", e.geometry.reply_arena_size, "}}");
}

int Fail(const absl::Status& status, bool json) {
  std::fprintf(stderr, "sluicectl: %s\n", status.ToString().c_str());
  if (json) {
    std::printf("{\"error\":{\"code\":%s,\"message\":%s}}\n",
                JsonString(absl::StatusCodeToString(status.code())).c_str(),
                JsonString(status.message()).c_str());
  }
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      return kExitUnavailable;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kPermissionDenied:
      return kExitPermissionDenied;
    case absl::StatusCode::kDeadlineExceeded:
      return kExitDeadline;
    default:
      return kExitError;
  }
}

int Usage() {
  std::fprintf(stderr,
               "usage: sluicectl [--socket=PATH] [--json] list [PREFIX]\n"
               "       sluicectl [--socket=PATH] [--json] wait NAME [--timeout=10s]\n"
               "       sluicectl [--socket=PATH] [--json] info NAME\n"
               "       sluicectl [--socket=PATH] describe NAME\n"
               "       sluicectl [--socket=PATH] call NAME METHOD JSON [--schema=FILE.fbs]\n"
               "                 [--interface=FQN] [--include_dirs=DIR,...] [--timeout=10s]\n");
  return kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Inspect the Sluice service manager: list, wait NAME, info NAME");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  const bool json = absl::GetFlag(FLAGS_json);
  if (positional.size() < 2) return Usage();
  const std::string command = positional[1];
  const std::string arg = positional.size() > 2 ? positional[2] : "";
  if (command == "call") {
    if (positional.size() != 5) return Usage();
  } else {
    if (positional.size() > 3 || (command != "list" && arg.empty())) return Usage();
    if (command != "list" && command != "wait" && command != "info" && command != "describe") {
      return Usage();
    }
  }

  sluice::ServiceManagerOptions options;
  options.socket_path = absl::GetFlag(FLAGS_socket);
  auto manager = sluice::ServiceManager::Connect(options);
  if (!manager.ok()) return Fail(manager.status(), json);

  if (command == "call") {
    auto connection = (*manager)->Lookup(arg);
    if (!connection.ok()) return Fail(connection.status(), json);
    sluice::tools::JsonCallRequest request;
    request.schema_path = absl::GetFlag(FLAGS_schema);
    if (request.schema_path.empty()) {
      // No local schema: use the one the service registered.
      auto description = (*manager)->Describe(arg);
      if (!description.ok()) {
        return Fail(absl::Status(description.status().code(),
                                 absl::StrCat(description.status().message(),
                                              " (pass --schema=FILE.fbs to call it anyway)")),
                    json);
      }
      request.binary_schema = std::move(description->schema);
      request.interface = description->interface;
    }
    request.include_dirs = absl::GetFlag(FLAGS_include_dirs);
    if (!absl::GetFlag(FLAGS_interface).empty()) request.interface = absl::GetFlag(FLAGS_interface);
    request.method = positional[3];
    request.json = positional[4];
    request.deadline = absl::Now() + absl::GetFlag(FLAGS_timeout);
    auto response = sluice::tools::CallWithJson(*connection->channel, request);
    if (!response.ok()) return Fail(response.status(), json);
    std::fputs(response->c_str(), stdout);
    return kExitOk;
  }

  if (command == "describe") {
    auto description = (*manager)->Describe(arg);
    if (!description.ok()) return Fail(description.status(), json);
    auto text = sluice::tools::DescribeInterface(description->schema, description->interface);
    if (!text.ok()) return Fail(text.status(), json);
    std::printf("// %s: %s (schema hash 0x%016llx)\n%s", arg.c_str(),
                description->interface.c_str(),
                static_cast<unsigned long long>(description->schema_hash), text->c_str());
    return kExitOk;
  }

  if (command == "list") {
    auto list = (*manager)->List(arg);
    if (!list.ok()) return Fail(list.status(), json);
    if (json) {
      std::vector<std::string> items;
      for (const auto& e : *list) items.push_back(JsonEntry(e));
      std::printf("{\"services\":[%s]}\n", absl::StrJoin(items, ",").c_str());
    } else {
      std::printf("%-40s %8s %8s %8s %12s\n", "NAME", "PID", "UID", "CONNS", "TOTAL");
      for (const auto& e : *list) {
        std::printf("%-40s %8d %8u %8llu %12llu\n", e.name.c_str(), e.owner.pid, e.owner.uid,
                    static_cast<unsigned long long>(e.connections),
                    static_cast<unsigned long long>(e.total_connections));
      }
    }
    return kExitOk;
  }
  if (command == "wait") {
    const absl::Duration timeout = absl::GetFlag(FLAGS_timeout);
    const absl::Time start = absl::Now();
    absl::Status status = (*manager)->WaitFor(arg, timeout);
    if (!status.ok()) return Fail(status, json);
    const double waited_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
    if (json) {
      std::printf("{\"name\":%s,\"status\":\"OK\",\"waited_ms\":%.3f}\n", JsonString(arg).c_str(),
                  waited_ms);
    } else {
      std::printf("%s is registered\n", arg.c_str());
    }
    return kExitOk;
  }
  auto info = (*manager)->Info(arg);
  if (!info.ok()) return Fail(info.status(), json);
  // The manager knows only what its policy file imposes; the server's own
  // RegisterOptions may narrow both further.
  const auto limit_json = [](const std::optional<uint64_t>& limit) {
    return limit.has_value() ? absl::StrCat(*limit) : std::string("null");
  };
  if (json) {
    std::vector<std::string> conns;
    for (const auto& c : info->connections) {
      conns.push_back(absl::StrCat(
          "{\"connection_id\":", c.connection_id, ",\"client\":", JsonCreds(c.client),
          ",\"policy_distrusts\":", c.policy_distrusts ? "true" : "false",
          ",\"policy_max_request_size\":", limit_json(c.policy_max_request_size), "}"));
    }
    std::string entry = JsonEntry(info->service);
    entry.pop_back();  // Extend the service object with its policy and connections.
    const std::string policy =
        info->policy_reported
            ? absl::StrCat("{\"max_request_size\":", limit_json(info->policy_max_request_size),
                           ",\"trust_line\":", info->policy_trust_line, "}")
            : "null";
    std::printf("%s,\"policy\":%s,\"connection_list\":[%s]}\n", entry.c_str(), policy.c_str(),
                absl::StrJoin(conns, ",").c_str());
  } else {
    const auto& s = info->service;
    std::printf(
        "name:        %s\nowner:       pid %d uid %u gid %u\nconnections: %llu live, "
        "%llu total\ngeometry:    %u slots, %llu B requests, %llu B replies\n",
        s.name.c_str(), s.owner.pid, s.owner.uid, s.owner.gid,
        static_cast<unsigned long long>(s.connections),
        static_cast<unsigned long long>(s.total_connections), s.geometry.slot_count,
        static_cast<unsigned long long>(s.geometry.request_arena_size),
        static_cast<unsigned long long>(s.geometry.reply_arena_size));
    if (!info->policy_reported) {
      std::printf("policy:      not reported by this service manager\n");
    } else {
      const std::string limit =
          info->policy_max_request_size.has_value()
              ? absl::StrCat("requests up to ", *info->policy_max_request_size, " B")
              : "no limit line";
      const std::string trust =
          info->policy_trust_line != 0
              ? absl::StrCat("trust line ", info->policy_trust_line, " decides")
              : "no trust line (the server's TrustPolicy decides)";
      std::printf("policy:      %s; %s (for new connections)\n", limit.c_str(), trust.c_str());
    }
    // Each connection as the policy found it when it was made.
    for (const auto& c : info->connections) {
      std::string imposed;
      if (c.policy_max_request_size.has_value()) {
        absl::StrAppend(&imposed, " (policy: requests up to ", *c.policy_max_request_size, " B)");
      }
      if (c.policy_distrusts) absl::StrAppend(&imposed, " (policy: large requests sealed)");
      std::printf("  connection %llu: pid %d uid %u gid %u%s\n",
                  static_cast<unsigned long long>(c.connection_id), c.client.pid, c.client.uid,
                  c.client.gid, imposed.c_str());
    }
  }
  return kExitOk;
}
