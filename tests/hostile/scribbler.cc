// A hostile peer for tests/hostile: it makes or serves real calls while a
// second thread writes random bytes over every byte of Sluice memory it can
// map writable, and tries to get write access to what it may only read.
//
//   scribbler --mode=client --socket=S --name=N --seconds=T
//       calls N (a KeyValueStore) with values from 100 B to 64 MiB
//   scribbler --mode=server --socket=S --name=N --seconds=T
//       serves N (a KeyValueStore that answers with values of any size)
//   scribbler --mode=listener --socket=S --name=N --seconds=T
//       subscribes a Listener object of its own to topic "t" of N (a
//       Feed) and publishes events of 100 B to 1 MiB there: the feed calls
//       it back on an object channel, whose memory it scribbles over too
//
// It may well crash itself (it scribbles over its own builders too): the
// tests only ask that its victim never does. It exits 3 if the kernel ever
// lets it write memory the victim builds in or reads back, which is the one
// thing the design promises can never happen.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "examples/kv/key_value_store.h"
#include "ipc/host/service_host.h"
#include "ipc/service/service_manager.h"
#include "key_value_sluice.h"
#include "listener_sluice.h"

ABSL_FLAG(std::string, mode, "client", "client or server");
ABSL_FLAG(std::string, socket, "", "Service manager socket");
ABSL_FLAG(std::string, name, "example.kv.KeyValueStore", "Service to call or serve");
ABSL_FLAG(int, seconds, 3, "How long to scribble");
ABSL_FLAG(int, ready_fd, -1, "Write \"ready\\n\" here once serving (server mode)");

namespace {

struct Mapping {
  uintptr_t begin = 0;
  uintptr_t end = 0;
  uint64_t inode = 0;  // The memfd's: tells it from whatever is mapped there later.
  bool writable = false;
  std::string name;
};

// Every mapping of a Sluice memfd in this process.
std::vector<Mapping> SluiceMappings() {
  std::vector<Mapping> out;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("memfd:sluice-") == std::string::npos) continue;
    std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (parts.size() < 6) continue;
    std::vector<std::string> range = absl::StrSplit(parts[0], '-');
    Mapping m;
    if (range.size() != 2 || !absl::SimpleHexAtoi(range[0], &m.begin) ||
        !absl::SimpleHexAtoi(range[1], &m.end)) {
      continue;
    }
    if (!absl::SimpleAtoi(parts[4], &m.inode)) continue;
    m.writable = parts[1].size() > 1 && parts[1][1] == 'w';
    m.name = parts[5];
    out.push_back(m);
  }
  return out;
}

[[noreturn]] void KernelAllowedAWrite(const Mapping& m, const char* how) {
  std::fprintf(stderr, "scribbler: the kernel let us write %s (%s)\n", m.name.c_str(), how);
  std::fflush(stderr);
  ::_exit(3);
}

// Whether `m` is still mapped where it was. /proc/self/maps was read a
// while ago: since then the channel may have ended and its range may hold
// other memory, such as this process's own arena of a new channel, which it
// may write, and that is no finding.
bool StillMapped(const Mapping& m) {
  for (const Mapping& now : SluiceMappings()) {
    if (now.begin == m.begin && now.end == m.end && now.inode == m.inode) return true;
  }
  return false;
}

// Tries every way to write a mapping this process only reads.
void TryToWrite(const Mapping& m) {
  void* base = reinterpret_cast<void*>(m.begin);
  const size_t size = m.end - m.begin;
  if (::mprotect(base, size, PROT_READ | PROT_WRITE) == 0 && StillMapped(m)) {
    KernelAllowedAWrite(m, "mprotect");
  }
  // The same file, opened anew through /proc: a writable shared mapping of
  // it must be refused too (F_SEAL_FUTURE_WRITE / F_SEAL_WRITE).
  char path[128];
  std::snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx",
                static_cast<unsigned long>(m.begin), static_cast<unsigned long>(m.end));
  const int fd = ::open(path, O_RDWR | O_CLOEXEC);
  struct stat opened {};
  if (fd >= 0 && (::fstat(fd, &opened) != 0 || opened.st_ino != m.inode)) {
    ::close(fd);  // Another mapping's file by now.
    return;
  }
  if (fd >= 0) {
    void* again = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (again != MAP_FAILED) KernelAllowedAWrite(m, "mmap of /proc/self/map_files");
    if (::pwrite(fd, "x", 1, 0) == 1) KernelAllowedAWrite(m, "pwrite");
    ::close(fd);
  }
}

std::atomic<uint64_t> scribbled{0};

void Scribble(std::atomic<bool>& stop) {
  constexpr size_t kRuns = 256;
  constexpr size_t kMaxRun = 64;
  const pid_t self = ::getpid();
  std::mt19937_64 rng(static_cast<uint64_t>(self) * 7919);
  std::vector<uint8_t> noise(kRuns * kMaxRun);
  while (!stop.load(std::memory_order_relaxed)) {
    for (const Mapping& m : SluiceMappings()) {
      if (!m.writable) {
        TryToWrite(m);
        continue;
      }
      // Written through process_vm_writev rather than by stores: a mapping
      // that went since /proc/self/maps was read costs an EFAULT, not a
      // SIGSEGV, and the sanitizers do not take these deliberate races for
      // bugs of the runtime (a TSan report racing a deadly signal handler
      // deadlocked TSan itself, leaving the scribbler hung).
      const size_t size = m.end - m.begin;
      iovec local{noise.data(), 0};
      std::array<iovec, kRuns> remote;
      for (iovec& run : remote) {
        const size_t at = rng() % size;
        run.iov_base = reinterpret_cast<void*>(m.begin + at);
        run.iov_len = std::min<size_t>(1 + rng() % kMaxRun, size - at);
        local.iov_len += run.iov_len;
      }
      for (uint8_t& byte : noise) byte = static_cast<uint8_t>(rng());
      // Stops at the first run that fails; the next round maps afresh.
      const ssize_t wrote = ::process_vm_writev(self, &local, 1, remote.data(), remote.size(), 0);
      if (wrote > 0) scribbled.fetch_add(static_cast<uint64_t>(wrote), std::memory_order_relaxed);
    }
    // A thousand rounds a second: enough to hit every call, while leaving
    // windows in which a connection can open and calls can complete.
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

int RunClient(sluice::ServiceManager& manager, absl::Time end) {
  const std::string name = absl::GetFlag(FLAGS_name);
  const size_t sizes[] = {100, 10'000, 100'000, 1 << 20, 64 << 20};
  std::vector<uint8_t> value(64 << 20, 0x5a);
  uint64_t i = 0;
  while (absl::Now() < end) {
    auto kv = sluice::Connect<example::kv::KeyValueStoreProxy>(manager, name);
    if (!kv.ok()) {
      absl::SleepFor(absl::Milliseconds(10));
      continue;
    }
    const sluice::rpc::CallOptions options{.deadline = absl::Now() + absl::Seconds(2)};
    while (absl::Now() < end && (*kv).channel().health().ok()) {
      const size_t size = sizes[i++ % std::size(sizes)];
      (void)(*kv)->Put("hostile", absl::MakeConstSpan(value.data(), size), options);
      (void)(*kv)->Get("hostile", options);
    }
  }
  return 0;
}

// Answers Get with a value of the size the key names ("size:N").
class SizedStore : public example::kv::KeyValueStore {
 public:
  absl::StatusOr<flatbuffers::Offset<example::kv::GetResponse>> Get(
      const sluice::rpc::CallContext&, const example::kv::GetRequest& request,
      flatbuffers::FlatBufferBuilder& reply) override {
    size_t size = 0;
    const std::string key = request.key()->str();
    if (key.rfind("size:", 0) != 0 || !absl::SimpleAtoi(key.substr(5), &size) ||
        size > (size_t{64} << 20)) {
      return absl::InvalidArgumentError("key must be size:N");
    }
    uint8_t* out = nullptr;
    auto vector = reply.CreateUninitializedVector(size, &out);
    for (size_t k = 0; k < size; ++k) out[k] = static_cast<uint8_t>(k * 31);
    return example::kv::CreateGetResponse(reply, true, vector);
  }
};

// Acknowledges every event (its replies are scribbled on as they are built).
class AckingListener : public example::listener::ListenerStub {
 public:
  absl::StatusOr<flatbuffers::Offset<example::listener::Ack>> OnEvent(
      const sluice::rpc::CallContext&, const example::listener::Event&,
      flatbuffers::FlatBufferBuilder& reply) override {
    return example::listener::CreateAck(reply, ::getpid());
  }
};

int RunListener(sluice::ServiceManager& manager, absl::Time end) {
  const std::string name = absl::GetFlag(FLAGS_name);
  const size_t sizes[] = {100, 10'000, 100'000, 1 << 20};
  const std::string text(1 << 20, 'h');
  auto listener = std::make_shared<AckingListener>();
  uint64_t i = 0;
  while (absl::Now() < end) {
    auto feed = sluice::Connect<example::listener::FeedProxy>(manager, name);
    if (!feed.ok()) {
      absl::SleepFor(absl::Milliseconds(10));
      continue;
    }
    const sluice::rpc::CallOptions options{.deadline = absl::Now() + absl::Seconds(2)};
    if (!(*feed)->Subscribe("t", listener, options).ok()) {
      absl::SleepFor(absl::Milliseconds(10));
      continue;
    }
    while (absl::Now() < end && (*feed).channel().health().ok()) {
      const size_t size = sizes[i++ % std::size(sizes)];
      (void)(*feed)->Publish("t", absl::string_view(text).substr(0, size), options);
    }
  }
  return 0;
}

int RunServer(sluice::ServiceManager& manager, absl::Time end) {
  sluice::ServiceHost host(manager);
  sluice::RegisterOptions options;
  options.trust = sluice::TrustPolicy::kNobody;
  if (absl::Status published = host.Publish(std::make_shared<SizedStore>(),
                                            absl::GetFlag(FLAGS_name), std::move(options));
      !published.ok()) {
    std::fprintf(stderr, "scribbler: %s\n", published.ToString().c_str());
    return 1;
  }
  if (const int fd = absl::GetFlag(FLAGS_ready_fd); fd >= 0) {
    (void)!::write(fd, "ready\n", 6);
    ::close(fd);
  }
  absl::SleepFor(end - absl::Now());
  host.Shutdown();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto manager = sluice::ServiceManager::Connect({.socket_path = absl::GetFlag(FLAGS_socket)});
  if (!manager.ok()) {
    std::fprintf(stderr, "scribbler: %s\n", manager.status().ToString().c_str());
    return 1;
  }
  const absl::Time end = absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_seconds));
  std::atomic<bool> stop{false};
  std::thread scribbler([&] { Scribble(stop); });
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const int code = mode == "server"     ? RunServer(**manager, end)
                   : mode == "listener" ? RunListener(**manager, end)
                                        : RunClient(**manager, end);
  stop.store(true);
  scribbler.join();
  std::fprintf(stderr, "scribbler: wrote %llu bytes over shared memory\n",
               static_cast<unsigned long long>(scribbled.load()));
  // Quick exit: the scribbled state of this process is not worth unwinding.
  std::fflush(nullptr);
  ::_exit(code);
}
