// Peer-death detection: how long after one side of a channel dies the other
// side's blocked or spinning call returns a peer-dead (IsPeerDead) error.
//
// Scenarios, each run against a fresh child:
//   server killed (SIGKILL from this process) while our Call() sleeps;
//   server kills itself right after Receive(), mid-call;
//   client killed while our Receive() sleeps;
//   client kills itself shortly after a oneway Send(), while our server thread
//     may be inside its post-completion spin (100 us after, with the default
//     150 us serve_spin; 2 ms after, with a 20 ms serve_spin so the death
//     always lands inside the spin). With two CPUs our serving thread and the
//     child are pinned apart, since the server spins only for a client
//     running on another CPU.
// The clock starts at kill() for the killed children, and at the child's own
// timestamp just before raise(SIGKILL) for the others.
#ifndef SLUICE_BENCH_PEER_DEATH_H_
#define SLUICE_BENCH_PEER_DEATH_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "ipc/channel/peer_watcher.h"

namespace sluice::bench {

struct DeathScenarioResult {
  std::string name;
  std::vector<double> detect_ms;  // One per run that saw peer-dead in time.
  int missed = 0;                 // Runs that did not see peer-dead before `timeout`.
  std::string last_miss;          // What such a run got instead.
  absl::Duration timeout;
};

std::vector<DeathScenarioResult> MeasurePeerDeath(int runs, std::optional<int> cpu,
                                                  PeerWatcher& watcher);

// Child roles: --role=death-server --mode=pause|die and
// --role=death-client --mode=pause|send-then-die:MICROSECONDS.
int DeathServerMain(absl::string_view mode);
int DeathClientMain(absl::string_view mode);

}  // namespace sluice::bench

#endif  // SLUICE_BENCH_PEER_DEATH_H_
