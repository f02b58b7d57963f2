// ProxyBase: what every generated proxy class builds on.
//
// A call builds its request with a FlatBufferBuilder whose memory is the
// space the channel reserved for it (RegionAllocator): the request arena, or
// a memfd of its own for a large message (ClientChannel::BeginCall), so the
// request is written once, in place. If the message outgrows the
// reservation, the build runs again with enough room: build functions may
// run more than once and must not have side effects beyond the builder.
//
// Thread safety: a proxy is as thread safe as its channel (fully); many
// threads may call through one proxy at once.
#ifndef SLUICE_IPC_RPC_PROXY_H_
#define SLUICE_IPC_RPC_PROXY_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "flatbuffers/flatbuffers.h"
#include "ipc/channel/client_channel.h"
#include "ipc/rpc/call_router.h"
#include "ipc/rpc/message.h"
#include "ipc/rpc/object_wire.h"
#include "ipc/rpc/region_allocator.h"
#include "ipc/rpc/wire.h"

namespace sluice::rpc {

class ExportLink;
class Attachments;

namespace internal {
// A oneway call's objects lent by handle stay lent under a ticket, its
// request word, until the receiver has served it (object.h): the ticket,
// 0 if it lends nothing by handle.
uint32_t LendUnderTicket(Attachments& attachments);
// The call under `ticket` never went out: its loans end.
void EndUnsentTicket(Attachments& attachments, uint32_t ticket);

// The objects a reply lends by handle (its word is their ticket): taken
// through the proxy's ExportLink, which knows the connection's objects.
// Null for a word that is no ticket.
std::shared_ptr<ReplyObjects> ObjectsOfReply(ExportLink* exports, ClientChannel& channel,
                                             const std::shared_ptr<void>& owner, uint64_t word);
// The word of a reply nobody read (its caller gave up): a ticket's loans
// end, an Acquire's hold (object_wire::HoldWord) is released; anything else
// is ignored.
void SettleUnreadReplyWord(ExportLink* exports, ClientChannel& channel,
                           const std::shared_ptr<void>& owner, uint64_t word);

// What a proxy over an object handle needs of the reference it calls
// through (RemoteObject), which shares its channel with other objects.
class HandleReference {
 public:
  virtual ~HandleReference() = default;
  // Death notifications that end with the reference rather than with the
  // channel: its recipients are unlinked when its last Remote<> goes.
  virtual absl::StatusOr<uint64_t> LinkToDeath(absl::AnyInvocable<void()> recipient) = 0;
  virtual absl::Status UnlinkToDeath(uint64_t id) = 0;
  // Called before a oneway call on the object goes. An object borrowed for
  // the call being served is lent only until that call returns, which may
  // be before the host serves the oneway call (nobody waits for it): it is
  // kept first, as if the handler kept it (one Acquire, once per borrow).
  // Waits for it until `deadline` at most (the call's).
  virtual void KeepForOneway(absl::Time deadline) = 0;
};
}  // namespace internal

// What a proxy calls: a channel, and on it either the channel's own object
// (handle 0: a service, a dedicated object channel) or an object handle.
struct ProxyTarget {
  ClientChannel* channel = nullptr;
  // Kept by the proxy and by every Response of its calls (may be null).
  std::shared_ptr<void> owner;
  uint32_t handle = 0;
  internal::HandleReference* reference = nullptr;  // Null: the channel's own object.
  // Where local objects passed in calls through this proxy are lent by
  // handle (null: each goes as a dedicated channel).
  std::shared_ptr<ExportLink> exports;
};

struct CallOptions {
  absl::Time deadline = absl::InfiniteFuture();
  // Bytes to reserve for the request; generated methods compute one from
  // their arguments. Set it for a build function that writes large fields in
  // place, so the first build fits.
  size_t size_hint = 0;
  // Descriptors to send with the request (duplicated; the caller keeps its
  // own). The server takes them with CallContext::TakeFds.
  std::span<const int> fds = {};
};

class ProxyBase {
 public:
  explicit ProxyBase(ClientChannel& channel) : channel_(&channel) {}
  // For a proxy over a channel someone shares (rpc::Remote): every Response
  // keeps `owner` too, so a reply may outlive the proxy it came from.
  ProxyBase(ClientChannel& channel, std::shared_ptr<void> owner)
      : channel_(&channel), owner_(std::move(owner)) {
    if (owner_ != nullptr) channel_->AnnounceFeatures(object_wire::kTakesReplyHandles);
  }
  explicit ProxyBase(ProxyTarget target)
      : channel_(target.channel),
        owner_(std::move(target.owner)),
        exports_(std::move(target.exports)),
        reference_(target.reference),
        handle_(target.handle) {
    // Objects its replies lend by handle may outlive the call: only a proxy
    // that keeps its channel can take them (object.h).
    if (owner_ != nullptr) channel_->AnnounceFeatures(object_wire::kTakesReplyHandles);
  }
  ClientChannel& channel() const { return *channel_; }
  // The object handle this proxy calls on its channel (0: the channel's own).
  uint32_t handle() const { return handle_; }
  const std::shared_ptr<ExportLink>& exports() const { return exports_; }

  // Binder's linkToDeath: `recipient` runs once when the serving process
  // dies. See ClientChannel::LinkToDeath for the rules.
  absl::StatusOr<uint64_t> LinkToDeath(absl::AnyInvocable<void()> recipient) const {
    if (reference_ != nullptr) return reference_->LinkToDeath(std::move(recipient));
    return channel_->LinkToDeath(std::move(recipient));
  }
  absl::Status UnlinkToDeath(uint64_t id) const {
    if (reference_ != nullptr) return reference_->UnlinkToDeath(id);
    return channel_->UnlinkToDeath(id);
  }

 protected:
  // Builds a request with `build(fbb) -> Offset<Request>` and waits for the
  // verified response.
  template <typename Response, typename Build>
  absl::StatusOr<rpc::Response<Response>> Invoke(const CallHeader& header, absl::string_view what,
                                                 size_t size_hint, Build&& build,
                                                 const CallOptions& options) {
    // Registers this thread as waiting in its call chain, so a call back
    // into this process within this one is served right here.
    CallRouter::Outgoing chain;
    CallHeader chained = Addressed(header);
    chained.chain_id = chain.chain_id();
    absl::StatusOr<std::pair<OutgoingCall, std::span<const std::byte>>> request =
        BuildRequest(chained, what, std::max(size_hint, options.size_hint), build, options);
    if (!request.ok()) return request.status();
    absl::StatusOr<Reply> reply = channel_->Call(std::move(request->first), request->second,
                                                 options.deadline, chain.waiter());
    SettleUnreadReplies();
    if (!reply.ok()) return NameTheMethod(reply.status(), what);
    std::shared_ptr<ReplyObjects> lent;
    if (reply->word() != 0) {
      lent = internal::ObjectsOfReply(exports_.get(), *channel_, owner_, reply->word());
    }
    return rpc::Response<Response>::Make(*std::move(reply), what, owner_, std::move(lent));
  }

  // `lending`: the objects the request passes (generated code's), whose
  // loans by handle outlive this call.
  template <typename Build>
  absl::Status InvokeOneway(const CallHeader& header, absl::string_view what, size_t size_hint,
                            Build&& build, const CallOptions& options,
                            Attachments* lending = nullptr) {
    if (reference_ != nullptr) reference_->KeepForOneway(options.deadline);
    CallHeader addressed = Addressed(header);
    addressed.word = lending != nullptr ? internal::LendUnderTicket(*lending) : 0;
    auto request =
        BuildRequest(addressed, what, std::max(size_hint, options.size_hint), build, options);
    absl::Status sent = request.ok() ? channel_->Send(std::move(request->first), request->second)
                                     : request.status();
    // Send fails only before the request is published.
    if (!sent.ok() && addressed.word != 0) {
      internal::EndUnsentTicket(*lending, static_cast<uint32_t>(addressed.word));
    }
    SettleUnreadReplies();
    return sent;
  }

 private:
  // Replies the channel found unread (their callers gave up at their
  // deadlines) may have lent objects by handle, or be an Acquire's late
  // hold: with nobody to take them, their loans and holds end now, as a
  // Response's do when it goes.
  void SettleUnreadReplies() {
    if (!channel_->HasUnreadReplyWords()) return;
    for (const uint64_t word : channel_->TakeUnreadReplyWords()) {
      internal::SettleUnreadReplyWord(exports_.get(), *channel_, owner_, word);
    }
  }

  // The server answers a method it lacks, or a call for another interface,
  // with ids only (it cannot name what it does not know); the proxy knows
  // what it asked for and says so.
  static absl::Status NameTheMethod(const absl::Status& status, absl::string_view what) {
    if (!absl::IsUnimplemented(status) && !absl::IsFailedPrecondition(status)) return status;
    if (absl::StartsWith(status.message(), what)) return status;
    return absl::Status(status.code(), absl::StrCat(what, ": ", status.message()));
  }

  // `header` as it goes on the wire: addressed to this proxy's handle.
  CallHeader Addressed(const CallHeader& header) const {
    if (handle_ == 0) return header;
    CallHeader addressed = header;
    addressed.interface_id = object_wire::ObjectWord(handle_, header.interface_id);
    return addressed;
  }

  // Smallest reservation: below this, the fixed cost of a FlatBuffer (vtables,
  // scratch) dominates anyway.
  static constexpr size_t kMinReservation = 256;

  template <typename Build>
  absl::StatusOr<std::pair<OutgoingCall, std::span<const std::byte>>> BuildRequest(
      const CallHeader& header, absl::string_view what, size_t size_hint, Build& build,
      const CallOptions& options) {
    size_t capacity = RoundUpForBuilder(std::max(size_hint, kMinReservation));
    for (;;) {
      // BeginCall refuses a capacity over the server's limit before anything
      // is built; the reservation is never smaller than the message.
      absl::StatusOr<OutgoingCall> call =
          channel_->BeginCall(capacity, options.deadline, header.chain_id);
      if (!call.ok()) {
        if (absl::IsResourceExhausted(call.status())) {
          return absl::ResourceExhaustedError(absl::StrCat(what, ": ", call.status().message()));
        }
        return call.status();
      }
      if (!options.fds.empty()) {
        if (absl::Status attached = call->AttachFds(options.fds); !attached.ok()) {
          return attached;
        }
      }
      RegionAllocator allocator(call->buffer());
      flatbuffers::FlatBufferBuilder fbb(capacity, &allocator, /*own_allocator=*/false);
      fbb.Finish(build(fbb));
      const size_t size = fbb.GetSize();
      if (!allocator.overflowed()) {
        call->header() = header;
        std::span<const std::byte> message(
            reinterpret_cast<const std::byte*>(fbb.GetBufferPointer()), size);
        return std::make_pair(*std::move(call), message);
      }
      // Too small: build again with room to spare. The heap copy is dropped.
      capacity = RoundUpForBuilder(size + size / 8 + kMinReservation);
    }
  }

  ClientChannel* channel_;
  std::shared_ptr<void> owner_;
  std::shared_ptr<ExportLink> exports_;
  internal::HandleReference* reference_ = nullptr;
  uint32_t handle_ = 0;
};

}  // namespace sluice::rpc

#endif  // SLUICE_IPC_RPC_PROXY_H_
