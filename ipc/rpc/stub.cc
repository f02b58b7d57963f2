#include "ipc/rpc/stub.h"

namespace sluice::rpc {

absl::Status RejectInterface(IncomingCall& call, absl::string_view service, uint64_t interface_id) {
  return call.Fail(absl::FailedPreconditionError(
      absl::StrCat("this channel serves ", service, " (interface 0x", absl::Hex(interface_id),
                   "), not interface 0x", absl::Hex(call.header().interface_id))));
}

absl::Status RejectMethod(IncomingCall& call, absl::string_view service) {
  return call.Fail(absl::UnimplementedError(absl::StrCat(
      service, " has no method with id 0x", absl::Hex(MethodIdOf(call.header().method)),
      " (client built from a newer or "
      "different interface?)")));
}

absl::Status CheckMethod(IncomingCall& call, uint64_t method_word, bool oneway,
                         absl::string_view what) {
  if (SignatureOf(call.header().method) != SignatureOf(method_word)) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": request/response types differ between client and server"));
  }
  if (call.oneway() != oneway) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, oneway ? " is oneway but was called synchronously"
                                  : " is synchronous but was called oneway"));
  }
  return absl::OkStatus();
}

MessageBuffer& ThreadRequestBuffer() {
  thread_local MessageBuffer buffer;
  return buffer;
}

}  // namespace sluice::rpc
