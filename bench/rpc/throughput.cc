#include "bench/rpc/throughput.h"

#include <algorithm>
#include <climits>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "bench/harness.h"

namespace sluice::bench::throughput {

absl::string_view CaseName(Case c) {
  switch (c) {
    case Case::kRpc:
      return "rpc";
    case Case::kRawSpinFutex:
      return "raw-spin-futex";
    case Case::kUnixSocket:
      return "unix-socket";
  }
  return "?";
}

std::optional<Case> ParseCase(absl::string_view name) {
  for (Case c : kAllCases) {
    if (CaseName(c) == name) return c;
  }
  return std::nullopt;
}

int LatencyHistogram::Bucket(uint64_t nanos) {
  constexpr uint64_t kSub = uint64_t{1} << kSubBits;
  if (nanos < kSub) return static_cast<int>(nanos);
  const int msb = 63 - __builtin_clzll(nanos);
  return (msb - kSubBits + 1) * static_cast<int>(kSub) +
         static_cast<int>((nanos >> (msb - kSubBits)) & (kSub - 1));
}

double LatencyHistogram::Middle(int bucket) {
  constexpr int kSub = 1 << kSubBits;
  if (bucket < kSub) return bucket;
  const int shift = bucket / kSub - 1;
  const double low = std::ldexp(kSub + bucket % kSub, shift);
  return low + std::ldexp(1, shift) / 2;
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  for (int i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
}

uint64_t LatencyHistogram::count() const {
  uint64_t n = 0;
  for (uint64_t c : counts_) n += c;
  return n;
}

double LatencyHistogram::PercentileUs(double q) const {
  const uint64_t n = count();
  if (n == 0) return 0;
  const uint64_t rank =
      std::clamp<uint64_t>(static_cast<uint64_t>(std::ceil(q * static_cast<double>(n))), 1, n);
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) return Middle(i) / 1000.0;
  }
  return Middle(kBuckets - 1) / 1000.0;
}

RunControl& ControlOf(const Region& run) { return *reinterpret_cast<RunControl*>(run.data()); }

absl::StatusOr<Region> AdoptRunControl() {
  return Region::Adopt(UniqueFd(3), sizeof(RunControl), Region::kMaxSize);
}

std::vector<std::string> ServerArgv(Case c, int connections, size_t payload) {
  return {testing::SelfExecutable(), "--role=server", absl::StrCat("--case=", CaseName(c)),
          absl::StrCat("--connections=", connections), absl::StrCat("--payload=", payload)};
}

std::vector<std::string> ClientArgv(Case c, int index, size_t payload) {
  return {testing::SelfExecutable(), "--role=client", absl::StrCat("--case=", CaseName(c)),
          absl::StrCat("--client=", index), absl::StrCat("--payload=", payload)};
}

absl::StatusOr<Processes> Start(Case c, int clients, size_t payload, int run_fd) {
  if (clients < 1 || clients > kMaxClients) {
    return absl::InvalidArgumentError(absl::StrCat(clients, " clients: 1 to ", kMaxClients));
  }
  switch (c) {
    case Case::kRpc:
      return StartRpc(clients, payload, run_fd);
    case Case::kRawSpinFutex:
      return StartRawSpinFutex(clients, payload, run_fd);
    case Case::kUnixSocket:
      return StartUnixSocket(clients, payload, run_fd);
  }
  return absl::InvalidArgumentError("unknown case");
}

int ServeMain(Case c, int connections, size_t payload) {
  absl::StatusOr<Region> run = AdoptRunControl();
  if (!run.ok()) Die(run.status(), "adopting the run control");
  switch (c) {
    case Case::kRpc:
      return ServeRpc(ControlOf(*run), connections);
    case Case::kRawSpinFutex:
      return ServeRawSpinFutex(ControlOf(*run), connections, payload);
    case Case::kUnixSocket:
      return ServeUnixSocket(ControlOf(*run), connections, payload);
  }
  return 2;
}

namespace {

absl::StatusOr<std::unique_ptr<Caller>> Connect(Case c, int index, size_t payload) {
  switch (c) {
    case Case::kRpc:
      return ConnectRpc();
    case Case::kRawSpinFutex:
      return ConnectRawSpinFutex(index, payload);
    case Case::kUnixSocket:
      return ConnectUnixSocket();
  }
  return absl::InvalidArgumentError("unknown case");
}

}  // namespace

int ClientMain(Case c, int index, size_t payload) {
  absl::StatusOr<Region> region = AdoptRunControl();
  if (!region.ok()) Die(region.status(), "adopting the run control");
  RunControl& run = ControlOf(*region);
  if (index < 0 || index >= kMaxClients) {
    Die(absl::InvalidArgumentError(absl::StrCat("client index ", index)), "setup");
  }
  absl::StatusOr<std::unique_ptr<Caller>> caller = Connect(c, index, payload);
  if (!caller.ok()) Die(caller.status(), "connecting");
  const std::vector<std::byte> data = MakePayload(payload, payload);
  const uint64_t expected = SumWords(data);
  auto call = [&] {
    absl::StatusOr<uint64_t> sum = (*caller)->Call(data);
    if (!sum.ok()) Die(sum.status(), "calling");
    if (*sum != expected) Die(absl::DataLossError("the server returned a wrong sum"), "calling");
  };
  // Also waits out the server's startup, so that every client starts
  // calling at the same moment, against a server that is up.
  call();
  run.ready.fetch_add(1, std::memory_order_seq_cst);
  FutexWake(run.ready, INT_MAX);
  for (uint32_t phase; (phase = run.phase.load(std::memory_order_acquire)) == kSetup;) {
    (void)FutexWait(run.phase, phase, absl::InfiniteFuture());
  }
  // Each call reads the phase (a line only the parent writes, so it stays in
  // this CPU's cache) and stores its count (a line only this client writes):
  // no cache-line traffic between clients.
  std::atomic<uint64_t>& calls = run.clients[index].calls;
  LatencyHistogram& latency = run.latency[index];
  uint64_t done = 0;
  int64_t before = NowNanos();
  for (;;) {
    const uint32_t phase = run.phase.load(std::memory_order_relaxed);
    if (phase == kStop) break;
    call();
    const int64_t after = NowNanos();
    if (phase == kMeasure) latency.Add(after - before);
    before = after;
    calls.store(++done, std::memory_order_relaxed);
  }
  caller->reset();
  return 0;
}

}  // namespace sluice::bench::throughput
