#include "ipc/rpc/object.h"

#include <fcntl.h>

#include <cstdio>
#include <cstdlib>

#include "ipc/base/errno_status.h"
#include "ipc/rpc/wire.h"
#include "ipc/socket/unix_socket.h"

namespace sluice::rpc {
namespace {

// The object protocol: calls every exported object answers besides its own
// interface's.
constexpr uint64_t kControlInterfaceId = Fnv1a64("sluice.ObjectControl");
// A new reference to the same object (for a third process): an empty reply
// carrying the client ends of a new channel.
constexpr uint64_t kCloneMethod = MethodWord(Fnv1a32("Clone"), Fnv1a32("->ObjectFds"));

// Object channels carry callbacks, not bulk data: smaller than a service's.
constexpr channel_layout::Geometry kObjectGeometry{.slot_count = 16,
                                                   .request_arena_size = uint64_t{1} << 20,
                                                   .reply_arena_size = uint64_t{1} << 20};

class ObjectProtocolStub final : public ServiceStub {
 public:
  explicit ObjectProtocolStub(std::shared_ptr<ServiceStub> inner) : inner_(std::move(inner)) {}
  absl::string_view service_name() const override { return inner_->service_name(); }
  uint64_t interface_id() const override { return inner_->interface_id(); }

  absl::Status Dispatch(IncomingCall& call, const CallContext& context) override {
    if (call.header().interface_id != kControlInterfaceId) return inner_->Dispatch(call, context);
    if (call.oneway() || call.header().method != kCloneMethod) {
      return call.Fail(absl::UnimplementedError(
          absl::StrCat("object protocol: no control method 0x", absl::Hex(call.header().method))));
    }
    absl::StatusOr<ObjectFds> fds = ObjectHost::Get().Export(inner_);
    if (!fds.ok()) return call.Fail(fds.status());
    const int raw[] = {fds->region.get(), fds->liveness.get()};
    if (absl::Status attached = call.AttachReplyFds(raw); !attached.ok()) {
      return call.Fail(attached);
    }
    return call.Reply({});
  }

 private:
  std::shared_ptr<ServiceStub> inner_;
};

}  // namespace

PeerWatcher& ProcessPeerWatcher() {
  // Leaked on purpose: object channels may be dropped by static destructors
  // or by threads still running at exit.
  static PeerWatcher* watcher = [] {
    absl::StatusOr<std::unique_ptr<PeerWatcher>> created = PeerWatcher::Create();
    if (!created.ok()) {
      std::fprintf(stderr, "sluice: cannot create the process peer watcher: %s\n",
                   created.status().ToString().c_str());
      std::abort();
    }
    return created->release();
  }();
  return *watcher;
}

std::shared_ptr<ServiceStub> WithObjectProtocol(std::shared_ptr<ServiceStub> stub) {
  if (dynamic_cast<ObjectProtocolStub*>(stub.get()) != nullptr) return stub;
  return std::make_shared<ObjectProtocolStub>(std::move(stub));
}

ObjectHost& ObjectHost::Get() {
  static ObjectHost* host = new ObjectHost();  // Serves until exit, like Binder's pool.
  return *host;
}

ObjectHost::ObjectHost() : geometry_(kObjectGeometry), pool_(ServerPool::Options{}) {}

absl::StatusOr<ObjectFds> ObjectHost::Export(std::shared_ptr<ServiceStub> stub) {
  if (stub == nullptr) return absl::InvalidArgumentError("cannot export a null object");
  absl::StatusOr<Region> region = CreateChannelRegion(geometry_);
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
  if (absl::Status added = pool_.Add(*std::move(channel), WithObjectProtocol(std::move(stub)));
      !added.ok()) {
    return added;
  }
  return ObjectFds{std::move(client_region), std::move(sockets->second)};
}

absl::StatusOr<std::shared_ptr<RemoteObject>> RemoteObject::Adopt(ObjectFds fds) {
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
  return std::shared_ptr<RemoteObject>(new RemoteObject(*std::move(channel)));
}

absl::StatusOr<ObjectFds> ObjectRef::MakeReference(absl::Time deadline) const {
  if (local_ != nullptr) return ObjectHost::Get().Export(local_);
  if (remote_ == nullptr) return absl::InvalidArgumentError("null object reference");
  // Part of the caller's chain: the host may be blocked in a call to us.
  CallRouter::Outgoing chain;
  absl::StatusOr<OutgoingCall> call = remote_->BeginCall(0, deadline, chain.context());
  if (!call.ok()) return call.status();
  call->header() = CallHeader{kControlInterfaceId, kCloneMethod, chain.context()};
  absl::StatusOr<Reply> reply = remote_->Call(*std::move(call), {}, deadline);
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

absl::StatusOr<std::shared_ptr<RemoteObject>> AdoptAt(UniqueFd region, UniqueFd liveness,
                                                      uint64_t field) {
  if (field == 0) return absl::NotFoundError("the interface field holds no object (null)");
  if (!region || !liveness) {
    return absl::DataLossError(absl::StrCat("the message carries no object reference at index ",
                                            field, " (or it was taken already)"));
  }
  return RemoteObject::Adopt(ObjectFds{std::move(region), std::move(liveness)});
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
  absl::StatusOr<ObjectFds> fds = object.MakeReference();
  if (!fds.ok()) return fds.status();
  const auto index = static_cast<uint32_t>(context.call->reply_fd_count() + 1);
  const int raw[] = {fds->region.get(), fds->liveness.get()};
  if (absl::Status attached = context.call->AttachReplyFds(raw); !attached.ok()) return attached;
  return index;
}

}  // namespace sluice::rpc
