// The Bouncer service of the nested-call tests (nested_test, nested_peer):
// every process it visits appends a hop (pid, tid, its name) and calls the
// next name of the route with the rest of the route, within its own call.
// So a route that returns to a process is a nested call into it, and the
// hops tell which thread of each process served each visit.
#ifndef SLUICE_TESTS_RPC_BOUNCER_H_
#define SLUICE_TESTS_RPC_BOUNCER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "ipc/base/mutex.h"
#include "ipc/host/service_host.h"
#include "nested_sluice.h"

namespace sluice::testing {

struct HopRecord {
  int pid = 0;
  int tid = 0;
  std::string name;
};

// Calls Bounce on `proxy` with `route`, and returns the hops of the reply.
absl::StatusOr<std::vector<HopRecord>> CallBounce(::sluice::test::nested::BouncerProxy& proxy,
                                                  absl::Span<const std::string> route,
                                                  absl::Time deadline);

class BouncerService : public ::sluice::test::nested::BouncerStub {
 public:
  // Runs at the start of every Bounce, on the serving thread (tests use it
  // to hold a call in progress). `route` is what is still to visit.
  using Hook = std::function<void(absl::Span<const std::string> route)>;

  // `manager` (must outlive the service) finds the next names of a route;
  // `name` is recorded in this process's hops.
  BouncerService(ServiceManager& manager, std::string name, Hook hook = nullptr);

  absl::StatusOr<flatbuffers::Offset<::sluice::test::nested::BounceResponse>> Bounce(
      const rpc::CallContext& context, const ::sluice::test::nested::BounceRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override;

 private:
  // The cached connection to `name`, connected on first use.
  absl::StatusOr<::sluice::test::nested::BouncerProxy*> Peer(const std::string& name);

  ServiceManager& manager_;
  const std::string name_;
  const Hook hook_;
  Mutex mu_;
  absl::flat_hash_map<std::string,
                      std::unique_ptr<Connection<::sluice::test::nested::BouncerProxy>>>
      peers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_RPC_BOUNCER_H_
