// libFuzzer target: the policy-file parser (services/servicemanager/
// policy.h). Any text must parse or fail INVALID_ARGUMENT naming a line;
// a parsed policy must answer Allows, MaxRequestSize, MayTrust and Lint for
// any name, uid 0 must always be allowed, and a limit must be a size a
// message can have.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include "absl/strings/match.h"
#include "ipc/channel/channel_options.h"
#include "services/servicemanager/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto policy = sluice::Policy::Parse(text, 1000);
  if (!policy.ok()) {
    if (!absl::IsInvalidArgument(policy.status())) std::abort();
    if (!absl::StartsWith(policy.status().message(), "policy line ")) std::abort();
    return 0;
  }
  (void)policy->Lint();
  // Names drawn from the text itself reach the rules' patterns.
  for (const std::string& name : {std::string("a"), text.substr(0, 16), text.substr(size / 2, 8)}) {
    for (auto action : {sluice::Policy::Action::kLookup, sluice::Policy::Action::kRegister}) {
      (void)policy->Allows(action, name, {1, 1000, 1000});
      (void)policy->Allows(action, name, {1, 1001, 29});
      if (!policy->Allows(action, name, {1, 0, 0})) std::abort();
    }
    if (std::optional<uint64_t> limit = policy->MaxRequestSize(name)) {
      if (*limit == 0 || *limit > sluice::kMaxMessageSize) std::abort();
    }
    (void)policy->MayTrust(name, {1, 1000, 1000});
    (void)policy->MayTrust(name, {1, 0, 0});
  }
  return 0;
}
