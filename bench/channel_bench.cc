// sluice_channel_bench: the channel beside its floors and peers, in one run.
//
// For each payload size (64 B, 4 KiB, 64 KiB, 1 MiB) it ping-pongs every
// transport in turn (raw spin, raw futex, raw spin-then-futex, Unix socket,
// pipe, channel), client here and server in a child process, and prints
// p50/p99/p99.9 round-trip latency, calls/s and sleeps per call; then the
// channel's ratio to each baseline, the targets (met or missed,
// informational: the exit status only reports errors), an idle channel's CPU
// use, and peer-death detection times. Cases run interleaved by payload so
// that drift in the machine hits every transport alike; ratios are only
// meaningful within one run (see /work/shared/MACHINE-NOTES.md).
//
// Usage:
//   sluice_channel_bench [--quick] [--pin_one_cpu [--cpu=N] | --pin_two_cpus]
//                        [--transports=raw-spin,channel,...] [--payloads=64,4096,...]
//                        [--budget_ms=N] [--idle_ms=N] [--death_runs=N]
//   --quick         tiny iteration counts (the CTest smoke test; < 10 s)
//   --pin_one_cpu   client and server both pinned to one CPU (--cpu, default
//                   the CPU we start on); prints the one-CPU target instead
//   --pin_two_cpus  client pinned to one CPU and server to another, for
//                   cross-core floors that do not depend on scheduler placement
//   --transports, --payloads  run a subset (names as printed in the table)
//   --budget_ms     time budget per case (default 1500, quick 60)
//   --idle_ms       idle-CPU window (default 1000, quick 200)
//   --death_runs    runs per peer-death scenario (default 10, quick 2; 0 skips)
//   --call_spin_us, --serve_spin_us  the channel's SpinPolicy on both sides
//                   (default: ChannelOptions' defaults)
//   --gap_every=N   sleep 1 ms (untimed) before every Nth call: recovery
//                   after idle gaps, as in bursty traffic
// Child roles (re-exec of this binary; not for direct use):
//   --role=server --transport=NAME --payload=N --call_spin_us=N --serve_spin_us=N
//   --role=death-server --mode=pause|die
//   --role=death-client --mode=pause|send-then-die:US

#include <sched.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "bench/harness.h"
#include "bench/peer_death.h"
#include "bench/pingpong.h"

namespace sluice::bench {
namespace {

struct Flags {
  // Benchmark.
  bool quick = false;
  bool pin_one_cpu = false;
  bool pin_two_cpus = false;
  std::optional<int> cpu;
  std::vector<Transport> transports{std::begin(kAllTransports), std::end(kAllTransports)};
  std::vector<size_t> payloads{64, 4096, 64 << 10, 1 << 20};
  std::optional<int64_t> budget_ms;
  std::optional<int64_t> idle_ms;
  std::optional<int> death_runs;
  // The channel's spin budgets, both sides (default: ChannelOptions' own).
  std::optional<int64_t> call_spin_us;
  std::optional<int64_t> serve_spin_us;
  // Pause 1 ms (untimed) before every Nth measured call: how fast a
  // transport gets back to speed after an idle gap, as bursty traffic has.
  size_t gap_every = 0;
  // Child roles.
  std::string role;
  std::optional<Transport> transport;
  size_t payload = 0;
  std::string mode;
};

// Parses one "--name" or "--name=value" argument into `flags`; an error
// message otherwise.
absl::Status ParseFlag(absl::string_view arg, Flags& flags) {
  const size_t eq = arg.find('=');
  const absl::string_view name = arg.substr(0, eq);
  const absl::string_view value = eq == absl::string_view::npos ? "" : arg.substr(eq + 1);
  auto bad = [&] { return absl::InvalidArgumentError(absl::StrCat("bad flag ", arg)); };
  int64_t n = 0;
  auto number = [&](int64_t min, int64_t max) {
    return absl::SimpleAtoi(value, &n) && n >= min && n <= max;
  };
  if (name == "--quick" && value.empty()) {
    flags.quick = true;
  } else if (name == "--pin_one_cpu" && value.empty()) {
    flags.pin_one_cpu = true;
  } else if (name == "--pin_two_cpus" && value.empty()) {
    flags.pin_two_cpus = true;
  } else if (name == "--cpu") {
    if (!number(0, CPU_SETSIZE - 1)) return bad();
    flags.cpu = static_cast<int>(n);
  } else if (name == "--transports") {
    flags.transports.clear();
    for (absl::string_view item : absl::StrSplit(value, ',', absl::SkipEmpty())) {
      std::optional<Transport> t = ParseTransport(item);
      if (!t) return bad();
      flags.transports.push_back(*t);
    }
  } else if (name == "--payloads") {
    flags.payloads.clear();
    for (absl::string_view item : absl::StrSplit(value, ',', absl::SkipEmpty())) {
      // Multiples of 8 so every byte is part of a summed word; at most the
      // 1 MiB the shared-memory transports are sized for.
      if (!absl::SimpleAtoi(item, &n) || n < 8 || n % 8 != 0 || n > (int64_t{1} << 20)) {
        return bad();
      }
      flags.payloads.push_back(static_cast<size_t>(n));
    }
  } else if (name == "--budget_ms") {
    if (!number(1, 3'600'000)) return bad();
    flags.budget_ms = n;
  } else if (name == "--idle_ms") {
    if (!number(1, 3'600'000)) return bad();
    flags.idle_ms = n;
  } else if (name == "--death_runs") {
    if (!number(0, 1000)) return bad();
    flags.death_runs = static_cast<int>(n);
  } else if (name == "--call_spin_us") {
    if (!number(0, 1'000'000)) return bad();
    flags.call_spin_us = n;
  } else if (name == "--serve_spin_us") {
    if (!number(0, 1'000'000)) return bad();
    flags.serve_spin_us = n;
  } else if (name == "--gap_every") {
    if (!number(0, 1'000'000'000)) return bad();
    flags.gap_every = static_cast<size_t>(n);
  } else if (name == "--role") {
    flags.role = std::string(value);
  } else if (name == "--transport") {
    flags.transport = ParseTransport(value);
    if (!flags.transport) return bad();
  } else if (name == "--payload") {
    if (!number(8, int64_t{1} << 20)) return bad();
    flags.payload = static_cast<size_t>(n);
  } else if (name == "--mode") {
    flags.mode = std::string(value);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown flag ", arg));
  }
  return absl::OkStatus();
}

// How long one case runs. Small payloads get many calls so p99.9 rests on
// dozens of samples; every case also stops at a time budget so the slow
// transports (cross-core wake-ups at ~90 us) do not stretch the run.
struct CasePlan {
  size_t warmup_calls;
  int64_t warmup_ns;
  size_t max_calls;
  size_t min_calls;
  int64_t budget_ns;
  size_t gap_every;  // 0: no idle gaps.
};

CasePlan PlanCase(const Flags& flags, Transport transport, size_t payload) {
  CasePlan plan;
  plan.max_calls = payload <= 4096 ? 50'000 : payload <= (64 << 10) ? 20'000 : 2'000;
  plan.budget_ns = 1'500'000'000;
  plan.warmup_ns = 150'000'000;
  plan.min_calls = 200;
  if (flags.quick) {
    plan.max_calls /= 50;
    plan.budget_ns = 60'000'000;
    plan.warmup_ns = 15'000'000;
    plan.min_calls = 20;
  }
  // Two spinners on one CPU hand over only when the scheduler preempts one:
  // a time slice (milliseconds) per hop. A handful of calls shows that.
  if (flags.pin_one_cpu && transport == Transport::kRawSpin) {
    plan.max_calls = flags.quick ? 5 : 100;
    plan.min_calls = plan.max_calls;
  }
  if (flags.budget_ms) plan.budget_ns = *flags.budget_ms * 1'000'000;
  plan.warmup_calls = std::max<size_t>(plan.max_calls / 20, 3);
  plan.min_calls = std::min(plan.min_calls, plan.max_calls);
  plan.gap_every = flags.gap_every;
  return plan;
}

struct CaseResult {
  LatencySummary latency;
  double client_sleeps_per_call = 0;
  double server_sleeps_per_call = 0;
  std::string error;  // Empty when the case ran.
};

absl::StatusOr<CaseResult> MeasureCase(PingPongClient& client, std::span<const std::byte> payload,
                                       uint64_t expected_sum, const CasePlan& plan) {
  auto round_trip = [&]() -> absl::Status {
    absl::StatusOr<uint64_t> sum = client.RoundTrip(payload);
    if (!sum.ok()) return sum.status();
    if (*sum != expected_sum) return absl::DataLossError("server returned a wrong sum");
    return absl::OkStatus();
  };
  // The first call also waits out the child's exec and startup.
  const int64_t warmup_end = NowNanos() + plan.warmup_ns;
  for (size_t i = 0; i < plan.warmup_calls && (i == 0 || NowNanos() < warmup_end); ++i) {
    if (absl::Status s = round_trip(); !s.ok()) return s;
  }
  std::vector<int64_t> samples;
  samples.reserve(plan.max_calls);
  const absl::StatusOr<int64_t> server_sleeps_before = MainThreadSleeps(client.server_pid());
  const int64_t client_sleeps_before = ThisThreadSleeps();
  const int64_t start = NowNanos();
  int64_t before = start;
  while (samples.size() < plan.max_calls) {
    if (plan.gap_every > 0 && samples.size() % plan.gap_every == plan.gap_every - 1) {
      ::usleep(1000);
      before = NowNanos();
    }
    absl::StatusOr<uint64_t> sum = client.RoundTrip(payload);
    const int64_t after = NowNanos();
    samples.push_back(after - before);
    before = after;
    if (!sum.ok()) return sum.status();
    if (*sum != expected_sum) return absl::DataLossError("server returned a wrong sum");
    if (samples.size() >= plan.min_calls && after - start > plan.budget_ns) break;
  }
  const int64_t client_sleeps = ThisThreadSleeps() - client_sleeps_before;
  const absl::StatusOr<int64_t> server_sleeps_after = MainThreadSleeps(client.server_pid());
  CaseResult result;
  const double calls = static_cast<double>(samples.size());
  result.latency = Summarize(samples);
  result.client_sleeps_per_call = static_cast<double>(client_sleeps) / calls;
  result.server_sleeps_per_call =
      server_sleeps_before.ok() && server_sleeps_after.ok()
          ? static_cast<double>(*server_sleeps_after - *server_sleeps_before) / calls
          : -1;
  return result;
}

using Results = std::map<std::pair<size_t, Transport>, CaseResult>;

const CaseResult* Find(const Results& results, size_t payload, Transport t) {
  auto it = results.find({payload, t});
  return it == results.end() || !it->second.error.empty() ? nullptr : &it->second;
}

// One target line: "[met]" or "[MISSED]" with both sides of the comparison.
void PrintTarget(const Results& results, size_t payload, Transport baseline, bool use_p99,
                 double limit, absl::string_view label) {
  const CaseResult* channel = Find(results, payload, Transport::kChannel);
  const CaseResult* base = Find(results, payload, baseline);
  if (channel == nullptr || base == nullptr) {
    std::printf("  [n/a]    %s: not measured\n", std::string(label).c_str());
    return;
  }
  const double c = use_p99 ? channel->latency.p99_us : channel->latency.p50_us;
  const double b = use_p99 ? base->latency.p99_us : base->latency.p50_us;
  const bool met = c <= limit * b;
  std::printf("  %-8s %s: channel %s us vs %s %s us = %s (limit %.1fx)\n",
              met ? "[met]" : "[MISSED]", std::string(label).c_str(), Us(c).c_str(),
              std::string(TransportName(baseline)).c_str(), Us(b).c_str(), Ratio(c, b).c_str(),
              limit);
}

void PrintTables(const Flags& flags, const Results& results) {
  std::printf("\n%-8s %-15s %7s %9s %9s %9s %9s  %s\n", "payload", "transport", "calls", "p50 us",
              "p99 us", "p99.9 us", "calls/s", "sleeps/call client,server");
  for (size_t payload : flags.payloads) {
    for (Transport t : flags.transports) {
      auto it = results.find({payload, t});
      if (it == results.end()) continue;
      const CaseResult& r = it->second;
      const std::string name(TransportName(t));
      if (!r.error.empty()) {
        std::printf("%-8s %-15s  FAILED: %s\n", FormatSize(payload).c_str(), name.c_str(),
                    r.error.c_str());
        continue;
      }
      std::printf("%-8s %-15s %7zu %9s %9s %9s %9s  %.2f,%.2f\n", FormatSize(payload).c_str(),
                  name.c_str(), r.latency.samples, Us(r.latency.p50_us).c_str(),
                  Us(r.latency.p99_us).c_str(), Us(r.latency.p999_us).c_str(),
                  Rate(r.latency.calls_per_second).c_str(), r.client_sleeps_per_call,
                  r.server_sleeps_per_call);
    }
  }

  std::printf("\nChannel / baseline, p50 ratio | p99 ratio (below 1 = channel faster):\n");
  std::printf("%-8s", "payload");
  for (Transport t : flags.transports) {
    if (t != Transport::kChannel) std::printf(" %19s", std::string(TransportName(t)).c_str());
  }
  std::printf("\n");
  for (size_t payload : flags.payloads) {
    const CaseResult* channel = Find(results, payload, Transport::kChannel);
    std::printf("%-8s", FormatSize(payload).c_str());
    for (Transport t : flags.transports) {
      if (t == Transport::kChannel) continue;
      const CaseResult* base = Find(results, payload, t);
      if (channel == nullptr || base == nullptr) {
        std::printf(" %19s", "-");
        continue;
      }
      std::printf(" %19s", absl::StrCat(Ratio(channel->latency.p50_us, base->latency.p50_us), " | ",
                                        Ratio(channel->latency.p99_us, base->latency.p99_us))
                               .c_str());
    }
    std::printf("\n");
  }
}

void PrintTargets(const Flags& flags, const Results& results) {
  std::printf("\nTargets (ratios within this run; informational):\n");
  if (flags.pin_one_cpu) {
    for (size_t payload : flags.payloads) {
      PrintTarget(
          results, payload, Transport::kRawFutex, false, 1.3,
          absl::StrCat("one CPU, ", FormatSize(payload), " p50 <= 1.3x one-core raw-futex p50"));
    }
    return;
  }
  PrintTarget(results, 64, Transport::kRawSpin, false, 2.0, "64 B p50 <= 2x raw-spin p50");
  for (size_t payload : flags.payloads) {
    PrintTarget(results, payload, Transport::kRawFutex, true, 1.2,
                absl::StrCat(FormatSize(payload), " p99 <= 1.2x raw-futex p99"));
  }
  PrintTarget(results, 1 << 20, Transport::kRawSpin, false, 1.2, "1 MiB p50 <= 1.2x raw-spin p50");
}

// CPU use of an idle channel: a server parked in Receive() right after a
// burst of calls (so any post-completion spinning is included), and this
// process (client side: caller idle, PeerWatcher thread) over the same time.
CaseSetup SetupFor(const Flags& flags, size_t payload, std::optional<int> server_cpu) {
  CaseSetup setup;
  setup.payload = payload;
  setup.server_cpu = server_cpu;
  if (flags.call_spin_us) setup.channel_spin.call_spin = absl::Microseconds(*flags.call_spin_us);
  if (flags.serve_spin_us) {
    setup.channel_spin.serve_spin = absl::Microseconds(*flags.serve_spin_us);
  }
  return setup;
}

void MeasureIdle(const Flags& flags, std::optional<int> cpu, PeerWatcher& watcher) {
  const int64_t idle_ns = (flags.idle_ms ? *flags.idle_ms : flags.quick ? 200 : 1000) * 1'000'000;
  std::printf("\nIdle channel (%.1f s after 200 calls of 64 B):\n",
              static_cast<double>(idle_ns) / 1e9);
  absl::StatusOr<std::unique_ptr<PingPongClient>> client =
      StartPingPong(Transport::kChannel, SetupFor(flags, 64, cpu), watcher);
  if (!client.ok()) {
    std::printf("  FAILED: %s\n", client.status().ToString().c_str());
    return;
  }
  const std::vector<std::byte> payload = MakePayload(64, 7);
  for (int i = 0; i < 200; ++i) {
    if (absl::StatusOr<uint64_t> sum = (*client)->RoundTrip(payload); !sum.ok()) {
      std::printf("  FAILED: %s\n", sum.status().ToString().c_str());
      return;
    }
  }
  const pid_t server = (*client)->server_pid();
  const absl::StatusOr<int64_t> server_before = ProcessCpuNanos(server);
  const absl::StatusOr<int64_t> self_before = ProcessCpuNanos(::getpid());
  const int64_t start = NowNanos();
  absl::SleepFor(absl::Nanoseconds(idle_ns));
  const absl::StatusOr<int64_t> server_after = ProcessCpuNanos(server);
  const absl::StatusOr<int64_t> self_after = ProcessCpuNanos(::getpid());
  const double wall = static_cast<double>(NowNanos() - start);
  if (!server_before.ok() || !server_after.ok() || !self_before.ok() || !self_after.ok()) {
    std::printf("  FAILED: cannot read /proc/PID/task/*/schedstat\n");
    return;
  }
  const double server_pct = static_cast<double>(*server_after - *server_before) / wall * 100;
  const double self_pct = static_cast<double>(*self_after - *self_before) / wall * 100;
  std::printf("  server process: %.3f%% of one CPU; client process: %.3f%%\n", server_pct,
              self_pct);
  std::printf("  %-8s idle channel server uses < 1%% CPU\n", server_pct < 1 ? "[met]" : "[MISSED]");
  if (absl::Status s = (*client)->Stop(); !s.ok()) {
    std::printf("  stopping the idle server: %s\n", s.ToString().c_str());
  }
}

void ReportPeerDeath(const Flags& flags, std::optional<int> cpu, PeerWatcher& watcher) {
  const int runs = flags.death_runs ? *flags.death_runs : flags.quick ? 2 : 10;
  if (runs == 0) return;
  std::printf("\nPeer-death detection (%d runs each; target: peer-dead within 100 ms):\n", runs);
  bool all_met = true;
  for (DeathScenarioResult& r : MeasurePeerDeath(runs, cpu, watcher)) {
    std::sort(r.detect_ms.begin(), r.detect_ms.end());
    std::printf("  %s\n", r.name.c_str());
    if (!r.detect_ms.empty()) {
      std::printf("      peer-dead after: median %.3f ms, max %.3f ms (%zu of %d runs)\n",
                  r.detect_ms[(r.detect_ms.size() - 1) / 2], r.detect_ms.back(), r.detect_ms.size(),
                  runs);
    }
    if (r.missed > 0) {
      std::printf("      NO peer-dead within %s in %d of %d runs; got: %s\n",
                  absl::FormatDuration(r.timeout).c_str(), r.missed, runs, r.last_miss.c_str());
    }
    all_met = all_met && r.missed == 0 && !r.detect_ms.empty() && r.detect_ms.back() <= 100;
  }
  std::printf("  %-8s every scenario detected within 100 ms\n", all_met ? "[met]" : "[MISSED]");
}

// Pins this process (its only thread so far) to `cpu`.
bool PinSelf(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(0, sizeof(set), &set) != 0) {
    std::perror("sched_setaffinity");
    return false;
  }
  return true;
}

int RunBenchmark(const Flags& flags) {
  // Where the server children run (nullopt: anywhere), and how we describe it.
  std::optional<int> cpu;
  std::string placement = absl::StrCat("unpinned, ", UsableCpus(), " CPUs usable");
  // Pinning happens before any thread exists, so the PeerWatcher thread is
  // pinned too.
  if (flags.pin_one_cpu) {
    cpu = flags.cpu ? *flags.cpu : ::sched_getcpu();
    if (!PinSelf(*cpu)) return 1;
    placement = absl::StrCat("both pinned to CPU ", *cpu);
  } else if (flags.pin_two_cpus) {
    std::vector<int> allowed;
    cpu_set_t set;
    CPU_ZERO(&set);
    ::sched_getaffinity(0, sizeof(set), &set);
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &set)) allowed.push_back(c);
    }
    if (allowed.size() < 2) {
      std::fprintf(stderr, "--pin_two_cpus needs two usable CPUs\n");
      return 1;
    }
    cpu = allowed[1];
    if (!PinSelf(allowed[0])) return 1;
    placement = absl::StrCat("client pinned to CPU ", allowed[0], ", server to CPU ", allowed[1]);
  }
  absl::StatusOr<std::unique_ptr<PeerWatcher>> watcher = PeerWatcher::Create();
  if (!watcher.ok()) Die(watcher.status(), "PeerWatcher::Create");

  utsname uts{};
  ::uname(&uts);
  std::printf("sluice_channel_bench%s: client and server in two processes, %s\n",
              flags.quick ? " --quick" : "", placement.c_str());
  std::printf("kernel %s; load average at start %s\n", uts.release, ReadLoadAverage().c_str());
  const SpinPolicy spin = SetupFor(flags, 64, cpu).channel_spin;
  std::printf(
      "raw-spin-futex spins %lld us before sleeping; channel call_spin %lld us, "
      "serve_spin %lld us\n",
      static_cast<long long>(kRawSpinBudgetNs / 1000),
      static_cast<long long>(absl::ToInt64Microseconds(spin.call_spin)),
      static_cast<long long>(absl::ToInt64Microseconds(spin.serve_spin)));
  if (flags.gap_every > 0) {
    std::printf("an untimed 1 ms idle gap precedes every %zu-th call\n", flags.gap_every);
  }
  if (flags.pin_one_cpu) {
    std::printf("raw-spin on one CPU hands over once per scheduler slice: only %zu calls/size\n",
                PlanCase(flags, Transport::kRawSpin, 64).max_calls);
  }
  std::fflush(stdout);

  Results results;
  bool any_error = false;
  const CpuAccounting cpu_before = ReadCpuAccounting();
  const int64_t wall_before = NowNanos();
  for (size_t payload : flags.payloads) {
    const std::vector<std::byte> data = MakePayload(payload, payload);
    const uint64_t expected = SumWords(data);
    for (Transport t : flags.transports) {
      CaseResult& r = results[{payload, t}];
      absl::StatusOr<std::unique_ptr<PingPongClient>> client =
          StartPingPong(t, SetupFor(flags, payload, cpu), **watcher);
      absl::StatusOr<CaseResult> measured =
          client.ok() ? MeasureCase(**client, data, expected, PlanCase(flags, t, payload))
                      : absl::StatusOr<CaseResult>(client.status());
      if (measured.ok()) {
        r = *std::move(measured);
        if (absl::Status s = (*client)->Stop(); !s.ok()) r.error = s.ToString();
      } else {
        r.error = measured.status().ToString();
      }
      if (!r.error.empty()) any_error = true;
      std::fprintf(stderr, "  %s %s: %s\n", FormatSize(payload).c_str(),
                   std::string(TransportName(t)).c_str(),
                   r.error.empty() ? absl::StrCat("p50 ", Us(r.latency.p50_us), " us").c_str()
                                   : r.error.c_str());
    }
  }
  const CpuAccounting cpu_after = ReadCpuAccounting();
  const double others =
      static_cast<double>((cpu_after.machine_busy_ns - cpu_before.machine_busy_ns) -
                          (cpu_after.ours_ns - cpu_before.ours_ns)) /
      static_cast<double>(NowNanos() - wall_before) * 100;
  PrintTables(flags, results);
  std::printf("\nOther work on the machine during these runs: %.0f%% of one CPU%s\n",
              std::max(others, 0.0),
              others > 10 ? " -- busy: floors and ratios above are unreliable" : "");
  PrintTargets(flags, results);
  MeasureIdle(flags, cpu, **watcher);
  ReportPeerDeath(flags, cpu, **watcher);
  std::printf(
      "\nload average at end %s (other work on the machine skews absolute numbers; "
      "compare ratios)\n",
      ReadLoadAverage().c_str());
  return any_error ? 1 : 0;
}

}  // namespace
}  // namespace sluice::bench

int main(int argc, char** argv) {
  using namespace sluice::bench;
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    if (absl::Status s = ParseFlag(argv[i], flags); !s.ok()) {
      std::fprintf(stderr, "%s\n(usage: see the comment at the top of bench/channel_bench.cc)\n",
                   std::string(s.message()).c_str());
      return 2;
    }
  }
  if (flags.role.empty()) return RunBenchmark(flags);
  if (flags.role == "server" && flags.transport && flags.payload > 0) {
    return ServeMain(*flags.transport, SetupFor(flags, flags.payload, std::nullopt));
  }
  if (flags.role == "death-server") return DeathServerMain(flags.mode);
  if (flags.role == "death-client") return DeathClientMain(flags.mode);
  std::fprintf(stderr, "bad child role arguments\n");
  return 2;
}
