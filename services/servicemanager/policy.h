// Policy: who may register and who may look up which service names.
//
// Loaded once from a text file (format in docs/servicemanager.md), or the
// default "same uid as the daemon, plus root". Immutable after construction;
// safe to share between threads.
//
// File format, one rule per line, '#' starts a comment:
//
//   <allow|deny> <register|lookup|*> <NAME | PREFIX* | *> <PRINCIPAL>[,<PRINCIPAL>...]
//
// PRINCIPAL is "*", "uid:N", "gid:N" (the peer's primary gid) or "uid:self"
// (the daemon's own uid). Rules are tried in order; the first whose verb,
// name pattern and a principal all match decides. No match: deny. uid 0 is
// always allowed.
#ifndef SLUICE_SERVICES_SERVICEMANAGER_POLICY_H_
#define SLUICE_SERVICES_SERVICEMANAGER_POLICY_H_

#include <sys/types.h>

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
  // Rules that can never decide anything, one line each ("policy line N:
  // ..."), for the daemon to log at start-up and reload: a deny whose only
  // principals are uid 0 (always allowed), and a rule wholly shadowed by an
  // earlier one for every principal ('*') with the same or a wider verb and
  // name pattern.
  std::vector<std::string> Lint() const;
  size_t rule_count() const { return rules_.size(); }
  // Where this policy came from, for log lines ("default" or the file path).
  const std::string& source() const { return source_; }

 private:
  struct Principal {
    enum class Kind { kAny, kUid, kGid } kind = Kind::kAny;
    uint32_t id = 0;
  };
  struct Rule {
    bool allow = false;
    bool any_action = false;
    Action action = Action::kLookup;
    std::string pattern;  // Without the trailing '*'.
    bool prefix = false;
    std::vector<Principal> principals;
    int line = 0;
  };

  std::vector<Rule> rules_;
  std::string source_;
};

absl::string_view ActionName(Policy::Action action);

}  // namespace sluice

#endif  // SLUICE_SERVICES_SERVICEMANAGER_POLICY_H_
