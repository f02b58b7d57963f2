// Object references: passing an interface implementation to another process
// (a callback, a listener, a session), which gets a typed proxy to it.
//
//   // sender: a local object, or a proxy it holds (then the receiver calls
//   // the object's host directly, not through the sender)
//   auto listener = std::make_shared<MyListener>();
//   feed->Subscribe(listener, "news");            // generated from (sluice_interface)
//
//   // receiver, inside a stub method
//   absl::StatusOr<rpc::Remote<ListenerProxy>> remote =
//       rpc::TakeObject<ListenerProxy>(context, request.listener());
//   (*remote)->OnEvent(...);
//
// How a reference travels (docs/objects.md has the whole design):
//
// * By handle (the fast path): a local object passed in a call (sync or
//   oneway) through a proxy that has an ExportLink (a service Connection<>, a
//   Remote<>) is entered in a table of the caller's and the field holds its
//   handle. The callee calls it on the connection's reverse channel: one
//   channel per connection, opened by the caller at the first object it
//   passes and served by its ObjectHost pool, which carries every object the
//   caller ever lends that peer. A pass then costs a table entry, not a
//   channel.
// * By handle on the connection: a local object a handler attaches to its
//   reply (AttachObject) on a connection served with the object protocol,
//   or that a holder passes in a call on an object lent to it over the
//   reverse channel, is entered in that connection's own table; its peer
//   calls it on the connection itself. Objects in replies on a reverse
//   channel are entered in that channel's table likewise. Only for proxies
//   that keep their channel open (Connection<>, Remote<>).
// * Passed back: a proxy passed back to its host, in a synchronous call on
//   the channel it was lent on, or in a reply on the connection whose
//   reverse channel it was lent on, holds the host's own handle; the host
//   gets its local object (TakeLocal). A reply pins the replier's
//   reference under its ticket until the host settles it.
// * As a dedicated channel (everything else: proxies passed on, proxies
//   over bare channels either way): a channel of its own made by the
//   object's host, whose client ends travel with the message as SCM_RIGHTS
//   descriptors. Passing on a proxy asks the host for a fresh one, so
//   references never route through intermediaries.
//
// Lifetime: a handle is lent for the call it travels in. The receiver's
// handler borrows it; what the handler keeps past its return is acquired
// from the host (one control call) before the reply goes, and released when
// its last Remote<> goes. A handle in a reply is lent until the Response
// goes, one in a oneway call until the receiver has served it; the holder
// then settles the ticket they were lent under (one oneway message)
// naming what it keeps. The host keeps the object while it is lent or
// held, and drops every handle of a reverse channel when that channel ends
// (the holder closed it or died). A dedicated channel is one reference, as
// long as it is open.
//
// Identity: the holder introduces itself on every channel it calls objects
// through (a reverse channel, a dedicated channel) with a hello message whose
// SCM_CREDENTIALS the host reads (ChannelOptions::hello_identity), so
// CallContext::caller names the process that actually holds the reference,
// vouched for by the kernel as SO_PEERCRED is for service connections.
#ifndef SLUICE_IPC_RPC_OBJECT_H_
#define SLUICE_IPC_RPC_OBJECT_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "ipc/base/mutex.h"
#include "ipc/base/unique_fd.h"
#include "ipc/channel/client_channel.h"
#include "ipc/channel/layout.h"
#include "ipc/channel/peer_watcher.h"
#include "ipc/rpc/blob.h"
#include "ipc/rpc/message.h"
#include "ipc/rpc/object_wire.h"
#include "ipc/rpc/proxy.h"
#include "ipc/rpc/server_pool.h"
#include "ipc/rpc/stub.h"

namespace sluice::rpc {

// The client ends of one object channel, as they travel.
struct ObjectFds {
  UniqueFd region;
  UniqueFd liveness;
};

// Serves this process's exported objects: one ServerPool, started on first
// export, living until the process exits. It serves the dedicated channels
// and the reverse channels this process opens (ExportLink).
class ObjectHost {
 public:
  static ObjectHost& Get();

  // Threads serving exported objects (Binder's setMaxThreads); default 4.
  void SetMaxThreads(int max_threads) { pool_.SetMaxThreads(max_threads); }

  // A new dedicated reference to `stub`: a channel served from now on.
  absl::StatusOr<ObjectFds> Export(std::shared_ptr<ServiceStub> stub);

  // References peers hold to this process's objects now: dedicated channels
  // open, plus objects lent or held by handle (one per object and table:
  // a reverse channel's, a connection's for its replies; however many
  // times it was passed).
  size_t reference_count() const;
  size_t thread_count() { return pool_.thread_count(); }

 private:
  friend class ExportLink;
  friend class ExportTable;
  friend class ConnectionStub;
  ObjectHost();
  // Process-wide, without making the host: tables and channels count from
  // any thread, their destructors included, some under a pool's lock.
  static void CountReference(int delta);

  channel_layout::Geometry geometry_;
  ServerPool pool_;
};

// The object protocol for one served channel (a service connection, a
// dedicated object channel): answers its control calls (Clone, OpenReverse)
// beside `stub`'s own methods, and keeps the reverse channel the client
// opened, so that its handlers can call what it passes by handle. ObjectHost
// and ServiceHost serve every channel through one of their own.
std::shared_ptr<ServiceStub> ServeWithObjectProtocol(std::shared_ptr<ServiceStub> stub);

class ExportTable;
class ImportLink;

// Where the handle fields of the request being served are taken from: the
// reverse channel the caller opened on a connection (an ImportLink), or, in
// a call on a reverse channel, the holder's objects on the connection the
// channel was opened on (found when first needed; object.cc).
class ImportSource {
 public:
  virtual ~ImportSource() = default;
  // The object behind `handle`, borrowed for the call being served (recorded
  // in `borrowed`) unless this process holds it already. UNAVAILABLE when
  // the channel it would be called on has closed.
  virtual absl::StatusOr<std::shared_ptr<RemoteObject>> TakeLent(uint32_t handle,
                                                                 BorrowedObjects* borrowed) = 0;
  // Settles `ticket` (a reply's, a oneway call's): those of `taken` still
  // alive are kept, from now on held; every other loan of it ends.
  virtual void SettleKeeping(uint32_t ticket,
                             std::span<const std::weak_ptr<RemoteObject>> taken) = 0;
  // The reference this process has to the caller's object `handle` when it
  // is called on `channel` through this source, so that a reply can pass it
  // back by handle; null otherwise (it then goes as a dedicated channel).
  virtual std::shared_ptr<RemoteObject> Holding(const ClientChannel* /*channel*/,
                                                uint32_t /*handle*/) {
    return nullptr;
  }
};

// Where this process lends its objects by handle to the peer of one channel
// it calls on, and how it calls the objects that peer lends it. Shared by
// the proxies of that channel.
//
// * On a channel this process calls out on (`primary`: a Connection<>'s, a
//   dedicated Remote<>'s; Create): its objects go into the table of a
//   reverse channel it serves for them, opened at the first one (again if
//   that one ended). The objects the peer lends it, in replies on `primary`
//   and in calls on that reverse channel, are called on `primary`, through
//   one ImportLink (PeerLink).
// * On a reverse channel this process holds (made by the object protocol
//   for the holder's end): its objects passed in calls on the host's objects
//   go into the table of the connection the host opened that channel on,
//   where the host calls them; the host's objects in replies on the reverse
//   channel are called on it, through the link it already has.
class ExportLink : public std::enable_shared_from_this<ExportLink> {
 public:
  // For `primary`, kept open by `owner` (a Connection's channel, a dedicated
  // RemoteObject). Without an owner (a test's bare channel) objects the peer
  // passes in calls on the reverse channel cannot be taken.
  static std::shared_ptr<ExportLink> Create(ClientChannel* primary,
                                            std::weak_ptr<void> owner = {}) {
    return std::shared_ptr<ExportLink>(new ExportLink(primary, std::move(owner), nullptr));
  }

  // One loan of a local object for a call through this link's proxies: its
  // handle, or an error. UNIMPLEMENTED or FAILED_PRECONDITION if the peer
  // cannot take objects by handle (it then gets dedicated channels, and
  // this link is not tried again). `under_ticket` (a oneway call's):
  // RESOURCE_EXHAUSTED while too many tickets are open.
  struct Loan {
    std::shared_ptr<ExportTable> exports;
    uint32_t handle = 0;
  };
  absl::StatusOr<Loan> Lend(std::shared_ptr<ServiceStub> stub, absl::Time deadline,
                            bool under_ticket = false);
  // Ends a loan once its call has returned.
  static void EndLoan(const Loan& loan);
  // This process's object that the peer holds or borrows under `handle`,
  // passed back in a reply; null if it lends none under it (any more).
  std::shared_ptr<ServiceStub> FindLent(uint32_t handle);

  // The link to the objects the peer lends this process by handle, made at
  // the first one and kept by them. Null once nothing keeps `primary` open
  // (or nothing was said to).
  std::shared_ptr<ImportLink> PeerLink();

 private:
  friend class ConnectionStub;
  ExportLink(ClientChannel* primary, std::weak_ptr<void> owner, std::shared_ptr<ExportTable> fixed)
      : primary_(primary),
        owner_(std::move(owner)),
        fixed_(fixed != nullptr),
        current_(fixed),
        published_(std::move(fixed)) {}
  // The holder's end of a reverse channel: lends into `connection_table`.
  static std::shared_ptr<ExportLink> InTable(std::shared_ptr<ExportTable> connection_table) {
    return std::shared_ptr<ExportLink>(new ExportLink(nullptr, {}, std::move(connection_table)));
  }

  absl::StatusOr<std::shared_ptr<ExportTable>> OpenReverse(absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  ClientChannel* const primary_;
  // Keeps primary_ open; each PeerLink holds it.
  const std::weak_ptr<void> owner_;
  // current_ is a connection's table, never replaced (InTable).
  const bool fixed_;
  Mutex mu_;
  std::shared_ptr<ExportTable> current_ ABSL_GUARDED_BY(mu_);
  bool unsupported_ ABSL_GUARDED_BY(mu_) = false;
  // Not mu_, which Lend holds across OpenReverse's round trip: pool threads
  // serving the reverse channel ask for peer_ (HolderObjects), and threads
  // reading replies for current_ (FindLent).
  Mutex peer_mu_;
  // Weak: the link's objects keep it, and through it this and the channel.
  std::weak_ptr<ImportLink> peer_ ABSL_GUARDED_BY(peer_mu_);
  // current_, once it is open.
  std::shared_ptr<ExportTable> published_ ABSL_GUARDED_BY(peer_mu_);
};

// The channel through which this process calls the objects a peer lent it
// by handle, and which of them it holds: the receiving end of a reverse
// channel (kept by the connection's object protocol), or a channel this
// process calls out on, whose peer lends it objects in replies and in calls
// on the reverse channel (ExportLink::PeerLink). Kept by every RemoteObject
// made from it.
class ImportLink final : public ImportSource, public std::enable_shared_from_this<ImportLink> {
 public:
  // `keep` keeps `channel` open; `exports`: where objects passed in calls on
  // the imported objects are lent (null: as dedicated channels).
  ImportLink(ClientChannel& channel, std::shared_ptr<void> keep,
             std::shared_ptr<ExportLink> exports = nullptr)
      : channel_(&channel), keep_(std::move(keep)), exports_(std::move(exports)) {}
  explicit ImportLink(std::shared_ptr<ClientChannel> channel) : ImportLink(*channel, channel) {}
  ~ImportLink();
  ClientChannel& channel() const { return *channel_; }

  // The object behind `handle`: the one this process has already, or a new
  // reference borrowed for the call being served, or for the life of a
  // Response (recorded in `borrowed`).
  std::shared_ptr<RemoteObject> Import(uint32_t handle, BorrowedObjects* borrowed);

  absl::StatusOr<std::shared_ptr<RemoteObject>> TakeLent(uint32_t handle,
                                                         BorrowedObjects* borrowed) override {
    return Import(handle, borrowed);
  }
  void SettleKeeping(uint32_t ticket, std::span<const std::weak_ptr<RemoteObject>> taken) override;
  std::shared_ptr<RemoteObject> Holding(const ClientChannel* channel, uint32_t handle) override;
  // Where this process lends the objects it passes to the peer (null: as
  // dedicated channels), and looks up its own that the peer passes back.
  const std::shared_ptr<ExportLink>& exports() const { return exports_; }
  // An Acquire whose caller gave up was answered after all (its reply word,
  // object_wire::HoldWord, came back unread): gives that hold back.
  void ReleaseLateHold(uint32_t handle) { Release(handle); }

 private:
  friend class RemoteObject;
  // Tells the host which objects lent under `ticket` this process keeps
  // (oneway, kSettleMethod), in order with the releases.
  void Settle(uint32_t ticket, std::span<const uint32_t> kept);
  // Keeps `handle` beyond the call that lent it (a round trip to its host,
  // on the calling thread's chain; given up at `deadline`, or at
  // kControlPatience).
  absl::Status Acquire(uint32_t handle, absl::Time deadline);
  // Gives back one hold of `handle` (queued, sent oneway).
  void Release(uint32_t handle);
  // `object` (of `handle`) is going: forgets it unless a newer one took its place.
  void Forget(uint32_t handle);
  // Sends what is queued, in order, unless another thread is at it.
  bool StartFlushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Flush();

  // A control message waiting to go: Release (handles) or Settle (ticket,
  // handles).
  struct Outgoing {
    uint64_t method = 0;
    std::vector<uint32_t> words;
  };

  ClientChannel* const channel_;
  const std::shared_ptr<void> keep_;
  const std::shared_ptr<ExportLink> exports_;
  Mutex mu_;
  absl::flat_hash_map<uint32_t, std::weak_ptr<RemoteObject>> imports_ ABSL_GUARDED_BY(mu_);
  std::deque<Outgoing> outbox_ ABSL_GUARDED_BY(mu_);
  bool flushing_ ABSL_GUARDED_BY(mu_) = false;
};

// One reference to an object in another process, shared by every Remote<>
// made from it in this process. Dropping the last one releases it.
class RemoteObject final : public internal::HandleReference {
 public:
  // Opens a dedicated reference received as descriptors (as TakeObject does).
  static absl::StatusOr<std::shared_ptr<RemoteObject>> Adopt(ObjectFds fds);
  ~RemoteObject() override;
  ClientChannel& channel() const { return link_ != nullptr ? link_->channel() : *channel_; }
  // The object's handle on its link's channel; 0 for a dedicated channel.
  uint32_t handle() const { return handle_; }
  // For proxies over it: where objects passed in calls through it are lent.
  const std::shared_ptr<ExportLink>& exports() const { return exports_; }
  // False while borrowed for the call being served (see BorrowedObjects).
  bool held() const { return state_.load(std::memory_order_acquire) == State::kHeld; }

  absl::StatusOr<uint64_t> LinkToDeath(absl::AnyInvocable<void()> recipient) override;
  absl::Status UnlinkToDeath(uint64_t id) override;
  void KeepForOneway(absl::Time deadline) override {
    if (state_.load(std::memory_order_acquire) == State::kBorrowed) Settle(deadline);
  }
  // Held from now on, if it was borrowed and its host lets it be kept (or
  // another thread already settled it): whether it is.
  bool KeepHeld(absl::Time deadline) {
    Settle(deadline);
    return held();
  }

 private:
  friend class ImportLink;
  friend class BorrowedObjects;
  enum class State : uint8_t { kBorrowed, kSettling, kHeld };
  explicit RemoteObject(std::unique_ptr<ClientChannel> channel)
      : channel_(std::move(channel)), state_(State::kHeld) {}
  RemoteObject(std::shared_ptr<ImportLink> link, uint32_t handle)
      : link_(std::move(link)),
        handle_(handle),
        exports_(link_->exports_),
        state_(State::kBorrowed) {}
  // Borrowed -> held (BorrowedObjects::Settle, KeepForOneway).
  void Settle(absl::Time deadline = absl::InfiniteFuture());
  // Returns once no Settle is under way on another thread.
  void AwaitKeep();
  // Borrowed -> settling (for Settle, or a reply's settle message); false if it was not
  // borrowed. EndKeep, once the message is queued: held.
  bool BeginKeep();
  void EndKeep();

  std::unique_ptr<ClientChannel> channel_;  // A dedicated channel; or
  std::shared_ptr<ImportLink> link_;        // the channel it has a handle on.
  const uint32_t handle_ = 0;
  // Set once, before the object is shared (Adopt, or the handle constructor).
  std::shared_ptr<ExportLink> exports_;
  std::atomic<State> state_;
  // Held by Settle for its round trip (see AwaitKeep).
  Mutex keep_mu_;
  Mutex mu_;
  // Death links made through this reference (handles only; a dedicated
  // channel takes its own with it).
  std::vector<uint64_t> death_links_ ABSL_GUARDED_BY(mu_);
};

// A typed proxy to a remote object, together with the reference it calls
// through. Copies share the reference, and so do the Responses of its calls:
// the reference lives until the last of them goes.
template <typename Proxy>
class Remote {
 public:
  explicit Remote(std::shared_ptr<RemoteObject> object)
      : object_(std::move(object)), proxy_(TargetOf(object_)) {}
  Remote(const Remote& other) : Remote(other.object_) {}
  Remote& operator=(const Remote& other) {
    if (this != &other) *this = Remote(other.object_);
    return *this;
  }
  Remote(Remote&&) noexcept = default;
  Remote& operator=(Remote&&) noexcept = default;

  Proxy* operator->() { return &proxy_; }
  Proxy& proxy() { return proxy_; }
  const Proxy& proxy() const { return proxy_; }
  const std::shared_ptr<RemoteObject>& object() const { return object_; }

 private:
  static ProxyTarget TargetOf(const std::shared_ptr<RemoteObject>& object) {
    return ProxyTarget{.channel = &object->channel(),
                       .owner = object,
                       .handle = object->handle(),
                       .reference = object->handle() != 0 ? object.get() : nullptr,
                       .exports = object->exports()};
  }
  std::shared_ptr<RemoteObject> object_;
  Proxy proxy_;
};

// What can be passed where an interface is expected: a local implementation,
// any proxy (a Remote<>'s, or a service Connection's), or nothing.
class ObjectRef {
 public:
  ObjectRef() = default;
  ObjectRef(std::nullptr_t) {}  // NOLINT: null is a valid reference.
  template <typename Stub>
  requires std::is_base_of_v<ServiceStub, Stub> ObjectRef(std::shared_ptr<Stub> local)
      : local_(std::move(local)) {}  // NOLINT
  ObjectRef(const ProxyBase& proxy)  // NOLINT
      : remote_(&proxy.channel()), remote_handle_(proxy.handle()) {}
  template <typename Proxy>
  ObjectRef(const Remote<Proxy>& remote)  // NOLINT
      : remote_(&remote.object()->channel()), remote_handle_(remote.object()->handle()) {}

  bool is_null() const { return local_ == nullptr && remote_ == nullptr; }
  // The local object's interface id; 0 for a remote one (known to its host).
  uint64_t local_interface_id() const { return local_ != nullptr ? local_->interface_id() : 0; }
  const std::shared_ptr<ServiceStub>& local() const { return local_; }
  // For a remote object: the channel it is called on, and its handle there
  // (0: the channel's own object). Null and 0 for a local one.
  ClientChannel* remote_channel() const { return remote_; }
  uint32_t remote_handle() const { return remote_handle_; }

  // Descriptors for one new dedicated reference: a fresh export of a local
  // object, or a new channel from a remote object's host (one round trip).
  absl::StatusOr<ObjectFds> MakeReference(absl::Time deadline = absl::InfiniteFuture()) const;

 private:
  std::shared_ptr<ServiceStub> local_;
  ClientChannel* remote_ = nullptr;  // Borrowed: a reference is made at once.
  uint32_t remote_handle_ = 0;
};

// The objects one reply lends by handle, as its Response holds them: each
// taken one is borrowed while the Response lives; when it goes, the reply's
// ticket is settled with those still alive, which this process then holds.
class ReplyObjects {
 public:
  // `keeps_channel`: the link keeps its channel open (the proxy had an
  // owner); otherwise nothing may be taken, only settled.
  ReplyObjects(std::shared_ptr<ImportLink> link, uint32_t ticket, bool keeps_channel)
      : link_(std::move(link)), ticket_(ticket), keeps_channel_(keeps_channel) {}
  ~ReplyObjects();
  ReplyObjects(const ReplyObjects&) = delete;
  ReplyObjects& operator=(const ReplyObjects&) = delete;

  // The object of a handle field of the reply.
  absl::StatusOr<std::shared_ptr<RemoteObject>> Take(uint32_t handle);
  // This process's own object of a returned field (kReturnFlag) of the
  // reply: found while the reply's ticket keeps the peer's reference.
  absl::StatusOr<std::shared_ptr<ServiceStub>> TakeReturned(uint32_t handle);

 private:
  const std::shared_ptr<ImportLink> link_;
  const uint32_t ticket_;
  const bool keeps_channel_;
  Mutex mu_;
  std::vector<std::weak_ptr<RemoteObject>> taken_ ABSL_GUARDED_BY(mu_);
};

// The descriptors going with one message, the objects it lends by handle,
// and the values its (sluice_fd) and (sluice_interface) fields hold (see
// object_wire.h). Loans end when it is destroyed, after the call returned.
class Attachments {
 public:
  // `leading`: descriptors attached without a field (CallOptions::fds),
  // which keep their indices at the front. Objects go as dedicated channels.
  explicit Attachments(std::span<const int> leading = {}) : raw_(leading.begin(), leading.end()) {}
  // For a call through `proxy`: local objects are lent by handle when the
  // proxy has an ExportLink; for a `oneway` one, under a ticket
  // (LendUnderTicket) rather than until this goes.
  Attachments(const ProxyBase& proxy, std::span<const int> leading = {}, bool oneway = false)
      : raw_(leading.begin(), leading.end()),
        channel_(&proxy.channel()),
        exports_(proxy.exports()),
        oneway_(oneway) {}
  ~Attachments();
  Attachments(const Attachments&) = delete;
  Attachments& operator=(const Attachments&) = delete;

  // `fd` goes with the message (the receiver gets its own duplicate); keep
  // it open until the call is made. -1 gives 0 (no descriptor).
  absl::StatusOr<uint32_t> AddFd(int fd);
  // `blob` goes with the message, without a copy (an empty one gives 0).
  absl::StatusOr<uint32_t> AddBlob(const Blob& blob) { return AddFd(blob.fd()); }
  // A reference to `object` goes with the message. Null gives 0.
  // INVALID_ARGUMENT if `object` is a local stub of another interface than
  // `interface_id` (0: any).
  absl::StatusOr<uint32_t> AddObject(const ObjectRef& object, uint64_t interface_id = 0,
                                     absl::Time deadline = absl::InfiniteFuture());

  std::span<const int> fds() const { return raw_; }

 private:
  friend uint32_t internal::LendUnderTicket(Attachments& attachments);
  friend void internal::EndUnsentTicket(Attachments& attachments, uint32_t ticket);

  std::vector<int> raw_;
  std::vector<UniqueFd> owned_;
  // The channel the call goes on (null: unknown, objects go as channels).
  ClientChannel* channel_ = nullptr;
  std::shared_ptr<ExportLink> exports_;
  const bool oneway_ = false;
  absl::InlinedVector<ExportLink::Loan, 2> loans_;
  // The table a oneway call's ticket is open in.
  std::shared_ptr<ExportTable> ticket_table_;
};

namespace internal {
absl::StatusOr<std::shared_ptr<RemoteObject>> AdoptAt(UniqueFd region, UniqueFd liveness,
                                                      uint64_t field);
absl::StatusOr<std::shared_ptr<RemoteObject>> ImportAt(const CallContext& context, uint64_t field);
absl::StatusOr<std::shared_ptr<ServiceStub>> ReturnedAt(const CallContext& context, uint64_t field);
absl::StatusOr<std::shared_ptr<RemoteObject>> ReferenceToReturned(const CallContext& context,
                                                                  uint64_t field);
absl::StatusOr<std::shared_ptr<RemoteObject>> ImportFromReply(ReplyObjects* lent, uint64_t field);
absl::StatusOr<std::shared_ptr<ServiceStub>> ReturnedInReply(ReplyObjects* lent, uint64_t field);
absl::StatusOr<std::shared_ptr<RemoteObject>> ReferenceToReturnedInReply(ReplyObjects* lent,
                                                                         uint64_t field);
absl::StatusOr<UniqueFd> FdAt(UniqueFd fd, uint64_t field);
absl::StatusOr<Blob> BlobAt(UniqueFd fd, uint64_t field);
}  // namespace internal

// The descriptor of an (sluice_fd) field of the request being served.
// NOT_FOUND for 0 (none sent); DATA_LOSS for an index with no descriptor or
// one already taken.
inline absl::StatusOr<UniqueFd> TakeFd(const CallContext& context, uint64_t field) {
  if (context.call == nullptr) return absl::FailedPreconditionError("not inside a call");
  return internal::FdAt(field == 0 ? UniqueFd() : context.call->TakeFd(field - 1), field);
}
template <typename T>
absl::StatusOr<UniqueFd> TakeFd(Response<T>& response, uint64_t field) {
  return internal::FdAt(field == 0 ? UniqueFd() : response.TakeFd(field - 1), field);
}

// The blob of an (sluice_blob) field of the request being served (or of a
// response): an empty Blob for 0 (none sent); DATA_LOSS for an index with no
// descriptor, or a descriptor that is not a memfd sealed against writes.
inline absl::StatusOr<Blob> TakeBlob(const CallContext& context, uint64_t field) {
  if (context.call == nullptr) return absl::FailedPreconditionError("not inside a call");
  if (field == 0) return Blob();
  return internal::BlobAt(context.call->TakeFd(field - 1), field);
}
template <typename T>
absl::StatusOr<Blob> TakeBlob(Response<T>& response, uint64_t field) {
  if (field == 0) return Blob();
  return internal::BlobAt(response.TakeFd(field - 1), field);
}

// The object of an (sluice_interface) field of the request being served, as
// a typed proxy. NOT_FOUND for 0 (null); DATA_LOSS if the message carries no
// such reference (no such descriptors; a handle on a connection whose caller
// opened no reverse channel). A handle the caller never lent, or no longer
// lends, is taken but its calls fail with NOT_FOUND.
// One of this process's own objects passed back to it (see TakeLocal) is
// taken as a proxy too, over a new dedicated channel to itself: TakeLocal
// is the cheap way to it.
template <typename Proxy>
absl::StatusOr<Remote<Proxy>> TakeObject(const CallContext& context, uint64_t field) {
  if (context.call == nullptr) return absl::FailedPreconditionError("not inside a call");
  if (object_wire::IsHandleField(field) || object_wire::IsReturnedField(field)) {
    auto object = object_wire::IsHandleField(field) ? internal::ImportAt(context, field)
                                                    : internal::ReferenceToReturned(context, field);
    if (!object.ok()) return object.status();
    return Remote<Proxy>(*std::move(object));
  }
  UniqueFd region = field == 0 ? UniqueFd() : context.call->TakeFd(field - 1);
  UniqueFd liveness = field == 0 ? UniqueFd() : context.call->TakeFd(field);
  auto object = internal::AdoptAt(std::move(region), std::move(liveness), field);
  if (!object.ok()) return object.status();
  return Remote<Proxy>(*std::move(object));
}

namespace internal {
template <typename Stub>
absl::StatusOr<std::shared_ptr<Stub>> AsLocal(absl::StatusOr<std::shared_ptr<ServiceStub>> local) {
  if (!local.ok()) return local.status();
  std::shared_ptr<Stub> typed = std::dynamic_pointer_cast<Stub>(*std::move(local));
  if (typed == nullptr) {
    return absl::FailedPreconditionError("the object passed back is not of the type asked for");
  }
  return typed;
}
}  // namespace internal

// The object of an (sluice_interface) field of the request being served
// when it is this process's own: a proxy to it that the caller passes back
// on the channel it was lent on (a session handed out in a reply, given
// back to be closed), as Binder hands a host its local object. NOT_FOUND
// for anything else (null, the caller's object, a proxy that came back
// through another process, or an object no longer lent to the caller);
// FAILED_PRECONDITION if the object is not a `Stub`. Costs a table look-up.
template <typename Stub>
absl::StatusOr<std::shared_ptr<Stub>> TakeLocal(const CallContext& context, uint64_t field) {
  if (context.call == nullptr) return absl::FailedPreconditionError("not inside a call");
  return internal::AsLocal<Stub>(internal::ReturnedAt(context, field));
}
// The same for a field of a response: one of this process's objects that
// the peer held through this connection and returned (a listener it was
// given, handed back), found while `response` lives.
template <typename Stub, typename T>
absl::StatusOr<std::shared_ptr<Stub>> TakeLocal(Response<T>& response, uint64_t field) {
  return internal::AsLocal<Stub>(internal::ReturnedInReply(response.lent_objects(), field));
}

// TakeObject for a field of a response. An object the reply lends by handle
// is borrowed while `response` lives, and kept once it goes if any Remote<>
// of it is still alive. One of this process's own returned to it is taken
// as a proxy over a new dedicated channel to itself (TakeLocal is the
// cheap way to it).
template <typename Proxy, typename T>
absl::StatusOr<Remote<Proxy>> TakeObject(Response<T>& response, uint64_t field) {
  if (object_wire::IsHandleField(field) || object_wire::IsReturnedField(field)) {
    auto object = object_wire::IsHandleField(field)
                      ? internal::ImportFromReply(response.lent_objects(), field)
                      : internal::ReferenceToReturnedInReply(response.lent_objects(), field);
    if (!object.ok()) return object.status();
    return Remote<Proxy>(*std::move(object));
  }
  UniqueFd region = field == 0 ? UniqueFd() : response.TakeFd(field - 1);
  UniqueFd liveness = field == 0 ? UniqueFd() : response.TakeFd(field);
  auto object = internal::AdoptAt(std::move(region), std::move(liveness), field);
  if (!object.ok()) return object.status();
  return Remote<Proxy>(*std::move(object));
}

// For a stub method: attaches to the response being built a descriptor or a
// reference, returning the value for its field.
absl::StatusOr<uint32_t> AttachFd(const CallContext& context, int fd);
inline absl::StatusOr<uint32_t> AttachBlob(const CallContext& context, const Blob& blob) {
  return blob.empty() ? absl::StatusOr<uint32_t>(0) : AttachFd(context, blob.fd());
}
// A local object on a connection served with the object protocol is lent
// by handle on that connection (until the caller's Response goes); anything
// else goes as a dedicated channel.
absl::StatusOr<uint32_t> AttachObject(const CallContext& context, const ObjectRef& object);

}  // namespace sluice::rpc

#endif  // SLUICE_IPC_RPC_OBJECT_H_
