// servicemanager_connect_bench: what it costs to get a usable channel through
// the service manager, next to a plain Unix-socket connect measured in the
// same run, and what the manager's memory looks like under load.
//
//   1. Lookup latency: ServiceManager::Lookup(name) until it returns a
//      channel, and until the first echo call through it has returned.
//   2. Baseline: connect() to a SOCK_SEQPACKET listener, and connect() plus
//      one request/response round trip.
//   3. Manager VmRSS idle, with N registered services, and with N more
//      client connections that each hold a looked-up channel.
//   4. The manager's CPU time per Lookup (schedstat), over the loop of 1.
//   5. Lookup of a service registered with a schema, by a client that sends
//      its own (key_value.fbs, ~2 KiB): the manager checks the two against
//      each other at every connect.
//
// The daemon is the real sluice-servicemanager binary on a temp socket; the
// echo server and the clients live in this process (separate manager
// connections, separate threads).
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "ipc/service/service_manager.h"
#include "ipc/testing/subprocess.h"
#include "key_value_schema.h"  // generated

ABSL_FLAG(int, iterations, 2000, "Look-ups (and plain connects) to time");
ABSL_FLAG(int, services, 1000, "Services to register for the RSS figure");
ABSL_FLAG(int, connections, 1000, "Client connections (each holding a channel) for RSS");

namespace {

sluice::RegisterOptions SmallRegions() {
  sluice::RegisterOptions options;
  options.geometry.slot_count = 4;
  options.geometry.request_arena_size = 64 * 1024;
  options.geometry.reply_arena_size = 64 * 1024;
  return options;
}

int64_t RssKib(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

// Nanoseconds `pid` has run on a CPU (all its threads): /proc/PID/schedstat
// counts in ns, where utime/stime tick at 10 ms.
int64_t CpuNs(pid_t pid) {
  std::ifstream schedstat(absl::StrCat("/proc/", pid, "/schedstat"));
  int64_t ns = -1;
  schedstat >> ns;
  return ns;
}

struct Percentiles {
  double p50_us, p99_us, max_us;
};
Percentiles Summarize(std::vector<absl::Duration> samples) {
  std::sort(samples.begin(), samples.end());
  auto at = [&](double q) {
    return absl::ToDoubleMicroseconds(samples[static_cast<size_t>(q * (samples.size() - 1))]);
  };
  return {at(0.50), at(0.99), absl::ToDoubleMicroseconds(samples.back())};
}
void Print(const char* what, const Percentiles& p) {
  std::printf("%-44s p50 %8.1f us   p99 %8.1f us   max %8.1f us\n", what, p.p50_us, p.p99_us,
              p.max_us);
}

// Echo server threads for channels handed over by the manager.
class Echo {
 public:
  ~Echo() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    for (auto& t : threads_) t.join();
  }
  void Accept(std::unique_ptr<sluice::ServerChannel> channel) {
    absl::MutexLock lock(&mu_);
    threads_.emplace_back([this, c = std::shared_ptr<sluice::ServerChannel>(std::move(channel))] {
      for (;;) {
        auto call = c->Receive(absl::Now() + absl::Milliseconds(100));
        if (absl::IsDeadlineExceeded(call.status())) {
          absl::MutexLock stop_lock(&mu_);
          if (stopping_) return;
          continue;
        }
        if (!call.ok()) return;
        const size_t n = call->request().size();
        auto space = call->ReserveReply(n);
        if (!space.ok()) return;
        std::memcpy(space->data(), call->request().data(), n);
        (void)call->Reply(space->first(n));
      }
    });
  }

 private:
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

absl::Status EchoOnce(sluice::ClientChannel& channel) {
  auto call = channel.BeginCall(8);
  if (!call.ok()) return call.status();
  std::span<std::byte> buffer = call->buffer().first(8);
  std::memset(buffer.data(), 0x5a, buffer.size());
  return channel.Call(*std::move(call), buffer).status();
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "connect_bench: %s\n", status.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int iterations = absl::GetFlag(FLAGS_iterations);
  char dir_template[] = "/tmp/sluice-sm-bench-XXXXXX";
  const std::string dir = ::mkdtemp(dir_template);
  const std::string socket_path = dir + "/sm.sock";

  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return 1;
  auto daemon = sluice::testing::Subprocess::Spawn(
      {SLUICE_SERVICEMANAGER_BIN, "--socket=" + socket_path, "--log_level=error", "--ready_fd=3"},
      {ready[1]});
  ::close(ready[1]);
  if (!daemon.ok()) return Fail(daemon.status());
  char ok[8];
  if (::read(ready[0], ok, sizeof(ok)) <= 0) return Fail(absl::InternalError("daemon not ready"));
  ::close(ready[0]);
  const pid_t daemon_pid = daemon->pid();
  const int64_t rss_idle = RssKib(daemon_pid);

  sluice::ServiceManagerOptions options;
  options.socket_path = socket_path;
  auto server = sluice::ServiceManager::Connect(options);
  if (!server.ok()) return Fail(server.status());
  Echo echo;
  if (absl::Status s = (*server)->Register(
          "bench.echo", [&](sluice::IncomingConnection c) { echo.Accept(std::move(c.channel)); },
          SmallRegions());
      !s.ok()) {
    return Fail(s);
  }

  // ---- 1. Lookup until usable ----
  auto client = sluice::ServiceManager::Connect(options);
  if (!client.ok()) return Fail(client.status());
  std::vector<absl::Duration> lookup, lookup_call;
  std::vector<sluice::ServiceConnection> keep;  // Dropped in batches, off the clock.
  // The manager's own CPU per look-up: what it does per request, less
  // exposed to the load on a shared machine than a latency is.
  const int64_t cpu_before_lookups = CpuNs(daemon_pid);
  for (int i = 0; i < iterations; ++i) {
    const absl::Time start = absl::Now();
    auto connection = (*client)->Lookup("bench.echo");
    const absl::Time looked_up = absl::Now();
    if (!connection.ok()) return Fail(connection.status());
    if (absl::Status s = EchoOnce(*connection->channel); !s.ok()) return Fail(s);
    const absl::Time called = absl::Now();
    lookup.push_back(looked_up - start);
    lookup_call.push_back(called - start);
    keep.push_back(*std::move(connection));
    if (keep.size() == 64) keep.clear();
  }
  keep.clear();
  const int64_t cpu_lookups = CpuNs(daemon_pid) - cpu_before_lookups;

  // Same, against a service whose handler only parks the channel: no server
  // thread is started per connection, so this isolates manager + client work.
  std::vector<std::unique_ptr<sluice::ServerChannel>> parked;
  absl::Mutex parked_mu;
  if (absl::Status s = (*server)->Register(
          "bench.park",
          [&](sluice::IncomingConnection c) {
            absl::MutexLock lock(&parked_mu);
            parked.push_back(std::move(c.channel));
            if (parked.size() >= 64) parked.clear();
          },
          SmallRegions());
      !s.ok()) {
    return Fail(s);
  }
  std::vector<absl::Duration> lookup_parked;
  for (int i = 0; i < iterations; ++i) {
    const absl::Time start = absl::Now();
    auto connection = (*client)->Lookup("bench.park");
    lookup_parked.push_back(absl::Now() - start);
    if (!connection.ok()) return Fail(connection.status());
    keep.push_back(*std::move(connection));
    if (keep.size() == 64) keep.clear();
  }
  keep.clear();

  // Same handler, both sides with a schema: the compatibility check at
  // connect, and the schema's bytes in every LookupRequest.
  const std::span<const uint8_t> schema(sluice_schema::key_value::kBinarySchema,
                                        sizeof(sluice_schema::key_value::kBinarySchema));
  sluice::RegisterOptions typed = SmallRegions();
  typed.interface = "example.kv.KeyValueStore";
  typed.schema = schema;
  typed.schema_hash = sluice_schema::key_value::kStructuralHash;
  if (absl::Status s = (*server)->Register(
          "bench.typed",
          [&](sluice::IncomingConnection c) {
            absl::MutexLock lock(&parked_mu);
            parked.push_back(std::move(c.channel));
            if (parked.size() >= 64) parked.clear();
          },
          std::move(typed));
      !s.ok()) {
    return Fail(s);
  }
  std::vector<absl::Duration> lookup_typed;
  const int64_t cpu_before_typed = CpuNs(daemon_pid);
  for (int i = 0; i < iterations; ++i) {
    sluice::LookupOptions with_schema;
    with_schema.interface = "example.kv.KeyValueStore";
    with_schema.schema = schema;
    const absl::Time start = absl::Now();
    auto connection = (*client)->Lookup("bench.typed", std::move(with_schema));
    lookup_typed.push_back(absl::Now() - start);
    if (!connection.ok()) return Fail(connection.status());
    keep.push_back(*std::move(connection));
    if (keep.size() == 64) keep.clear();
  }
  keep.clear();
  const int64_t cpu_typed = CpuNs(daemon_pid) - cpu_before_typed;

  // ---- 2. Plain Unix socket, same run ----
  const std::string plain_path = dir + "/plain.sock";
  int listener = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, plain_path.data(), plain_path.size());
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener, 128) != 0) {
    return Fail(absl::InternalError("plain listener"));
  }
  std::atomic<bool> plain_stop{false};
  std::thread acceptor([&] {
    while (!plain_stop) {
      int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      char byte[8];
      const ssize_t n = ::recv(fd, byte, sizeof(byte), 0);
      if (n > 0) (void)!::send(fd, byte, static_cast<size_t>(n), MSG_NOSIGNAL);
      ::close(fd);
    }
  });
  std::vector<absl::Duration> plain_connect, plain_round_trip;
  for (int i = 0; i < iterations; ++i) {
    const absl::Time start = absl::Now();
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      return Fail(absl::InternalError("plain connect"));
    }
    const absl::Time connected = absl::Now();
    char byte[8] = {1};
    (void)!::send(fd, byte, sizeof(byte), MSG_NOSIGNAL);
    (void)!::recv(fd, byte, sizeof(byte), 0);
    const absl::Time answered = absl::Now();
    ::close(fd);
    plain_connect.push_back(connected - start);
    plain_round_trip.push_back(answered - start);
  }
  plain_stop = true;
  {  // Unblock accept.
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    (void)!::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::close(fd);
  }
  acceptor.join();
  ::close(listener);

  std::printf("time to connect (%d samples each)\n", iterations);
  Print("Lookup() -> channel", Summarize(lookup));
  Print("Lookup() + first call returned", Summarize(lookup_call));
  Print("Lookup() -> channel, server thread-free", Summarize(lookup_parked));
  Print("  same, both sides with a schema", Summarize(lookup_typed));
  Print("plain unix connect()", Summarize(plain_connect));
  Print("plain unix connect() + first round trip", Summarize(plain_round_trip));
  std::printf("manager CPU per Lookup (its request, the server's ack, the channel): %.1f us\n",
              static_cast<double>(cpu_lookups) / 1000.0 / iterations);
  std::printf("manager CPU per Lookup with schemas checked at connect: %.1f us (%zu-byte schema)\n",
              static_cast<double>(cpu_typed) / 1000.0 / iterations, schema.size());

  // ---- 3. Manager RSS under load ----
  const int services = absl::GetFlag(FLAGS_services);
  for (int i = 0; i < services; ++i) {
    if (absl::Status s = (*server)->Register(
            absl::StrCat("bench.svc.", i), [](sluice::IncomingConnection) {}, SmallRegions());
        !s.ok()) {
      return Fail(s);
    }
  }
  const int64_t rss_services = RssKib(daemon_pid);
  auto watcher = sluice::PeerWatcher::Create();
  if (!watcher.ok()) return Fail(watcher.status());
  sluice::ServiceManagerOptions many_options = options;
  many_options.watcher = watcher->get();
  std::vector<std::unique_ptr<sluice::ServiceManager>> clients;
  std::vector<sluice::ServiceConnection> channels;
  const int connections = absl::GetFlag(FLAGS_connections);
  for (int i = 0; i < connections; ++i) {
    auto c = sluice::ServiceManager::Connect(many_options);
    if (!c.ok()) return Fail(c.status());
    auto channel = (*c)->Lookup(absl::StrCat("bench.svc.", i % std::max(services, 1)));
    if (!channel.ok()) return Fail(channel.status());
    channels.push_back(*std::move(channel));
    clients.push_back(*std::move(c));
  }
  const int64_t rss_loaded = RssKib(daemon_pid);
  std::printf("manager VmRSS: idle %lld KiB; %d services %lld KiB; + %d connections %lld KiB\n",
              static_cast<long long>(rss_idle), services, static_cast<long long>(rss_services),
              connections, static_cast<long long>(rss_loaded));
  channels.clear();
  clients.clear();
  {
    // Before the server's ServiceManager: its PeerWatcher watches these.
    absl::MutexLock lock(&parked_mu);
    parked.clear();
  }
  server->reset();
  client->reset();
  (void)daemon->Kill(SIGTERM);
  (void)daemon->Wait();
  std::filesystem::remove_all(dir);
  return 0;
}
