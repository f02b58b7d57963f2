#include "services/servicemanager/policy.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "ipc/service/wire.h"

namespace sluice {

absl::string_view ActionName(Policy::Action action) {
  return action == Policy::Action::kRegister ? "register" : "lookup";
}

Policy Policy::Default(uid_t daemon_uid) {
  Policy policy;
  Rule rule;
  rule.allow = true;
  rule.any_action = true;
  rule.prefix = true;  // Empty prefix: every name.
  rule.principals.push_back({Principal::Kind::kUid, daemon_uid});
  policy.rules_.push_back(std::move(rule));
  policy.source_ = "default (same uid, root)";
  return policy;
}

absl::StatusOr<Policy> Policy::Parse(absl::string_view text, uid_t daemon_uid) {
  Policy policy;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (size_t hash = line.find('#'); hash != absl::string_view::npos) line = line.substr(0, hash);
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (fields.empty()) continue;
    auto error = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("policy line ", line_number, ": ", why));
    };
    if (fields.size() != 4) {
      return error("expected '<allow|deny> <register|lookup|*> <name|prefix*|*> <principals>'");
    }
    Rule rule;
    rule.line = line_number;
    if (fields[0] == "allow") {
      rule.allow = true;
    } else if (fields[0] != "deny") {
      return error(absl::StrCat("unknown effect '", fields[0], "' (allow or deny)"));
    }
    if (fields[1] == "*") {
      rule.any_action = true;
    } else if (fields[1] == "register") {
      rule.action = Action::kRegister;
    } else if (fields[1] == "lookup") {
      rule.action = Action::kLookup;
    } else {
      return error(absl::StrCat("unknown verb '", fields[1], "' (register, lookup or *)"));
    }
    absl::string_view pattern = fields[2];
    if (absl::ConsumeSuffix(&pattern, "*")) rule.prefix = true;
    if (absl::Status valid = service_wire::ValidatePrefix(pattern); !valid.ok()) {
      return error(valid.message());
    }
    if (!rule.prefix && pattern.empty()) return error("empty name pattern");
    rule.pattern = std::string(pattern);
    for (absl::string_view item : absl::StrSplit(fields[3], ',', absl::SkipEmpty())) {
      Principal principal;
      if (item == "*") {
        principal.kind = Principal::Kind::kAny;
      } else if (item == "uid:self") {
        principal = {Principal::Kind::kUid, daemon_uid};
      } else if (absl::StartsWith(item, "uid:") || absl::StartsWith(item, "gid:")) {
        principal.kind = item[0] == 'u' ? Principal::Kind::kUid : Principal::Kind::kGid;
        if (!absl::SimpleAtoi(item.substr(4), &principal.id)) {
          return error(absl::StrCat("bad id in principal '", item, "'"));
        }
      } else {
        return error(absl::StrCat("unknown principal '", item, "' (*, uid:N, gid:N or uid:self)"));
      }
      rule.principals.push_back(principal);
    }
    if (rule.principals.empty()) return error("no principals");
    policy.rules_.push_back(std::move(rule));
  }
  return policy;
}

absl::StatusOr<Policy> Policy::Load(const std::string& path, uid_t daemon_uid) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open policy file ", path));
  std::stringstream text;
  text << in.rdbuf();
  auto policy = Parse(text.str(), daemon_uid);
  if (!policy.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", policy.status().message()));
  }
  policy->source_ = path;
  return policy;
}

bool Policy::Allows(Action action, absl::string_view name, const PeerCredentials& peer) const {
  if (peer.uid == 0) return true;
  for (const Rule& rule : rules_) {
    if (!rule.any_action && rule.action != action) continue;
    if (rule.prefix ? !absl::StartsWith(name, rule.pattern) : name != rule.pattern) continue;
    for (const Principal& principal : rule.principals) {
      const bool match = principal.kind == Principal::Kind::kAny ||
                         (principal.kind == Principal::Kind::kUid && principal.id == peer.uid) ||
                         (principal.kind == Principal::Kind::kGid && principal.id == peer.gid);
      if (match) return rule.allow;
    }
  }
  return false;
}

std::vector<std::string> Policy::Lint() const {
  std::vector<std::string> out;
  auto covers_everyone = [](const Rule& rule) {
    return std::any_of(rule.principals.begin(), rule.principals.end(),
                       [](const Principal& p) { return p.kind == Principal::Kind::kAny; });
  };
  for (size_t i = 0; i < rules_.size(); ++i) {
    const Rule& rule = rules_[i];
    const bool only_root = std::all_of(
        rule.principals.begin(), rule.principals.end(),
        [](const Principal& p) { return p.kind == Principal::Kind::kUid && p.id == 0; });
    if (!rule.allow && only_root) {
      out.push_back(absl::StrCat("policy line ", rule.line,
                                 ": this deny never applies: uid 0 is always allowed"));
      continue;
    }
    for (size_t j = 0; j < i; ++j) {
      const Rule& earlier = rules_[j];
      const bool wider_verb =
          earlier.any_action || (!rule.any_action && earlier.action == rule.action);
      const bool wider_name = earlier.prefix ? absl::StartsWith(rule.pattern, earlier.pattern)
                                             : (!rule.prefix && rule.pattern == earlier.pattern);
      if (wider_verb && wider_name && covers_everyone(earlier)) {
        out.push_back(absl::StrCat("policy line ", rule.line, ": never applies: line ",
                                   earlier.line, " already decides it for everyone"));
        break;
      }
    }
  }
  return out;
}

}  // namespace sluice
