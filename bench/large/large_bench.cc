// Large payloads through generated proxies and ServiceHost, beside the
// floors a zero-copy or single-copy handoff cannot beat, in one run:
//
//   fresh floor   write N bytes into fresh memfd pages, read them all
//                 (what an immutable handoff costs: its pages are new)
//   reused floor  the same into pre-faulted memory (the trusted floor)
//   copy floor    one memcpy of N bytes plus one read (single copy)
//   unix socket   N bytes through a socket pair to another process
//   sealed spill  Send(Payload) to a server that trusts nobody: the proxy
//                 fills the vector in place in a memfd that is sealed on send
//   trusted       the same to a server that trusts this client: the request
//                 stays in the client's arena (up to 64 MiB here)
//
// The consumer reads every byte (a sum of words) in every case, and the
// client checks the server's sum. Rounds run every case in turn (see
// MeasureInterleaved); times are medians over rounds, ratios the medians of
// each round's ratio:
//   sealed spill / fresh floor  (target <= 1.2)
//   trusted / reused floor      (target <= 1.2)
//   sealed spill / copy floor   (target <= 1.3)
// and the fixed cost of one spilled message (the median of each round's
// sealed minus fresh at 128 KiB).
//
//   sluice_large_bench [--quick] [--sizes_mib=1,4,64,256]
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/harness.h"
#include "bench_sluice.h"
#include "ipc/host/service_host.h"
#include "ipc/service/service_manager.h"
#include "ipc/testing/subprocess.h"

ABSL_FLAG(bool, quick, false, "Tiny sizes and repetitions (a smoke run)");
ABSL_FLAG(std::string, sizes_mib, "1,4,64,256", "Payload sizes in MiB");
ABSL_FLAG(std::string, role, "", "Internal: server or socket-server");
ABSL_FLAG(std::string, socket, "", "Internal: the service manager socket");
ABSL_FLAG(int, ready_fd, -1, "Internal");

namespace sluice::bench {
namespace {

using ::sluice::bench::BenchServiceProxy;

[[noreturn]] void Die(const absl::Status& status, const char* what) {
  std::fprintf(stderr, "sluice_large_bench: %s: %s\n", what, status.ToString().c_str());
  std::exit(1);
}

uint64_t SumBytes(const uint8_t* data, size_t size) {
  return SumWords(std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size));
}

void Fill(uint8_t* out, size_t size, uint64_t seed) {
  auto* words = reinterpret_cast<uint64_t*>(out);
  for (size_t i = 0; i < size / 8; ++i) words[i] = seed + i;
}

class SumService : public BenchServiceStub {
  absl::StatusOr<flatbuffers::Offset<Ack>> Send(const rpc::CallContext&, const Payload& request,
                                                flatbuffers::FlatBufferBuilder& reply) override {
    const auto* data = request.data();
    const uint64_t sum = data == nullptr ? 0 : SumBytes(data->data(), data->size());
    return CreateAck(reply, sum, data == nullptr ? 0 : data->size());
  }
  absl::StatusOr<flatbuffers::Offset<Timing>> Probe(
      const rpc::CallContext&, const Payload&, flatbuffers::FlatBufferBuilder& reply) override {
    return CreateTiming(reply);
  }
};

int RunServer() {
  auto manager = ServiceManager::Connect({.socket_path = absl::GetFlag(FLAGS_socket)});
  if (!manager.ok()) Die(manager.status(), "connect");
  ServiceHost host(**manager);
  auto service = std::make_shared<SumService>();
  RegisterOptions sealed;
  sealed.trust = TrustPolicy::kNobody;
  if (auto s = host.Publish(service, "bench.sealed", std::move(sealed)); !s.ok()) Die(s, "publish");
  RegisterOptions trusted;
  trusted.trust = TrustPolicy::kEveryone;
  trusted.geometry.request_arena_size = uint64_t{80} << 20;
  if (auto s = host.Publish(service, "bench.trusted", std::move(trusted)); !s.ok()) {
    Die(s, "publish");
  }
  if (const int fd = absl::GetFlag(FLAGS_ready_fd); fd >= 0) {
    (void)!::write(fd, "ready\n", 6);
    ::close(fd);
  }
  ::pause();
  return 0;
}

// Reads length-prefixed payloads from fd 3 and answers each with its sum.
int RunSocketServer() {
  const int fd = 3;
  std::vector<uint8_t> buffer;
  for (;;) {
    uint64_t size = 0;
    if (::recv(fd, &size, 8, MSG_WAITALL) != 8) return 0;
    buffer.resize(size);
    size_t got = 0;
    while (got < size) {
      const ssize_t n = ::recv(fd, buffer.data() + got, size - got, 0);
      if (n <= 0) return 0;
      got += static_cast<size_t>(n);
    }
    const uint64_t sum = SumBytes(buffer.data(), size);
    if (::send(fd, &sum, 8, MSG_NOSIGNAL) != 8) return 0;
  }
}

template <typename T>
double Median(std::vector<T> values) {
  std::sort(values.begin(), values.end());
  return values.empty() ? 0 : static_cast<double>(values[values.size() / 2]);
}

// Rounds of every case in turn, in an order that rotates between rounds;
// within its turn a case runs `block` + 1 times back to back and the first
// run is not counted (the server's threads and caches settle back onto the
// case). Returns, per case, each round's median: ratios are then taken
// round by round, within the same few milliseconds, so the host's drift
// (its speed changes over seconds) falls on both sides of each alike.
std::vector<std::vector<double>> MeasureInterleaved(
    int rounds, int block, std::span<const absl::FunctionRef<void()>> cases) {
  std::vector<std::vector<double>> medians(cases.size());
  for (int round = 0; round < rounds; ++round) {
    for (size_t k = 0; k < cases.size(); ++k) {
      const size_t c = (k + static_cast<size_t>(round)) % cases.size();
      cases[c]();
      std::vector<int64_t> nanos;
      for (int i = 0; i < block; ++i) {
        const int64_t t0 = NowNanos();
        cases[c]();
        nanos.push_back(NowNanos() - t0);
      }
      medians[c].push_back(Median(std::move(nanos)));
    }
  }
  return medians;
}

void Check(uint64_t got, uint64_t want, const char* what) {
  if (got != want) {
    std::fprintf(stderr, "sluice_large_bench: %s: sum %llu, want %llu\n", what,
                 static_cast<unsigned long long>(got), static_cast<unsigned long long>(want));
    std::exit(1);
  }
}

int RunClient() {
  const bool quick = absl::GetFlag(FLAGS_quick);
  std::vector<size_t> sizes;
  if (quick) {
    sizes = {size_t{128} << 10, size_t{1} << 20};
  } else {
    sizes.push_back(size_t{128} << 10);
    for (absl::string_view mib : absl::StrSplit(absl::GetFlag(FLAGS_sizes_mib), ',')) {
      size_t v = 0;
      if (absl::SimpleAtoi(mib, &v)) sizes.push_back(v << 20);
    }
  }
  char dir[] = "/tmp/sluice-large-bench-XXXXXX";
  if (::mkdtemp(dir) == nullptr) Die(absl::InternalError("mkdtemp"), "setup");
  const std::string socket = std::string(dir) + "/sm.sock";
  auto manager_process = testing::Subprocess::SpawnAndWaitReady(
      {SLUICE_SERVICEMANAGER_BIN, "--socket=" + socket, "--log_level=error"});
  if (!manager_process.ok()) Die(manager_process.status(), "manager");
  auto server_process = testing::Subprocess::SpawnAndWaitReady(
      {testing::SelfExecutable(), "--role=server", "--socket=" + socket});
  if (!server_process.ok()) Die(server_process.status(), "server");
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
    Die(absl::InternalError("socketpair"), "setup");
  auto socket_process =
      testing::Subprocess::Spawn({testing::SelfExecutable(), "--role=socket-server"}, {pair[1]});
  ::close(pair[1]);
  if (!socket_process.ok()) Die(socket_process.status(), "socket server");

  auto manager = ServiceManager::Connect({.socket_path = socket});
  if (!manager.ok()) Die(manager.status(), "connect");
  auto sealed = Connect<BenchServiceProxy>(**manager, "bench.sealed");
  if (!sealed.ok()) Die(sealed.status(), "lookup");
  LookupOptions trusting;
  trusting.trust = TrustPolicy::kEveryone;
  auto trusted = Connect<BenchServiceProxy>(**manager, "bench.trusted", std::move(trusting));
  if (!trusted.ok()) Die(trusted.status(), "lookup");

  std::printf("large payloads, medians (one run; the consumer reads every byte)\n");
  std::printf("%10s %11s %11s %11s %11s %11s %11s | %7s %7s %7s\n", "size", "fresh", "reused",
              "copy", "unix sock", "sealed", "trusted", "seal/fr", "trus/re", "seal/cp");
  double fixed_cost_us = 0;
  for (size_t size : sizes) {
    const int rounds = quick ? 1 : size >= (size_t{64} << 20) ? 3 : 7;
    const int block = quick                         ? 2
                      : size >= (size_t{256} << 20) ? 2
                      : size >= (size_t{64} << 20)  ? 3
                      : size >= (size_t{4} << 20)   ? 5
                                                    : 15;
    std::vector<uint8_t> source(size);
    Fill(source.data(), size, 7);
    const uint64_t want = SumBytes(source.data(), size);
    std::vector<uint8_t> reused(size);
    Fill(reused.data(), size, 1);

    auto fresh = [&] {
      UniqueFd fd(::memfd_create("bench-fresh", MFD_CLOEXEC));
      (void)!::ftruncate(fd.get(), static_cast<off_t>(size));
      auto* p = static_cast<uint8_t*>(
          ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0));
      Fill(p, size, 7);
      Check(SumBytes(p, size), want, "fresh floor");
      ::munmap(p, size);
    };
    auto reuse = [&] {
      Fill(reused.data(), size, 7);
      Check(SumBytes(reused.data(), size), want, "reused floor");
    };
    auto copy = [&] {
      std::memcpy(reused.data(), source.data(), size);
      Check(SumBytes(reused.data(), size), want, "copy floor");
    };
    auto unix_socket = [&] {
      uint64_t header = size;
      (void)!::send(pair[0], &header, 8, MSG_NOSIGNAL);
      size_t sent = 0;
      while (sent < size) {
        const ssize_t n = ::send(pair[0], source.data() + sent, size - sent, MSG_NOSIGNAL);
        if (n <= 0) Die(absl::InternalError("send"), "unix socket");
        sent += static_cast<size_t>(n);
      }
      uint64_t sum = 0;
      if (::recv(pair[0], &sum, 8, MSG_WAITALL) != 8)
        Die(absl::InternalError("recv"), "unix socket");
      Check(sum, want, "unix socket");
    };
    auto call = [&](BenchServiceProxy& proxy, const char* what) {
      auto ack = proxy.Send(
          [&](flatbuffers::FlatBufferBuilder& fbb) {
            uint8_t* out = nullptr;
            auto data = fbb.CreateUninitializedVector(size, &out);
            Fill(out, size, 7);  // The producer writes its bytes in place.
            return CreatePayload(fbb, data);
          },
          {.size_hint = size + 256});
      if (!ack.ok()) Die(ack.status(), what);
      Check((*ack)->checksum(), want, what);
    };
    auto sealed_call = [&] { call(sealed->proxy(), "sealed"); };
    auto trusted_call = [&] { call(trusted->proxy(), "trusted"); };
    // The 256 MiB trusted case needs an arena over the manager's region cap.
    const bool trusted_fits = size <= (size_t{64} << 20);
    enum { kFresh, kReused, kCopy, kSocket, kSealed, kTrusted };
    std::vector<absl::FunctionRef<void()>> cases = {fresh, reuse, copy, unix_socket, sealed_call};
    if (trusted_fits) cases.push_back(trusted_call);
    const std::vector<std::vector<double>> nanos = MeasureInterleaved(rounds, block, cases);
    auto median_us = [&](int c) { return Median(nanos[c]) / 1000.0; };
    // Ratios and differences round by round, then their median: both sides
    // of each ran within the same few milliseconds.
    auto ratio = [&](int num, int den) {
      std::vector<double> r;
      for (size_t i = 0; i < nanos[num].size(); ++i) {
        r.push_back(nanos[num][i] / nanos[den][i]);
      }
      return Median(std::move(r));
    };
    if (size == (size_t{128} << 10)) {
      std::vector<double> d;
      for (size_t i = 0; i < nanos[kSealed].size(); ++i) {
        d.push_back((nanos[kSealed][i] - nanos[kFresh][i]) / 1000.0);
      }
      fixed_cost_us = Median(std::move(d));
    }
    char label[32];
    std::snprintf(label, sizeof(label), size >= (1 << 20) ? "%zu MiB" : "%zu KiB",
                  size >= (1 << 20) ? size >> 20 : size >> 10);
    std::printf("%10s %9.1fus %9.1fus %9.1fus %9.1fus %9.1fus ", label, median_us(kFresh),
                median_us(kReused), median_us(kCopy), median_us(kSocket), median_us(kSealed));
    if (trusted_fits) {
      std::printf("%9.1fus | %6.2fx %6.2fx %6.2fx\n", median_us(kTrusted), ratio(kSealed, kFresh),
                  ratio(kTrusted, kReused), ratio(kSealed, kCopy));
    } else {
      std::printf("%11s | %6.2fx %7s %6.2fx\n", "n/a", ratio(kSealed, kFresh), "n/a",
                  ratio(kSealed, kCopy));
    }
  }
  std::printf(
      "fixed cost of one sealed message (128 KiB sealed - fresh floor): %.1f us (aim <= 30)\n",
      fixed_cost_us);
  std::printf("targets: sealed/fresh <= 1.2, trusted/reused <= 1.2, sealed/copy <= 1.3\n");
  ::close(pair[0]);
  (void)socket_process->Wait();
  (void)server_process->Kill(SIGTERM);
  (void)server_process->Wait();
  (void)manager_process->Kill(SIGTERM);
  (void)manager_process->Wait();
  (void)!std::system((std::string("rm -rf ") + dir).c_str());
  return 0;
}

}  // namespace
}  // namespace sluice::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string role = absl::GetFlag(FLAGS_role);
  if (role == "server") return sluice::bench::RunServer();
  if (role == "socket-server") return sluice::bench::RunSocketServer();
  return sluice::bench::RunClient();
}
