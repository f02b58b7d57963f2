#include "examples/listener/feed_service.h"

#include <cstdio>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ipc/base/errors.h"

namespace example::listener {

FeedService::FeedService(Options options) : options_(options) {}

FeedService::~FeedService() { Close(); }

void FeedService::Close() {
  std::map<uint64_t, std::shared_ptr<Subscriber>> subscribers;
  std::map<uint64_t, uint64_t> links;
  {
    sluice::MutexLock lock(&mu_);
    if (closed_) return;
    closed_ = true;
    subscribers.swap(subscribers_);
    links.swap(death_links_);
  }
  for (const auto& [id, link] : links) {
    if (auto it = subscribers.find(id); it != subscribers.end()) {
      (void)it->second->listener->UnlinkToDeath(link);
    }
  }
  // The listeners are released here, outside the lock.
}

void FeedService::Log(const std::string& line) const {
  if (!options_.verbose) return;
  std::printf("feed_server: %s\n", line.c_str());
  std::fflush(stdout);
}

bool FeedService::Drop(uint64_t id, const char* why) {
  std::shared_ptr<Subscriber> subscriber;
  std::optional<uint64_t> link;
  {
    sluice::MutexLock lock(&mu_);
    auto it = subscribers_.find(id);
    if (it == subscribers_.end()) return false;
    subscriber = std::move(it->second);
    subscribers_.erase(it);
    if (auto found = death_links_.find(id); found != death_links_.end()) {
      link = found->second;
      death_links_.erase(found);
    }
    // Printed before anyone can see the smaller count (keeps the demo's
    // output in order); stdout is no call out.
    Log(absl::StrCat("subscriber pid ", subscriber->pid, " ", why, "; dropped #", id, " (",
                     subscriber->topic, "), ", subscribers_.size(), " left"));
  }
  // NOT_FOUND once it fired: nothing to undo then.
  if (link) (void)subscriber->listener->UnlinkToDeath(*link);
  return true;
}

absl::StatusOr<flatbuffers::Offset<SubscribeResponse>> FeedService::Subscribe(
    const sluice::rpc::CallContext& context, const SubscribeRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  // The reference that came with the request, as a typed proxy.
  absl::StatusOr<sluice::rpc::Remote<ListenerProxy>> listener =
      sluice::rpc::TakeObject<ListenerProxy>(context, request.listener());
  if (!listener.ok()) return listener.status();

  uint64_t id = 0;
  size_t count = 0;
  std::shared_ptr<Subscriber> subscriber;
  {
    sluice::MutexLock lock(&mu_);
    if (closed_) return absl::UnavailableError("feed is shutting down");
    id = next_id_++;
    subscriber = std::make_shared<Subscriber>(id, request.topic()->str(), context.caller.pid,
                                              *std::move(listener));
    subscribers_.emplace(id, subscriber);
    count = subscribers_.size();
  }
  // In the table first, then linked: a death that comes at once finds it.
  // The recipient runs on the process's PeerWatcher thread and may release
  // the listener's reference itself; it holds the service only weakly, as
  // a death may come while the service shuts down.
  absl::StatusOr<uint64_t> link = subscriber->listener->LinkToDeath([weak = weak_from_this(), id] {
    if (std::shared_ptr<FeedService> self = weak.lock()) self->Drop(id, "died");
  });
  if (!link.ok()) {
    Drop(id, "died while subscribing");
    return link.status();
  }
  {
    sluice::MutexLock lock(&mu_);
    if (subscribers_.contains(id)) death_links_.emplace(id, *link);
  }
  Log(absl::StrCat("subscriber pid ", subscriber->pid, " subscribed to ", subscriber->topic,
                   " as #", id, ", ", count, " in all"));
  return CreateSubscribeResponse(reply, id);
}

absl::StatusOr<flatbuffers::Offset<UnsubscribeResponse>> FeedService::Unsubscribe(
    const sluice::rpc::CallContext& context, const UnsubscribeRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  {
    sluice::MutexLock lock(&mu_);
    auto it = subscribers_.find(request.id());
    if (it == subscribers_.end()) return CreateUnsubscribeResponse(reply, false);
    if (it->second->pid != context.caller.pid) {
      return absl::PermissionDeniedError(
          absl::StrCat("subscription #", request.id(), " belongs to another process"));
    }
  }
  return CreateUnsubscribeResponse(reply, Drop(request.id(), "unsubscribed"));
}

absl::StatusOr<flatbuffers::Offset<PublishResponse>> FeedService::Publish(
    const sluice::rpc::CallContext& context, const PublishRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  const std::string topic = request.topic()->str();
  const std::string text = request.text() != nullptr ? request.text()->str() : "";
  uint64_t seq = 0;
  // Copies: a subscriber dropped meanwhile stays callable until the end of
  // this Publish, and the lock is not held while calling out.
  std::vector<std::shared_ptr<Subscriber>> targets;
  {
    sluice::MutexLock lock(&mu_);
    seq = ++last_seq_[topic];
    for (const auto& [id, subscriber] : subscribers_) {
      if (subscriber->topic == topic) targets.push_back(subscriber);
    }
  }
  uint32_t delivered = 0;
  uint32_t dropped = 0;
  uint32_t failed = 0;
  for (const std::shared_ptr<Subscriber>& subscriber : targets) {
    absl::Status status;
    {
      // The Ack borrows the listener's channel: gone before the Remote may be.
      auto ack = subscriber->listener->OnEvent(topic, seq, text,
                                               {.deadline = absl::Now() + options_.call_timeout});
      status = ack.status();
    }
    if (status.ok()) {
      ++delivered;
    } else if (sluice::IsPeerDead(status)) {
      // Its death notification may not have been handled yet.
      Drop(subscriber->id, "died");
      ++dropped;
    } else {
      Log(absl::StrCat("subscriber pid ", subscriber->pid, " #", subscriber->id,
                       " failed: ", status.ToString()));
      ++failed;
    }
  }
  Log(absl::StrCat(topic, " #", seq, " from pid ", context.caller.pid, " -> delivered ", delivered,
                   ", dropped ", dropped, ", failed ", failed));
  return CreatePublishResponse(reply, seq, delivered, dropped, failed);
}

absl::StatusOr<flatbuffers::Offset<SubscribersResponse>> FeedService::Subscribers(
    const sluice::rpc::CallContext& /*context*/, const SubscribersRequest& request,
    flatbuffers::FlatBufferBuilder& reply) {
  const std::string topic = request.topic() != nullptr ? request.topic()->str() : "";
  uint32_t count = 0;
  {
    sluice::MutexLock lock(&mu_);
    for (const auto& [id, subscriber] : subscribers_) {
      if (topic.empty() || subscriber->topic == topic) ++count;
    }
  }
  return CreateSubscribersResponse(reply, count);
}

}  // namespace example::listener
