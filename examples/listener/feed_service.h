// FeedService: example.listener.Feed (idl/example/listener.fbs), the server
// side of the listener example. Subscribers are Listener objects living in
// other processes, held as rpc::Remote<ListenerProxy>; each has a death
// notification, so a subscriber whose process dies is dropped at once, not
// at the next Publish.
//
// Threads: methods run on the ServiceHost's pool, death notifications on the
// process's peer watcher, where the recipient drops the subscriber (and may
// so release the last reference to the dead listener). The subscriber table
// is guarded by a mutex that is never held while calling out.
#ifndef SLUICE_EXAMPLES_LISTENER_FEED_SERVICE_H_
#define SLUICE_EXAMPLES_LISTENER_FEED_SERVICE_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "ipc/base/mutex.h"
#include "ipc/rpc/object.h"
#include "listener_sluice.h"

namespace example::listener {

class FeedService : public FeedStub, public std::enable_shared_from_this<FeedService> {
 public:
  struct Options {
    // How long a Publish waits for each listener's Ack.
    absl::Duration call_timeout = absl::Seconds(5);
    // Print subscriptions, deaths and publishes to stdout.
    bool verbose = true;
  };

  // Make it with std::make_shared: death notifications hold it weakly.
  explicit FeedService(Options options);
  FeedService() : FeedService(Options{}) {}
  // Close()s.
  ~FeedService() override;

  absl::StatusOr<flatbuffers::Offset<SubscribeResponse>> Subscribe(
      const sluice::rpc::CallContext& context, const SubscribeRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<UnsubscribeResponse>> Unsubscribe(
      const sluice::rpc::CallContext& context, const UnsubscribeRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<PublishResponse>> Publish(
      const sluice::rpc::CallContext& context, const PublishRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;
  absl::StatusOr<flatbuffers::Offset<SubscribersResponse>> Subscribers(
      const sluice::rpc::CallContext& context, const SubscribersRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;

  // Releases every listener. Call once no more calls can arrive (after
  // ServiceHost::Shutdown). Idempotent.
  void Close();

 private:
  struct Subscriber {
    Subscriber(uint64_t id_in, std::string topic_in, pid_t pid_in,
               sluice::rpc::Remote<ListenerProxy> listener_in)
        : id(id_in), topic(std::move(topic_in)), pid(pid_in), listener(std::move(listener_in)) {}
    const uint64_t id;
    const std::string topic;
    const pid_t pid;  // The process that subscribed (the listener's, here).
    sluice::rpc::Remote<ListenerProxy> listener;
  };

  // Removes subscription `id` and prints why; false if it was not there.
  // The listener is released when the caller's last copy goes.
  bool Drop(uint64_t id, const char* why);
  void Log(const std::string& line) const;

  const Options options_;

  sluice::Mutex mu_;
  std::map<uint64_t, std::shared_ptr<Subscriber>> subscribers_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, uint64_t> death_links_ ABSL_GUARDED_BY(mu_);  // id -> LinkToDeath id
  std::map<std::string, uint64_t> last_seq_ ABSL_GUARDED_BY(mu_);  // per topic
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace example::listener

#endif  // SLUICE_EXAMPLES_LISTENER_FEED_SERVICE_H_
