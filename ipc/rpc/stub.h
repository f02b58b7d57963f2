// ServiceStub: what every generated stub class builds on. Calls reach a
// stub through rpc::ServerPool (server_pool.h; ServiceHost and ObjectHost
// serve with one).
//
// A generated stub's Dispatch() checks the interface id, finds the method by
// id, checks its signature, makes the request safe to read (private copy when
// small; see message.h), verifies it, and calls the implementation with a
// FlatBufferBuilder whose memory is reply space in the region, so the reply
// too is written once, in place.
//
// Errors the caller sees: UNIMPLEMENTED for a method this server does not
// have, FAILED_PRECONDITION for a different interface or a method whose
// request/response types differ, DATA_LOSS for a malformed request (the
// channel is then closed), and whatever Status the implementation returns.
#ifndef SLUICE_IPC_RPC_STUB_H_
#define SLUICE_IPC_RPC_STUB_H_

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "flatbuffers/flatbuffers.h"
#include "ipc/channel/server_channel.h"
#include "ipc/rpc/message.h"
#include "ipc/rpc/region_allocator.h"
#include "ipc/rpc/wire.h"

namespace sluice::rpc {

class RemoteObject;
class ImportSource;
class ExportTable;

// The objects a call's handler took by handle (TakeObject): lent to us for
// the duration of the call only. Those the handler keeps (any Remote<> or
// Response of theirs still alive when it returns) are acquired from their
// host before the reply goes, so the host keeps them; the others were never
// more than borrowed and cost the host nothing (docs/objects.md).
class BorrowedObjects {
 public:
  BorrowedObjects() = default;
  BorrowedObjects(const BorrowedObjects&) = delete;
  BorrowedObjects& operator=(const BorrowedObjects&) = delete;
  void Add(std::weak_ptr<RemoteObject> object) { objects_.push_back(std::move(object)); }
  // Acquires every borrowed object still alive. Called once the handler
  // returned, before its reply or error goes.
  void Settle() {
    if (!objects_.empty()) SettleSlow();
  }
  // For a oneway call, whose objects were lent under `ticket`: settles it on
  // `link`, keeping every borrowed object still alive (one oneway message,
  // no round trip). Called once the call was served, whatever came of it.
  void SettleUnder(ImportSource& link, uint32_t ticket);

 private:
  void SettleSlow();
  absl::InlinedVector<std::weak_ptr<RemoteObject>, 2> objects_;
};

// The objects a call's reply lends by handle (AttachObject), and the
// caller's own it passes back by handle (each pinned: the reference this
// process holds, whose Release must not reach the caller before the reply
// does). When the handler succeeded they go into the connection's table
// under a ticket, the reply's word, until the caller settles it; otherwise
// (an error, or a reply never sent) their loans end here, and the pins go.
class ReplyLoans {
 public:
  explicit ReplyLoans(ExportTable* table) : table_(table) {}
  ~ReplyLoans() {
    if (!handles_.empty()) EndLoans();
  }
  ReplyLoans(const ReplyLoans&) = delete;
  ReplyLoans& operator=(const ReplyLoans&) = delete;
  // The connection's table (null: objects in replies go as dedicated channels).
  ExportTable* table() const { return table_; }
  size_t size() const { return handles_.size() + pins_.size(); }
  void Add(uint32_t handle) { handles_.push_back(handle); }
  void Pin(std::shared_ptr<void> reference) { pins_.push_back(std::move(reference)); }
  // Sends the reply, with the loans' ticket as its word; a reply that did
  // not go out with it ends them.
  absl::Status Reply(IncomingCall& call, std::span<const std::byte> message) {
    return handles_.empty() && pins_.empty() ? call.Reply(message) : ReplySlow(call, message);
  }

 private:
  absl::Status ReplySlow(IncomingCall& call, std::span<const std::byte> message);
  void EndLoans();
  ExportTable* const table_;
  absl::InlinedVector<uint32_t, 2> handles_;
  std::vector<std::shared_ptr<void>> pins_;
};

// What an implementation knows about the call it is serving.
struct CallContext {
  // The calling process, as the service manager saw it (SO_PEERCRED), or
  // as the kernel vouched for it on an object channel (SCM_CREDENTIALS).
  PeerCredentials caller;
  // The call being served (null outside a call).
  IncomingCall* call = nullptr;
  // Where the objects the caller passes by handle are called: the reverse
  // channel it opened on this connection, or, in a call on a reverse
  // channel, the connection it was opened on (null: the caller can pass
  // none by handle here).
  ImportSource* imports = nullptr;
  // Where TakeObject records the objects it borrows (HandleCall sets it;
  // for a oneway call the object protocol does).
  BorrowedObjects* borrowed = nullptr;
  // Where local objects attached to the reply are lent by handle: the
  // connection's table or the reverse channel's, set by the object protocol
  // (null: dedicated channels).
  ExportTable* results = nullptr;
  // The reply's loans (HandleCall sets it from `results`).
  ReplyLoans* lends = nullptr;
  // The interface the call addresses when it is addressed to an object
  // handle (set by the host's object table, never by the peer); 0: the
  // header's interface id.
  uint64_t target_interface = 0;

  // Descriptors the caller sent with the request (CallOptions::fds), owned
  // by the implementation from now on. Empty when there were none.
  std::vector<UniqueFd> TakeFds() const {
    return call != nullptr ? call->TakeFds() : std::vector<UniqueFd>();
  }
  // Sends duplicates of `fds` with the response (Response::TakeFds).
  absl::Status AttachReplyFds(std::span<const int> fds) const {
    if (call == nullptr) return absl::FailedPreconditionError("not inside a call");
    return call->AttachReplyFds(fds);
  }
};

// Smallest reply reservation: a FlatBuffer's fixed costs fit comfortably.
inline constexpr size_t kMinReplyReservation = 512;

// Per-method counters a stub keeps. reply_hint learns the largest reply so
// far, so that later replies fit their first reservation.
struct MethodStats {
  std::atomic<uint64_t> calls{0};
  std::atomic<size_t> reply_hint{512};
};

// The schema an interface was generated from (sluice-idlc's
// <stem>_schema.h), which the service manager describes the service with
// and checks clients against at connect.
struct InterfaceSchema {
  std::span<const uint8_t> binary;  // A .bfbs; empty when unknown.
  uint64_t structural_hash = 0;
};

class ServiceStub {
 public:
  virtual ~ServiceStub() = default;
  virtual absl::string_view service_name() const = 0;
  virtual uint64_t interface_id() const = 0;
  // Generated stubs return their interface's; hand-written ones have none.
  virtual InterfaceSchema schema() const { return {}; }
  // Answers `call`. Returns DATA_LOSS when the request was malformed, after
  // failing the call; the server then closes the channel (ServeRouted).
  // Return soon after answering: from its answer until Dispatch returns, a
  // pool thread counts as about to look for the channel's next request, so
  // the client wakes no other thread for it
  // (IncomingCall::set_announce_poll_with_reply). To answer later, or from
  // another thread, move the call out.
  virtual absl::Status Dispatch(IncomingCall& call, const CallContext& context) = 0;
};

// --- Used by generated code -------------------------------------------------

// The interface a call addresses: the header's, unless the host resolved an
// object handle (CallContext::target_interface).
inline uint64_t TargetInterface(const IncomingCall& call, const CallContext& context) {
  return context.target_interface != 0 ? context.target_interface : call.header().interface_id;
}

absl::Status RejectInterface(IncomingCall& call, absl::string_view service, uint64_t interface_id);
absl::Status RejectMethod(IncomingCall& call, absl::string_view service);

// Checks the signature half of the method word and the sync/oneway kind:
// FAILED_PRECONDITION (not yet sent to the caller) when they differ.
absl::Status CheckMethod(IncomingCall& call, uint64_t method_word, bool oneway,
                         absl::string_view what);

// Private scratch for requests, one per server thread, grown on demand and
// kept: a warmed-up server thread copies without allocating.
MessageBuffer& ThreadRequestBuffer();

// The request of `call` checked against the method and verified, or the
// error it was failed with (DATA_LOSS for a malformed one).
template <typename Request>
absl::StatusOr<const Request*> AcceptRequest(IncomingCall& call, uint64_t method_word, bool oneway,
                                             absl::string_view what, MethodStats& stats) {
  if (absl::Status mismatch = CheckMethod(call, method_word, oneway, what); !mismatch.ok()) {
    (void)call.Fail(mismatch);
    return mismatch;
  }
  stats.calls.fetch_add(1, std::memory_order_relaxed);
  auto request = VerifyMessage<Request>(
      Stabilize(call.request(), call.request_immutable(), ThreadRequestBuffer()), what);
  if (!request.ok()) (void)call.Fail(request.status());
  return request;
}

// The context a handler sees: the dispatcher's, for this very call.
inline CallContext ContextFor(IncomingCall& call, const CallContext& context,
                              BorrowedObjects* borrowed, ReplyLoans* lends) {
  CallContext this_call = context;
  this_call.caller = call.caller();
  this_call.call = &call;
  this_call.borrowed = borrowed;
  this_call.lends = lends;
  return this_call;
}

template <typename Request, typename Handler>
absl::Status HandleOneway(IncomingCall& call, const CallContext& context, uint64_t method_word,
                          absl::string_view what, MethodStats& stats, Handler&& handler) {
  absl::StatusOr<const Request*> request =
      AcceptRequest<Request>(call, method_word, /*oneway=*/true, what, stats);
  if (!request.ok()) return request.status();
  // A oneway caller is not waiting for the outcome; errors go nowhere.
  // What it lent by handle is lent under a ticket: the object protocol
  // (ServeWithObjectProtocol) gave us `borrowed`, and settles it once this
  // returns, keeping what the handler kept.
  const CallContext this_call = ContextFor(call, context, context.borrowed, nullptr);
  (void)handler(this_call, **request);
  return call.Reply({});
}

template <typename Request, typename Response, typename Handler>
absl::Status HandleCall(IncomingCall& call, const CallContext& context, uint64_t method_word,
                        absl::string_view what, MethodStats& stats, Handler&& handler) {
  absl::StatusOr<const Request*> request =
      AcceptRequest<Request>(call, method_word, /*oneway=*/false, what, stats);
  if (!request.ok()) return request.status();
  size_t hint = RoundUpForBuilder(stats.reply_hint.load(std::memory_order_relaxed));
  absl::StatusOr<std::span<std::byte>> space = call.ReserveReply(hint);
  if (!space.ok() && hint > kMinReplyReservation) {
    // A large hint (learned from a large reply) must not fail a small one.
    hint = kMinReplyReservation;
    space = call.ReserveReply(hint);
  }
  if (!space.ok()) return call.Fail(space.status());
  RegionAllocator allocator(*space);
  flatbuffers::FlatBufferBuilder fbb(space->size(), &allocator, /*own_allocator=*/false);
  BorrowedObjects borrowed;
  ReplyLoans lends(context.results);
  const CallContext this_call = ContextFor(call, context, &borrowed, &lends);
  absl::StatusOr<flatbuffers::Offset<Response>> root = handler(this_call, **request, fbb);
  // Before the reply: the caller's loans end when it has the reply.
  borrowed.Settle();
  if (!root.ok()) return call.Fail(root.status());
  fbb.Finish(*root);
  const size_t size = fbb.GetSize();
  const auto* data = reinterpret_cast<const std::byte*>(fbb.GetBufferPointer());
  if (!allocator.overflowed()) {
    // Far smaller than reserved: let the hint come down again.
    if (size < hint / 4 && hint > kMinReplyReservation) {
      size_t current = hint;
      (void)stats.reply_hint.compare_exchange_strong(
          current, std::max(kMinReplyReservation, hint / 2), std::memory_order_relaxed);
    }
    return lends.Reply(call, {data, size});
  }
  // The reply outgrew its reservation: copy it once more, and reserve enough
  // next time.
  size_t grown = hint;
  while (grown < size && !stats.reply_hint.compare_exchange_weak(grown, size + size / 8)) {
  }
  absl::StatusOr<std::span<std::byte>> bigger = call.ReserveReply(size);
  if (!bigger.ok()) return call.Fail(bigger.status());
  std::memcpy(bigger->data(), data, size);
  return lends.Reply(call, bigger->first(size));
}

}  // namespace sluice::rpc

#endif  // SLUICE_IPC_RPC_STUB_H_
