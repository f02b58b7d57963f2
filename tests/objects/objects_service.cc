#include "tests/objects/objects_service.h"

#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "ipc/testing/subprocess.h"

namespace sluice::testing {
namespace {
std::atomic<int64_t> g_live_callbacks{0};
}  // namespace

CallbackObject::CallbackObject(int64_t offset) : offset_(offset) { ++g_live_callbacks; }
CallbackObject::~CallbackObject() { --g_live_callbacks; }
int64_t CallbackObject::live() { return g_live_callbacks.load(); }

absl::StatusOr<flatbuffers::Offset<objects::Pong>> CallbackObject::Call(
    const rpc::CallContext& context, const objects::Ping& request,
    flatbuffers::FlatBufferBuilder& reply) {
  return objects::CreatePong(reply, request.value() + offset_, ::getpid(), context.caller.pid,
                             static_cast<int32_t>(::gettid()));
}

absl::Status CallbackObject::Notify(const rpc::CallContext& /*context*/,
                                    const objects::Ping& request) {
  notified_.fetch_add(request.value());
  return absl::OkStatus();
}

flatbuffers::Offset<objects::Pong> CopyPong(flatbuffers::FlatBufferBuilder& fbb,
                                            const objects::Pong& pong) {
  return objects::CreatePong(fbb, pong.value(), pong.host_pid(), pong.caller_pid(), pong.tid());
}

std::optional<rpc::Remote<objects::CallbackProxy>> HeldCallback::get() {
  MutexLock lock(&mu_);
  return held_;
}

void HeldCallback::Keep(rpc::Remote<objects::CallbackProxy> callback) {
  std::optional<rpc::Remote<objects::CallbackProxy>> replaced(std::move(callback));
  MutexLock lock(&mu_);
  held_.swap(replaced);
}

void HeldCallback::Drop() {
  std::optional<rpc::Remote<objects::CallbackProxy>> dropped;
  MutexLock lock(&mu_);
  held_.swap(dropped);
}

namespace {

// Give and Take: calls the request's callback with its value, keeps it in
// `held` if asked, and answers its Pong (by_handle: how the callback came).
absl::StatusOr<flatbuffers::Offset<objects::GiveResponse>> CallAndKeep(
    const rpc::CallContext& context, const objects::GiveRequest& request,
    flatbuffers::FlatBufferBuilder& reply, HeldCallback& held) {
  absl::StatusOr<rpc::Remote<objects::CallbackProxy>> callback =
      rpc::TakeObject<objects::CallbackProxy>(context, request.callback());
  if (!callback.ok()) return callback.status();
  auto pong = (*callback)->Call(request.value());
  if (!pong.ok()) return pong.status();
  if (request.keep()) held.Keep(*std::move(callback));
  return objects::CreateGiveResponse(reply, CopyPong(reply, **pong),
                                     rpc::object_wire::IsHandleField(request.callback()));
}

// Hand and TakeLater: the same, oneway; a negative value leaves the
// callback untaken.
absl::Status CallAndKeepLater(const rpc::CallContext& context, const objects::GiveRequest& request,
                              HeldCallback& held) {
  if (request.value() < 0) return absl::OkStatus();
  absl::StatusOr<rpc::Remote<objects::CallbackProxy>> callback =
      rpc::TakeObject<objects::CallbackProxy>(context, request.callback());
  if (!callback.ok()) return callback.status();
  absl::Status called = (*callback)->Call(request.value()).status();
  if (request.keep()) held.Keep(*std::move(callback));
  return called;
}

}  // namespace

absl::StatusOr<flatbuffers::Offset<objects::GiveResponse>> HolderService::Give(
    const rpc::CallContext& context, const objects::GiveRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  return CallAndKeep(context, request, reply, held_);
}

absl::Status HolderService::Hand(const rpc::CallContext& context,
                                 const objects::GiveRequest& request) {
  return CallAndKeepLater(context, request, held_);
}

absl::StatusOr<flatbuffers::Offset<objects::Empty>> HolderService::Notify(
    const rpc::CallContext& context, const objects::GiveRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  absl::StatusOr<rpc::Remote<objects::CallbackProxy>> callback =
      rpc::TakeObject<objects::CallbackProxy>(context, request.callback());
  if (!callback.ok()) return callback.status();
  if (absl::Status sent = (*callback)->Notify(request.value()); !sent.ok()) return sent;
  return objects::CreateEmpty(reply);
}

absl::StatusOr<flatbuffers::Offset<objects::Pong>> HolderService::CallHeld(
    const rpc::CallContext& /*context*/, const objects::Ping& request,
    flatbuffers::FlatBufferBuilder& reply) {
  std::optional<rpc::Remote<objects::CallbackProxy>> held = held_.get();
  if (!held) return absl::FailedPreconditionError("no callback held");
  auto pong = (*held)->Call(request.value());
  if (!pong.ok()) return pong.status();
  return CopyPong(reply, **pong);
}

absl::StatusOr<flatbuffers::Offset<objects::Empty>> HolderService::Drop(
    const rpc::CallContext& /*context*/, const objects::Empty& /*request*/,
    flatbuffers::FlatBufferBuilder& reply) {
  held_.Drop();
  return objects::CreateEmpty(reply);
}

namespace {
absl::StatusOr<flatbuffers::Offset<objects::ObjectResponse>> MakeObject(
    const rpc::CallContext& context, flatbuffers::FlatBufferBuilder& reply) {
  absl::StatusOr<uint32_t> index =
      rpc::AttachObject(context, std::make_shared<CallbackObject>(100));
  if (!index.ok()) return index.status();
  return objects::CreateObjectResponse(reply, *index);
}
}  // namespace

absl::StatusOr<flatbuffers::Offset<objects::ObjectResponse>> HolderService::Make(
    const rpc::CallContext& context, const objects::Empty& /*request*/,
    flatbuffers::FlatBufferBuilder& reply) {
  return MakeObject(context, reply);
}

absl::StatusOr<flatbuffers::Offset<objects::ObjectResponse>> HolderService::MakeLate(
    const rpc::CallContext& context, const objects::Ping& request,
    flatbuffers::FlatBufferBuilder& reply) {
  absl::SleepFor(absl::Milliseconds(request.value()));
  return MakeObject(context, reply);
}

absl::StatusOr<flatbuffers::Offset<objects::ObjectResponse>> HolderService::Held(
    const rpc::CallContext& context, const objects::Empty& /*request*/,
    flatbuffers::FlatBufferBuilder& reply) {
  std::optional<rpc::Remote<objects::CallbackProxy>> held = held_.get();
  if (!held) return absl::FailedPreconditionError("no callback held");
  absl::StatusOr<uint32_t> index = rpc::AttachObject(context, *held);
  if (!index.ok()) return index.status();
  return objects::CreateObjectResponse(reply, *index);
}

absl::StatusOr<flatbuffers::Offset<objects::ObjectResponse>> HolderService::Forge(
    const rpc::CallContext& /*context*/, const objects::Ping& request,
    flatbuffers::FlatBufferBuilder& reply) {
  return objects::CreateObjectResponse(reply, static_cast<uint64_t>(request.value()));
}

absl::StatusOr<flatbuffers::Offset<objects::ObjectResponse>> HolderService::Echo(
    const rpc::CallContext& context, const objects::GiveRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  absl::StatusOr<rpc::Remote<objects::CallbackProxy>> callback =
      rpc::TakeObject<objects::CallbackProxy>(context, request.callback());
  if (!callback.ok()) return callback.status();
  absl::StatusOr<uint32_t> index = rpc::AttachObject(context, *callback);
  if (!index.ok()) return index.status();
  return objects::CreateObjectResponse(reply, *index);
}

absl::StatusOr<flatbuffers::Offset<objects::FdResponse>> HolderService::ReadFd(
    const rpc::CallContext& context, const objects::FdRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  absl::StatusOr<UniqueFd> fd = rpc::TakeFd(context, request.fd());
  if (!fd.ok()) return fd.status();
  std::string content;
  char buffer[256];
  for (;;) {
    const ssize_t got = ::pread(fd->get(), buffer, sizeof(buffer), content.size());
    const ssize_t got_or_read = got < 0 ? ::read(fd->get(), buffer, sizeof(buffer)) : got;
    if (got_or_read <= 0) break;
    content.append(buffer, static_cast<size_t>(got_or_read));
  }
  return objects::CreateFdResponseDirect(reply, content.c_str());
}

absl::StatusOr<flatbuffers::Offset<objects::Stats>> HolderService::Stats(
    const rpc::CallContext& /*context*/, const objects::Empty& /*request*/,
    flatbuffers::FlatBufferBuilder& reply) {
  return objects::CreateStats(reply, CountOpenFds(), CountMappings("memfd:"),
                              rpc::ObjectHost::Get().reference_count(), CallbackObject::live());
}

absl::StatusOr<flatbuffers::Offset<objects::GiveResponse>> HolderService::Offer(
    const rpc::CallContext& context, const objects::OfferRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  absl::StatusOr<rpc::Remote<objects::TakerProxy>> taker =
      rpc::TakeObject<objects::TakerProxy>(context, request.taker());
  if (!taker.ok()) return taker.status();
  auto answer =
      (*taker)->Take(std::make_shared<CallbackObject>(1000), request.value(), request.keep());
  if (!answer.ok()) return answer.status();
  if ((*answer)->pong() == nullptr) return absl::DataLossError("Take answered no pong");
  return objects::CreateGiveResponse(reply, CopyPong(reply, *(*answer)->pong()),
                                     (*answer)->by_handle());
}

absl::StatusOr<flatbuffers::Offset<objects::Empty>> HolderService::OfferLater(
    const rpc::CallContext& context, const objects::OfferRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  absl::StatusOr<rpc::Remote<objects::TakerProxy>> taker =
      rpc::TakeObject<objects::TakerProxy>(context, request.taker());
  if (!taker.ok()) return taker.status();
  if (absl::Status sent = (*taker)->TakeLater(std::make_shared<CallbackObject>(1000),
                                              request.value(), request.keep());
      !sent.ok()) {
    return sent;
  }
  return objects::CreateEmpty(reply);
}

absl::StatusOr<flatbuffers::Offset<objects::GiveResponse>> HolderService::Fetch(
    const rpc::CallContext& context, const objects::OfferRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  absl::StatusOr<rpc::Remote<objects::TakerProxy>> taker =
      rpc::TakeObject<objects::TakerProxy>(context, request.taker());
  if (!taker.ok()) return taker.status();
  auto made = (*taker)->Make();
  if (!made.ok()) return made.status();
  absl::StatusOr<rpc::Remote<objects::CallbackProxy>> callback =
      rpc::TakeObject<objects::CallbackProxy>(*made, (*made)->callback());
  if (!callback.ok()) return callback.status();
  auto pong = (*callback)->Call(request.value());
  if (!pong.ok()) return pong.status();
  if (request.keep()) held_.Keep(*std::move(callback));
  return objects::CreateGiveResponse(reply, CopyPong(reply, **pong),
                                     rpc::object_wire::IsHandleField((*made)->callback()));
}

absl::StatusOr<flatbuffers::Offset<objects::GiveResponse>> HolderService::Own(
    const rpc::CallContext& context, const objects::GiveRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  absl::StatusOr<std::shared_ptr<CallbackObject>> local =
      rpc::TakeLocal<CallbackObject>(context, request.callback());
  if (!local.ok()) return local.status();
  absl::StatusOr<rpc::Remote<objects::CallbackProxy>> remote =
      rpc::TakeObject<objects::CallbackProxy>(context, request.callback());
  if (!remote.ok()) return remote.status();
  auto pong = (*remote)->Call(request.value());
  if (!pong.ok()) return pong.status();
  const int64_t value = request.value() + (*local)->offset();
  if ((*pong)->value() != value) {
    return absl::InternalError(
        absl::StrCat("the proxy answered ", (*pong)->value(), ", the local object ", value));
  }
  return objects::CreateGiveResponse(
      reply, objects::CreatePong(reply, value, ::getpid(), context.caller.pid, 0),
      rpc::object_wire::IsReturnedField(request.callback()));
}

void TakerObject::Count(const objects::GiveRequest& request) {
  (rpc::object_wire::IsHandleField(request.callback()) ? by_handle_ : dedicated_)++;
}

absl::StatusOr<flatbuffers::Offset<objects::GiveResponse>> TakerObject::Take(
    const rpc::CallContext& context, const objects::GiveRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  Count(request);
  return CallAndKeep(context, request, reply, kept_);
}

absl::Status TakerObject::TakeLater(const rpc::CallContext& context,
                                    const objects::GiveRequest& request) {
  Count(request);
  return CallAndKeepLater(context, request, kept_);
}

absl::StatusOr<flatbuffers::Offset<objects::ObjectResponse>> TakerObject::Make(
    const rpc::CallContext& context, const objects::Empty& /*request*/,
    flatbuffers::FlatBufferBuilder& reply) {
  return MakeObject(context, reply);
}

}  // namespace sluice::testing
