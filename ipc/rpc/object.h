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
// A reference is a channel of its own, made by the process that hosts the
// object and served by its ObjectHost pool: a sealed memfd region plus a
// liveness socket pair, whose client ends travel with the message as
// SCM_RIGHTS descriptors (the field holds their index). Passing on a proxy
// asks the host for a fresh channel (a control call on the proxy's channel)
// and forwards that: references never route through intermediaries and the
// service manager stays out of the data path.
//
// Lifetime: every reference is one channel, and the host keeps the object
// alive for as long as any of its channels is open. Dropping the last
// Remote<> closes the channel; the host sees the hang-up at once (so does it
// when the holder dies, the kernel closes its descriptors) and releases its
// share. References in flight are descriptors in a socket queue, which the
// kernel counts too, so nothing is released early.
//
// Identity: the receiver introduces itself on the new channel's liveness
// socket and the host reads the kernel's SCM_CREDENTIALS of that message
// (ChannelOptions::hello_identity), so CallContext::caller names the process
// that actually holds the reference, vouched for by the kernel as SO_PEERCRED
// is for service connections.
#ifndef SLUICE_IPC_RPC_OBJECT_H_
#define SLUICE_IPC_RPC_OBJECT_H_

#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "ipc/base/unique_fd.h"
#include "ipc/channel/channel.h"
#include "ipc/channel/layout.h"
#include "ipc/channel/peer_watcher.h"
#include "ipc/rpc/blob.h"
#include "ipc/rpc/message.h"
#include "ipc/rpc/proxy.h"
#include "ipc/rpc/server_pool.h"
#include "ipc/rpc/stub.h"

namespace sluice::rpc {

// The client ends of one object channel, as they travel.
struct ObjectFds {
  UniqueFd region;
  UniqueFd liveness;
};

// Watches the peers of every object channel of this process. Never destroyed.
PeerWatcher& ProcessPeerWatcher();

// Serves this process's exported objects: one ServerPool, started on first
// export, living until the process exits.
class ObjectHost {
 public:
  static ObjectHost& Get();

  // Threads serving exported objects (Binder's setMaxThreads); default 4.
  void SetMaxThreads(int max_threads) { pool_.SetMaxThreads(max_threads); }

  // A new reference to `stub`: a channel served from now on by this host.
  absl::StatusOr<ObjectFds> Export(std::shared_ptr<ServiceStub> stub);

  // Open references to this process's objects (one channel each).
  size_t reference_count() { return pool_.channel_count(); }
  size_t thread_count() { return pool_.thread_count(); }

 private:
  ObjectHost();
  channel_layout::Geometry geometry_;
  ServerPool pool_;
};

// Wraps `stub` so that the control calls of the object protocol (a new
// reference for a third process) are answered beside its own methods.
// ObjectHost and ServiceHost serve every stub through one.
std::shared_ptr<ServiceStub> WithObjectProtocol(std::shared_ptr<ServiceStub> stub);

// One reference to an object in another process, shared by every Remote<>
// made from it in this process. Dropping the last one releases it.
class RemoteObject {
 public:
  // Opens a reference received as descriptors (as TakeObject does).
  static absl::StatusOr<std::shared_ptr<RemoteObject>> Adopt(ObjectFds fds);
  ClientChannel& channel() const { return *channel_; }

 private:
  explicit RemoteObject(std::unique_ptr<ClientChannel> channel) : channel_(std::move(channel)) {}
  std::unique_ptr<ClientChannel> channel_;
};

// A typed proxy to a remote object, together with the reference it calls
// through. Copies share the reference, and so do the Responses of its calls:
// the reference lives until the last of them goes.
template <typename Proxy>
class Remote {
 public:
  explicit Remote(std::shared_ptr<RemoteObject> object)
      : object_(std::move(object)), proxy_(object_->channel(), object_) {}
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
      : local_(std::move(local)) {}                                 // NOLINT
  ObjectRef(const ProxyBase& proxy) : remote_(&proxy.channel()) {}  // NOLINT
  template <typename Proxy>
  ObjectRef(const Remote<Proxy>& remote) : remote_(&remote.object()->channel()) {}  // NOLINT

  bool is_null() const { return local_ == nullptr && remote_ == nullptr; }
  // The local object's interface id; 0 for a remote one (known to its host).
  uint64_t local_interface_id() const { return local_ != nullptr ? local_->interface_id() : 0; }

  // Descriptors for one new reference: a fresh export of a local object, or
  // a new channel from a remote object's host (one round trip to it).
  absl::StatusOr<ObjectFds> MakeReference(absl::Time deadline = absl::InfiniteFuture()) const;

 private:
  std::shared_ptr<ServiceStub> local_;
  ClientChannel* remote_ = nullptr;  // Borrowed: a reference is made at once.
};

// The descriptors going with one message, and the values its (sluice_fd) and
// (sluice_interface) fields hold: 0 for none, else 1 + the index of the
// (first) descriptor.
class Attachments {
 public:
  // `leading`: descriptors attached without a field (CallOptions::fds),
  // which keep their indices at the front.
  explicit Attachments(std::span<const int> leading = {}) : raw_(leading.begin(), leading.end()) {}

  // `fd` goes with the message (the receiver gets its own duplicate); keep
  // it open until the call is made. -1 gives 0 (no descriptor).
  absl::StatusOr<uint32_t> AddFd(int fd);
  // `blob` goes with the message, without a copy (an empty one gives 0).
  absl::StatusOr<uint32_t> AddBlob(const Blob& blob) { return AddFd(blob.fd()); }
  // A new reference to `object` goes with the message. Null gives 0.
  // INVALID_ARGUMENT if `object` is a local stub of another interface than
  // `interface_id` (0: any).
  absl::StatusOr<uint32_t> AddObject(const ObjectRef& object, uint64_t interface_id = 0,
                                     absl::Time deadline = absl::InfiniteFuture());

  std::span<const int> fds() const { return raw_; }

 private:
  std::vector<int> raw_;
  std::vector<UniqueFd> owned_;
};

namespace internal {
absl::StatusOr<std::shared_ptr<RemoteObject>> AdoptAt(UniqueFd region, UniqueFd liveness,
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
// such reference.
template <typename Proxy>
absl::StatusOr<Remote<Proxy>> TakeObject(const CallContext& context, uint64_t field) {
  if (context.call == nullptr) return absl::FailedPreconditionError("not inside a call");
  UniqueFd region = field == 0 ? UniqueFd() : context.call->TakeFd(field - 1);
  UniqueFd liveness = field == 0 ? UniqueFd() : context.call->TakeFd(field);
  auto object = internal::AdoptAt(std::move(region), std::move(liveness), field);
  if (!object.ok()) return object.status();
  return Remote<Proxy>(*std::move(object));
}
// The same for a field of a response.
template <typename Proxy, typename T>
absl::StatusOr<Remote<Proxy>> TakeObject(Response<T>& response, uint64_t field) {
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
absl::StatusOr<uint32_t> AttachObject(const CallContext& context, const ObjectRef& object);

}  // namespace sluice::rpc

#endif  // SLUICE_IPC_RPC_OBJECT_H_
