// The throughput benchmark's baselines: N clients against one server thread
// with none of the channel's or the RPC layer's bookkeeping.
//
// raw-spin-futex: one memfd of mailboxes (fd 4 of the server and of every
// client). The server serves every mailbox with a pending request in one
// sweep, spins over all of them for kRawSpinBudgetNs after its last request,
// then sleeps in one futex_waitv on every request word: the channel's own
// design (ServerPool's doorbells), with nothing else.
//
//   page 0                 MailboxHeader
//   page 1 + i * stride    client i's Mailbox (its two cache lines)
//   ... + 1 page           client i's payload (stride = 1 page + the payload,
//                          rounded up to pages)
//
// unix-socket: a stream socketpair per client (client fd 4; server fds
// 4 + i); the server waits in epoll and answers each request with a
// ReplyWords.
#include <sys/epoll.h>
#include <sys/socket.h>

#include <climits>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/harness.h"
#include "bench/pingpong.h"
#include "bench/raw_transports.h"
#include "bench/rpc/throughput.h"
#include "ipc/base/errno_status.h"
#include "ipc/base/status_macros.h"
#include "ipc/base/unique_fd.h"

namespace sluice::bench::throughput {
namespace {

constexpr uint64_t kPage = 4096;

struct MailboxHeader {
  // Written by the server: non-zero while it is (about to be) asleep on
  // every mailbox's request_seq. A client that publishes a request checks it
  // and wakes the server (Publish / AwaitChange in raw_transports.h).
  alignas(64) std::atomic<uint32_t> server_sleeping;
  // Written by the parent once every client has exited: the server exits.
  alignas(64) FutexWord quit;
};
static_assert(sizeof(MailboxHeader) <= kPage);

// One client's words. Each side writes only its own cache line, as in the
// ping-pong floor (RawControl in raw_transports.cc). A fresh memfd is zero,
// every field's initial value.
struct Mailbox {
  // ---- written by the client ----
  // Bumped after the payload and request_length are written.
  alignas(64) FutexWord request_seq;
  // Non-zero while the client is (about to be) asleep on reply_seq.
  std::atomic<uint32_t> client_sleeping;
  std::atomic<uint64_t> request_length;
  // ---- written by the server ----
  // Set to request_seq after reply_sum and reply_length are written.
  alignas(64) FutexWord reply_seq;
  std::atomic<uint64_t> reply_sum;
  std::atomic<uint64_t> reply_length;
};
static_assert(sizeof(Mailbox) == 128);

uint64_t Stride(size_t payload) { return kPage + (payload + kPage - 1) / kPage * kPage; }
uint64_t MailboxesSize(int clients, size_t payload) {
  return kPage + static_cast<uint64_t>(clients) * Stride(payload);
}

// The mailbox memfd as one process maps it.
class Mailboxes {
 public:
  Mailboxes(Region region, size_t payload) : region_(std::move(region)), payload_(payload) {}

  MailboxHeader& header() const { return *reinterpret_cast<MailboxHeader*>(region_.data()); }
  Mailbox& box(int i) const { return *reinterpret_cast<Mailbox*>(base(i)); }
  std::byte* payload(int i) const { return base(i) + kPage; }
  size_t capacity() const { return payload_; }

 private:
  std::byte* base(int i) const {
    return region_.data() + kPage + static_cast<uint64_t>(i) * Stride(payload_);
  }
  Region region_;
  size_t payload_;
};

absl::StatusOr<Mailboxes> AdoptMailboxes(int clients, size_t payload) {
  const uint64_t size = MailboxesSize(clients, payload);
  SLUICE_ASSIGN_OR_RETURN(Region region, Region::Adopt(UniqueFd(4), size, Region::kMaxSize));
  return Mailboxes(std::move(region), payload);
}

class RawCaller final : public Caller {
 public:
  RawCaller(Mailboxes mailboxes, int index) : mailboxes_(std::move(mailboxes)), index_(index) {}

  absl::StatusOr<uint64_t> Call(std::span<const std::byte> payload) override {
    Mailbox& box = mailboxes_.box(index_);
    std::memcpy(mailboxes_.payload(index_), payload.data(), payload.size());
    box.request_length.store(payload.size(), std::memory_order_relaxed);
    const uint32_t seq = ++seq_;
    Publish(box.request_seq, seq, mailboxes_.header().server_sleeping);
    AwaitChange(box.reply_seq, seq - 1, box.client_sleeping, kRawSpinBudgetNs);
    if (box.reply_length.load(std::memory_order_relaxed) != payload.size()) {
      return absl::DataLossError("the raw server answered a different length");
    }
    return box.reply_sum.load(std::memory_order_relaxed);
  }

 private:
  Mailboxes mailboxes_;
  int index_;
  uint32_t seq_ = 0;
};

class SocketCaller final : public Caller {
 public:
  explicit SocketCaller(UniqueFd socket) : socket_(std::move(socket)) {}

  absl::StatusOr<uint64_t> Call(std::span<const std::byte> payload) override {
    SLUICE_RETURN_IF_ERROR(WriteAll(socket_.get(), payload));
    ReplyWords reply{};
    SLUICE_ASSIGN_OR_RETURN(bool got,
                            ReadAll(socket_.get(), std::as_writable_bytes(std::span(&reply, 1))));
    if (!got) return absl::UnavailableError("the server closed the socket");
    if (reply.length != payload.size()) {
      return absl::DataLossError("the socket server answered a different length");
    }
    return reply.sum;
  }

 private:
  UniqueFd socket_;
};

}  // namespace

absl::StatusOr<Processes> StartRawSpinFutex(int clients, size_t payload, int run_fd) {
  SLUICE_ASSIGN_OR_RETURN(Region region,
                          Region::Create("throughput-mailboxes", MailboxesSize(clients, payload)));
  SLUICE_ASSIGN_OR_RETURN(
      testing::Subprocess server,
      testing::Subprocess::Spawn(ServerArgv(Case::kRawSpinFutex, clients, payload),
                                 {run_fd, region.fd()}));
  Processes processes{std::move(server), {}, nullptr};
  for (int i = 0; i < clients; ++i) {
    SLUICE_ASSIGN_OR_RETURN(testing::Subprocess client,
                            testing::Subprocess::Spawn(ClientArgv(Case::kRawSpinFutex, i, payload),
                                                       {run_fd, region.fd()}));
    processes.clients.push_back(std::move(client));
  }
  processes.stop_server = [mailboxes = Mailboxes(std::move(region), payload)] {
    FutexWord& quit = mailboxes.header().quit;
    quit.store(1, std::memory_order_seq_cst);
    FutexWake(quit, INT_MAX);
  };
  return processes;
}

absl::StatusOr<std::unique_ptr<Caller>> ConnectRawSpinFutex(int index, size_t payload) {
  SLUICE_ASSIGN_OR_RETURN(Mailboxes mailboxes, AdoptMailboxes(index + 1, payload));
  return std::make_unique<RawCaller>(std::move(mailboxes), index);
}

int ServeRawSpinFutex(RunControl& run, int connections, size_t payload) {
  absl::StatusOr<Mailboxes> mailboxes = AdoptMailboxes(connections, payload);
  if (!mailboxes.ok()) Die(mailboxes.status(), "adopting the mailboxes");
  run.server_threads.store(1, std::memory_order_relaxed);
  MailboxHeader& header = mailboxes->header();
  // What was last served per mailbox: a request_seq that differs is new.
  std::vector<uint32_t> served(static_cast<size_t>(connections), 0);
  std::vector<FutexWaitEntry> waits(static_cast<size_t>(connections) + 1);
  uint32_t idle = 0;  // Sweeps without a request since the last one.
  int64_t spin_end = 0;
  for (;;) {
    bool any = false;
    for (int i = 0; i < connections; ++i) {
      Mailbox& box = mailboxes->box(i);
      const uint32_t seq = box.request_seq.load(std::memory_order_acquire);
      if (seq == served[static_cast<size_t>(i)]) continue;
      served[static_cast<size_t>(i)] = seq;
      const uint64_t length = box.request_length.load(std::memory_order_relaxed);
      if (length > mailboxes->capacity()) {
        Die(absl::DataLossError("a request longer than its mailbox"), "serving");
      }
      const uint64_t sum =
          SumWords(std::span<const std::byte>(mailboxes->payload(i), static_cast<size_t>(length)));
      box.reply_sum.store(sum, std::memory_order_relaxed);
      box.reply_length.store(length, std::memory_order_relaxed);
      Publish(box.reply_seq, seq, box.client_sleeping);
      any = true;
    }
    if (any) {
      idle = 0;
      continue;
    }
    if (header.quit.load(std::memory_order_relaxed) != 0) return 0;
    // The clock is read once when the server runs out of work, then every
    // 64 sweeps, as AwaitChange does.
    if (idle++ == 0) spin_end = NowNanos() + kRawSpinBudgetNs;
    if ((idle & 63) != 0 || NowNanos() < spin_end) {
      CpuRelax();
      continue;
    }
    // Raised before futex_waitv compares the words: a client whose request
    // it misses sees the flag and wakes us.
    header.server_sleeping.store(1, std::memory_order_seq_cst);
    for (int i = 0; i < connections; ++i) {
      waits[static_cast<size_t>(i)] = {&mailboxes->box(i).request_seq,
                                       served[static_cast<size_t>(i)], FutexScope::kShared};
    }
    waits.back() = {&header.quit, 0, FutexScope::kShared};
    absl::StatusOr<int> woken = FutexWaitAny(waits, absl::InfiniteFuture());
    if (!woken.ok()) Die(woken.status(), "futex_waitv");
    header.server_sleeping.store(0, std::memory_order_relaxed);
    idle = 0;
  }
}

absl::StatusOr<Processes> StartUnixSocket(int clients, size_t payload, int run_fd) {
  std::vector<UniqueFd> client_ends;
  std::vector<UniqueFd> server_ends;
  std::vector<int> server_fds = {run_fd};
  for (int i = 0; i < clients; ++i) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
      return ErrnoStatus("socketpair", errno);
    }
    client_ends.emplace_back(fds[0]);
    server_ends.emplace_back(fds[1]);
    server_fds.push_back(fds[1]);
  }
  SLUICE_ASSIGN_OR_RETURN(
      testing::Subprocess server,
      testing::Subprocess::Spawn(ServerArgv(Case::kUnixSocket, clients, payload), server_fds));
  Processes processes{std::move(server), {}, nullptr};
  for (int i = 0; i < clients; ++i) {
    SLUICE_ASSIGN_OR_RETURN(
        testing::Subprocess client,
        testing::Subprocess::Spawn(ClientArgv(Case::kUnixSocket, i, payload),
                                   {run_fd, client_ends[static_cast<size_t>(i)].get()}));
    processes.clients.push_back(std::move(client));
  }
  // Our ends close here, so a client's exit is end of stream for the server.
  return processes;
}

absl::StatusOr<std::unique_ptr<Caller>> ConnectUnixSocket() {
  return std::make_unique<SocketCaller>(UniqueFd(4));
}

int ServeUnixSocket(RunControl& run, int connections, size_t payload) {
  run.server_threads.store(1, std::memory_order_relaxed);
  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll) Die(ErrnoStatus("epoll_create1", errno), "setup");
  for (int i = 0; i < connections; ++i) {
    epoll_event event = {.events = EPOLLIN, .data = {.fd = 4 + i}};
    if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, 4 + i, &event) != 0) {
      Die(ErrnoStatus("epoll_ctl", errno), "setup");
    }
  }
  std::vector<std::byte> buffer(payload);
  std::vector<epoll_event> events(static_cast<size_t>(connections));
  for (int open = connections; open > 0;) {
    const int n =
        RetryOnEintr([&] { return ::epoll_wait(epoll.get(), events.data(), connections, -1); });
    if (n < 0) Die(ErrnoStatus("epoll_wait", errno), "serving");
    for (int k = 0; k < n; ++k) {
      const int fd = events[static_cast<size_t>(k)].data.fd;
      absl::StatusOr<bool> got = ReadAll(fd, buffer);
      if (!got.ok()) Die(got.status(), "reading a request");
      if (!*got) {
        // The client is gone: end of stream.
        (void)::epoll_ctl(epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
        ::close(fd);
        --open;
        continue;
      }
      const ReplyWords reply{SumWords(buffer), payload};
      if (absl::Status s = WriteAll(fd, std::as_bytes(std::span(&reply, 1))); !s.ok()) {
        Die(s, "writing a reply");
      }
    }
  }
  return 0;
}

}  // namespace sluice::bench::throughput
