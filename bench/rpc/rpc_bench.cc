// sluice_rpc_bench: a generated Sluice call beside what it is built from and
// what it replaces, in one run.
//
// For each payload (64 B, 4 KiB, 64 KiB, 1 MiB) the request carries the
// payload, the server reads every byte (a sum of 64-bit words) and answers
// with a small reply, client here and server in a child process:
//   rpc          BenchServiceProxy::Send(absl::Span) -> generated stub: the
//                proxy copies the caller's buffer into the region once
//   rpc-inplace  Send(build) writing the field with CreateUninitializedVector
//   channel      ClientChannel/ServerChannel with a memcpy, no RPC layer
//   raw-spin     two seq words on a shared page, both sides busy-wait: the floor
//   raw-futex    the same words, both sides sleep in FUTEX_WAIT: the floor on one CPU
//   unix-socket  socketpair ping-pong: what any kernel-mediated handoff costs
//   grpc         the same interface (bench.proto) over a Unix socket
// The rpc cases' server serves as ServiceHost does: an rpc::ServerPool with
// its default options.
// It prints p50/p99/p99.9 latency and calls/s per case, the ratios between
// them, what the stub's private copy and verification cost at each size,
// where an rpc call's time goes (client, each handoff, server; from the
// diagnostic Probe method), and the targets, met or missed
// (informational: only errors make the exit status non-zero). Cases run in rounds, interleaved by
// payload and rotated, so drift in the machine hits every case alike; compare ratios within a run,
// never against remembered numbers (MACHINE-NOTES.md).
//
// Usage:
//   sluice_rpc_bench [--quick] [--cases=rpc,grpc,...] [--payloads=64,4096,...]
//                    [--budget_ms=N] [--rounds=N] [--csv=FILE]
//   --quick      tiny iteration counts (the CTest smoke test)
//   --cases      a subset, names as printed
//   --payloads   sizes in bytes, multiples of 8, at most 1 MiB
//   --budget_ms  time per case and payload, over all rounds (default 1500)
//   --rounds     how many interleaved passes share the budget (default 3)
//   --csv        also write the latency table to FILE (scripts/plot.sh plots it)
// Child roles (re-exec of this binary; not for direct use):
//   --role=rpc-server
//   --role=grpc-server --socket=PATH
//   --role=server --transport=NAME --payload=N ...   (bench/pingpong.h)

#include <sched.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "bench/harness.h"
#include "bench/pingpong.h"
#include "bench/rpc/rpc_cases.h"
#include "ipc/rpc/wire.h"

namespace sluice::bench {
namespace {

enum class Case : uint8_t { kRpc, kRpcInPlace, kChannel, kRawSpin, kRawFutex, kUnixSocket, kGrpc };

constexpr Case kAllCases[] = {Case::kRpc,      Case::kRpcInPlace, Case::kChannel, Case::kRawSpin,
                              Case::kRawFutex, Case::kUnixSocket, Case::kGrpc};

absl::string_view CaseName(Case c) {
  switch (c) {
    case Case::kRpc:
      return "rpc";
    case Case::kRpcInPlace:
      return "rpc-inplace";
    case Case::kChannel:
      return "channel";
    case Case::kRawSpin:
      return "raw-spin";
    case Case::kRawFutex:
      return "raw-futex";
    case Case::kUnixSocket:
      return "unix-socket";
    case Case::kGrpc:
      return "grpc";
  }
  return "?";
}

std::optional<Case> ParseCase(absl::string_view name) {
  for (Case c : kAllCases) {
    if (CaseName(c) == name) return c;
  }
  return std::nullopt;
}

struct Flags {
  bool quick = false;
  std::vector<Case> cases{std::begin(kAllCases), std::end(kAllCases)};
  std::vector<size_t> payloads{64, 4096, 64 << 10, 1 << 20};
  std::optional<int64_t> budget_ms;
  std::optional<int> rounds;
  std::string csv;
  // Child roles.
  std::string role;
  std::string socket;
  std::optional<Transport> transport;
  size_t payload = 0;
  std::optional<int64_t> call_spin_us;
  std::optional<int64_t> serve_spin_us;
};

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
  } else if (name == "--cases") {
    flags.cases.clear();
    for (absl::string_view item : absl::StrSplit(value, ',', absl::SkipEmpty())) {
      std::optional<Case> c = ParseCase(item);
      if (!c) return bad();
      flags.cases.push_back(*c);
    }
  } else if (name == "--payloads") {
    flags.payloads.clear();
    for (absl::string_view item : absl::StrSplit(value, ',', absl::SkipEmpty())) {
      // Multiples of 8 so every byte is in a summed word; at most what the
      // raw transports and the bench channel geometry are sized for.
      if (!absl::SimpleAtoi(item, &n) || n < 8 || n % 8 != 0 || n > (int64_t{1} << 20)) {
        return bad();
      }
      flags.payloads.push_back(static_cast<size_t>(n));
    }
  } else if (name == "--budget_ms") {
    if (!number(1, 3'600'000)) return bad();
    flags.budget_ms = n;
  } else if (name == "--rounds") {
    if (!number(1, 100)) return bad();
    flags.rounds = static_cast<int>(n);
  } else if (name == "--csv") {
    if (value.empty()) return bad();
    flags.csv = std::string(value);
  } else if (name == "--role") {
    flags.role = std::string(value);
  } else if (name == "--socket") {
    flags.socket = std::string(value);
  } else if (name == "--transport") {
    flags.transport = ParseTransport(value);
    if (!flags.transport) return bad();
  } else if (name == "--payload") {
    if (!number(8, int64_t{1} << 20)) return bad();
    flags.payload = static_cast<size_t>(n);
  } else if (name == "--call_spin_us") {
    if (!number(0, 1'000'000)) return bad();
    flags.call_spin_us = n;
  } else if (name == "--serve_spin_us") {
    if (!number(0, 1'000'000)) return bad();
    flags.serve_spin_us = n;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown flag ", arg));
  }
  return absl::OkStatus();
}

// One round of one case. Every case also stops at its time budget, so the
// slow ones (kernel wake-ups at ~100 us, gRPC) do not stretch the run.
struct RoundPlan {
  size_t warmup_calls;
  int64_t warmup_ns;
  size_t max_calls;
  size_t min_calls;
  int64_t budget_ns;
};

int Rounds(const Flags& flags) { return flags.rounds ? *flags.rounds : flags.quick ? 1 : 3; }

RoundPlan PlanRound(const Flags& flags, size_t payload) {
  const int rounds = Rounds(flags);
  RoundPlan plan;
  size_t total_calls = payload <= 4096 ? 60'000 : payload <= (64 << 10) ? 20'000 : 3'000;
  int64_t budget_ns = 1'500'000'000;
  plan.warmup_ns = 100'000'000;
  plan.min_calls = 100;
  if (flags.quick) {
    total_calls /= 50;
    budget_ns = 60'000'000;
    plan.warmup_ns = 10'000'000;
    plan.min_calls = 10;
  }
  if (flags.budget_ms) budget_ns = *flags.budget_ms * 1'000'000;
  plan.max_calls = std::max<size_t>(total_calls / static_cast<size_t>(rounds), 1);
  plan.budget_ns = budget_ns / rounds;
  // Warm-up also faults in the region pages a large message touches.
  plan.warmup_calls = std::max<size_t>(plan.max_calls / 20, 3);
  plan.min_calls = std::min(plan.min_calls, plan.max_calls);
  return plan;
}

struct CaseResult {
  std::vector<int64_t> samples;  // Round trips of every round, ns.
  int64_t client_sleeps = 0;
  int64_t server_sleeps = 0;  // Of all the server's threads; -1 if unknown.
  LatencySummary latency;     // Filled once all rounds ran.
  std::string error;          // Empty while every round ran.
};

absl::StatusOr<std::unique_ptr<PingPongClient>> StartCase(Case c, size_t payload,
                                                          PeerWatcher& watcher) {
  CaseSetup setup;
  setup.payload = payload;
  switch (c) {
    case Case::kRpc:
      return StartSluiceRpc(RpcBuild::kFlattened, watcher);
    case Case::kRpcInPlace:
      return StartSluiceRpc(RpcBuild::kInPlace, watcher);
    case Case::kChannel:
      return StartPingPong(Transport::kChannel, setup, watcher);
    case Case::kRawSpin:
      return StartPingPong(Transport::kRawSpin, setup, watcher);
    case Case::kRawFutex:
      return StartPingPong(Transport::kRawFutex, setup, watcher);
    case Case::kUnixSocket:
      return StartPingPong(Transport::kUnixSocket, setup, watcher);
    case Case::kGrpc:
      return StartGrpc();
  }
  return absl::InvalidArgumentError("unknown case");
}

// Runs one round of `c` against a fresh server child and appends to `result`.
absl::Status RunRound(Case c, std::span<const std::byte> payload, uint64_t expected_sum,
                      const RoundPlan& plan, PeerWatcher& watcher, CaseResult& result) {
  absl::StatusOr<std::unique_ptr<PingPongClient>> client = StartCase(c, payload.size(), watcher);
  if (!client.ok()) return client.status();
  auto round_trip = [&]() -> absl::Status {
    absl::StatusOr<uint64_t> sum = (*client)->RoundTrip(payload);
    if (!sum.ok()) return sum.status();
    if (*sum != expected_sum) return absl::DataLossError("server returned a wrong sum");
    return absl::OkStatus();
  };
  // The first call also waits out the child's exec and startup.
  const int64_t warmup_end = NowNanos() + plan.warmup_ns;
  for (size_t i = 0; i < plan.warmup_calls && (i == 0 || NowNanos() < warmup_end); ++i) {
    if (absl::Status s = round_trip(); !s.ok()) return s;
  }
  // Every thread of the server: the rpc cases (and gRPC) serve on pool
  // threads, whose sleeps the main thread's count would miss.
  const absl::StatusOr<int64_t> server_before = ProcessSleeps((*client)->server_pid());
  const int64_t client_before = ThisThreadSleeps();
  const size_t first = result.samples.size();
  const int64_t start = NowNanos();
  int64_t before = start;
  while (result.samples.size() - first < plan.max_calls) {
    const absl::Status s = round_trip();
    const int64_t after = NowNanos();
    if (!s.ok()) return s;
    result.samples.push_back(after - before);
    before = after;
    if (result.samples.size() - first >= plan.min_calls && after - start > plan.budget_ns) break;
  }
  result.client_sleeps += ThisThreadSleeps() - client_before;
  const absl::StatusOr<int64_t> server_after = ProcessSleeps((*client)->server_pid());
  if (server_before.ok() && server_after.ok() && result.server_sleeps >= 0) {
    result.server_sleeps += *server_after - *server_before;
  } else {
    result.server_sleeps = -1;
  }
  return (*client)->Stop();
}

using Results = std::map<std::pair<size_t, Case>, CaseResult>;

const CaseResult* Find(const Results& results, size_t payload, Case c) {
  auto it = results.find({payload, c});
  return it == results.end() || !it->second.error.empty() ? nullptr : &it->second;
}

void PrintTable(const Flags& flags, const Results& results) {
  std::printf("\n%-8s %-12s %7s %9s %9s %9s %9s  %s\n", "payload", "case", "calls", "p50 us",
              "p99 us", "p99.9 us", "calls/s", "sleeps/call client,server");
  for (size_t payload : flags.payloads) {
    for (Case c : flags.cases) {
      auto it = results.find({payload, c});
      if (it == results.end()) continue;
      const CaseResult& r = it->second;
      const std::string name(CaseName(c));
      if (!r.error.empty()) {
        std::printf("%-8s %-12s  FAILED: %s\n", FormatSize(payload).c_str(), name.c_str(),
                    r.error.c_str());
        continue;
      }
      const double calls = static_cast<double>(r.latency.samples);
      const std::string server_sleeps =
          r.server_sleeps < 0
              ? "-"
              : absl::StrFormat("%.2f", static_cast<double>(r.server_sleeps) / calls);
      std::printf("%-8s %-12s %7zu %9s %9s %9s %9s  %.2f,%s\n", FormatSize(payload).c_str(),
                  name.c_str(), r.latency.samples, Us(r.latency.p50_us).c_str(),
                  Us(r.latency.p99_us).c_str(), Us(r.latency.p999_us).c_str(),
                  Rate(r.latency.calls_per_second).c_str(),
                  static_cast<double>(r.client_sleeps) / calls, server_sleeps.c_str());
    }
  }
}

void PrintRatios(const Flags& flags, const Results& results) {
  for (Case subject : {Case::kRpc, Case::kRpcInPlace}) {
    if (std::find(flags.cases.begin(), flags.cases.end(), subject) == flags.cases.end()) continue;
    std::printf("\n%s / baseline, p50 ratio | p99 ratio (below 1 = %s faster):\n",
                std::string(CaseName(subject)).c_str(), std::string(CaseName(subject)).c_str());
    std::printf("%-8s", "payload");
    for (Case c : flags.cases) {
      if (c != Case::kRpc && c != Case::kRpcInPlace) {
        std::printf(" %17s", std::string(CaseName(c)).c_str());
      }
    }
    std::printf("\n");
    for (size_t payload : flags.payloads) {
      const CaseResult* r = Find(results, payload, subject);
      std::printf("%-8s", FormatSize(payload).c_str());
      for (Case c : flags.cases) {
        if (c == Case::kRpc || c == Case::kRpcInPlace) continue;
        const CaseResult* base = Find(results, payload, c);
        if (r == nullptr || base == nullptr) {
          std::printf(" %17s", "-");
          continue;
        }
        std::printf(" %17s", absl::StrCat(Ratio(r->latency.p50_us, base->latency.p50_us), " | ",
                                          Ratio(r->latency.p99_us, base->latency.p99_us))
                                 .c_str());
      }
      std::printf("\n");
    }
  }
}

// What the RPC layer adds over the bare channel (p50 difference), next to
// what the stub's own request handling costs in isolation: at or below
// kPrivateCopyLimit the runtime copies the request out of the region before
// verifying it (a hostile client could rewrite it after verification).
void PrintLayerCost(const Flags& flags, const Results& results) {
  std::printf(
      "\nRPC layer cost: rpc p50 - channel p50, beside the stub's request handling timed "
      "alone\n(hot cache, this process; private copy up to %zu bytes = the hostile-peer "
      "rule):\n",
      rpc::kPrivateCopyLimit);
  std::printf("%-8s %12s %10s %14s %12s\n", "payload", "rpc-channel", "message", "private copy",
              "verify");
  for (size_t payload : flags.payloads) {
    const CaseResult* r = Find(results, payload, Case::kRpc);
    const CaseResult* channel = Find(results, payload, Case::kChannel);
    const StubPathCost cost = MeasureStubPath(payload);
    const std::string layer = r != nullptr && channel != nullptr
                                  ? absl::StrCat(Us(r->latency.p50_us - channel->latency.p50_us))
                                  : "-";
    const std::string copy =
        cost.private_copy ? absl::StrCat(Us(cost.copy_ns / 1000), " us") : "none (in place)";
    std::printf("%-8s %9s us %10s %14s %9s us\n", FormatSize(payload).c_str(), layer.c_str(),
                FormatSize(cost.message_bytes).c_str(), copy.c_str(),
                Us(cost.verify_ns / 1000).c_str());
  }
}

// Splits a call between client, handoffs and server (Probe, in-place build),
// so a ratio that misses says which part to look at.
void PrintBreakdown(const Flags& flags, PeerWatcher& watcher) {
  std::printf(
      "\nWhere an rpc call's time goes (Probe, in-place build; medians, us; both sides stamp "
      "CLOCK_MONOTONIC):\n");
  std::printf("%-8s %7s %8s %8s %8s %9s %8s %8s %8s\n", "payload", "calls", "total", "begin",
              "build", "->server", "handler", "->client", "release");
  for (size_t payload : flags.payloads) {
    size_t calls = payload <= 4096 ? 20'000 : payload <= (64 << 10) ? 5'000 : 1'000;
    if (flags.quick) calls /= 50;
    absl::StatusOr<RpcBreakdown> b = MeasureRpcBreakdown(payload, calls, watcher);
    if (!b.ok()) {
      std::printf("%-8s FAILED: %s\n", FormatSize(payload).c_str(), b.status().ToString().c_str());
      continue;
    }
    auto us = [](double ns) { return Us(ns / 1000); };
    std::printf("%-8s %7zu %8s %8s %8s %9s %8s %8s %8s\n", FormatSize(payload).c_str(), b->calls,
                us(b->total_ns).c_str(), us(b->begin_ns).c_str(), us(b->build_ns).c_str(),
                us(b->request_ns).c_str(), us(b->handler_ns).c_str(), us(b->reply_ns).c_str(),
                us(b->release_ns).c_str());
  }
  std::printf(
      "  begin = BeginCall (slot, arena); ->server = publish, handoff, claim, private copy, "
      "verify;\n  ->client = finish, reply, handoff back, reply copy + verify\n");
}

void PrintTarget(const Results& results, size_t payload, Case subject, Case baseline,
                 double limit) {
  const std::string label = absl::StrFormat("%s %s p50 <= %.1fx %s p50", FormatSize(payload),
                                            CaseName(subject), limit, CaseName(baseline));
  const CaseResult* s = Find(results, payload, subject);
  const CaseResult* b = Find(results, payload, baseline);
  if (s == nullptr || b == nullptr) {
    std::printf("  %-8s %s: not measured\n", "[n/a]", label.c_str());
    return;
  }
  const double sv = s->latency.p50_us;
  const double bv = b->latency.p50_us;
  std::printf("  %-8s %s: %s us vs %s us = %s\n", sv <= limit * bv ? "[met]" : "[MISSED]",
              label.c_str(), Us(sv).c_str(), Us(bv).c_str(), Ratio(sv, bv).c_str());
}

void PrintTargets(const Results& results) {
  std::printf("\nTargets (ratios within this run; informational):\n");
  PrintTarget(results, 64, Case::kRpc, Case::kChannel, 1.5);
  PrintTarget(results, 64, Case::kRpc, Case::kRawSpin, 3.3);
  // Issue 11: unpinned, through the pool; pinned to one CPU (run the whole
  // benchmark under `taskset -c 0`: the server child inherits it), against
  // the sleeping floor, p50 and p99.
  cpu_set_t cpus;
  const bool one_cpu = sched_getaffinity(0, sizeof(cpus), &cpus) == 0 && CPU_COUNT(&cpus) == 1;
  if (!one_cpu) {
    PrintTarget(results, 64, Case::kRpc, Case::kRawSpin, 2.5);
  } else {
    PrintTarget(results, 64, Case::kRpc, Case::kRawFutex, 1.3);
    const CaseResult* rpc = Find(results, 64, Case::kRpc);
    const CaseResult* futex = Find(results, 64, Case::kRawFutex);
    if (rpc != nullptr && futex != nullptr) {
      const double sv = rpc->latency.p99_us;
      const double bv = futex->latency.p99_us;
      std::printf("  %-8s 64 B rpc p99 <= 3.0x raw-futex p99 (one CPU): %s us vs %s us = %s\n",
                  sv <= 3.0 * bv ? "[met]" : "[MISSED]", Us(sv).c_str(), Us(bv).c_str(),
                  Ratio(sv, bv).c_str());
    }
  }
  PrintTarget(results, 1 << 20, Case::kRpc, Case::kRawSpin, 1.3);
  PrintTarget(results, 1 << 20, Case::kRpcInPlace, Case::kRawSpin, 1.0);
  const CaseResult* rpc64 = Find(results, 64, Case::kRpc);
  const CaseResult* grpc64 = Find(results, 64, Case::kGrpc);
  if (rpc64 != nullptr && grpc64 != nullptr) {
    std::printf("  (for scale: 64 B grpc p50 %s us = %s the rpc p50)\n",
                Us(grpc64->latency.p50_us).c_str(),
                Ratio(grpc64->latency.p50_us, rpc64->latency.p50_us).c_str());
  }
}

int RunBenchmark(const Flags& flags) {
  absl::StatusOr<std::unique_ptr<PeerWatcher>> watcher = PeerWatcher::Create();
  if (!watcher.ok()) Die(watcher.status(), "PeerWatcher::Create");
  utsname uts{};
  ::uname(&uts);
  const int rounds = Rounds(flags);
  std::printf("sluice_rpc_bench%s: client and server in two processes, unpinned, %d CPUs usable\n",
              flags.quick ? " --quick" : "", UsableCpus());
  std::printf("kernel %s; load average at start %s; %d round(s), cases interleaved per payload\n",
              uts.release, ReadLoadAverage().c_str(), rounds);
  std::fflush(stdout);

  Results results;
  const CpuAccounting cpu_before = ReadCpuAccounting();
  const int64_t wall_before = NowNanos();
  for (int round = 0; round < rounds; ++round) {
    for (size_t payload : flags.payloads) {
      const std::vector<std::byte> data = MakePayload(payload, payload);
      const uint64_t expected = SumWords(data);
      const RoundPlan plan = PlanRound(flags, payload);
      // Rotating the order keeps any case from always following the same one.
      for (size_t i = 0; i < flags.cases.size(); ++i) {
        const Case c = flags.cases[(i + static_cast<size_t>(round)) % flags.cases.size()];
        CaseResult& r = results[{payload, c}];
        if (!r.error.empty()) continue;
        if (absl::Status s = RunRound(c, data, expected, plan, **watcher, r); !s.ok()) {
          r.error = s.ToString();
        }
        std::fprintf(stderr, "  round %d %s %s: %s\n", round + 1, FormatSize(payload).c_str(),
                     std::string(CaseName(c)).c_str(),
                     r.error.empty() ? absl::StrCat(r.samples.size(), " calls so far").c_str()
                                     : r.error.c_str());
      }
    }
  }
  const CpuAccounting cpu_after = ReadCpuAccounting();
  const double others =
      static_cast<double>((cpu_after.machine_busy_ns - cpu_before.machine_busy_ns) -
                          (cpu_after.ours_ns - cpu_before.ours_ns)) /
      static_cast<double>(NowNanos() - wall_before) * 100;
  bool any_error = false;
  for (auto& [key, r] : results) {
    if (r.error.empty()) r.latency = Summarize(r.samples);
    any_error = any_error || !r.error.empty();
  }
  PrintTable(flags, results);
  if (!flags.csv.empty()) {
    std::vector<LatencyRow> rows;
    for (const auto& [key, r] : results) {
      if (r.error.empty())
        rows.push_back({std::string(CaseName(key.second)), key.first, r.latency});
    }
    if (absl::Status written = WriteLatencyCsv(flags.csv, rows); !written.ok()) {
      Die(written, "--csv");
    }
  }
  std::printf("\nOther work on the machine during these runs: %.0f%% of one CPU%s\n",
              std::max(others, 0.0),
              others > 10 ? " -- busy: floors and ratios above are unreliable" : "");
  PrintRatios(flags, results);
  PrintLayerCost(flags, results);
  if (std::find(flags.cases.begin(), flags.cases.end(), Case::kRpc) != flags.cases.end()) {
    PrintBreakdown(flags, **watcher);
  }
  PrintTargets(results);
  std::printf("\nload average at end %s\n", ReadLoadAverage().c_str());
  return any_error ? 1 : 0;
}

}  // namespace
}  // namespace sluice::bench

int main(int argc, char** argv) {
  using namespace sluice::bench;
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    if (absl::Status s = ParseFlag(argv[i], flags); !s.ok()) {
      std::fprintf(stderr, "%s\n(usage: see the comment at the top of bench/rpc/rpc_bench.cc)\n",
                   std::string(s.message()).c_str());
      return 2;
    }
  }
  if (flags.role.empty()) return RunBenchmark(flags);
  if (flags.role == "rpc-server") return ServeSluiceRpc();
  if (flags.role == "grpc-server" && !flags.socket.empty()) return ServeGrpc(flags.socket);
  if (flags.role == "server" && flags.transport && flags.payload > 0) {
    // The baselines' children (bench/pingpong.cc ServerArgv), spin budgets
    // as the parent passed them.
    CaseSetup setup;
    setup.payload = flags.payload;
    if (flags.call_spin_us) setup.channel_spin.call_spin = absl::Microseconds(*flags.call_spin_us);
    if (flags.serve_spin_us) {
      setup.channel_spin.serve_spin = absl::Microseconds(*flags.serve_spin_us);
    }
    return ServeMain(*flags.transport, setup);
  }
  std::fprintf(stderr, "bad child role arguments\n");
  return 2;
}
