// How object references look on the wire: the values of (sluice_interface)
// fields, the interface word of a call addressed to an object handle, and
// the object protocol's control calls. One source for the runtime (object.h,
// proxy.h) and the docs (docs/objects.md, docs/wire-format.md).
//
// Every value here arrives from the peer and is untrusted: decoders check
// each one (IsHandleField, IsObjectWord) before use, and a handle is only an
// index into the table of the channel it arrived on, so a forged or stale
// one finds nothing (NOT_FOUND), never another peer's object.
#ifndef SLUICE_IPC_RPC_OBJECT_WIRE_H_
#define SLUICE_IPC_RPC_OBJECT_WIRE_H_

#include <cstdint>

#include "ipc/rpc/wire.h"

namespace sluice::rpc::object_wire {

// --- (sluice_interface) field values (uint or ulong fields) -----------------
//   0                      null
//   1 .. 63                a dedicated channel: 1 + the index of the first of
//                          its two descriptors (region, liveness) in the call
//   kHandleFlag | handle   object `handle` of the sender (1 .. 2^31 - 1):
//                          in a request on a connection, on the reverse
//                          channel the sender opened on it (a oneway
//                          request's under its ticket, see kSettleMethod);
//                          in a request on a reverse channel, on the
//                          connection it was opened on (the sender's
//                          table there); in a reply, on the channel the
//                          reply came on
//   kReturnFlag | handle   an object of the receiver's own (1 .. 2^30 - 1)
//                          passed back to it (a proxy returned to its
//                          host): in a request, by the handle the receiver
//                          lent it under to the sender on this very
//                          channel; in a reply on a connection, by the
//                          handle the receiver lent it under on the reverse
//                          channel it opened on that connection (the reply
//                          then carries a ticket, whose settling lets the
//                          sender drop what kept the handle lent)
inline constexpr uint32_t kHandleFlag = uint32_t{1} << 31;
inline constexpr uint32_t kMaxHandle = kHandleFlag - 1;
inline constexpr uint32_t kReturnFlag = uint32_t{1} << 30;

constexpr bool IsHandleField(uint64_t field) {
  return field > kHandleFlag && field <= uint64_t{0xffffffff};
}
constexpr uint32_t HandleOfField(uint64_t field) {
  return static_cast<uint32_t>(field) & ~kHandleFlag;
}
constexpr uint32_t HandleField(uint32_t handle) { return kHandleFlag | handle; }

// Handles of the receiver's own up to this one can be passed back.
inline constexpr uint32_t kMaxReturnedHandle = kReturnFlag - 1;
constexpr bool IsReturnedField(uint64_t field) {
  return field > kReturnFlag && field < kHandleFlag;
}
constexpr uint32_t HandleOfReturnedField(uint64_t field) {
  return static_cast<uint32_t>(field) & ~kReturnFlag;
}
constexpr uint32_t ReturnedField(uint32_t handle) { return kReturnFlag | handle; }

// --- The interface word of a call (CallHeader::interface_id) ----------------
// On a channel's own object (a service, a dedicated object channel) it is
// the interface id. A call addressed to an object handle carries
//   kObjectTag << 48 | Fold16(interface id) << 32 | handle
// so the host finds the object by handle and still checks the interface
// (16 bits of it, beside the method word's 32-bit signature check).
inline constexpr uint64_t kObjectTag = 0x0b1e;

constexpr uint16_t Fold16(uint64_t interface_id) {
  return static_cast<uint16_t>(interface_id ^ (interface_id >> 16) ^ (interface_id >> 32) ^
                               (interface_id >> 48));
}
constexpr uint64_t ObjectWord(uint32_t handle, uint64_t interface_id) {
  return (kObjectTag << 48) | (uint64_t{Fold16(interface_id)} << 32) | handle;
}
constexpr bool IsObjectWord(uint64_t word) { return (word >> 48) == kObjectTag; }
constexpr uint32_t HandleOfWord(uint64_t word) { return static_cast<uint32_t>(word); }
constexpr uint16_t FoldOfWord(uint64_t word) { return static_cast<uint16_t>(word >> 32); }

// --- The object protocol: control calls beside every object's own methods ---
inline constexpr uint64_t kControlInterfaceId = Fnv1a64("sluice.ObjectControl");
// To an object (a channel's own, or a handle): a new dedicated channel to it,
// for a third process. Empty request; empty reply carrying the client ends
// (region, liveness) as descriptors.
inline constexpr uint64_t kCloneMethod = MethodWord(Fnv1a32("Clone"), Fnv1a32("->ObjectFds"));
// Client to server on a connection: "here is the reverse channel for the
// objects I pass you by handle". Empty request carrying its client ends
// (region, liveness); empty reply once adopted.
inline constexpr uint64_t kOpenReverseMethod =
    MethodWord(Fnv1a32("OpenReverse"), Fnv1a32("ObjectFds->"));
// Holder to host on a reverse channel: keep object `handle` (one uint32)
// beyond the call that lent it. Synchronous; NOT_FOUND if it is not lent.
inline constexpr uint64_t kAcquireMethod = MethodWord(Fnv1a32("Acquire"), Fnv1a32("Handle->"));
// The reply word of an Acquire's OK answer: the hold it made. A holder that
// gave up on the answer (its patience ran out) finds the word among its
// channel's unread reply words and releases the hold, which would otherwise
// keep the object until the channel ends. Never a ticket word (those fit in
// 32 bits); peers that predate it answer with 0.
inline constexpr uint64_t kHoldWordTag = 0x484f4c44;  // "HOLD"
constexpr uint64_t HoldWord(uint32_t handle) { return (kHoldWordTag << 32) | handle; }
constexpr bool IsHoldWord(uint64_t word) { return (word >> 32) == kHoldWordTag; }
constexpr uint32_t HandleOfHoldWord(uint64_t word) { return static_cast<uint32_t>(word); }
// Holder to host on a reverse channel, oneway: each uint32 handle of the
// request gives back one Acquire. Releasing what was not acquired is
// DATA_LOSS (the reverse channel closes).
inline constexpr uint64_t kReleaseMethod =
    MethodWord(Fnv1a32("Release"), Fnv1a32("Handles->,oneway"));
// Most handles one Release carries.
inline constexpr uint32_t kMaxReleasesPerCall = 1024;

// --- Objects lent until the holder says what it keeps ------------------------
// Nobody waits for the end of a reply, or of a oneway call, so their loans
// cannot end with a call: a reply that lends objects by handle carries a
// ticket (1 .. 2^32 - 1) as its reply word (Reply::word), a oneway request
// as its request word (CallHeader::word), and its objects stay lent until
// the holder settles the ticket. Calls on a reply's objects go on the
// connection the reply came on, addressed by object word, like calls on a
// reverse channel; a oneway call's objects are on the reverse channel.
constexpr bool IsTicketWord(uint64_t word) { return word != 0 && word <= uint64_t{0xffffffff}; }
// Holder to host, oneway, once the reply is gone (on that connection) or
// the oneway call was served, whatever came of it (on the reverse channel):
// the ticket, then the handles of the objects the holder keeps (uint32
// each), each of which becomes one hold (given back by Release, accepted on
// both); every other loan of the ticket ends. An unknown ticket, or a
// handle the ticket did not lend, is DATA_LOSS (the channel closes).
inline constexpr uint64_t kSettleMethod =
    MethodWord(Fnv1a32("Settle"), Fnv1a32("Ticket,Handles->,oneway"));
// The client's feature bit (ClientChannel::AnnounceFeatures) saying it
// takes objects by handle in replies: set by proxies that keep their
// channel alive (a Connection<>'s, a Remote<>'s). Without it a server sends
// objects in replies as dedicated channels, as to peers that predate it.
inline constexpr uint32_t kTakesReplyHandles = 1u << 0;
// The client's feature bit saying it calls, on this connection, the objects
// the server passes by handle in its calls on the client's objects (on the
// reverse channel the client opened): the server lends them in the
// connection's table, as its replies' objects. Set by a proxy's ExportLink
// before it opens the reverse channel, when something keeps the connection
// open. Without it those objects go as dedicated channels.
inline constexpr uint32_t kTakesHandlesInReverseCalls = 1u << 1;
// The server's feature bit (ServerChannel::AnnounceFeatures) saying it
// takes its own objects passed back by handle (kReturnFlag fields): set by
// the object protocol on every channel it serves. Without it a proxy passed
// back goes as a dedicated channel (Clone), as to peers that predate it.
inline constexpr uint32_t kTakesReturnedHandles = 1u << 0;
// The client's feature bit saying it takes its own objects passed back by
// handle in replies (kReturnFlag fields, looked up in the table of the
// reverse channel it opened on the connection): set by a proxy's
// ExportLink when it opens that channel, when something keeps the
// connection open. Without it a proxy returned in a reply goes as a
// dedicated channel (Clone).
inline constexpr uint32_t kTakesReturnedReplyHandles = 1u << 2;
// Most objects one ticket (a reply, a oneway call) lends by handle; more go
// as dedicated channels.
inline constexpr uint32_t kMaxLoansPerTicket = kMaxReleasesPerCall - 1;

}  // namespace sluice::rpc::object_wire

#endif  // SLUICE_IPC_RPC_OBJECT_WIRE_H_
