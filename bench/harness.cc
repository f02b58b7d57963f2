#include "bench/harness.h"

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace sluice::bench {

LatencySummary Summarize(std::vector<int64_t>& nanos) {
  LatencySummary s;
  s.samples = nanos.size();
  if (nanos.empty()) return s;
  int64_t total = 0;
  for (int64_t n : nanos) total += n;
  std::sort(nanos.begin(), nanos.end());
  // Nearest rank: the smallest sample with at least q of all samples at or
  // below it.
  auto at = [&](double q) {
    size_t rank = static_cast<size_t>(q * static_cast<double>(nanos.size()) + 0.999999);
    rank = std::clamp<size_t>(rank, 1, nanos.size());
    return static_cast<double>(nanos[rank - 1]) / 1000.0;
  };
  s.p50_us = at(0.50);
  s.p99_us = at(0.99);
  s.p999_us = at(0.999);
  s.calls_per_second =
      total > 0 ? static_cast<double>(nanos.size()) * 1e9 / static_cast<double>(total) : 0;
  return s;
}

uint64_t SumWords(std::span<const std::byte> bytes) {
  uint64_t sum = 0;
  const std::byte* p = bytes.data();
  const size_t words = bytes.size() / 8;
  for (size_t i = 0; i < words; ++i) {
    uint64_t w;
    std::memcpy(&w, p + i * 8, 8);
    sum += w;
  }
  return sum;
}

std::vector<std::byte> MakePayload(size_t size, uint64_t seed) {
  std::vector<std::byte> out(size);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < size; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(out.data() + i, &x, std::min<size_t>(8, size - i));
  }
  return out;
}

absl::StatusOr<int64_t> ProcessCpuNanos(pid_t pid) {
  const std::string dir = absl::StrCat("/proc/", pid, "/task");
  DIR* tasks = ::opendir(dir.c_str());
  if (tasks == nullptr) return absl::NotFoundError(absl::StrCat("cannot open ", dir));
  int64_t total = 0;
  while (dirent* entry = ::readdir(tasks)) {
    if (entry->d_name[0] == '.') continue;
    std::ifstream stat(absl::StrCat(dir, "/", entry->d_name, "/schedstat"));
    int64_t on_cpu = 0;
    // A thread that exited between readdir and open simply contributes 0.
    if (stat >> on_cpu) total += on_cpu;
  }
  ::closedir(tasks);
  return total;
}

absl::StatusOr<int64_t> MainThreadSleeps(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  for (std::string line; std::getline(status, line);) {
    absl::string_view rest = line;
    if (!absl::ConsumePrefix(&rest, "voluntary_ctxt_switches:")) continue;
    int64_t value = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(rest), &value)) return value;
  }
  return absl::NotFoundError(absl::StrCat("no voluntary_ctxt_switches for pid ", pid));
}

absl::StatusOr<int64_t> ProcessSleeps(pid_t pid) {
  const std::string dir = absl::StrCat("/proc/", pid, "/task");
  DIR* tasks = ::opendir(dir.c_str());
  if (tasks == nullptr) return absl::NotFoundError(absl::StrCat("cannot open ", dir));
  int64_t total = 0;
  while (dirent* entry = ::readdir(tasks)) {
    if (entry->d_name[0] == '.') continue;
    std::ifstream status(absl::StrCat(dir, "/", entry->d_name, "/status"));
    for (std::string line; std::getline(status, line);) {
      absl::string_view rest = line;
      if (!absl::ConsumePrefix(&rest, "voluntary_ctxt_switches:")) continue;
      int64_t value = 0;
      // A thread that exited between readdir and open contributes 0.
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(rest), &value)) total += value;
      break;
    }
  }
  ::closedir(tasks);
  return total;
}

int64_t ThisThreadSleeps() {
  rusage usage{};
  ::getrusage(RUSAGE_THREAD, &usage);
  return usage.ru_nvcsw;
}

CpuAccounting ReadCpuAccounting() {
  CpuAccounting out;
  std::ifstream stat("/proc/stat");
  std::string cpu;
  // user nice system idle iowait irq softirq steal, in USER_HZ ticks.
  int64_t t[8] = {};
  stat >> cpu;
  for (int64_t& v : t) stat >> v;
  // Steal (time the hypervisor gave to other guests) is not counted as busy.
  const int64_t ticks = t[0] + t[1] + t[2] + t[5] + t[6];
  out.machine_busy_ns = ticks * (1'000'000'000 / ::sysconf(_SC_CLK_TCK));
  auto nanos = [](const timeval& tv) {
    return int64_t{tv.tv_sec} * 1'000'000'000 + tv.tv_usec * 1000;
  };
  rusage self{};
  rusage children{};
  ::getrusage(RUSAGE_SELF, &self);
  ::getrusage(RUSAGE_CHILDREN, &children);
  out.ours_ns = nanos(self.ru_utime) + nanos(self.ru_stime) + nanos(children.ru_utime) +
                nanos(children.ru_stime);
  return out;
}

int64_t ThisThreadCpuNanos() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::string FormatSize(size_t bytes) {
  if (bytes >= (size_t{1} << 20) && bytes % (size_t{1} << 20) == 0) {
    return absl::StrCat(bytes >> 20, " MiB");
  }
  if (bytes >= 1024 && bytes % 1024 == 0) return absl::StrCat(bytes >> 10, " KiB");
  return absl::StrCat(bytes, " B");
}

absl::Status WriteLatencyCsv(const std::string& path, std::span<const LatencyRow> rows) {
  std::ofstream out(path, std::ios::trunc);
  out << "case,payload_bytes,samples,p50_us,p99_us,p999_us,calls_per_second\n";
  for (const LatencyRow& row : rows) {
    out << absl::StrFormat("%s,%d,%d,%.3f,%.3f,%.3f,%.0f\n", row.name, row.payload_bytes,
                           row.latency.samples, row.latency.p50_us, row.latency.p99_us,
                           row.latency.p999_us, row.latency.calls_per_second);
  }
  out.close();
  if (!out) return absl::UnavailableError(absl::StrCat(path, ": cannot write"));
  return absl::OkStatus();
}

int UsableCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return CPU_COUNT(&set);
}

void Die(const absl::Status& status, const char* what) {
  // Every benchmark's children die through here: name the one that did.
  std::fprintf(stderr, "%s[%d]: %s: %s\n", program_invocation_short_name,
               static_cast<int>(::getpid()), what, status.ToString().c_str());
  std::exit(1);
}

std::string ReadLoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return absl::StrCat(a, " ", b, " ", c);
}

std::string Us(double us) {
  if (us < 10) return absl::StrFormat("%.2f", us);
  if (us < 1000) return absl::StrFormat("%.1f", us);
  return absl::StrFormat("%.0f", us);
}

std::string Rate(double per_second) {
  if (per_second >= 1e6) return absl::StrFormat("%.2fM", per_second / 1e6);
  if (per_second >= 1e3) return absl::StrFormat("%.1fk", per_second / 1e3);
  return absl::StrFormat("%.0f", per_second);
}

std::string Ratio(double num, double den) {
  if (den <= 0) return "-";
  const double r = num / den;
  if (r >= 100) return absl::StrFormat("%.0fx", r);
  if (r >= 10) return absl::StrFormat("%.1fx", r);
  if (r >= 0.1) return absl::StrFormat("%.2fx", r);
  return absl::StrFormat("%.3fx", r);
}

}  // namespace sluice::bench
