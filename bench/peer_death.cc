#include "bench/peer_death.h"

#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "bench/channel_transport.h"
#include "bench/harness.h"
#include "ipc/base/errors.h"
#include "ipc/channel/client_channel.h"
#include "ipc/channel/server_channel.h"
#include "ipc/testing/subprocess.h"

namespace sluice::bench {
namespace {

// Longer than any acceptable detection (the target is 100 ms), short enough
// that a run which never detects does not stall the benchmark.
constexpr absl::Duration kDetectTimeout = absl::Milliseconds(300);
constexpr size_t kRequestBytes = 64;
// Sync calls a death-client makes before it waits to be killed or sends its
// last (oneway) message.
constexpr int kChildSyncCalls = 3;

// A page shared with the child so it can say where it is and when it died.
struct DeathStamp {
  std::atomic<uint32_t> ready;      // Set once the child waits to be killed.
  std::atomic<int64_t> died_at_ns;  // NowNanos() just before it killed itself.
};

DeathStamp& StampOf(const Region& region) { return *reinterpret_cast<DeathStamp*>(region.data()); }

// Waits for the child to be ready, lets the survivor settle into its wait
// (well past any spin budget), then kills it. Returns the kill time.
int64_t KillWhenReady(const DeathStamp& stamp, testing::Subprocess& child) {
  const int64_t give_up = NowNanos() + 5'000'000'000;
  while (stamp.ready.load(std::memory_order_acquire) == 0 && NowNanos() < give_up) {
    ::usleep(100);
  }
  ::usleep(5000);
  const int64_t t0 = NowNanos();
  (void)child.Kill(SIGKILL);
  return t0;
}

void Record(DeathScenarioResult& result, const absl::Status& status, int64_t died_ns,
            int64_t seen_ns) {
  if (IsPeerDead(status) && died_ns > 0) {
    result.detect_ms.push_back(static_cast<double>(seen_ns - died_ns) / 1e6);
  } else {
    ++result.missed;
    result.last_miss = status.ToString();
  }
}

std::vector<std::string> ChildArgv(absl::string_view role, absl::string_view mode) {
  return {testing::SelfExecutable(), absl::StrCat("--role=", role), absl::StrCat("--mode=", mode)};
}

// One sync call of kRequestBytes; the reply is dropped.
absl::Status CallOnce(ClientChannel& client, absl::Time deadline) {
  absl::StatusOr<OutgoingCall> call = client.BeginCall(kRequestBytes, deadline);
  if (!call.ok()) return call.status();
  const std::span<std::byte> buffer = call->buffer().first(kRequestBytes);
  std::memset(buffer.data(), 1, buffer.size());
  return client.Call(*std::move(call), buffer, deadline).status();
}

// Answers `sync_calls` calls and, if `oneway`, one oneway message (in any
// order). An error if Receive fails first.
absl::Status ServeCalls(ServerChannel& server, int sync_calls, bool oneway, absl::Time deadline) {
  while (sync_calls > 0 || oneway) {
    absl::StatusOr<IncomingCall> call = server.Receive(deadline);
    if (!call.ok()) return call.status();
    if (call->oneway()) {
      oneway = false;
      (void)call->Reply({});
      continue;
    }
    --sync_calls;
    absl::StatusOr<std::span<std::byte>> space = call->ReserveReply(sizeof(ReplyWords));
    if (!space.ok()) return space.status();
    const ReplyWords words{SumWords(call->request()), call->request().size()};
    std::memcpy(space->data(), &words, sizeof(words));
    if (absl::Status s = call->Reply(space->first(sizeof(words))); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// Pins the calling thread to one CPU for its lifetime, then restores it.
class ScopedThreadCpu {
 public:
  explicit ScopedThreadCpu(std::optional<int> cpu) {
    if (!cpu || ::sched_getaffinity(0, sizeof(saved_), &saved_) != 0) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(*cpu, &one);
    active_ = ::sched_setaffinity(0, sizeof(one), &one) == 0;
  }
  ~ScopedThreadCpu() {
    if (active_) ::sched_setaffinity(0, sizeof(saved_), &saved_);
  }
  ScopedThreadCpu(const ScopedThreadCpu&) = delete;
  ScopedThreadCpu& operator=(const ScopedThreadCpu&) = delete;

 private:
  cpu_set_t saved_;
  bool active_ = false;
};

// The first two CPUs this process may use, if it may use two.
std::optional<std::pair<int, int>> TwoCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) return std::nullopt;
  int found[2];
  int n = 0;
  for (int c = 0; c < CPU_SETSIZE && n < 2; ++c) {
    if (CPU_ISSET(c, &set)) found[n++] = c;
  }
  if (n < 2) return std::nullopt;
  return std::make_pair(found[0], found[1]);
}

struct Stamped {
  Region stamp;
  ChannelPeer peer;
};

absl::StatusOr<Stamped> SpawnStamped(absl::string_view role, absl::string_view mode,
                                     std::optional<int> cpu) {
  absl::StatusOr<Region> stamp = Region::Create("bench-death-stamp", 4096);
  if (!stamp.ok()) return stamp.status();
  absl::StatusOr<UniqueFd> stamp_fd = stamp->DuplicateFd();
  if (!stamp_fd.ok()) return stamp_fd.status();
  absl::StatusOr<ChannelPeer> peer =
      SpawnChannelPeer(ChildArgv(role, mode), {stamp_fd->get()}, cpu);
  if (!peer.ok()) return peer.status();
  return Stamped{*std::move(stamp), *std::move(peer)};
}

// Our side is the client; the child server dies.
void ServerDies(DeathScenarioResult& result, absl::string_view mode, std::optional<int> cpu,
                PeerWatcher& watcher) {
  absl::StatusOr<Stamped> child = SpawnStamped("death-server", mode, cpu);
  if (!child.ok()) return Record(result, child.status(), 0, 0);
  absl::StatusOr<std::unique_ptr<ClientChannel>> client =
      ClientChannel::Open(std::move(child->peer.region), std::move(child->peer.liveness), watcher);
  if (!client.ok()) return Record(result, client.status(), 0, 0);
  const DeathStamp& stamp = StampOf(child->stamp);
  std::atomic<int64_t> killed_at{0};
  std::thread killer;
  if (mode == "pause") {
    killer = std::thread([&] { killed_at = KillWhenReady(stamp, child->peer.process); });
  }
  // Generous: the child must start (exec, dynamic loading) before it answers.
  const absl::Status status = CallOnce(**client, absl::Now() + absl::Seconds(5));
  const int64_t seen = NowNanos();
  if (killer.joinable()) killer.join();
  const int64_t died =
      mode == "pause" ? killed_at.load() : stamp.died_at_ns.load(std::memory_order_acquire);
  Record(result, status, died, seen);
}

// Our side is the server; the child client dies. With `split_cpus` our
// serving thread and the child run on two different CPUs, so the server's
// post-completion spin (which needs the client on another CPU) really happens
// and the child's death and our PeerWatcher can land during it.
void ClientDies(DeathScenarioResult& result, absl::string_view mode, const ChannelOptions& options,
                std::optional<int> cpu, bool split_cpus, PeerWatcher& watcher) {
  const std::optional<std::pair<int, int>> cpus = split_cpus ? TwoCpus() : std::nullopt;
  absl::StatusOr<Stamped> child =
      SpawnStamped("death-client", mode, cpus ? std::optional<int>(cpus->second) : cpu);
  if (!child.ok()) return Record(result, child.status(), 0, 0);
  absl::StatusOr<std::unique_ptr<ServerChannel>> server = ServerChannel::Open(
      std::move(child->peer.region), std::move(child->peer.liveness), watcher, options);
  if (!server.ok()) return Record(result, server.status(), 0, 0);
  // Pinned only now: the channel counts the CPUs it may spin on (the opening
  // thread's affinity) in Open, and would never spin if opened pinned.
  ScopedThreadCpu pin_server(cpus ? std::optional<int>(cpus->first) : std::nullopt);
  const DeathStamp& stamp = StampOf(child->stamp);
  const bool killed = mode == "pause";
  // The child's calls: 3 sync calls, then (send-then-die) one oneway. The
  // deadline covers its startup (exec, dynamic loading).
  absl::Status status =
      ServeCalls(**server, kChildSyncCalls, !killed, absl::Now() + absl::Seconds(5));
  std::atomic<int64_t> killed_at{0};
  std::thread killer;
  int64_t receive_cpu_ns = -1;
  if (status.ok()) {
    if (killed) {
      killer = std::thread([&] { killed_at = KillWhenReady(stamp, child->peer.process); });
    }
    // Right after the last answer, as a server loop would: the one Receive
    // that must end in peer-dead.
    const absl::Time deadline = absl::Now() + (killed ? absl::Seconds(1) : kDetectTimeout);
    const int64_t cpu_before = ThisThreadCpuNanos();
    absl::StatusOr<IncomingCall> call = (*server)->Receive(deadline);
    receive_cpu_ns = ThisThreadCpuNanos() - cpu_before;
    status =
        call.ok() ? absl::InternalError("a request after the child's last one") : call.status();
  }
  const int64_t seen = NowNanos();
  if (killer.joinable()) killer.join();
  const int64_t died = killed ? killed_at.load() : stamp.died_at_ns.load(std::memory_order_acquire);
  // The CPU that last Receive used tells whether it spun (about as long as
  // it waited) or slept (microseconds).
  if (receive_cpu_ns >= 0 && !IsPeerDead(status)) {
    status = absl::Status(status.code(), absl::StrFormat("%s (that Receive used %.2f ms of CPU)",
                                                         status.message(), receive_cpu_ns / 1e6));
  }
  Record(result, status, died, seen);
}

absl::StatusOr<Region> AdoptStamp() { return Region::Adopt(UniqueFd(5), 4096, 4096); }

[[noreturn]] void DieNow(DeathStamp& stamp) {
  stamp.died_at_ns.store(NowNanos(), std::memory_order_release);
  ::raise(SIGKILL);
  for (;;) ::pause();
}

[[noreturn]] void WaitToBeKilled(DeathStamp& stamp) {
  stamp.ready.store(1, std::memory_order_release);
  for (;;) ::pause();
}

}  // namespace

std::vector<DeathScenarioResult> MeasurePeerDeath(int runs, std::optional<int> cpu,
                                                  PeerWatcher& watcher) {
  const bool split = !cpu && TwoCpus().has_value();
  const std::string where = split ? ", 2 CPUs" : "";
  std::vector<DeathScenarioResult> results(5);
  results[0].name = "server SIGKILLed while client sleeps in Call()";
  results[1].name = "server dies right after Receive() (client mid-Call)";
  results[2].name = "client SIGKILLed while server sleeps in Receive()";
  results[3].name =
      absl::StrCat("client dies right after oneway Send() (default serve_spin 150 us", where, ")");
  results[4].name =
      absl::StrCat("client dies 2 ms after oneway Send() (serve_spin 20 ms", where, ")");
  ChannelOptions long_spin;
  long_spin.spin.serve_spin = absl::Milliseconds(20);
  for (int run = 0; run < runs; ++run) {
    ServerDies(results[0], "pause", cpu, watcher);
    ServerDies(results[1], "die", cpu, watcher);
    ClientDies(results[2], "pause", {}, cpu, /*split_cpus=*/false, watcher);
    ClientDies(results[3], "send-then-die:0", {}, cpu, split, watcher);
    ClientDies(results[4], "send-then-die:2000", long_spin, cpu, split, watcher);
  }
  // A detection slower than the timeout is a miss however it was reported.
  for (DeathScenarioResult& r : results) {
    r.timeout = kDetectTimeout;
    const double limit_ms = absl::ToDoubleMilliseconds(kDetectTimeout);
    std::vector<double> in_time;
    for (double ms : r.detect_ms) {
      if (ms <= limit_ms) {
        in_time.push_back(ms);
      } else {
        ++r.missed;
        r.last_miss = absl::StrCat("peer-dead only after ", ms, " ms");
      }
    }
    r.detect_ms = std::move(in_time);
  }
  return results;
}

int DeathServerMain(absl::string_view mode) {
  absl::StatusOr<ChildChannelEnds> ends = AdoptChildChannelEnds();
  if (!ends.ok()) Die(ends.status(), "adopting the channel region");
  absl::StatusOr<Region> stamp_region = AdoptStamp();
  if (!stamp_region.ok()) Die(stamp_region.status(), "adopting the stamp page");
  DeathStamp& stamp = StampOf(*stamp_region);
  absl::StatusOr<std::unique_ptr<PeerWatcher>> watcher = PeerWatcher::Create();
  if (!watcher.ok()) Die(watcher.status(), "PeerWatcher::Create");
  absl::StatusOr<std::unique_ptr<ServerChannel>> server =
      ServerChannel::Open(std::move(ends->region), std::move(ends->liveness), **watcher);
  if (!server.ok()) Die(server.status(), "ServerChannel::Open");
  absl::StatusOr<IncomingCall> call = (*server)->Receive();
  if (!call.ok()) Die(call.status(), "Receive");
  if (mode == "die") DieNow(stamp);
  WaitToBeKilled(stamp);  // Holding the call unanswered.
}

int DeathClientMain(absl::string_view mode) {
  absl::StatusOr<ChildChannelEnds> ends = AdoptChildChannelEnds();
  if (!ends.ok()) Die(ends.status(), "adopting the channel region");
  absl::StatusOr<Region> stamp_region = AdoptStamp();
  if (!stamp_region.ok()) Die(stamp_region.status(), "adopting the stamp page");
  DeathStamp& stamp = StampOf(*stamp_region);
  absl::StatusOr<std::unique_ptr<PeerWatcher>> watcher = PeerWatcher::Create();
  if (!watcher.ok()) Die(watcher.status(), "PeerWatcher::Create");
  absl::StatusOr<std::unique_ptr<ClientChannel>> client =
      ClientChannel::Open(std::move(ends->region), std::move(ends->liveness), **watcher);
  if (!client.ok()) Die(client.status(), "ClientChannel::Open");
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  for (int i = 0; i < kChildSyncCalls; ++i) {
    if (absl::Status s = CallOnce(**client, deadline); !s.ok()) Die(s, "Call");
  }
  if (mode == "pause") WaitToBeKilled(stamp);
  // send-then-die:US: a last oneway message, then death US microseconds
  // later, busy all along (so the server sees us running on another CPU and
  // spins for more work while we die).
  int64_t delay_us = 0;
  if (!absl::ConsumePrefix(&mode, "send-then-die:") || !absl::SimpleAtoi(mode, &delay_us)) {
    Die(absl::InvalidArgumentError(absl::StrCat("unknown mode ", mode)), "death-client");
  }
  absl::StatusOr<OutgoingCall> call = (*client)->BeginCall(kRequestBytes, deadline);
  if (!call.ok()) Die(call.status(), "BeginCall");
  const std::span<std::byte> buffer = call->buffer().first(kRequestBytes);
  std::memset(buffer.data(), 2, buffer.size());
  if (absl::Status s = (*client)->Send(*std::move(call), buffer); !s.ok()) Die(s, "Send");
  const int64_t die_at = NowNanos() + delay_us * 1000;
  while (NowNanos() < die_at) CpuRelax();
  DieNow(stamp);
}

}  // namespace sluice::bench
