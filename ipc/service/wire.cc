#include "ipc/service/wire.h"

#include "absl/strings/str_cat.h"

namespace sluice::service_wire {
namespace {

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '/' || c == '@' || c == '-';
}

absl::Status CheckChars(absl::string_view what, absl::string_view text) {
  if (text.size() > kMaxNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is ", text.size(), " bytes long; the limit is ", kMaxNameLength));
  }
  for (char c : text) {
    if (!IsNameChar(c)) {
      // Do not echo arbitrary bytes into logs and errors; say which one.
      return absl::InvalidArgumentError(
          absl::StrCat(what, " contains byte 0x", absl::Hex(static_cast<unsigned char>(c)),
                       "; allowed are letters, digits and . _ : / @ -"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateName(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("service name is empty");
  return CheckChars(absl::StrCat("service name '", name.substr(0, 64), "'"), name);
}

absl::Status ValidatePrefix(absl::string_view prefix) { return CheckChars("name prefix", prefix); }

absl::StatusOr<const wire::Envelope*> VerifyEnvelope(std::span<const std::byte> bytes) {
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  flatbuffers::Verifier verifier(data, bytes.size(), kMaxDepth, kMaxTables);
  if (!wire::VerifyEnvelopeBuffer(verifier)) {
    return absl::DataLossError(
        absl::StrCat("malformed service manager message (", bytes.size(), " bytes)"));
  }
  return wire::GetEnvelope(data);
}

void FinishEnvelope(flatbuffers::FlatBufferBuilder& builder, uint64_t request_id,
                    const absl::Status& status, wire::Body body_type,
                    flatbuffers::Offset<void> body) {
  flatbuffers::Offset<wire::Status> wire_status;
  if (!status.ok()) {
    wire_status =
        wire::CreateStatus(builder, static_cast<int>(status.code()),
                           builder.CreateString(status.message().data(), status.message().size()));
  }
  wire::EnvelopeBuilder envelope(builder);
  envelope.add_request_id(request_id);
  if (!status.ok()) envelope.add_status(wire_status);
  if (body_type != wire::Body::NONE) {
    envelope.add_body_type(body_type);
    envelope.add_body(body);
  }
  builder.Finish(envelope.Finish(), wire::EnvelopeIdentifier());
}

absl::Status StatusFromWire(const wire::Status* status) {
  if (status == nullptr || status->code() == 0) return absl::OkStatus();
  int code = status->code();
  if (code < 0 || code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    code = static_cast<int>(absl::StatusCode::kUnknown);
  }
  return absl::Status(static_cast<absl::StatusCode>(code), View(status->message()));
}

flatbuffers::Offset<wire::Geometry> GeometryToWire(flatbuffers::FlatBufferBuilder& builder,
                                                   const channel_layout::Geometry& geometry) {
  return wire::CreateGeometry(builder, geometry.slot_count, geometry.request_arena_size,
                              geometry.reply_arena_size);
}

channel_layout::Geometry MergeGeometry(const channel_layout::Geometry& base,
                                       const wire::Geometry* wire_geometry) {
  channel_layout::Geometry out = base;
  if (wire_geometry == nullptr) return out;
  if (wire_geometry->slot_count() != 0) out.slot_count = wire_geometry->slot_count();
  if (wire_geometry->request_arena_size() != 0) {
    out.request_arena_size = wire_geometry->request_arena_size();
  }
  if (wire_geometry->reply_arena_size() != 0) {
    out.reply_arena_size = wire_geometry->reply_arena_size();
  }
  return out;
}

}  // namespace sluice::service_wire
