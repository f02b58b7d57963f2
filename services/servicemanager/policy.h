// Policy: who may register and who may look up which service names, and
// what the administrator imposes on each service's connections.
//
// Loaded once from a text file (format in docs/servicemanager.md), or the
// default "same uid as the daemon, plus root". Immutable after construction;
// safe to share between threads.
//
// File format, one rule or setting per line, '#' starts a comment:
//
//   <allow|deny> <register|lookup|*> <PATTERN> <PRINCIPAL>[,<PRINCIPAL>...]
//   limit <PATTERN> <SIZE>                          largest request accepted
//   trust <PATTERN> <none | PRINCIPAL[,PRINCIPAL...]>  clients read in place
//
// PATTERN is NAME, PREFIX* or *. PRINCIPAL is "*", "uid:N", "gid:N" (the
// peer's primary gid) or "uid:self" (the daemon's own uid). SIZE is bytes,
// or N with KiB, MiB or GiB, at most kMaxMessageSize.
//
// Access rules are tried in order; the first whose verb, name pattern and a
// principal all match decides. No match: deny. uid 0 is always allowed.
//
// Settings only ever narrow what a server chose for itself (its
// RegisterOptions): the server's code knows what it can survive, the
// administrator which peers deserve it, and neither alone may expose the
// server to more than the other allows. For each setting the first line
// whose pattern matches the service's name decides; none: no constraint.
//   limit: the service accepts requests up to min(its own max_request_size,
//     SIZE).
//   trust: a client's large requests may stay in place only if the server's
//     TrustPolicy trusts it *and* it matches a principal; `none` matches
//     nobody (every large request arrives sealed). uid 0 is not special
//     here. A server that wants the file to decide alone registers with
//     TrustPolicy::kEveryone.
#ifndef SLUICE_SERVICES_SERVICEMANAGER_POLICY_H_
#define SLUICE_SERVICES_SERVICEMANAGER_POLICY_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ipc/socket/unix_socket.h"

namespace sluice {

class Policy {
 public:
  enum class Action { kRegister, kLookup };

  // Same uid as `daemon_uid`, or root.
  static Policy Default(uid_t daemon_uid);
  // INVALID_ARGUMENT naming the line for a malformed rule.
  static absl::StatusOr<Policy> Parse(absl::string_view text, uid_t daemon_uid);
  static absl::StatusOr<Policy> Load(const std::string& path, uid_t daemon_uid);

  bool Allows(Action action, absl::string_view name, const PeerCredentials& peer) const;
  // The `limit` for `name`'s requests, or nullopt if no limit line matches.
  std::optional<uint64_t> MaxRequestSize(absl::string_view name) const;
  // False when a `trust` line matches `name` and `client` matches none of
  // its principals: the server of `name` must not read that client's large
  // requests in place. True when no trust line matches (the server decides).
  bool MayTrust(absl::string_view name, const PeerCredentials& client) const;
  // The line of the `trust` setting that decides for `name`, or 0 if none
  // matches (for introspection: sluicectl info).
  int TrustLine(absl::string_view name) const;
  // Rules that can never decide anything, one line each ("policy line N:
  // ..."), for the daemon to log at start-up and reload: a deny whose only
  // principals are uid 0 (always allowed), a rule wholly shadowed by an
  // earlier one for every principal ('*') with the same or a wider verb and
  // name pattern, and a setting whose pattern an earlier line of the same
  // setting covers.
  std::vector<std::string> Lint() const;
  // Access rules and settings.
  size_t rule_count() const { return rules_.size() + limits_.size() + trusts_.size(); }
  // Where this policy came from, for log lines ("default" or the file path).
  const std::string& source() const { return source_; }

 private:
  struct Principal {
    enum class Kind { kAny, kUid, kGid } kind = Kind::kAny;
    uint32_t id = 0;
    bool Matches(const PeerCredentials& peer) const;
  };
  struct NamePattern {
    std::string pattern;  // Without the trailing '*'.
    bool prefix = false;
    bool Matches(absl::string_view name) const;
    // Every name `other` matches, this matches too.
    bool Covers(const NamePattern& other) const;
  };
  struct Rule {
    bool allow = false;
    bool any_action = false;
    Action action = Action::kLookup;
    NamePattern name;
    std::vector<Principal> principals;
    int line = 0;
  };
  struct Limit {
    NamePattern name;
    uint64_t max_request_size = 0;
    int line = 0;
  };
  struct Trust {
    NamePattern name;
    std::vector<Principal> principals;  // Empty: `none`.
    int line = 0;
  };

  // The first `trust` line whose pattern matches `name`: the one that decides.
  const Trust* TrustFor(absl::string_view name) const;

  std::vector<Rule> rules_;
  std::vector<Limit> limits_;
  std::vector<Trust> trusts_;
  std::string source_;
};

absl::string_view ActionName(Policy::Action action);

}  // namespace sluice

#endif  // SLUICE_SERVICES_SERVICEMANAGER_POLICY_H_
