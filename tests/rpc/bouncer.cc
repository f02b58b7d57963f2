#include "tests/rpc/bouncer.h"

#include <unistd.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

namespace sluice::testing {

namespace nested = ::sluice::test::nested;

namespace {

// Downstream calls give up eventually, so a deadlock fails the test's own
// call and the processes can still be torn down.
constexpr absl::Duration kDownstreamTimeout = absl::Seconds(60);

std::vector<std::string> RouteOf(const nested::BounceRequest& request) {
  std::vector<std::string> route;
  if (request.route() != nullptr) {
    for (const flatbuffers::String* name : *request.route()) route.push_back(name->str());
  }
  return route;
}

}  // namespace

absl::StatusOr<std::vector<HopRecord>> CallBounce(nested::BouncerProxy& proxy,
                                                  absl::Span<const std::string> route,
                                                  absl::Time deadline) {
  size_t hint = 256;
  for (const std::string& name : route) hint += name.size() + 16;
  auto reply = proxy.Bounce(
      [&](flatbuffers::FlatBufferBuilder& fbb) {
        std::vector<flatbuffers::Offset<flatbuffers::String>> names;
        names.reserve(route.size());
        for (const std::string& name : route) names.push_back(fbb.CreateString(name));
        return nested::CreateBounceRequest(fbb, fbb.CreateVector(names));
      },
      {.deadline = deadline, .size_hint = hint});
  if (!reply.ok()) return reply.status();
  std::vector<HopRecord> hops;
  if ((*reply)->hops() != nullptr) {
    for (const nested::Hop* hop : *(*reply)->hops()) {
      hops.push_back(
          {hop->pid(), hop->tid(), hop->name() != nullptr ? hop->name()->str() : std::string()});
    }
  }
  return hops;
}

BouncerService::BouncerService(ServiceManager& manager, std::string name, Hook hook)
    : manager_(manager), name_(std::move(name)), hook_(std::move(hook)) {}

absl::StatusOr<nested::BouncerProxy*> BouncerService::Peer(const std::string& name) {
  {
    MutexLock lock(&mu_);
    if (auto it = peers_.find(name); it != peers_.end()) return &it->second->proxy();
  }
  // Not under mu_: the lookup waits for the manager and the other process.
  absl::StatusOr<Connection<nested::BouncerProxy>> connection =
      Connect<nested::BouncerProxy>(manager_, name);
  if (!connection.ok()) return connection.status();
  MutexLock lock(&mu_);
  // Another thread may have connected meanwhile: keep the first.
  auto [it, inserted] = peers_.try_emplace(name);
  if (inserted) {
    it->second = std::make_unique<Connection<nested::BouncerProxy>>(*std::move(connection));
  }
  return &it->second->proxy();
}

absl::StatusOr<flatbuffers::Offset<nested::BounceResponse>> BouncerService::Bounce(
    const rpc::CallContext&, const nested::BounceRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  const std::vector<std::string> route = RouteOf(request);
  if (hook_ != nullptr) hook_(route);
  std::vector<HopRecord> hops = {{::getpid(), ::gettid(), name_}};
  if (!route.empty()) {
    absl::StatusOr<nested::BouncerProxy*> next = Peer(route.front());
    if (!next.ok()) return next.status();
    absl::StatusOr<std::vector<HopRecord>> downstream =
        CallBounce(**next, absl::MakeConstSpan(route).subspan(1), absl::Now() + kDownstreamTimeout);
    if (!downstream.ok()) return downstream.status();
    // This thread may have served nested calls while it waited: the request
    // it is answering must not have changed under it.
    if (const std::vector<std::string> after = RouteOf(request); after != route) {
      return absl::InternalError(
          absl::StrCat(name_, ": the request changed during a nested call: [",
                       absl::StrJoin(route, ","), "] became [", absl::StrJoin(after, ","), "]"));
    }
    hops.insert(hops.end(), downstream->begin(), downstream->end());
  }
  std::vector<flatbuffers::Offset<nested::Hop>> offsets;
  offsets.reserve(hops.size());
  for (const HopRecord& hop : hops) {
    offsets.push_back(nested::CreateHop(reply, hop.pid, hop.tid, reply.CreateString(hop.name)));
  }
  return nested::CreateBounceResponse(reply, reply.CreateVector(offsets));
}

}  // namespace sluice::testing
