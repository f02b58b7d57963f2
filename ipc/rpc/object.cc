#include "ipc/rpc/object.h"

#include <fcntl.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "ipc/base/errno_status.h"
#include "ipc/channel/channel_region.h"
#include "ipc/rpc/wire.h"
#include "ipc/socket/unix_socket.h"

namespace sluice::rpc {

using object_wire::kAcquireMethod;
using object_wire::kCloneMethod;
using object_wire::kControlInterfaceId;
using object_wire::kOpenReverseMethod;
using object_wire::kReleaseMethod;
using object_wire::kSettleMethod;

namespace {

// Dedicated object channels carry callbacks, not bulk data: a service's
// slots, smaller arenas.
constexpr channel_layout::Geometry kObjectGeometry{
    .slot_count = channel_layout::Geometry{}.slot_count,
    .request_arena_size = uint64_t{1} << 20,
    .reply_arena_size = uint64_t{1} << 20};
// A reverse channel carries the calls on every object lent to one peer:
// every slot there is, so that many holders' threads seldom wait for one.
constexpr channel_layout::Geometry kReverseGeometry{.slot_count = channel_layout::kMaxSlots,
                                                    .request_arena_size = uint64_t{1} << 20,
                                                    .reply_arena_size = uint64_t{1} << 20};

// Most reverse channels one client may open on a connection (it opens one
// more only when the last ended): a bound on what a hostile one can pin.
constexpr size_t kMaxReverseChannels = 16;

// How long the object protocol's own messages (Acquire, Release, Settle)
// wait for a slot and for an answer: they are sent from destructors and
// between a handler and its reply, where a host that never answers must
// not hold a thread for ever. Past it an Acquire fails (the object stays
// borrowed, and its calls fail once its loan ends); a Release or Settle
// stays queued for the link's next send.
constexpr absl::Duration kControlPatience = absl::Seconds(5);

// Most replies with objects a connection's caller may leave unsettled (its
// Responses still alive, or a caller that never settles); past it, replies
// lend objects as dedicated channels. Each costs the host a few words.
constexpr size_t kMaxOpenTickets = 4096;

// The request bytes of a control call, copied out of the peer's memory
// before they are read (the peer may still change them in place).
std::vector<uint32_t> CopyHandles(const IncomingCall& call) {
  const std::span<const std::byte> bytes = call.request();
  std::vector<uint32_t> handles(bytes.size() / sizeof(uint32_t));
  if (!handles.empty())
    std::memcpy(handles.data(), bytes.data(), handles.size() * sizeof(uint32_t));
  return handles;
}

absl::Status Malformed(IncomingCall& call, absl::Status why) {
  (void)call.Fail(why);
  return why;
}

// A dedicated channel for `stub` (or a reverse one), served by the host's
// pool: the server end stays here, the client ends go to the peer.
absl::StatusOr<std::pair<std::unique_ptr<ServerChannel>, ObjectFds>> MakeObjectChannel(
    const channel_layout::Geometry& geometry) {
  absl::StatusOr<Region> region = CreateChannelRegion(geometry);
  if (!region.ok()) return region.status();
  UniqueFd client_region(::fcntl(region->fd(), F_DUPFD_CLOEXEC, 0));
  if (!client_region) return ErrnoStatus("fcntl(F_DUPFD_CLOEXEC) on an object region", errno);
  absl::StatusOr<std::pair<UniqueFd, UniqueFd>> sockets = SeqPacketPair();
  if (!sockets.ok()) return sockets.status();
  // The holder's hello tells us who it is (see the file comment in object.h).
  if (absl::Status passcred = EnableSenderCredentials(sockets->first.get()); !passcred.ok()) {
    return passcred;
  }
  ChannelOptions options;
  options.hello_identity = true;
  absl::StatusOr<std::unique_ptr<ServerChannel>> channel = ServerChannel::Open(
      *std::move(region), std::move(sockets->first), ProcessPeerWatcher(), options);
  if (!channel.ok()) return channel.status();
  return std::make_pair(*std::move(channel),
                        ObjectFds{std::move(client_region), std::move(sockets->second)});
}

// The holder's end of an object channel received as descriptors; it says
// hello at once. DATA_LOSS for descriptors that are no such channel.
absl::StatusOr<std::unique_ptr<ClientChannel>> OpenObjectChannel(ObjectFds fds) {
  absl::StatusOr<Region> region = Region::Adopt(std::move(fds.region), 0, Region::kMaxSize);
  if (!region.ok()) {
    return absl::DataLossError(
        absl::StrCat("object reference: bad region: ", region.status().message()));
  }
  ChannelOptions options;
  options.hello_identity = true;
  absl::StatusOr<std::unique_ptr<ClientChannel>> channel = ClientChannel::Open(
      *std::move(region), std::move(fds.liveness), ProcessPeerWatcher(), options);
  if (!channel.ok()) {
    return absl::DataLossError(
        absl::StrCat("object reference: cannot open its channel: ", channel.status().message()));
  }
  return channel;
}

// Answers Clone for `stub`: a new dedicated channel to it, for a third process.
absl::Status AnswerClone(IncomingCall& call, const std::shared_ptr<ServiceStub>& stub) {
  if (call.oneway()) return call.Fail(absl::FailedPreconditionError("Clone is synchronous"));
  absl::StatusOr<ObjectFds> fds = ObjectHost::Get().Export(stub);
  if (!fds.ok()) return call.Fail(fds.status());
  const int raw[] = {fds->region.get(), fds->liveness.get()};
  if (absl::Status attached = call.AttachReplyFds(raw); !attached.ok()) return call.Fail(attached);
  return call.Reply({});
}

absl::Status NoSuchControl(IncomingCall& call) {
  return call.Fail(absl::UnimplementedError(
      absl::StrCat("object protocol: no control method 0x", absl::Hex(call.header().method))));
}

}  // namespace

// ---------------------------------------------------------------------------
// The host's side: the objects lent by handle to one peer.

// The table of one reverse channel, or of the replies of one connection:
// handle -> object, with why it is kept (loans: calls in progress that
// passed it, or unsettled replies that lent it; holds: Acquires and settled
// keeps the holder has not released). An object passed again while in the
// table keeps its handle; once neither is left the entry goes, and its
// handle is never used again on this channel, nor in the tables that
// follow it on the same connection (`first_handle`): a handle passed back
// names one object, whichever table is current when it arrives.
class ExportTable {
 public:
  explicit ExportTable(uint32_t first_handle = 1) : next_handle_(first_handle) {}
  ~ExportTable() { Close(); }

  // `under_ticket` (for a reply, a oneway call): RESOURCE_EXHAUSTED while
  // too many tickets are open.
  absl::StatusOr<uint32_t> Lend(std::shared_ptr<ServiceStub> stub, bool under_ticket = false) {
    MutexLock lock(&mu_);
    if (closed_) return absl::FailedPreconditionError("the channel of this object table has ended");
    if (under_ticket && tickets_.size() >= kMaxOpenTickets) {
      return absl::ResourceExhaustedError(
          absl::StrCat(tickets_.size(), " tickets of objects lent are not settled yet"));
    }
    auto known = handles_.find(stub.get());
    if (known != handles_.end()) {
      ++entries_[known->second].loans;
      return known->second;
    }
    if (next_handle_ > object_wire::kMaxHandle) {
      return absl::ResourceExhaustedError("object handles of this connection are used up");
    }
    const uint32_t handle = next_handle_++;
    handles_.emplace(stub.get(), handle);
    entries_.emplace(handle, Entry{std::move(stub), 1, 0});
    ObjectHost::CountReference(1);
    return handle;
  }

  void EndLoan(uint32_t handle) {
    std::shared_ptr<ServiceStub> dropped;
    MutexLock lock(&mu_);
    dropped = EndLoanLocked(handle);
  }

  absl::Status Acquire(uint32_t handle) {
    MutexLock lock(&mu_);
    auto it = entries_.find(handle);
    if (it == entries_.end() || it->second.loans == 0) {
      return absl::NotFoundError(
          absl::StrCat("object handle ", handle, " is not lent on this channel (any more)"));
    }
    ++it->second.holds;
    return absl::OkStatus();
  }

  absl::Status Release(uint32_t handle) {
    std::shared_ptr<ServiceStub> dropped;
    MutexLock lock(&mu_);
    if (closed_) return absl::OkStatus();
    auto it = entries_.find(handle);
    if (it == entries_.end() || it->second.holds == 0) {
      return absl::DataLossError(
          absl::StrCat("the holder released object handle ", handle, ", which it does not hold"));
    }
    --it->second.holds;
    dropped = EraseIfUnusedLocked(it);
    return absl::OkStatus();
  }

  // A reply or a oneway call lends `handles` (each loaned once by Lend):
  // they stay lent under the returned ticket until Settle, and `pins` (the
  // holder's objects a reply passes back) stay alive until then. 0 if the
  // table closed meanwhile (the loans are gone with it; the pins go as
  // `pins` does).
  uint32_t OpenTicket(std::span<const uint32_t> handles,
                      std::vector<std::shared_ptr<void>>* pins = nullptr) {
    MutexLock lock(&mu_);
    if (closed_) return 0;
    do {
      next_ticket_ = next_ticket_ == UINT32_MAX ? 1 : next_ticket_ + 1;
    } while (tickets_.contains(next_ticket_));
    Ticket& ticket = tickets_[next_ticket_];
    ticket.handles.assign(handles.begin(), handles.end());
    if (pins != nullptr) ticket.pins.swap(*pins);
    return next_ticket_;
  }

  // Whether one more ticket may open (a soft bound: see kMaxOpenTickets).
  bool HasTicketRoom() {
    MutexLock lock(&mu_);
    return !closed_ && tickets_.size() < kMaxOpenTickets;
  }

  // The holder's answer for a ticket: it keeps `kept` (one occurrence
  // each), the other loans end.
  absl::Status Settle(uint32_t ticket, std::span<const uint32_t> kept) {
    std::vector<std::shared_ptr<ServiceStub>> dropped;
    // Declared before the lock: its objects' destructors queue Releases.
    Ticket settled;
    MutexLock lock(&mu_);
    if (closed_) return absl::OkStatus();
    auto found = tickets_.find(ticket);
    if (found == tickets_.end()) {
      return absl::DataLossError(
          absl::StrCat("the holder settled ticket ", ticket, ", which is not open"));
    }
    settled = std::move(found->second);
    tickets_.erase(found);
    absl::InlinedVector<uint32_t, 2>& lent = settled.handles;
    for (uint32_t handle : kept) {
      auto it = std::find(lent.begin(), lent.end(), handle);
      if (it == lent.end()) {
        // Its other loans end all the same: the caller is cut off anyway.
        for (uint32_t other : lent) dropped.push_back(EndLoanLocked(other));
        return absl::DataLossError(absl::StrCat("the holder kept object handle ", handle,
                                                ", which ticket ", ticket, " did not lend"));
      }
      lent.erase(it);
      auto entry = entries_.find(handle);
      if (entry != entries_.end()) {
        --entry->second.loans;
        ++entry->second.holds;
      }
    }
    for (uint32_t handle : lent) dropped.push_back(EndLoanLocked(handle));
    return absl::OkStatus();
  }

  std::shared_ptr<ServiceStub> Find(uint32_t handle) {
    MutexLock lock(&mu_);
    auto it = entries_.find(handle);
    return it == entries_.end() ? nullptr : it->second.stub;
  }

  // The channel ended: every object on it is released.
  void Close() {
    absl::flat_hash_map<uint32_t, Entry> entries;
    absl::flat_hash_map<uint32_t, Ticket> tickets;
    {
      MutexLock lock(&mu_);
      if (closed_) return;
      closed_ = true;
      entries.swap(entries_);
      handles_.clear();
      tickets.swap(tickets_);
    }
    // Counted down before the objects go, so that a test that sees an
    // object destroyed sees its reference gone too.
    ObjectHost::CountReference(-static_cast<int>(entries.size()));
  }

  bool closed() {
    MutexLock lock(&mu_);
    return closed_;
  }

  // Where the next table on the same connection starts numbering.
  uint32_t next_handle() {
    MutexLock lock(&mu_);
    return next_handle_;
  }

 private:
  struct Entry {
    std::shared_ptr<ServiceStub> stub;
    uint64_t loans = 0;
    uint64_t holds = 0;
  };
  struct Ticket {
    absl::InlinedVector<uint32_t, 2> handles;
    std::vector<std::shared_ptr<void>> pins;
  };

  // Returns the object if that was its last use (see EraseIfUnusedLocked).
  std::shared_ptr<ServiceStub> EndLoanLocked(uint32_t handle) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = entries_.find(handle);
    if (it == entries_.end()) return nullptr;  // Closed meanwhile.
    --it->second.loans;
    return EraseIfUnusedLocked(it);
  }

  // Removes the entry if nothing keeps it; returns its object, to be dropped
  // once mu_ is released (its destructor may do anything).
  std::shared_ptr<ServiceStub> EraseIfUnusedLocked(
      absl::flat_hash_map<uint32_t, Entry>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (it->second.loans != 0 || it->second.holds != 0) return nullptr;
    std::shared_ptr<ServiceStub> stub = std::move(it->second.stub);
    handles_.erase(stub.get());
    entries_.erase(it);
    ObjectHost::CountReference(-1);
    return stub;
  }

  Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  uint32_t next_handle_ ABSL_GUARDED_BY(mu_);
  uint32_t next_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint32_t, Ticket> tickets_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint32_t, Entry> entries_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<const ServiceStub*, uint32_t> handles_ ABSL_GUARDED_BY(mu_);
};

namespace {

// A call addressed to an object handle of `table` (the header's word is an
// object word): dispatched to the object lent under it, in `resolved`.
absl::Status DispatchToHandle(ExportTable& table, IncomingCall& call, CallContext resolved) {
  const uint64_t word = call.header().interface_id;
  const uint32_t handle = object_wire::HandleOfWord(word);
  std::shared_ptr<ServiceStub> stub = table.Find(handle);
  if (stub == nullptr) {
    return call.Fail(absl::NotFoundError(absl::StrCat(
        "no object with handle ", handle, " on this channel (never lent, or released)")));
  }
  const uint16_t fold = object_wire::FoldOfWord(word);
  if (call.header().method == kCloneMethod && fold == object_wire::Fold16(kControlInterfaceId)) {
    return AnswerClone(call, stub);
  }
  if (fold != object_wire::Fold16(stub->interface_id())) {
    return call.Fail(absl::FailedPreconditionError(absl::StrCat(
        "object handle ", handle, " is a ", stub->service_name(), ", not the interface called")));
  }
  resolved.target_interface = stub->interface_id();
  return stub->Dispatch(call, resolved);
}

// Acquire (synchronous): one 4-byte handle lent for the call in progress,
// from now on held.
absl::Status AnswerAcquire(IncomingCall& call, ExportTable& table) {
  if (call.request().size() != sizeof(uint32_t)) {
    return Malformed(call,
                     absl::DataLossError(absl::StrCat("Acquire carries one 4-byte handle, not ",
                                                      call.request().size(), " bytes")));
  }
  const uint32_t handle = CopyHandles(call)[0];
  if (absl::Status acquired = table.Acquire(handle); !acquired.ok()) return call.Fail(acquired);
  call.set_reply_word(object_wire::HoldWord(handle));
  return call.Reply({});
}

// Release (oneway): each 4-byte handle of the request gives back one hold.
absl::Status AnswerRelease(IncomingCall& call, ExportTable& table) {
  const size_t size = call.request().size();
  if (size % sizeof(uint32_t) != 0 || size > object_wire::kMaxReleasesPerCall * sizeof(uint32_t)) {
    return Malformed(call, absl::DataLossError(absl::StrCat("Release carries 4-byte handles, not ",
                                                            size, " bytes")));
  }
  for (uint32_t handle : CopyHandles(call)) {
    if (absl::Status released = table.Release(handle); !released.ok()) {
      return Malformed(call, released);
    }
  }
  return call.Reply({});
}

// Settle (oneway): a ticket, then the 4-byte handles the holder keeps.
absl::Status AnswerSettle(IncomingCall& call, ExportTable& table) {
  const size_t size = call.request().size();
  if (size % sizeof(uint32_t) != 0 || size < sizeof(uint32_t) ||
      size > (object_wire::kMaxLoansPerTicket + 1) * sizeof(uint32_t)) {
    return Malformed(
        call, absl::DataLossError(absl::StrCat("Settle carries a ticket and 4-byte handles, not ",
                                               size, " bytes")));
  }
  const std::vector<uint32_t> words = CopyHandles(call);
  if (absl::Status settled = table.Settle(words[0], std::span(words).subspan(1)); !settled.ok()) {
    return Malformed(call, settled);
  }
  return call.Reply({});
}

// Serves `call` with `dispatch(context)`. A oneway call whose objects
// its sender lent under a ticket (its request word) is settled through
// `imports` once it was served, whatever came of it (refused, malformed,
// failed), so that nothing stays lent that nobody holds.
template <typename Dispatch>
absl::Status ServeSettlingTicket(IncomingCall& call, CallContext context, Dispatch&& dispatch) {
  const uint64_t ticket = call.header().word;
  if (!call.oneway() || context.imports == nullptr || !object_wire::IsTicketWord(ticket)) {
    return dispatch(context);
  }
  BorrowedObjects borrowed;
  context.borrowed = &borrowed;
  const absl::Status served = dispatch(context);
  borrowed.SettleUnder(*context.imports, static_cast<uint32_t>(ticket));
  return served;
}

// The objects a holder passes in calls on a reverse channel: its own, lent
// in the table of the connection the channel was opened on, and called
// there (the lender's PeerLink, found at the first one; it lives only while
// something keeps that connection open).
class HolderObjects final : public ImportSource {
 public:
  explicit HolderObjects(std::shared_ptr<ExportLink> lender) : lender_(std::move(lender)) {}

  absl::StatusOr<std::shared_ptr<RemoteObject>> TakeLent(uint32_t handle,
                                                         BorrowedObjects* borrowed) override {
    std::shared_ptr<ImportLink> link = lender_->PeerLink();
    if (link == nullptr) {
      return absl::UnavailableError(
          absl::StrCat("the message passes object handle ", handle,
                       ", lent on a connection to its sender that is no longer open"));
    }
    return link->Import(handle, borrowed);
  }
  void SettleKeeping(uint32_t ticket, std::span<const std::weak_ptr<RemoteObject>> taken) override {
    // Without the connection there is nobody to tell: its table went with it.
    if (std::shared_ptr<ImportLink> link = lender_->PeerLink()) link->SettleKeeping(ticket, taken);
  }

 private:
  const std::shared_ptr<ExportLink> lender_;
};

// Serves a reverse channel: calls addressed to object handles go to the
// object lent under that handle; the holder's Acquire, Release and Settle
// (of the oneway calls and replies that lent objects) adjust the table.
// Objects the holder passes in those calls are its own, lent on our
// connection to it (`lender`'s); objects in their replies are lent in this
// channel's table. Destroyed when the pool lets the channel go, which
// releases every object on it.
class ReverseStub final : public ServiceStub {
 public:
  ReverseStub(std::shared_ptr<ExportTable> exports, std::shared_ptr<ExportLink> lender)
      : exports_(std::move(exports)), holder_objects_(std::move(lender)) {}
  ~ReverseStub() override { exports_->Close(); }
  absl::string_view service_name() const override { return "sluice.ReverseChannel"; }
  uint64_t interface_id() const override { return 0; }

  absl::Status Dispatch(IncomingCall& call, const CallContext& context) override {
    const uint64_t word = call.header().interface_id;
    if (word == kControlInterfaceId) return Control(call);
    if (!object_wire::IsObjectWord(word)) {
      return call.Fail(absl::FailedPreconditionError(
          absl::StrCat("a reverse channel carries calls to object handles, not to interface 0x",
                       absl::Hex(word))));
    }
    CallContext resolved = context;
    resolved.imports = &holder_objects_;
    resolved.results = exports_.get();
    return ServeSettlingTicket(call, resolved, [&](const CallContext& served) {
      return DispatchToHandle(*exports_, call, served);
    });
  }

 private:
  absl::Status Control(IncomingCall& call) {
    const uint64_t method = call.header().method;
    if (method == kAcquireMethod && !call.oneway()) return AnswerAcquire(call, *exports_);
    if (method == kReleaseMethod && call.oneway()) return AnswerRelease(call, *exports_);
    if (method == kSettleMethod && call.oneway()) return AnswerSettle(call, *exports_);
    return NoSuchControl(call);
  }

  const std::shared_ptr<ExportTable> exports_;
  HolderObjects holder_objects_;
};

}  // namespace

// ---------------------------------------------------------------------------
// The object protocol of a served channel.

class ConnectionStub final : public ServiceStub {
 public:
  // `counted`: the channel is a dedicated reference to `inner`.
  ConnectionStub(std::shared_ptr<ServiceStub> inner, bool counted)
      : inner_(std::move(inner)), counted_(counted) {
    if (counted_) ObjectHost::CountReference(1);
  }
  ~ConnectionStub() override {
    results_->Close();
    if (counted_) ObjectHost::CountReference(-1);
  }
  absl::string_view service_name() const override { return inner_->service_name(); }
  uint64_t interface_id() const override { return inner_->interface_id(); }

  absl::Status Dispatch(IncomingCall& call, const CallContext& context) override {
    // Before anything of ours is lent here (the first reply, OpenReverse).
    call.AnnounceServerFeatures(object_wire::kTakesReturnedHandles);
    const uint64_t word = call.header().interface_id;
    if (word == kControlInterfaceId) return Control(call);
    CallContext connection = context;
    connection.imports = imports_.load(std::memory_order_acquire);
    connection.results = results_.get();
    return ServeSettlingTicket(
        call, connection, [&](const CallContext& served) { return DispatchCall(call, served); });
  }

 private:
  absl::Status Control(IncomingCall& call) {
    const uint64_t method = call.header().method;
    if (method == kCloneMethod) return AnswerClone(call, inner_);
    if (method == kOpenReverseMethod && !call.oneway()) return OpenReverse(call);
    // For the objects our replies lent, and those we passed in calls on
    // the client's objects (on the reverse channel).
    if (method == kAcquireMethod && !call.oneway()) return AnswerAcquire(call, *results_);
    if (method == kSettleMethod && call.oneway()) return AnswerSettle(call, *results_);
    if (method == kReleaseMethod && call.oneway()) return AnswerRelease(call, *results_);
    return NoSuchControl(call);
  }

  absl::Status DispatchCall(IncomingCall& call, const CallContext& connection) {
    const uint64_t word = call.header().interface_id;
    // An object a reply of ours lent by handle: served as the connection's
    // own object is, objects passed both ways included.
    // (A service whose own id happens to look like an object word is still
    // itself.)
    if (object_wire::IsObjectWord(word) && word != inner_->interface_id()) {
      return DispatchToHandle(*results_, call, connection);
    }
    return inner_->Dispatch(call, connection);
  }

  absl::Status OpenReverse(IncomingCall& call) {
    std::vector<UniqueFd> fds = call.TakeFds();
    if (fds.size() != 2) {
      return Malformed(call, absl::DataLossError(absl::StrCat(
                                 "OpenReverse carries 2 descriptors, not ", fds.size())));
    }
    {
      MutexLock lock(&mu_);
      if (links_.size() >= kMaxReverseChannels) {
        return call.Fail(absl::ResourceExhaustedError(
            absl::StrCat("this connection opened ", links_.size(), " reverse channels already")));
      }
    }
    absl::StatusOr<std::unique_ptr<ClientChannel>> channel =
        OpenObjectChannel(ObjectFds{std::move(fds[0]), std::move(fds[1])});
    if (!channel.ok()) return Malformed(call, channel.status());
    // Objects we pass in calls on the client's objects are lent in our
    // table, if the client calls them here (it says so); otherwise they go
    // as dedicated channels.
    std::shared_ptr<ExportLink> lender;
    if ((call.client_features() & object_wire::kTakesHandlesInReverseCalls) != 0) {
      lender = ExportLink::InTable(results_);
    }
    std::shared_ptr<ClientChannel> reverse(*std::move(channel));
    auto link = std::make_shared<ImportLink>(*reverse, reverse, lender);
    if (lender != nullptr) {
      // Objects in the replies on that channel are called through this link too.
      MutexLock lock(&lender->peer_mu_);
      lender->peer_ = link;
    }
    {
      MutexLock lock(&mu_);
      imports_.store(link.get(), std::memory_order_release);
      links_.push_back(std::move(link));
    }
    return call.Reply({});
  }

  const std::shared_ptr<ServiceStub> inner_;
  const bool counted_;
  // The objects we lend the client by handle: in our replies, and in our
  // calls on its objects.
  const std::shared_ptr<ExportTable> results_ = std::make_shared<ExportTable>();
  Mutex mu_;
  // Every reverse channel the client opened (the newest is imports_): kept
  // while the connection is served, so a handler may read imports_ freely.
  std::vector<std::shared_ptr<ImportLink>> links_ ABSL_GUARDED_BY(mu_);
  std::atomic<ImportLink*> imports_{nullptr};
};

std::shared_ptr<ServiceStub> ServeWithObjectProtocol(std::shared_ptr<ServiceStub> stub) {
  return std::make_shared<ConnectionStub>(std::move(stub), /*counted=*/false);
}

// ---------------------------------------------------------------------------
// ObjectHost

namespace {
std::atomic<int64_t> references{0};
}  // namespace

void ObjectHost::CountReference(int delta) {
  references.fetch_add(delta, std::memory_order_acq_rel);
}

size_t ObjectHost::reference_count() const {
  return static_cast<size_t>(references.load(std::memory_order_acquire));
}

ObjectHost& ObjectHost::Get() {
  static ObjectHost* host = new ObjectHost();  // Serves until exit, like Binder's pool.
  return *host;
}

ObjectHost::ObjectHost() : geometry_(kObjectGeometry), pool_(ServerPool::Options{}) {}

absl::StatusOr<ObjectFds> ObjectHost::Export(std::shared_ptr<ServiceStub> stub) {
  if (stub == nullptr) return absl::InvalidArgumentError("cannot export a null object");
  auto made = MakeObjectChannel(geometry_);
  if (!made.ok()) return made.status();
  if (absl::Status added = pool_.Add(std::move(made->first),
                                     std::make_shared<ConnectionStub>(std::move(stub), true));
      !added.ok()) {
    return added;
  }
  return std::move(made->second);
}

// ---------------------------------------------------------------------------
// ExportLink

absl::StatusOr<std::shared_ptr<ExportTable>> ExportLink::OpenReverse(absl::Time deadline) {
  if (primary_ == nullptr) {
    return absl::FailedPreconditionError("no channel to open a reverse channel on");
  }
  auto made = MakeObjectChannel(kReverseGeometry);
  if (!made.ok()) return made.status();
  // Numbered on from the table it replaces (see ExportTable).
  auto exports = std::make_shared<ExportTable>(current_ != nullptr ? current_->next_handle() : 1);
  made->first->AnnounceFeatures(object_wire::kTakesReturnedHandles);
  if (absl::Status added = ObjectHost::Get().pool_.Add(
          std::move(made->first), std::make_shared<ReverseStub>(exports, shared_from_this()));
      !added.ok()) {
    return added;
  }
  // The peer may lend us its objects in its calls on ours if we can call
  // them on primary_ (PeerLink): something must keep it open.
  // So may it pass ours back in its replies (ReplyObjects::TakeReturned
  // finds them through that link).
  if (!owner_.expired()) {
    primary_->AnnounceFeatures(object_wire::kTakesHandlesInReverseCalls |
                               object_wire::kTakesReturnedReplyHandles);
  }
  // Hand the client ends over on the connection itself. Part of the
  // caller's chain, like any call it makes.
  CallRouter::Outgoing chain;
  absl::StatusOr<OutgoingCall> call = primary_->BeginCall(0, deadline, chain.chain_id());
  if (!call.ok()) return call.status();
  const int raw[] = {made->second.region.get(), made->second.liveness.get()};
  if (absl::Status attached = call->AttachFds(raw); !attached.ok()) return attached;
  call->header() = CallHeader{kControlInterfaceId, kOpenReverseMethod, chain.chain_id()};
  absl::StatusOr<Reply> reply = primary_->Call(*std::move(call), {}, deadline, chain.waiter());
  // Our copies of the client ends close here: if the peer did not adopt
  // them, the pool sees the channel hang up and drops it.
  if (!reply.ok()) {
    exports->Close();
    return absl::Status(reply.status().code(),
                        absl::StrCat("opening a reverse channel for objects passed by handle: ",
                                     reply.status().message()));
  }
  return exports;
}

absl::StatusOr<ExportLink::Loan> ExportLink::Lend(std::shared_ptr<ServiceStub> stub,
                                                  absl::Time deadline, bool under_ticket) {
  std::shared_ptr<ExportTable> exports;
  {
    MutexLock lock(&mu_);
    if (unsupported_) return absl::UnimplementedError("the peer takes no objects by handle");
    if (fixed_) {
      // A connection's table ends with the connection; there is no other.
      if (current_->closed()) {
        return absl::FailedPreconditionError("the connection this channel was opened on has ended");
      }
    } else if (current_ == nullptr || current_->closed()) {
      absl::StatusOr<std::shared_ptr<ExportTable>> opened = OpenReverse(deadline);
      if (!opened.ok()) {
        // A peer without the object protocol (a bare rpc::Serve) says so
        // once; it gets dedicated channels from then on.
        if (absl::IsUnimplemented(opened.status()) || absl::IsFailedPrecondition(opened.status())) {
          unsupported_ = true;
        }
        return opened.status();
      }
      current_ = *std::move(opened);
      MutexLock publishing(&peer_mu_);
      published_ = current_;
    }
    exports = current_;
  }
  absl::StatusOr<uint32_t> handle = exports->Lend(std::move(stub), under_ticket);
  if (!handle.ok()) return handle.status();
  return Loan{std::move(exports), *handle};
}

void ExportLink::EndLoan(const Loan& loan) { loan.exports->EndLoan(loan.handle); }

std::shared_ptr<ServiceStub> ExportLink::FindLent(uint32_t handle) {
  std::shared_ptr<ExportTable> exports;
  {
    // A Lend may be opening the next table meanwhile, for as long as its
    // deadline allows: the replies of other calls are not made to wait.
    MutexLock lock(&peer_mu_);
    exports = published_;
  }
  // Handles are never reused across a connection's tables: one of an
  // earlier table is simply not found here.
  return exports != nullptr ? exports->Find(handle) : nullptr;
}

std::shared_ptr<ImportLink> ExportLink::PeerLink() {
  MutexLock lock(&peer_mu_);
  std::shared_ptr<ImportLink> link = peer_.lock();
  if (link != nullptr || primary_ == nullptr) return link;
  std::shared_ptr<void> owner = owner_.lock();
  if (owner == nullptr) return nullptr;
  // Objects passed in calls on the peer's objects go where those on the
  // channel's own object go: this link, over the reverse channel.
  link = std::make_shared<ImportLink>(*primary_, std::move(owner), shared_from_this());
  peer_ = link;
  return link;
}

// ---------------------------------------------------------------------------
// Objects lent in replies

absl::Status ReplyLoans::ReplySlow(IncomingCall& call, std::span<const std::byte> message) {
  const uint32_t ticket = table_->OpenTicket(handles_, &pins_);
  handles_.clear();  // The ticket has them now (or they went with a closed table).
  // A closed table left the pins here: a reply without a ticket must not
  // pass back handles, which nothing keeps lent now.
  if (ticket == 0 && !pins_.empty()) {
    pins_.clear();
    return call.Fail(
        absl::UnavailableError("the connection's object table closed while the reply was built"));
  }
  call.set_reply_word(ticket);
  absl::Status sent = call.Reply(message);
  // Nobody will settle a ticket the caller never saw.
  if (ticket != 0 && !call.reply_word_sent()) (void)table_->Settle(ticket, {});
  return sent;
}

void ReplyLoans::EndLoans() {
  for (uint32_t handle : handles_) table_->EndLoan(handle);
  handles_.clear();
}

ReplyObjects::~ReplyObjects() {
  std::vector<std::weak_ptr<RemoteObject>> taken;
  {
    MutexLock lock(&mu_);
    taken.swap(taken_);
  }
  link_->SettleKeeping(ticket_, taken);
}

absl::StatusOr<std::shared_ptr<ServiceStub>> ReplyObjects::TakeReturned(uint32_t handle) {
  std::shared_ptr<ServiceStub> local =
      link_->exports() != nullptr ? link_->exports()->FindLent(handle) : nullptr;
  if (local == nullptr) {
    return absl::NotFoundError(absl::StrCat("object handle ", handle,
                                            " passed back in the reply is not lent to the peer "
                                            "on this connection (never, or no longer)"));
  }
  return local;
}

absl::StatusOr<std::shared_ptr<RemoteObject>> ReplyObjects::Take(uint32_t handle) {
  if (!keeps_channel_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the reply lends object handle ", handle,
        " on a channel nothing keeps open for it; take it through a Connection<> or Remote<>"));
  }
  std::shared_ptr<RemoteObject> object = link_->Import(handle, nullptr);
  if (!object->held()) {
    MutexLock lock(&mu_);
    taken_.push_back(object);
  }
  return object;
}

// ---------------------------------------------------------------------------
// ImportLink

ImportLink::~ImportLink() = default;

std::shared_ptr<RemoteObject> ImportLink::Import(uint32_t handle, BorrowedObjects* borrowed) {
  std::shared_ptr<RemoteObject> object;
  {
    MutexLock lock(&mu_);
    std::weak_ptr<RemoteObject>& known = imports_[handle];
    object = known.lock();
    if (object == nullptr) {
      object = std::shared_ptr<RemoteObject>(new RemoteObject(shared_from_this(), handle));
      known = object;
    }
  }
  if (!object->held() && borrowed != nullptr) borrowed->Add(object);
  return object;
}

std::shared_ptr<RemoteObject> ImportLink::Holding(const ClientChannel* channel, uint32_t handle) {
  if (channel != channel_) return nullptr;
  MutexLock lock(&mu_);
  auto it = imports_.find(handle);
  return it == imports_.end() ? nullptr : it->second.lock();
}

void ImportLink::SettleKeeping(uint32_t ticket,
                               std::span<const std::weak_ptr<RemoteObject>> taken) {
  std::vector<std::shared_ptr<RemoteObject>> keeping;
  std::vector<uint32_t> kept;
  for (const std::weak_ptr<RemoteObject>& object : taken) {
    std::shared_ptr<RemoteObject> alive = object.lock();
    // Only this link's objects were lent under its tickets.
    if (alive == nullptr || alive->link_.get() != this) continue;
    if (alive->BeginKeep()) {
      kept.push_back(alive->handle());
      keeping.push_back(std::move(alive));
    } else {
      // Being acquired by another thread (KeepForOneway): its loan must
      // outlive that Acquire, so this ticket is settled once it is done.
      alive->AwaitKeep();
    }
  }
  // Queued before any of them can queue its Release (they are settling
  // until then): the link sends in order.
  Settle(ticket, kept);
  for (const std::shared_ptr<RemoteObject>& object : keeping) object->EndKeep();
}

absl::Status ImportLink::Acquire(uint32_t handle, absl::Time deadline) {
  deadline = std::min(deadline, absl::Now() + kControlPatience);
  // On the chain of the call being served: its caller, the object's host,
  // waits in it and answers on the waiting thread.
  CallRouter::Outgoing chain;
  absl::StatusOr<OutgoingCall> call =
      channel_->BeginCall(sizeof(handle), deadline, chain.chain_id());
  if (!call.ok()) return call.status();
  std::memcpy(call->buffer().data(), &handle, sizeof(handle));
  const std::span<const std::byte> message = call->buffer().first(sizeof(handle));
  call->header() = CallHeader{kControlInterfaceId, kAcquireMethod, chain.chain_id()};
  return channel_->Call(*std::move(call), message, deadline, chain.waiter()).status();
}

void ImportLink::Release(uint32_t handle) {
  {
    MutexLock lock(&mu_);
    // Releases in a row go in one message.
    if (outbox_.empty() || outbox_.back().method != kReleaseMethod ||
        outbox_.back().words.size() >= object_wire::kMaxReleasesPerCall) {
      outbox_.push_back(Outgoing{kReleaseMethod, {}});
    }
    outbox_.back().words.push_back(handle);
    if (!StartFlushLocked()) return;
  }
  Flush();
}

void ImportLink::Settle(uint32_t ticket, std::span<const uint32_t> kept) {
  {
    MutexLock lock(&mu_);
    Outgoing settle{kSettleMethod, {ticket}};
    settle.words.insert(settle.words.end(), kept.begin(), kept.end());
    outbox_.push_back(std::move(settle));
    if (!StartFlushLocked()) return;
  }
  Flush();
}

bool ImportLink::StartFlushLocked() {
  // One thread sends at a time, in order; what others queue meanwhile goes
  // after, so a Release never overtakes the Settle that made it a hold.
  if (flushing_) return false;
  flushing_ = true;
  return true;
}

void ImportLink::Flush() {
  for (;;) {
    Outgoing next;
    {
      MutexLock lock(&mu_);
      if (outbox_.empty()) {
        flushing_ = false;
        return;
      }
      next = std::move(outbox_.front());
      outbox_.pop_front();
    }
    const size_t bytes = next.words.size() * sizeof(uint32_t);
    // A destructor sends these: bounded, so a stuck host cannot hang it. On
    // a channel that ended the host released everything anyway.
    absl::StatusOr<OutgoingCall> call =
        channel_->BeginCall(bytes, absl::Now() + kControlPatience, /*chain_id=*/0);
    absl::Status sent = call.status();
    if (call.ok()) {
      std::memcpy(call->buffer().data(), next.words.data(), bytes);
      const std::span<const std::byte> message = call->buffer().first(bytes);
      call->header() = CallHeader{kControlInterfaceId, next.method, 0};
      sent = channel_->Send(*std::move(call), message);
    }
    if (!sent.ok() && channel_->health().ok()) {
      // Not sent, yet the channel lives: first in line for the next flush.
      MutexLock lock(&mu_);
      outbox_.push_front(std::move(next));
      flushing_ = false;
      return;
    }
  }
}

void ImportLink::Forget(uint32_t handle) {
  MutexLock lock(&mu_);
  auto it = imports_.find(handle);
  if (it != imports_.end() && it->second.expired()) imports_.erase(it);
}

// ---------------------------------------------------------------------------
// RemoteObject

absl::StatusOr<std::shared_ptr<RemoteObject>> RemoteObject::Adopt(ObjectFds fds) {
  absl::StatusOr<std::unique_ptr<ClientChannel>> channel = OpenObjectChannel(std::move(fds));
  if (!channel.ok()) return channel.status();
  std::shared_ptr<RemoteObject> object(new RemoteObject(*std::move(channel)));
  object->exports_ = ExportLink::Create(object->channel_.get(), object);
  return object;
}

RemoteObject::~RemoteObject() {
  if (link_ == nullptr) return;  // A dedicated channel closes with it.
  std::vector<uint64_t> links;
  {
    MutexLock lock(&mu_);
    links.swap(death_links_);
  }
  for (uint64_t id : links) (void)link_->channel().UnlinkToDeath(id);
  link_->Forget(handle_);
  if (state_.load(std::memory_order_acquire) == State::kHeld) link_->Release(handle_);
}

void RemoteObject::Settle(absl::Time deadline) {
  // Held for the round trip: another thread settling this object meanwhile
  // (a handler returning while a worker of its keeps the object for a
  // oneway call) waits for the outcome instead of ending the loan under it.
  MutexLock keeping(&keep_mu_);
  if (!BeginKeep()) return;
  // Failed: the host is gone, or never lent it (a forged handle), or did
  // not answer in time; calls on it fail the same way once its loan ends.
  const absl::Status acquired = link_->Acquire(handle_, deadline);
  state_.store(acquired.ok() ? State::kHeld : State::kBorrowed, std::memory_order_release);
}

void RemoteObject::AwaitKeep() { MutexLock keeping(&keep_mu_); }

bool RemoteObject::BeginKeep() {
  State expected = State::kBorrowed;
  return state_.compare_exchange_strong(expected, State::kSettling, std::memory_order_acq_rel);
}

void RemoteObject::EndKeep() { state_.store(State::kHeld, std::memory_order_release); }

absl::StatusOr<uint64_t> RemoteObject::LinkToDeath(absl::AnyInvocable<void()> recipient) {
  absl::StatusOr<uint64_t> id = channel().LinkToDeath(std::move(recipient));
  if (id.ok() && link_ != nullptr) {
    MutexLock lock(&mu_);
    death_links_.push_back(*id);
  }
  return id;
}

absl::Status RemoteObject::UnlinkToDeath(uint64_t id) {
  if (link_ != nullptr) {
    MutexLock lock(&mu_);
    death_links_.erase(std::remove(death_links_.begin(), death_links_.end(), id),
                       death_links_.end());
  }
  return channel().UnlinkToDeath(id);
}

void BorrowedObjects::SettleUnder(ImportSource& link, uint32_t ticket) {
  link.SettleKeeping(ticket, objects_);
  objects_.clear();
}

void BorrowedObjects::SettleSlow() {
  for (const std::weak_ptr<RemoteObject>& borrowed : objects_) {
    if (std::shared_ptr<RemoteObject> kept = borrowed.lock()) kept->Settle();
  }
  objects_.clear();
}

// ---------------------------------------------------------------------------
// Passing references

absl::StatusOr<ObjectFds> ObjectRef::MakeReference(absl::Time deadline) const {
  if (local_ != nullptr) return ObjectHost::Get().Export(local_);
  if (remote_ == nullptr) return absl::InvalidArgumentError("null object reference");
  // Part of the caller's chain: the host may be blocked in a call to us.
  CallRouter::Outgoing chain;
  absl::StatusOr<OutgoingCall> call = remote_->BeginCall(0, deadline, chain.chain_id());
  if (!call.ok()) return call.status();
  const uint64_t target = remote_handle_ == 0
                              ? kControlInterfaceId
                              : object_wire::ObjectWord(remote_handle_, kControlInterfaceId);
  call->header() = CallHeader{target, kCloneMethod, chain.chain_id()};
  absl::StatusOr<Reply> reply = remote_->Call(*std::move(call), {}, deadline, chain.waiter());
  if (!reply.ok()) {
    return absl::Status(
        reply.status().code(),
        absl::StrCat("passing on a remote object: its host: ", reply.status().message()));
  }
  std::vector<UniqueFd> fds = reply->TakeFds();
  if (fds.size() != 2) {
    return absl::DataLossError(absl::StrCat("passing on a remote object: its host sent ",
                                            fds.size(), " descriptors, not 2"));
  }
  return ObjectFds{std::move(fds[0]), std::move(fds[1])};
}

Attachments::~Attachments() {
  for (const ExportLink::Loan& loan : loans_) ExportLink::EndLoan(loan);
}

absl::StatusOr<uint32_t> Attachments::AddFd(int fd) {
  if (fd < 0) return 0;
  // Borrowed, not duplicated: the call duplicates it when it is sent (the
  // kernel does, through SCM_RIGHTS). Checked here for an early error.
  if (::fcntl(fd, F_GETFD) < 0) return ErrnoStatus(absl::StrCat("attaching fd ", fd), errno);
  raw_.push_back(fd);
  return static_cast<uint32_t>(raw_.size());
}

absl::StatusOr<uint32_t> Attachments::AddObject(const ObjectRef& object, uint64_t interface_id,
                                                absl::Time deadline) {
  if (object.is_null()) return 0;
  if (interface_id != 0 && object.local_interface_id() != 0 &&
      object.local_interface_id() != interface_id) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the object passed implements interface 0x", absl::Hex(object.local_interface_id()),
        ", the field wants 0x", absl::Hex(interface_id)));
  }
  // A proxy passed back to its host, in a call on the very channel it was
  // lent on: the host has the object under that handle (TakeLocal). Not in
  // a oneway call, which may be served after the loan ended.
  if (object.local() == nullptr && !oneway_ && channel_ != nullptr &&
      object.remote_channel() == channel_ && object.remote_handle() != 0 &&
      object.remote_handle() <= object_wire::kMaxReturnedHandle &&
      (channel_->server_features() & object_wire::kTakesReturnedHandles) != 0) {
    return object_wire::ReturnedField(object.remote_handle());
  }
  if (exports_ != nullptr && object.local() != nullptr &&
      (!oneway_ || loans_.size() < object_wire::kMaxLoansPerTicket)) {
    absl::StatusOr<ExportLink::Loan> loan =
        exports_->Lend(object.local(), deadline, /*under_ticket=*/oneway_);
    if (loan.ok()) {
      loans_.push_back(*loan);
      return object_wire::HandleField(loan->handle);
    }
    // A peer that takes no handles, or handles used up: a dedicated channel.
    if (!absl::IsUnimplemented(loan.status()) && !absl::IsFailedPrecondition(loan.status()) &&
        !absl::IsResourceExhausted(loan.status())) {
      return loan.status();
    }
  }
  absl::StatusOr<ObjectFds> fds = object.MakeReference(deadline);
  if (!fds.ok()) return fds.status();
  const auto index = static_cast<uint32_t>(raw_.size() + 1);
  raw_.push_back(fds->region.get());
  raw_.push_back(fds->liveness.get());
  owned_.push_back(std::move(fds->region));
  owned_.push_back(std::move(fds->liveness));
  return index;
}

namespace internal {

uint32_t LendUnderTicket(Attachments& attachments) {
  if (attachments.loans_.empty()) return 0;
  // Every loan is in the table of the link's reverse channel: one table,
  // unless that channel ended between two of them, which took its loans.
  std::shared_ptr<ExportTable> table = attachments.loans_.back().exports;
  absl::InlinedVector<uint32_t, 2> handles;
  for (const ExportLink::Loan& loan : attachments.loans_) {
    if (loan.exports == table) {
      handles.push_back(loan.handle);
    } else {
      ExportLink::EndLoan(loan);
    }
  }
  attachments.loans_.clear();
  const uint32_t ticket = table->OpenTicket(handles);
  attachments.ticket_table_ = std::move(table);
  return ticket;
}

void EndUnsentTicket(Attachments& attachments, uint32_t ticket) {
  if (attachments.ticket_table_ != nullptr) (void)attachments.ticket_table_->Settle(ticket, {});
}

absl::StatusOr<std::shared_ptr<RemoteObject>> AdoptAt(UniqueFd region, UniqueFd liveness,
                                                      uint64_t field) {
  if (field == 0) return absl::NotFoundError("the interface field holds no object (null)");
  if (!region || !liveness) {
    return absl::DataLossError(absl::StrCat("the message carries no object reference at index ",
                                            field, " (or it was taken already)"));
  }
  return RemoteObject::Adopt(ObjectFds{std::move(region), std::move(liveness)});
}

absl::StatusOr<std::shared_ptr<RemoteObject>> ImportAt(const CallContext& context, uint64_t field) {
  const uint32_t handle = object_wire::HandleOfField(field);
  if (context.imports == nullptr) {
    return absl::DataLossError(absl::StrCat("the message passes object handle ", handle,
                                            ", but its sender opened no reverse channel here"));
  }
  return context.imports->TakeLent(handle, context.borrowed);
}

absl::StatusOr<std::shared_ptr<ServiceStub>> ReturnedAt(const CallContext& context,
                                                        uint64_t field) {
  if (!object_wire::IsReturnedField(field)) {
    return absl::NotFoundError(field == 0 ? "the interface field holds no object (null)"
                                          : "the object passed is not one of this process's own");
  }
  const uint32_t handle = object_wire::HandleOfReturnedField(field);
  std::shared_ptr<ServiceStub> stub =
      context.results != nullptr ? context.results->Find(handle) : nullptr;
  if (stub == nullptr) {
    return absl::NotFoundError(absl::StrCat("object handle ", handle,
                                            " passed back is not lent to the caller on this "
                                            "channel (never, or no longer)"));
  }
  return stub;
}

absl::StatusOr<std::shared_ptr<RemoteObject>> ReferenceToReturned(const CallContext& context,
                                                                  uint64_t field) {
  absl::StatusOr<std::shared_ptr<ServiceStub>> local = ReturnedAt(context, field);
  if (!local.ok()) return local.status();
  absl::StatusOr<ObjectFds> fds = ObjectHost::Get().Export(*std::move(local));
  if (!fds.ok()) return fds.status();
  return RemoteObject::Adopt(*std::move(fds));
}

absl::StatusOr<std::shared_ptr<ServiceStub>> ReturnedInReply(ReplyObjects* lent, uint64_t field) {
  if (!object_wire::IsReturnedField(field)) {
    return absl::NotFoundError(field == 0 ? "the interface field holds no object (null)"
                                          : "the object passed is not one of this process's own");
  }
  const uint32_t handle = object_wire::HandleOfReturnedField(field);
  if (lent == nullptr) {
    return absl::NotFoundError(absl::StrCat("the reply passes back object handle ", handle,
                                            ", but carries no ticket that keeps it lent"));
  }
  return lent->TakeReturned(handle);
}

absl::StatusOr<std::shared_ptr<RemoteObject>> ReferenceToReturnedInReply(ReplyObjects* lent,
                                                                         uint64_t field) {
  absl::StatusOr<std::shared_ptr<ServiceStub>> local = ReturnedInReply(lent, field);
  if (!local.ok()) return local.status();
  absl::StatusOr<ObjectFds> fds = ObjectHost::Get().Export(*std::move(local));
  if (!fds.ok()) return fds.status();
  return RemoteObject::Adopt(*std::move(fds));
}

absl::StatusOr<std::shared_ptr<RemoteObject>> ImportFromReply(ReplyObjects* lent, uint64_t field) {
  const uint32_t handle = object_wire::HandleOfField(field);
  if (lent == nullptr) {
    return absl::DataLossError(
        absl::StrCat("the reply passes object handle ", handle, ", but lends no objects"));
  }
  return lent->Take(handle);
}

namespace {

// Where a reply word's objects or holds on `channel` are handled: the
// proxy's ExportLink's link to its peer, or, for a proxy without one (over a
// bare channel), a link of the word's own, which works the same, only not
// shared with others.
std::shared_ptr<ImportLink> LinkOnChannel(ExportLink* exports, ClientChannel& channel,
                                          const std::shared_ptr<void>& owner) {
  std::shared_ptr<ImportLink> link = exports != nullptr ? exports->PeerLink() : nullptr;
  if (link == nullptr || &link->channel() != &channel) {
    link = std::make_shared<ImportLink>(channel, owner);
  }
  return link;
}

}  // namespace

std::shared_ptr<ReplyObjects> ObjectsOfReply(ExportLink* exports, ClientChannel& channel,
                                             const std::shared_ptr<void>& owner, uint64_t word) {
  if (!object_wire::IsTicketWord(word)) return nullptr;
  return std::make_shared<ReplyObjects>(LinkOnChannel(exports, channel, owner),
                                        static_cast<uint32_t>(word),
                                        /*keeps_channel=*/owner != nullptr);
}

void SettleUnreadReplyWord(ExportLink* exports, ClientChannel& channel,
                           const std::shared_ptr<void>& owner, uint64_t word) {
  if (!object_wire::IsHoldWord(word)) {
    (void)ObjectsOfReply(exports, channel, owner, word);  // Settled as it goes.
    return;
  }
  // Released on the channel the Acquire went on, where the hold is.
  LinkOnChannel(exports, channel, owner)->ReleaseLateHold(object_wire::HandleOfHoldWord(word));
}

absl::StatusOr<UniqueFd> FdAt(UniqueFd fd, uint64_t field) {
  if (field == 0) return absl::NotFoundError("the fd field holds no descriptor");
  if (!fd) {
    return absl::DataLossError(absl::StrCat("the message carries no descriptor at index ", field,
                                            " (or it was taken already)"));
  }
  return fd;
}

absl::StatusOr<Blob> BlobAt(UniqueFd fd, uint64_t field) {
  absl::StatusOr<UniqueFd> checked = FdAt(std::move(fd), field);
  if (!checked.ok()) return checked.status();
  absl::StatusOr<Blob> blob = Blob::Adopt(*std::move(checked));
  if (!blob.ok()) {
    return absl::DataLossError(absl::StrCat(
        "the blob at index ", field, " is not an immutable memfd: ", blob.status().message()));
  }
  return blob;
}

}  // namespace internal

absl::StatusOr<uint32_t> AttachFd(const CallContext& context, int fd) {
  if (context.call == nullptr) return absl::FailedPreconditionError("not inside a call");
  if (fd < 0) return 0;
  const auto index = static_cast<uint32_t>(context.call->reply_fd_count() + 1);
  const int raw[] = {fd};
  if (absl::Status attached = context.call->AttachReplyFds(raw); !attached.ok()) return attached;
  return index;
}

absl::StatusOr<uint32_t> AttachObject(const CallContext& context, const ObjectRef& object) {
  if (context.call == nullptr) return absl::FailedPreconditionError("not inside a call");
  if (object.is_null()) return 0;
  // One of the caller's own objects, held through the reverse channel it
  // opened on this connection: passed back by its handle. Our reference
  // rides with the reply's ticket, so that its Release (on the reverse
  // channel) cannot overtake the reply and end the handle's loan before
  // the caller has looked it up.
  if (object.local() == nullptr && object.remote_handle() != 0 &&
      object.remote_handle() <= object_wire::kMaxReturnedHandle && context.imports != nullptr &&
      context.lends != nullptr && context.lends->table() != nullptr &&
      context.lends->size() < object_wire::kMaxLoansPerTicket &&
      (context.call->client_features() & object_wire::kTakesReturnedReplyHandles) != 0 &&
      // A reply's first loan opens its ticket; the later ones join it.
      (context.lends->size() > 0 || context.lends->table()->HasTicketRoom())) {
    std::shared_ptr<RemoteObject> held =
        context.imports->Holding(object.remote_channel(), object.remote_handle());
    // Borrowed for this very call, it is acquired now rather than once the
    // handler returns: a pin of a reference the caller does not count
    // would keep nothing lent. If its host will not let it be kept, it is
    // cloned below, as for a caller without the feature.
    if (held != nullptr && held->KeepHeld(absl::InfiniteFuture())) {
      context.lends->Pin(std::move(held));
      return object_wire::ReturnedField(object.remote_handle());
    }
  }
  if (object.local() != nullptr && context.lends != nullptr && context.lends->table() != nullptr &&
      context.lends->size() < object_wire::kMaxLoansPerTicket &&
      (context.call->client_features() & object_wire::kTakesReplyHandles) != 0) {
    absl::StatusOr<uint32_t> handle = context.lends->table()->Lend(object.local(), true);
    if (handle.ok()) {
      context.lends->Add(*handle);
      return object_wire::HandleField(*handle);
    }
    // Too many unsettled replies, handles used up, the connection ending:
    // a dedicated channel, as without a table.
  }
  absl::StatusOr<ObjectFds> fds = object.MakeReference();
  if (!fds.ok()) return fds.status();
  const auto index = static_cast<uint32_t>(context.call->reply_fd_count() + 1);
  const int raw[] = {fds->region.get(), fds->liveness.get()};
  if (absl::Status attached = context.call->AttachReplyFds(raw); !attached.ok()) return attached;
  return index;
}

}  // namespace sluice::rpc
