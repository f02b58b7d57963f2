#include "bench/raw_transports.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/harness.h"
#include "ipc/base/errno_status.h"
#include "ipc/base/unique_fd.h"
#include "ipc/shm/region.h"
#include "ipc/sync/futex.h"
#include "ipc/testing/subprocess.h"

namespace sluice::bench {
namespace {

using testing::Subprocess;

// Written into request_length to make the server exit.
constexpr uint64_t kQuit = ~uint64_t{0};
// The control words take the first page; the payload starts on the next.
constexpr uint64_t kControlBytes = 4096;

// The control page of the raw shared-memory baselines. Each side writes only
// its own cache line, as the channel does, so the floor pays the same
// cache-line transfers the channel pays at minimum. A fresh memfd is zero,
// which is every field's initial value.
struct RawControl {
  // ---- written by the client ----
  // Bumped after the payload and request_length are written.
  alignas(64) FutexWord request_seq;
  // Non-zero while the client is (about to be) in FUTEX_WAIT on reply_seq.
  std::atomic<uint32_t> client_sleeping;
  std::atomic<uint64_t> request_length;  // kQuit to stop the server.
  // ---- written by the server ----
  // Set to request_seq after reply_sum and reply_length are written.
  alignas(64) FutexWord reply_seq;
  // Non-zero while the server is (about to be) in FUTEX_WAIT on request_seq.
  std::atomic<uint32_t> server_sleeping;
  std::atomic<uint64_t> reply_sum;
  std::atomic<uint64_t> reply_length;
};
static_assert(sizeof(RawControl) == 128);
static_assert(sizeof(RawControl) <= kControlBytes);

RawControl& ControlOf(const Region& region) {
  return *reinterpret_cast<RawControl*>(region.data());
}

absl::Status CheckExit(Subprocess& child) {
  absl::StatusOr<int> status = child.Wait(absl::Seconds(10));
  if (!status.ok()) return status.status();
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    return absl::InternalError(absl::StrCat("server child exited with wait status ", *status));
  }
  return absl::OkStatus();
}

class RawShmClient final : public PingPongClient {
 public:
  RawShmClient(Subprocess child, Region region, int64_t spin_ns)
      : child_(std::move(child)), region_(std::move(region)), spin_ns_(spin_ns) {}

  absl::StatusOr<uint64_t> RoundTrip(std::span<const std::byte> payload) override {
    RawControl& control = ControlOf(region_);
    std::memcpy(region_.data() + kControlBytes, payload.data(), payload.size());
    control.request_length.store(payload.size(), std::memory_order_relaxed);
    const uint32_t seq = ++seq_;
    Publish(control.request_seq, seq, control.server_sleeping);
    AwaitChange(control.reply_seq, seq - 1, control.client_sleeping, spin_ns_);
    if (control.reply_length.load(std::memory_order_relaxed) != payload.size()) {
      return absl::DataLossError("raw server answered a different length");
    }
    return control.reply_sum.load(std::memory_order_relaxed);
  }

  absl::Status Stop() override {
    RawControl& control = ControlOf(region_);
    control.request_length.store(kQuit, std::memory_order_relaxed);
    Publish(control.request_seq, ++seq_, control.server_sleeping);
    return CheckExit(child_);
  }

  pid_t server_pid() const override { return child_.pid(); }

 private:
  Subprocess child_;
  Region region_;
  int64_t spin_ns_;
  uint32_t seq_ = 0;
};

class StreamClient final : public PingPongClient {
 public:
  StreamClient(Subprocess child, UniqueFd to_server, UniqueFd from_server)
      : child_(std::move(child)),
        to_server_(std::move(to_server)),
        from_server_(std::move(from_server)) {}

  absl::StatusOr<uint64_t> RoundTrip(std::span<const std::byte> payload) override {
    if (absl::Status s = WriteAll(to_server_.get(), payload); !s.ok()) return s;
    ReplyWords reply{};
    const int in = from_server_ ? from_server_.get() : to_server_.get();
    absl::StatusOr<bool> got = ReadAll(in, std::as_writable_bytes(std::span(&reply, 1)));
    if (!got.ok()) return got.status();
    if (!*got) return absl::UnavailableError("server closed the stream");
    if (reply.length != payload.size()) {
      return absl::DataLossError("stream server answered a different length");
    }
    return reply.sum;
  }

  absl::Status Stop() override {
    // End of stream is the stop signal; for a socketpair both ends are one fd.
    to_server_.reset();
    from_server_.reset();
    return CheckExit(child_);
  }

  pid_t server_pid() const override { return child_.pid(); }

 private:
  Subprocess child_;
  UniqueFd to_server_;
  UniqueFd from_server_;  // Invalid for a socket: to_server_ is both ways.
};

}  // namespace

// `sleeping` is raised before the last look at `word` and the other side
// checks it after storing `word` (Publish), so either we see the new value or
// it sees the flag and wakes us (both accesses seq_cst).
void AwaitChange(const FutexWord& word, uint32_t old, std::atomic<uint32_t>& sleeping,
                 int64_t spin_ns) {
  if (spin_ns != 0) {
    const int64_t end = spin_ns < 0 ? INT64_MAX : NowNanos() + spin_ns;
    for (uint32_t i = 1;; ++i) {
      if (word.load(std::memory_order_acquire) != old) return;
      CpuRelax();
      if ((i & 63) == 0 && NowNanos() > end) break;
    }
  }
  for (;;) {
    sleeping.store(1, std::memory_order_seq_cst);
    if (word.load(std::memory_order_seq_cst) != old) break;
    if (absl::Status s = FutexWait(word, old, absl::InfiniteFuture()); !s.ok()) {
      Die(s, "FutexWait");
    }
    if (word.load(std::memory_order_acquire) != old) break;
  }
  sleeping.store(0, std::memory_order_relaxed);
}

void Publish(FutexWord& word, uint32_t value, const std::atomic<uint32_t>& peer_sleeping) {
  word.store(value, std::memory_order_seq_cst);
  if (peer_sleeping.load(std::memory_order_seq_cst) != 0) FutexWake(word, 1);
}

absl::Status WriteAll(int fd, std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    const ssize_t n = RetryOnEintr([&] { return ::write(fd, bytes.data(), bytes.size()); });
    if (n < 0) return ErrnoStatus("write", errno);
    bytes = bytes.subspan(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> ReadAll(int fd, std::span<std::byte> bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n =
        RetryOnEintr([&] { return ::read(fd, bytes.data() + done, bytes.size() - done); });
    if (n < 0) return ErrnoStatus("read", errno);
    if (n == 0) {
      if (done == 0) return false;
      return absl::DataLossError("stream ended mid-message");
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

absl::StatusOr<std::unique_ptr<PingPongClient>> StartRawShm(Transport transport, int64_t spin_ns,
                                                            const CaseSetup& setup) {
  absl::StatusOr<Region> region = Region::Create("bench-raw", kControlBytes + setup.payload);
  if (!region.ok()) return region.status();
  absl::StatusOr<UniqueFd> child_fd = region->DuplicateFd();
  if (!child_fd.ok()) return child_fd.status();
  absl::StatusOr<Subprocess> child =
      Subprocess::Spawn(ServerArgv(transport, setup), {child_fd->get()}, setup.server_cpu);
  if (!child.ok()) return child.status();
  return std::make_unique<RawShmClient>(*std::move(child), *std::move(region), spin_ns);
}

int ServeRawShm(int64_t spin_ns, size_t payload) {
  absl::StatusOr<Region> region = Region::Adopt(UniqueFd(3), kControlBytes, Region::kMaxSize);
  if (!region.ok()) Die(region.status(), "adopting the raw region");
  RawControl& control = ControlOf(*region);
  const uint64_t capacity = region->size() - kControlBytes;
  if (payload > capacity) Die(absl::InvalidArgumentError("payload larger than region"), "setup");
  uint32_t served = 0;
  for (;;) {
    AwaitChange(control.request_seq, served, control.server_sleeping, spin_ns);
    served = control.request_seq.load(std::memory_order_acquire);
    const uint64_t length = control.request_length.load(std::memory_order_relaxed);
    if (length == kQuit) return 0;
    if (length > capacity) Die(absl::DataLossError("request longer than the region"), "serving");
    const uint64_t sum =
        SumWords(std::span<const std::byte>(region->data() + kControlBytes, length));
    control.reply_sum.store(sum, std::memory_order_relaxed);
    control.reply_length.store(length, std::memory_order_relaxed);
    Publish(control.reply_seq, served, control.client_sleeping);
  }
}

absl::StatusOr<std::unique_ptr<PingPongClient>> StartStream(Transport transport,
                                                            const CaseSetup& setup) {
  UniqueFd to_server;    // Ours: we write requests here.
  UniqueFd from_server;  // Ours: we read replies here (pipes only).
  UniqueFd server_in;    // The child's fd 3.
  UniqueFd server_out;   // The child's fd 4.
  if (transport == Transport::kUnixSocket) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
      return ErrnoStatus("socketpair", errno);
    }
    to_server.reset(fds[0]);
    server_in.reset(fds[1]);
  } else {
    int request[2];
    int reply[2];
    if (::pipe2(request, O_CLOEXEC) != 0) return ErrnoStatus("pipe2", errno);
    to_server.reset(request[1]);
    server_in.reset(request[0]);
    if (::pipe2(reply, O_CLOEXEC) != 0) return ErrnoStatus("pipe2", errno);
    from_server.reset(reply[0]);
    server_out.reset(reply[1]);
  }
  const int child_out = server_out ? server_out.get() : server_in.get();
  absl::StatusOr<Subprocess> child = Subprocess::Spawn(
      ServerArgv(transport, setup), {server_in.get(), child_out}, setup.server_cpu);
  if (!child.ok()) return child.status();
  // The child's ends close here, so the child alone holds them and end of
  // stream reaches whichever side outlives the other.
  return std::make_unique<StreamClient>(*std::move(child), std::move(to_server),
                                        std::move(from_server));
}

int ServeStream(size_t payload) {
  std::vector<std::byte> buffer(payload);
  for (;;) {
    absl::StatusOr<bool> got = ReadAll(3, buffer);
    if (!got.ok()) Die(got.status(), "reading a request");
    if (!*got) return 0;
    const ReplyWords reply{SumWords(buffer), payload};
    if (absl::Status s = WriteAll(4, std::as_bytes(std::span(&reply, 1))); !s.ok()) {
      Die(s, "writing a reply");
    }
  }
}

}  // namespace sluice::bench
