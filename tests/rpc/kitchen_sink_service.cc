#include "tests/rpc/kitchen_sink_service.h"

#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace sluice::testing {

namespace sink = ::sluice::test::sink;

uint64_t Fnv64(std::span<const uint8_t> bytes) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (uint8_t b : bytes) hash = (hash ^ b) * 0x100000001b3ull;
  return hash;
}

namespace {

void Walk(const sink::Drawing& drawing, uint32_t depth, uint32_t& shapes, uint32_t& points,
          double& area, std::vector<sink::Color>& colors, std::string& tags, uint32_t& max_depth) {
  max_depth = std::max(max_depth, depth);
  if (drawing.shapes() != nullptr) {
    for (const sink::Shape* shape : *drawing.shapes()) {
      ++shapes;
      colors.push_back(shape->color());
      if (shape->points() != nullptr) points += shape->points()->size();
    }
  }
  if (const auto* circle = drawing.figure_as_Circle())
    area += 3.0 * circle->radius() * circle->radius();
  if (const auto* square = drawing.figure_as_Square()) area += square->side() * square->side();
  if (drawing.tags() != nullptr) {
    for (const flatbuffers::String* tag : *drawing.tags()) {
      if (!tags.empty()) tags += ",";
      tags += tag->str();
    }
  }
  if (drawing.inner() != nullptr) {
    Walk(*drawing.inner(), depth + 1, shapes, points, area, colors, tags, max_depth);
  }
}

}  // namespace

absl::StatusOr<flatbuffers::Offset<sink::DrawingSummary>> PainterService::Summarize(
    const rpc::CallContext&, const sink::Drawing& request, flatbuffers::FlatBufferBuilder& reply) {
  uint32_t shapes = 0, points = 0, depth = 0;
  double area = 0;
  std::vector<sink::Color> colors;
  std::string tags;
  Walk(request, 1, shapes, points, area, colors, tags, depth);
  auto colors_offset =
      reply.CreateVector(reinterpret_cast<const int8_t*>(colors.data()), colors.size());
  auto tags_offset = reply.CreateString(tags);
  sink::DrawingSummaryBuilder builder(reply);
  builder.add_shape_count(shapes);
  builder.add_point_count(points);
  builder.add_area(area);
  builder.add_colors(flatbuffers::Offset<flatbuffers::Vector<sink::Color>>(colors_offset.o));
  builder.add_tags(tags_offset);
  builder.add_depth(depth);
  return builder.Finish();
}

absl::StatusOr<flatbuffers::Offset<sink::EchoResponse>> PainterService::Echo(
    const rpc::CallContext&, const sink::EchoRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  int64_t sum = 0;
  if (request.ints() != nullptr) {
    for (int32_t v : *request.ints()) sum += v;
  }
  auto text = request.text() != nullptr ? reply.CreateString(request.text()->string_view())
                                        : flatbuffers::Offset<flatbuffers::String>();
  auto blob = request.blob() != nullptr
                  ? reply.CreateVector(request.blob()->data(), request.blob()->size())
                  : flatbuffers::Offset<flatbuffers::Vector<uint8_t>>();
  sink::EchoResponseBuilder builder(reply);
  builder.add_text(text);
  builder.add_number(request.number());
  builder.add_flag(request.flag());
  builder.add_color(request.color());
  builder.add_blob(blob);
  builder.add_ints_sum(sum);
  return builder.Finish();
}

absl::StatusOr<flatbuffers::Offset<sink::Empty>> PainterService::Fail(
    const rpc::CallContext&, const sink::FailRequest& request, flatbuffers::FlatBufferBuilder&) {
  const int32_t code = request.code();
  // An OK "error" would be a bug in this service (and abort inside StatusOr).
  if (code <= 0 || code > static_cast<int32_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::InvalidArgumentError(absl::StrCat("Fail: ", code, " is not an error code"));
  }
  return absl::Status(static_cast<absl::StatusCode>(code),
                      request.message() != nullptr ? request.message()->str() : "");
}

absl::Status PainterService::Note(const rpc::CallContext&, const sink::Counter& request) {
  const uint64_t before = notes_.fetch_add(1);
  if (request.value() != before + 1) out_of_order_.fetch_add(1);
  total_.fetch_add(request.value());
  return absl::OkStatus();
}

absl::StatusOr<flatbuffers::Offset<sink::Counter>> PainterService::Total(
    const rpc::CallContext&, const sink::Empty&, flatbuffers::FlatBufferBuilder& reply) {
  // Out-of-order notes poison the total so the test sees them.
  const uint64_t total = out_of_order_.load() == 0 ? total_.load() : ~uint64_t{0};
  return sink::CreateCounter(reply, total);
}

absl::StatusOr<flatbuffers::Offset<sink::Digest>> PainterService::Upload(
    const rpc::CallContext&, const sink::Blob& request, flatbuffers::FlatBufferBuilder& reply) {
  std::span<const uint8_t> data;
  if (request.data() != nullptr) data = {request.data()->data(), request.data()->size()};
  return sink::CreateDigest(reply, data.size(), Fnv64(data));
}

absl::StatusOr<flatbuffers::Offset<sink::Blob>> PainterService::Download(
    const rpc::CallContext&, const sink::Counter& request, flatbuffers::FlatBufferBuilder& reply) {
  if (request.value() > (64u << 20)) return absl::InvalidArgumentError("at most 64 MiB");
  uint8_t* out = nullptr;
  auto data = reply.CreateUninitializedVector(request.value(), &out);
  for (uint64_t i = 0; i < request.value(); ++i) out[i] = static_cast<uint8_t>(i);
  return sink::CreateBlob(reply, data);
}

absl::StatusOr<flatbuffers::Offset<sink::Digest>> PainterService::Inspect(
    const rpc::CallContext& context, const sink::SealedBlob& request,
    flatbuffers::FlatBufferBuilder& reply) {
  absl::StatusOr<rpc::Blob> blob = rpc::TakeBlob(context, request.bytes());
  if (!blob.ok()) return blob.status();
  return sink::CreateDigest(reply, blob->size(), Fnv64(blob->data()));
}

absl::StatusOr<flatbuffers::Offset<sink::SealedBlob>> PainterService::Produce(
    const rpc::CallContext& context, const sink::Counter& request,
    flatbuffers::FlatBufferBuilder& reply) {
  absl::StatusOr<rpc::BlobWriter> writer = rpc::BlobWriter::Create(request.value());
  if (!writer.ok()) return writer.status();
  uint8_t* out = writer->data();
  for (uint64_t i = 0; i < request.value(); ++i) out[i] = static_cast<uint8_t>(i);
  absl::StatusOr<rpc::Blob> blob = std::move(*writer).Seal();
  if (!blob.ok()) return blob.status();
  absl::StatusOr<uint32_t> field = rpc::AttachBlob(context, *blob);
  if (!field.ok()) return field.status();
  return sink::CreateSealedBlob(reply, *field);
}

absl::StatusOr<flatbuffers::Offset<sink::Empty>> PainterService::Hang(
    const rpc::CallContext&, const sink::Empty&, flatbuffers::FlatBufferBuilder&) {
  for (;;) ::pause();
}

absl::StatusOr<flatbuffers::Offset<sink::Counter>> PainterService::Sleep(
    const rpc::CallContext&, const sink::Counter& request, flatbuffers::FlatBufferBuilder& reply) {
  absl::SleepFor(absl::Milliseconds(std::min<uint64_t>(request.value(), 60'000)));
  return sink::CreateCounter(reply, request.value());
}

absl::StatusOr<flatbuffers::Offset<sink::Caller>> PainterService::WhoAmI(
    const rpc::CallContext& context, const sink::Empty&, flatbuffers::FlatBufferBuilder& reply) {
  return sink::CreateCaller(reply, context.caller.pid, context.caller.uid, context.caller.gid);
}

absl::StatusOr<flatbuffers::Offset<sink::Blob>> PainterService::ReadFd(
    const rpc::CallContext& context, const sink::Empty&, flatbuffers::FlatBufferBuilder& reply) {
  std::vector<UniqueFd> fds = context.TakeFds();
  if (fds.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("ReadFd: ", fds.size(), " descriptors, want 1"));
  }
  uint8_t buffer[256];
  const ssize_t got = ::pread(fds[0].get(), buffer, sizeof(buffer), 0);
  if (got < 0) return absl::InvalidArgumentError("ReadFd: descriptor is not readable");
  UniqueFd answer(::memfd_create("from-server", MFD_CLOEXEC));
  if (!answer || ::write(answer.get(), "from the server", 15) != 15) {
    return absl::InternalError("ReadFd: memfd_create failed");
  }
  const int attach[] = {answer.get()};
  if (absl::Status attached = context.AttachReplyFds(attach); !attached.ok()) return attached;
  return sink::CreateBlob(reply, reply.CreateVector(buffer, static_cast<size_t>(got)));
}

absl::StatusOr<flatbuffers::Offset<sink::AddResponse>> CalculatorService::Add(
    const rpc::CallContext&, const sink::AddRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  return sink::CreateAddResponse(reply, request.a() + request.b());
}

absl::StatusOr<flatbuffers::Offset<sink::AddResponse>> CalculatorService::Negate(
    const rpc::CallContext&, const sink::AddRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  return sink::CreateAddResponse(reply, -request.a());
}

}  // namespace sluice::testing
