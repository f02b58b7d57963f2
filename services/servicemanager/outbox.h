// Outbox: how the registry and the request dispatcher send messages to a
// manager connection, named by its id, without knowing about sockets. The
// daemon implements it with one SendQueue per connection; tests with a
// vector.
#ifndef SLUICE_SERVICES_SERVICEMANAGER_OUTBOX_H_
#define SLUICE_SERVICES_SERVICEMANAGER_OUTBOX_H_

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "flatbuffers/flatbuffers.h"
#include "ipc/base/unique_fd.h"
#include "ipc/service/wire.h"

namespace sluice {

// One encoded Envelope and the descriptors that travel with it (SCM_RIGHTS).
struct OutgoingMessage {
  std::vector<std::byte> bytes;
  std::vector<UniqueFd> fds;
};

class Outbox {
 public:
  virtual ~Outbox() = default;
  // Queues `message` for connection `id`. False, with the message (and its
  // descriptors) dropped, if that connection is gone or being closed. Never
  // calls back into its caller: a connection it condemns is closed later.
  virtual bool Send(uint64_t id, OutgoingMessage message) = 0;
};

// The finished bytes of `builder`, with `fds`.
inline OutgoingMessage Encode(const flatbuffers::FlatBufferBuilder& builder,
                              std::vector<UniqueFd> fds = {}) {
  const std::span<const std::byte> bytes = service_wire::Bytes(builder);
  return {std::vector<std::byte>(bytes.begin(), bytes.end()), std::move(fds)};
}

// A reply that carries nothing but `status`.
inline OutgoingMessage StatusReply(uint64_t request_id, const absl::Status& status) {
  flatbuffers::FlatBufferBuilder builder(128);
  service_wire::FinishEnvelope(builder, request_id, status, service_wire::wire::Body::NONE, 0);
  return Encode(builder);
}

}  // namespace sluice

#endif  // SLUICE_SERVICES_SERVICEMANAGER_OUTBOX_H_
