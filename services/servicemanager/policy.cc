#include "services/servicemanager/policy.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "ipc/channel/channel_options.h"
#include "ipc/service/wire.h"

namespace sluice {
namespace {

// "65536", "64KiB", "16MiB", "1GiB": bytes, within (0, kMaxMessageSize].
absl::StatusOr<uint64_t> ParseSize(absl::string_view text) {
  uint64_t unit = 1;
  if (absl::ConsumeSuffix(&text, "KiB")) {
    unit = uint64_t{1} << 10;
  } else if (absl::ConsumeSuffix(&text, "MiB")) {
    unit = uint64_t{1} << 20;
  } else if (absl::ConsumeSuffix(&text, "GiB")) {
    unit = uint64_t{1} << 30;
  }
  uint64_t count = 0;
  if (text.empty() || !std::all_of(text.begin(), text.end(), absl::ascii_isdigit) ||
      !absl::SimpleAtoi(text, &count)) {
    return absl::InvalidArgumentError("expected a size: bytes, or a number with KiB, MiB or GiB");
  }
  if (count == 0) return absl::InvalidArgumentError("a limit of 0 bytes");
  if (count > kMaxMessageSize / unit) {
    return absl::InvalidArgumentError(
        absl::StrCat("over the largest message there can be (", kMaxMessageSize, " bytes)"));
  }
  return count * unit;
}

}  // namespace

absl::string_view ActionName(Policy::Action action) {
  return action == Policy::Action::kRegister ? "register" : "lookup";
}

bool Policy::Principal::Matches(const PeerCredentials& peer) const {
  return kind == Kind::kAny || (kind == Kind::kUid && id == peer.uid) ||
         (kind == Kind::kGid && id == peer.gid);
}

bool Policy::NamePattern::Matches(absl::string_view name) const {
  return prefix ? absl::StartsWith(name, pattern) : name == pattern;
}

bool Policy::NamePattern::Covers(const NamePattern& other) const {
  return prefix ? absl::StartsWith(other.pattern, pattern)
                : (!other.prefix && other.pattern == pattern);
}

Policy Policy::Default(uid_t daemon_uid) {
  Policy policy;
  Rule rule;
  rule.allow = true;
  rule.any_action = true;
  rule.name.prefix = true;  // Empty prefix: every name.
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
    auto parse_pattern = [&](absl::string_view field) -> absl::StatusOr<NamePattern> {
      NamePattern name;
      if (absl::ConsumeSuffix(&field, "*")) name.prefix = true;
      if (absl::Status valid = service_wire::ValidatePrefix(field); !valid.ok()) {
        return error(valid.message());
      }
      if (!name.prefix && field.empty()) return error("empty name pattern");
      name.pattern = std::string(field);
      return name;
    };
    auto parse_principals = [&](absl::string_view field) -> absl::StatusOr<std::vector<Principal>> {
      std::vector<Principal> principals;
      for (absl::string_view item : absl::StrSplit(field, ',', absl::SkipEmpty())) {
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
          return error(
              absl::StrCat("unknown principal '", item, "' (*, uid:N, gid:N or uid:self)"));
        }
        principals.push_back(principal);
      }
      if (principals.empty()) return error("no principals");
      return principals;
    };

    if (fields[0] == "limit" || fields[0] == "trust") {
      if (fields.size() != 3) {
        return error(fields[0] == "limit" ? "expected 'limit <name|prefix*|*> <size>'"
                                          : "expected 'trust <name|prefix*|*> <none|principals>'");
      }
      absl::StatusOr<NamePattern> name = parse_pattern(fields[1]);
      if (!name.ok()) return name.status();
      if (fields[0] == "limit") {
        absl::StatusOr<uint64_t> size = ParseSize(fields[2]);
        if (!size.ok()) {
          return error(absl::StrCat("limit '", fields[2], "': ", size.status().message()));
        }
        policy.limits_.push_back({*std::move(name), *size, line_number});
      } else {
        Trust trust{*std::move(name), {}, line_number};
        if (fields[2] != "none") {
          absl::StatusOr<std::vector<Principal>> principals = parse_principals(fields[2]);
          if (!principals.ok()) return principals.status();
          trust.principals = *std::move(principals);
        }
        policy.trusts_.push_back(std::move(trust));
      }
      continue;
    }

    if (fields.size() != 4) {
      return error(
          "expected '<allow|deny> <register|lookup|*> <name|prefix*|*> <principals>', "
          "'limit <name|prefix*|*> <size>' or 'trust <name|prefix*|*> <none|principals>'");
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
    absl::StatusOr<NamePattern> name = parse_pattern(fields[2]);
    if (!name.ok()) return name.status();
    rule.name = *std::move(name);
    absl::StatusOr<std::vector<Principal>> principals = parse_principals(fields[3]);
    if (!principals.ok()) return principals.status();
    rule.principals = *std::move(principals);
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
    if (!rule.name.Matches(name)) continue;
    for (const Principal& principal : rule.principals) {
      if (principal.Matches(peer)) return rule.allow;
    }
  }
  return false;
}

std::optional<uint64_t> Policy::MaxRequestSize(absl::string_view name) const {
  for (const Limit& limit : limits_) {
    if (limit.name.Matches(name)) return limit.max_request_size;
  }
  return std::nullopt;
}

const Policy::Trust* Policy::TrustFor(absl::string_view name) const {
  for (const Trust& trust : trusts_) {
    if (trust.name.Matches(name)) return &trust;
  }
  return nullptr;
}

bool Policy::MayTrust(absl::string_view name, const PeerCredentials& client) const {
  const Trust* trust = TrustFor(name);
  if (trust == nullptr) return true;
  return std::any_of(trust->principals.begin(), trust->principals.end(),
                     [&](const Principal& p) { return p.Matches(client); });
}

int Policy::TrustLine(absl::string_view name) const {
  const Trust* trust = TrustFor(name);
  return trust != nullptr ? trust->line : 0;
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
      if (wider_verb && earlier.name.Covers(rule.name) && covers_everyone(earlier)) {
        out.push_back(absl::StrCat("policy line ", rule.line, ": never applies: line ",
                                   earlier.line, " already decides it for everyone"));
        break;
      }
    }
  }
  // A setting applies by its first matching line, whoever connects.
  auto shadowed = [&out](const auto& settings, absl::string_view what) {
    for (size_t i = 0; i < settings.size(); ++i) {
      for (size_t j = 0; j < i; ++j) {
        if (settings[j].name.Covers(settings[i].name)) {
          out.push_back(absl::StrCat("policy line ", settings[i].line, ": never applies: line ",
                                     settings[j].line, " already sets the ", what,
                                     " of every name it matches"));
          break;
        }
      }
    }
  };
  shadowed(limits_, "limit");
  shadowed(trusts_, "trust");
  std::stable_sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) {
    // "policy line N: ...", in line order.
    auto line_of = [](const std::string& s) {
      int n = 0;
      (void)absl::SimpleAtoi(s.substr(12, s.find(':') - 12), &n);
      return n;
    };
    return line_of(a) < line_of(b);
  });
  return out;
}

}  // namespace sluice
