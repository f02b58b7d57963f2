// Wire helpers for the service manager protocol (idl/servicemanager.fbs),
// shared by the client library (ipc/service) and the daemon
// (services/servicemanager): size limits, name rules, envelope building and
// verification, Status <-> wire conversion.
//
// Everything here is a pure function over bytes; no state, no threads.
#ifndef SLUICE_IPC_SERVICE_WIRE_H_
#define SLUICE_IPC_SERVICE_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "flatbuffers/flatbuffers.h"
#include "ipc/channel/layout.h"
#include "ipc/socket/unix_socket.h"
#include "servicemanager_generated.h"

namespace sluice::service_wire {

namespace wire = ::sluice::servicemanager::wire;

// Largest binary schema (.bfbs) a registration may carry.
inline constexpr size_t kMaxSchemaBytes = 256 * 1024;
// Largest request the manager accepts: a few names of kMaxNameLength, plus
// a Register's schema; anything bigger is garbage.
inline constexpr size_t kMaxRequestBytes = kMaxSchemaBytes + 4096;
// Largest message the manager sends (a full ListReply page or InfoReply, or
// a DescribeReply with its schema).
inline constexpr size_t kMaxReplyBytes = kMaxSchemaBytes + 128 * 1024;
// Service names: 1..kMaxNameLength bytes of [A-Za-z0-9._:/@-].
inline constexpr size_t kMaxNameLength = 255;
// Services per ListReply page, and connections listed per InfoReply.
inline constexpr uint32_t kMaxListPage = 256;
inline constexpr uint32_t kMaxInfoConnections = 512;
// Verifier limits: our tables nest at most 4 deep and a maximal page holds a
// few thousand tables.
inline constexpr flatbuffers::uoffset_t kMaxDepth = 16;
inline constexpr flatbuffers::uoffset_t kMaxTables = 8 * kMaxListPage + 64;

// INVALID_ARGUMENT naming the problem unless `name` follows the name rules.
[[nodiscard]] absl::Status ValidateName(absl::string_view name);
// Same for a prefix (may be empty).
[[nodiscard]] absl::Status ValidatePrefix(absl::string_view prefix);

// Verifies `bytes` as an Envelope with the limits above and returns the root.
// DATA_LOSS for anything that does not verify. The pointer aliases `bytes`.
absl::StatusOr<const wire::Envelope*> VerifyEnvelope(std::span<const std::byte> bytes);

// Encodes an Envelope around an already-built body.
void FinishEnvelope(flatbuffers::FlatBufferBuilder& builder, uint64_t request_id,
                    const absl::Status& status, wire::Body body_type,
                    flatbuffers::Offset<void> body);

// The builder's finished bytes, as a span.
inline std::span<const std::byte> Bytes(const flatbuffers::FlatBufferBuilder& builder) {
  return {reinterpret_cast<const std::byte*>(builder.GetBufferPointer()), builder.GetSize()};
}

// The status carried by a reply (OK when absent). Codes outside the
// canonical range become UNKNOWN.
absl::Status StatusFromWire(const wire::Status* status);

inline wire::Credentials CredentialsToWire(const PeerCredentials& creds) {
  return wire::Credentials(creds.pid, creds.uid, creds.gid);
}
inline PeerCredentials CredentialsFromWire(const wire::Credentials* creds) {
  if (creds == nullptr) return {};
  return {creds->pid(), creds->uid(), creds->gid()};
}

flatbuffers::Offset<wire::Geometry> GeometryToWire(flatbuffers::FlatBufferBuilder& builder,
                                                   const channel_layout::Geometry& geometry);
// `base` with every non-zero field of `wire_geometry` (may be null) applied.
channel_layout::Geometry MergeGeometry(const channel_layout::Geometry& base,
                                       const wire::Geometry* wire_geometry);

inline absl::string_view View(const flatbuffers::String* s) {
  return s == nullptr ? absl::string_view() : absl::string_view(s->c_str(), s->size());
}

}  // namespace sluice::service_wire

#endif  // SLUICE_IPC_SERVICE_WIRE_H_
