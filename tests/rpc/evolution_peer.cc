// One side of the schema-evolution test, built twice: against
// evolution_v1.fbs (SLUICE_EVOLUTION_VERSION 1) and evolution_v2.fbs (2).
//
//   evolution_peer_vN server   serve Inventory on fds 3 (region), 4 (liveness)
//   evolution_peer_vN client   call it on fds 3/4; exit 0 if every check passed
#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "ipc/base/errors.h"
#include "ipc/base/notification.h"
#include "ipc/rpc/server_pool.h"
#include "tests/testing/channel_pair.h"
#if SLUICE_EVOLUTION_VERSION == 1
#include "evolution_v1_sluice.h"
#else
#include "evolution_v2_sluice.h"
#endif

namespace sluice::testing {
namespace {

namespace evo = ::sluice::test::evo;
constexpr int kVersion = SLUICE_EVOLUTION_VERSION;

class Inventory : public evo::InventoryStub {
 public:
  absl::StatusOr<flatbuffers::Offset<evo::Item>> Get(
      const rpc::CallContext&, const evo::Query& query,
      flatbuffers::FlatBufferBuilder& reply) override {
    const std::string name = query.name() != nullptr ? query.name()->str() : "";
#if SLUICE_EVOLUTION_VERSION == 1
    return evo::CreateItemDirect(reply, name.c_str(), 41);
#else
    const std::string note = query.verbose() ? "verbose from v2" : "from v2";
    return evo::CreateItemDirect(reply, name.c_str(), 42, note.c_str());
#endif
  }
#if SLUICE_EVOLUTION_VERSION == 2
  absl::StatusOr<flatbuffers::Offset<evo::Item>> Describe(
      const rpc::CallContext&, const evo::Query&, flatbuffers::FlatBufferBuilder& reply) override {
    return evo::CreateItemDirect(reply, "inventory", 0, "described");
  }
#endif
};

int Check(bool ok, const std::string& what) {
  if (!ok) std::fprintf(stderr, "evolution_peer_v%d: check failed: %s\n", kVersion, what.c_str());
  return ok ? 0 : 1;
}

int RunClient(ClientChannel& channel) {
  evo::InventoryProxy inventory(channel);
  int failures = 0;
#if SLUICE_EVOLUTION_VERSION == 1
  // Old client: the server may be v1 or v2; the shared fields must work.
  auto item = inventory.Get("apples");
  if (!item.ok()) return Check(false, item.status().ToString());
  failures += Check((*item)->name()->str() == "apples", "name round trip");
  failures += Check((*item)->count() == 41 || (*item)->count() == 42, "count");
#else
  // New client against whatever server: new fields are absent on v1.
  auto item = inventory.Get("pears", true);
  if (!item.ok()) return Check(false, item.status().ToString());
  failures += Check((*item)->name()->str() == "pears", "name round trip");
  const bool v2_server = (*item)->count() == 42;
  failures +=
      Check(v2_server ? (*item)->note()->str() == "verbose from v2" : (*item)->note() == nullptr,
            "note present exactly on a v2 server");
  auto described = inventory.Describe("x", false);
  // A method the old server lacks: it can only give the id it got; the
  // proxy names what it asked for.
  failures += Check(v2_server ? described.ok()
                              : described.status().code() == absl::StatusCode::kUnimplemented &&
                                    absl::StartsWith(described.status().message(),
                                                     "sluice.test.evo.Inventory.Describe: "),
                    "Describe: " + described.status().ToString());
#endif
  return failures;
}

int Main(int argc, char** argv) {
  const std::string role = argc > 1 ? argv[1] : "";
  auto watcher = PeerWatcher::Create();
  if (!watcher.ok()) return 2;
  if (role == "client") {
    auto region = Region::Adopt(UniqueFd(3), 0, Region::kMaxSize);
    if (!region.ok()) return 2;
    auto channel = ClientChannel::Open(*std::move(region), UniqueFd(4), **watcher);
    if (!channel.ok()) return 2;
    return RunClient(**channel);
  }
  auto channel = ServerChannelFromInheritedFds(**watcher);
  if (!channel.ok()) return 2;
  // Served as ServiceHost serves: by a pool, until the client hangs up.
  absl::Status ended_why;
  Notification ended;
  rpc::ServerPool pool;
  absl::Status added =
      pool.Add(*std::move(channel), std::make_shared<Inventory>(), [&](absl::Status why) {
        ended_why = std::move(why);
        ended.Notify();
      });
  if (!added.ok()) return 2;
  ended.WaitForNotification();
  return IsPeerDead(ended_why) ? 0 : 2;
}

}  // namespace
}  // namespace sluice::testing

int main(int argc, char** argv) { return sluice::testing::Main(argc, argv); }
