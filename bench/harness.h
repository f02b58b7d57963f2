// Measurement helpers for the ping-pong benchmark: one clock shared by every
// process, latency percentiles, the per-call work, and CPU / sleep accounting
// read from /proc so a table row can say which wait path a transport took.
//
// Nothing here is thread safe beyond what the kernel gives; the benchmark
// calls it from one thread per process.
#ifndef SLUICE_BENCH_HARNESS_H_
#define SLUICE_BENCH_HARNESS_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ipc/sync/spin.h"

namespace sluice::bench {

// CLOCK_MONOTONIC in nanoseconds. The same clock in every process, so a
// timestamp taken in one process can be subtracted from one taken in another.
inline int64_t NowNanos() { return ::sluice::MonotonicNanos(); }

// The channel's own spin hint, so the raw floors spin exactly as it does.
using ::sluice::CpuRelax;

struct LatencySummary {
  size_t samples = 0;
  double p50_us = 0;
  double p99_us = 0;
  double p999_us = 0;
  double calls_per_second = 0;  // samples / (sum of samples).
};

// Nearest-rank percentiles of per-call round trips. Sorts `nanos` in place.
LatencySummary Summarize(std::vector<int64_t>& nanos);

// The server's work on a request: it reads every byte, as a sum of 64-bit
// words (a trailing partial word is ignored; every benchmark size is a
// multiple of 8). The client checks the sum, so no transport can skip data.
uint64_t SumWords(std::span<const std::byte> bytes);

// A deterministic pseudo-random payload of `size` bytes.
std::vector<std::byte> MakePayload(size_t size, uint64_t seed);

// The 16-byte reply every transport returns.
struct ReplyWords {
  uint64_t sum;
  uint64_t length;
};
static_assert(sizeof(ReplyWords) == 16);

// CPU time used so far by every thread of `pid` (from
// /proc/PID/task/*/schedstat, nanosecond resolution; /proc/PID/stat only has
// 10 ms ticks, too coarse to see a 1% duty cycle in a second).
absl::StatusOr<int64_t> ProcessCpuNanos(pid_t pid);

// Voluntary context switches of `pid`'s main thread: how many times it went
// to sleep. One per call means a futex/socket wait; zero means it spun.
absl::StatusOr<int64_t> MainThreadSleeps(pid_t pid);
// The same summed over every thread of `pid`: a server whose calls are
// served by a pool thread, not by its main thread.
absl::StatusOr<int64_t> ProcessSleeps(pid_t pid);
// The same for the calling thread.
int64_t ThisThreadSleeps();

// Busy CPU time of the whole machine (all CPUs, from /proc/stat) and of this
// process plus its reaped children, so far. Their difference over a span is
// what other work took from the benchmark: the ping-pong floors mean little
// on a machine that is busy with something else.
struct CpuAccounting {
  int64_t machine_busy_ns = 0;
  int64_t ours_ns = 0;
};
CpuAccounting ReadCpuAccounting();

// CPU time used so far by the calling thread.
int64_t ThisThreadCpuNanos();

// "64 B", "4 KiB", "1 MiB".
std::string FormatSize(size_t bytes);

// Report formatting shared by the benchmarks' tables.
std::string ReadLoadAverage();              // "/proc/loadavg"'s first three fields.
std::string Us(double us);                  // Microseconds, 3 significant-ish digits.
std::string Rate(double per_second);        // 2.34M, 567.8k, 12.
std::string Ratio(double num, double den);  // "1.71x"; "-" without a denominator.

// One measured case at one payload size, for WriteLatencyCsv.
struct LatencyRow {
  std::string name;  // The case, as the benchmark prints it.
  size_t payload_bytes = 0;
  LatencySummary latency;
};

// Writes `rows` to `path` as CSV with a header line:
//   case,payload_bytes,samples,p50_us,p99_us,p999_us,calls_per_second
// for plotting (scripts/plot.sh). Names must not contain commas.
absl::Status WriteLatencyCsv(const std::string& path, std::span<const LatencyRow> rows);

// CPUs this process may run on.
int UsableCpus();

// Exits the process with a message; for child roles, whose only report is
// their exit status and stderr.
[[noreturn]] void Die(const absl::Status& status, const char* what);

}  // namespace sluice::bench

#endif  // SLUICE_BENCH_HARNESS_H_
