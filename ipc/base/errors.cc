#include "ipc/base/errors.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace sluice {

absl::Status PeerDeadError(absl::string_view what) {
  absl::Status status = absl::UnavailableError(absl::StrCat("peer dead: ", what));
  status.SetPayload(kPeerDeadPayloadUrl, absl::Cord("1"));
  return status;
}

bool IsPeerDead(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable &&
         status.GetPayload(kPeerDeadPayloadUrl).has_value();
}

}  // namespace sluice
