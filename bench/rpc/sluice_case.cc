#include <sys/wait.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "bench/channel_transport.h"
#include "bench/harness.h"
#include "bench/rpc/bench_service.h"
#include "bench/rpc/rpc_cases.h"
#include "bench_sluice.h"
#include "ipc/base/errors.h"
#include "ipc/base/notification.h"
#include "ipc/channel/client_channel.h"
#include "ipc/channel/server_channel.h"
#include "ipc/rpc/message.h"
#include "ipc/rpc/object.h"
#include "ipc/rpc/server_pool.h"
#include "ipc/rpc/stub.h"
#include "ipc/testing/subprocess.h"

namespace sluice::bench {
namespace {

using testing::Subprocess;

// Room the in-place build asks for beyond the field: the table, its vtable,
// the vector's length word and the root offset need well under this.
constexpr size_t kInPlaceSlack = 256;

class SluiceRpcClient final : public PingPongClient {
 public:
  SluiceRpcClient(RpcBuild build, Subprocess child, std::unique_ptr<ClientChannel> channel)
      : build_(build), child_(std::move(child)), channel_(std::move(channel)), proxy_(*channel_) {}

  absl::StatusOr<uint64_t> RoundTrip(std::span<const std::byte> payload) override {
    absl::StatusOr<rpc::Response<Ack>> reply =
        build_ == RpcBuild::kFlattened ? SendFlattened(payload) : SendInPlace(payload);
    if (!reply.ok()) return reply.status();
    if ((*reply)->size() != payload.size()) {
      return absl::DataLossError(absl::StrCat("RPC server saw ", (*reply)->size(), " bytes"));
    }
    return (*reply)->checksum();
  }

  absl::Status Stop() override {
    // Closing the channel hangs up the server's liveness socket: its pool
    // drops the channel as the client's death and the server exits 0.
    channel_.reset();
    absl::StatusOr<int> status = child_.Wait(absl::Seconds(10));
    if (!status.ok()) return status.status();
    if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      return absl::InternalError(absl::StrCat("RPC server exited with wait status ", *status));
    }
    return absl::OkStatus();
  }

  pid_t server_pid() const override { return child_.pid(); }

 private:
  absl::StatusOr<rpc::Response<Ack>> SendFlattened(std::span<const std::byte> payload) {
    return proxy_.Send(absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(payload.data()),
                                                 payload.size()));
  }

  absl::StatusOr<rpc::Response<Ack>> SendInPlace(std::span<const std::byte> payload) {
    int builds = 0;
    absl::StatusOr<rpc::Response<Ack>> reply = proxy_.Send(
        [&](flatbuffers::FlatBufferBuilder& fbb) {
          ++builds;
          uint8_t* out = nullptr;
          auto data = fbb.CreateUninitializedVector(payload.size(), &out);
          // The payload's only write. A producer that renders straight into
          // `out` saves even this copy; here the bytes already exist.
          std::memcpy(out, payload.data(), payload.size());
          return CreatePayload(fbb, data);
        },
        {.size_hint = payload.size() + kInPlaceSlack});
    // The point of this path is one write of the payload: a second build
    // would be a second copy, so say so rather than time it.
    if (reply.ok() && builds != 1) {
      return absl::InternalError(
          absl::StrCat("in-place build ran ", builds, " times: the size hint no longer fits"));
    }
    return reply;
  }

  RpcBuild build_;
  // Declared before the channel so the child is reaped after the channel is
  // gone (its death must not be mistaken for a failure while we still call).
  Subprocess child_;
  std::unique_ptr<ClientChannel> channel_;
  BenchServiceProxy proxy_;
};

struct RpcConnection {
  Subprocess child;
  std::unique_ptr<ClientChannel> channel;
};

absl::StatusOr<RpcConnection> ConnectRpcServer(PeerWatcher& watcher) {
  // The raw channel case's geometry, so the two differ only by the RPC layer.
  absl::StatusOr<ChannelPeer> peer =
      SpawnChannelPeer({testing::SelfExecutable(), "--role=rpc-server"}, {}, std::nullopt);
  if (!peer.ok()) return peer.status();
  absl::StatusOr<std::unique_ptr<ClientChannel>> channel = ClientChannel::Open(
      std::move(peer->region), std::move(peer->liveness), watcher, SameUserTrust());
  if (!channel.ok()) return channel.status();
  return RpcConnection{std::move(peer->process), *std::move(channel)};
}

double MedianNs(std::vector<int64_t>& nanos) {
  std::sort(nanos.begin(), nanos.end());
  return static_cast<double>(nanos[nanos.size() / 2]);
}

}  // namespace

absl::StatusOr<std::unique_ptr<PingPongClient>> StartSluiceRpc(RpcBuild build,
                                                               PeerWatcher& watcher) {
  absl::StatusOr<RpcConnection> connection = ConnectRpcServer(watcher);
  if (!connection.ok()) return connection.status();
  return std::make_unique<SluiceRpcClient>(build, std::move(connection->child),
                                           std::move(connection->channel));
}

absl::StatusOr<RpcBreakdown> MeasureRpcBreakdown(size_t payload, size_t calls,
                                                 PeerWatcher& watcher) {
  absl::StatusOr<RpcConnection> connection = ConnectRpcServer(watcher);
  if (!connection.ok()) return connection.status();
  BenchServiceProxy proxy(*connection->channel);
  const std::vector<std::byte> data = MakePayload(payload, payload);
  const uint64_t expected = SumWords(data);
  std::vector<int64_t> total, begin, build, request, handler, reply, release;
  const size_t warmup = std::max<size_t>(calls / 10, 3);
  for (size_t i = 0; i < warmup + calls; ++i) {
    int64_t build_in = 0;
    int64_t build_out = 0;
    const int64_t t0 = NowNanos();
    int64_t t1 = 0;
    int64_t entered = 0;
    int64_t left = 0;
    {
      absl::StatusOr<rpc::Response<Timing>> timing = proxy.Probe(
          [&](flatbuffers::FlatBufferBuilder& fbb) {
            build_in = NowNanos();
            uint8_t* out = nullptr;
            auto vector = fbb.CreateUninitializedVector(data.size(), &out);
            std::memcpy(out, data.data(), data.size());
            auto root = CreatePayload(fbb, vector);
            build_out = NowNanos();
            return root;
          },
          {.size_hint = payload + kInPlaceSlack});
      t1 = NowNanos();
      if (!timing.ok()) return timing.status();
      if ((*timing)->checksum() != expected || (*timing)->size() != payload) {
        return absl::DataLossError("Probe: the server summed other bytes");
      }
      entered = (*timing)->entered_ns();
      left = (*timing)->left_ns();
    }
    const int64_t t2 = NowNanos();
    if (i < warmup) continue;
    total.push_back(t2 - t0);
    begin.push_back(build_in - t0);
    build.push_back(build_out - build_in);
    request.push_back(entered - build_out);
    handler.push_back(left - entered);
    reply.push_back(t1 - left);
    release.push_back(t2 - t1);
  }
  connection->channel.reset();
  absl::StatusOr<int> status = connection->child.Wait(absl::Seconds(10));
  if (!status.ok()) return status.status();
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    return absl::InternalError(absl::StrCat("RPC server exited with wait status ", *status));
  }
  RpcBreakdown out;
  out.calls = calls;
  out.total_ns = MedianNs(total);
  out.begin_ns = MedianNs(begin);
  out.build_ns = MedianNs(build);
  out.request_ns = MedianNs(request);
  out.handler_ns = MedianNs(handler);
  out.reply_ns = MedianNs(reply);
  out.release_ns = MedianNs(release);
  return out;
}

int ServeSluiceRpc() {
  absl::StatusOr<ChildChannelEnds> ends = AdoptChildChannelEnds();
  if (!ends.ok()) Die(ends.status(), "adopting the channel region");
  absl::StatusOr<std::unique_ptr<PeerWatcher>> watcher = PeerWatcher::Create();
  if (!watcher.ok()) Die(watcher.status(), "PeerWatcher::Create");
  absl::StatusOr<std::unique_ptr<ServerChannel>> channel = ServerChannel::Open(
      std::move(ends->region), std::move(ends->liveness), **watcher, SameUserTrust());
  if (!channel.ok()) Die(channel.status(), "ServerChannel::Open");
  // Served as ServiceHost serves a published stub: its pool (default
  // options), the stub wrapped for the object protocol.
  absl::Status ended_why;
  Notification ended;
  rpc::ServerPool pool;
  const absl::Status added =
      pool.Add(*std::move(channel), rpc::ServeWithObjectProtocol(std::make_shared<BenchServer>()),
               [&](absl::Status why) {
                 ended_why = std::move(why);
                 ended.Notify();
               });
  if (!added.ok()) Die(added, "ServerPool::Add");
  ended.WaitForNotification();
  if (IsPeerDead(ended_why)) return 0;
  Die(ended_why, "serving");
}

StubPathCost MeasureStubPath(size_t payload) {
  // The request exactly as the proxy builds it, on the heap.
  const std::vector<std::byte> bytes = MakePayload(payload, payload);
  flatbuffers::FlatBufferBuilder fbb(payload + kInPlaceSlack);
  fbb.Finish(CreatePayload(
      fbb, fbb.CreateVector(reinterpret_cast<const uint8_t*>(bytes.data()), payload)));
  const std::span<const std::byte> message(
      reinterpret_cast<const std::byte*>(fbb.GetBufferPointer()), fbb.GetSize());

  StubPathCost cost;
  cost.message_bytes = message.size();
  cost.private_copy = message.size() <= rpc::kPrivateCopyLimit;
  const int reps = payload >= (1 << 20) ? 30 : 301;
  std::vector<int64_t> copy;
  std::vector<int64_t> verify;
  rpc::MessageBuffer buffer;
  for (int i = 0; i < reps; ++i) {
    const int64_t t0 = NowNanos();
    const std::span<const uint8_t> view = rpc::Stabilize(message, /*immutable=*/false, buffer);
    const int64_t t1 = NowNanos();
    const bool ok = rpc::VerifyMessage<Payload>(view, "bench").ok();
    const int64_t t2 = NowNanos();
    if (!ok) Die(absl::InternalError("a valid Payload failed verification"), "MeasureStubPath");
    copy.push_back(t1 - t0);
    verify.push_back(t2 - t1);
  }
  cost.copy_ns = cost.private_copy ? MedianNs(copy) : 0;
  cost.verify_ns = MedianNs(verify);
  return cost;
}

}  // namespace sluice::bench
