// The other process in the channel tests. Started by the test with the
// channel region at fd 3, its liveness socket end at fd 4, and for some roles
// a notification pipe at fd 5.
//
//   channel_test_peer echo          serve echo requests until the client goes
//   channel_test_peer ordering      serve RunOrderingServer
//   channel_test_peer hang          take one call, write a byte to fd 5, never answer
//   channel_test_peer reply-then-exit  answer one call, then exit at once
//   channel_test_peer client-hang   act as a client: one call, wait forever
//   channel_test_peer hostile       act as a client that writes a malformed slot
//   channel_test_peer garbage       act as a client that fills its words with random bytes
//   channel_test_peer fds-missing   act as a client that flags descriptors it never sends
//   channel_test_peer spill-ROLE    act as a client whose spilled request is wrong:
//       spill-unsealed (no seals), spill-writable (F_SEAL_FUTURE_WRITE only, and
//       it keeps rewriting), spill-short (offset past the end), spill-pipe (not a
//       memfd), spill-missing (flagged, no descriptor at all)
//   channel_test_peer arena-ROLE    act as a client whose own arena is wrong:
//       arena-unsealed (sent without F_SEAL_FUTURE_WRITE), arena-large (a 100 KB
//       request in place, which an untrusting server refuses)
//   channel_test_peer fds           serve RunFdServer
//   channel_test_peer count-duplicates  exit with how many descriptors other than 3
//                                       and 4 refer to the same files as 3 and 4
//   channel_test_peer hello-client N    act as a client that introduces itself
//                                       (hello_identity) and runs RunIdentityClient
//                                       with N calls; exits with IdentityExitCode
//   channel_test_peer no-hello-client N the same without the hello
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "ipc/base/errors.h"
#include "ipc/channel/client_channel.h"
#include "ipc/channel/layout.h"
#include "ipc/channel/server_channel.h"
#include "ipc/sync/futex.h"
#include "tests/channel/echo_protocol.h"

namespace sluice::testing {
namespace {

constexpr int kRegionFd = 3;
constexpr int kLivenessFd = 4;
constexpr int kNotifyFd = 5;

int Fail(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "channel_test_peer: %s: %s\n", what, status.ToString().c_str());
  return 2;
}

[[noreturn]] void SleepForever() {
  for (;;) ::pause();
}

// Writes like a client, but with whatever the role wants in the shared words.
int RunHostile(bool random_garbage, bool fds_missing) {
  auto region = Region::Adopt(UniqueFd(kRegionFd), 0, Region::kMaxSize);
  if (!region.ok()) return Fail("adopt", region.status());
  channel_layout::ChannelHeader header;
  std::memcpy(&header, region->data(), sizeof(header));
  auto* client_words =
      reinterpret_cast<channel_layout::ClientWords*>(region->data() + header.client_words_offset);
  auto* slot = reinterpret_cast<channel_layout::Slot*>(region->data() + header.slots_offset);
  if (fds_missing) {
    // A well-formed request that claims descriptors it never sends.
    slot[0].request_offset.store(0);
    slot[0].request_length.store(8);
    slot[0].flags.store(channel_layout::kSlotFlagHasFds);
    slot[0].request_seq.store(1, std::memory_order_release);
  } else if (random_garbage) {
    std::mt19937_64 rng(42);
    // Scribble over every client-written line, then ring.
    for (uint32_t i = 0; i < header.slot_count; ++i) {
      for (auto* word : {&slot[i].interface_id, &slot[i].method}) word->store(rng());
      slot[i].request_offset.store(rng());
      slot[i].request_length.store(rng());
      slot[i].flags.store(static_cast<uint32_t>(rng()));
      slot[i].request_seq.store(static_cast<uint32_t>(rng()) | 1);
    }
  } else {
    slot[0].request_offset.store(header.request_arena_size - 8);
    slot[0].request_length.store(4096);  // Runs past the end of the arena.
    slot[0].flags.store(0);
    slot[0].request_seq.store(1, std::memory_order_release);
  }
  client_words->doorbell.fetch_add(1);
  FutexWake(client_words->doorbell, 1);
  SleepForever();
}

// A memfd of `size` bytes with `seals` (beyond MFD_ALLOW_SEALING), the
// first `fill` bytes set, and (if `keep_writable`) a writable mapping left.
UniqueFd MakeMemfd(uint64_t size, int seals, std::byte** keep_writable = nullptr) {
  UniqueFd fd(::memfd_create("sluice-hostile", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return UniqueFd();
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (base == MAP_FAILED) return UniqueFd();
  std::memset(base, 0x11, size);
  if (keep_writable != nullptr) {
    *keep_writable = static_cast<std::byte*>(base);
  } else {
    ::munmap(base, size);
  }
  if (seals != 0 && ::fcntl(fd.get(), F_ADD_SEALS, seals) != 0) return UniqueFd();
  return fd;
}

absl::Status SendTagged(uint64_t tag, std::span<const int> fds) {
  std::byte bytes[sizeof(tag)];
  std::memcpy(bytes, &tag, sizeof(tag));
  return SendMessage(kLivenessFd, bytes, fds);
}

// Requests with a spilled memfd (or an arena) that break one rule each.
int RunBadMemory(const std::string& role) {
  auto region = Region::Adopt(UniqueFd(kRegionFd), 0, Region::kMaxSize);
  if (!region.ok()) return Fail("adopt", region.status());
  channel_layout::ChannelHeader header;
  std::memcpy(&header, region->data(), sizeof(header));
  auto* client_words =
      reinterpret_cast<channel_layout::ClientWords*>(region->data() + header.client_words_offset);
  auto* slot = reinterpret_cast<channel_layout::Slot*>(region->data() + header.slots_offset);
  const uint64_t kSize = 1 << 20;
  uint32_t flags = channel_layout::kSlotFlagHasFds | channel_layout::kSlotFlagSpilled;
  uint64_t offset = 0;
  uint64_t length = 4096;
  std::byte* writable = nullptr;
  UniqueFd memfd;
  if (role == "spill-unsealed") {
    memfd = MakeMemfd(kSize, 0);
  } else if (role == "spill-writable") {
    memfd = MakeMemfd(kSize, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE, &writable);
  } else if (role == "spill-short") {
    memfd = MakeMemfd(kSize, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
    offset = kSize - 8;
  } else if (role == "spill-pipe") {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return 2;
    memfd = UniqueFd(fds[0]);
    ::close(fds[1]);
  } else if (role == "spill-missing") {
    flags = channel_layout::kSlotFlagSpilled;
  } else {
    // arena-*: a proper request in the client's own arena, the arena wrong.
    flags = 0;
    const bool sealed = role != "arena-unsealed";
    memfd = MakeMemfd(header.request_arena_size,
                      F_SEAL_SHRINK | F_SEAL_GROW | (sealed ? F_SEAL_FUTURE_WRITE : 0));
    length = role == "arena-large" ? 100'000 : 64;
    const int fd = memfd.get();
    if (absl::Status sent = SendTagged(channel_layout::kArenaTag, std::span<const int>(&fd, 1));
        !sent.ok()) {
      return Fail("send arena", sent);
    }
    memfd.reset();
  }
  if (memfd) {
    const int fd = memfd.get();
    if (absl::Status sent = SendTagged(channel_layout::FdTag(0, 1), std::span<const int>(&fd, 1));
        !sent.ok()) {
      return Fail("send", sent);
    }
  }
  slot[0].request_offset.store(offset);
  slot[0].request_length.store(length);
  slot[0].flags.store(flags);
  slot[0].request_seq.store(1, std::memory_order_release);
  client_words->doorbell.fetch_add(1);
  FutexWake(client_words->doorbell, 1);
  // The rewrite the seals must make pointless.
  for (uint64_t i = 0; writable != nullptr; ++i) writable[i % kSize] = std::byte(i);
  SleepForever();
}

int CountDuplicatesOfPassedFds() {
  struct stat passed[2];
  if (::fstat(kRegionFd, &passed[0]) != 0 || ::fstat(kLivenessFd, &passed[1]) != 0) return 100;
  int duplicates = 0;
  for (int fd = 0; fd < 1024; ++fd) {
    struct stat st;
    if (fd == kRegionFd || fd == kLivenessFd || ::fstat(fd, &st) != 0) continue;
    for (const struct stat& p : passed) {
      if (st.st_dev == p.st_dev && st.st_ino == p.st_ino) ++duplicates;
    }
  }
  return duplicates;
}

int Main(int argc, char** argv) {
  if (argc < 2) return Fail("usage", absl::InvalidArgumentError("role missing"));
  const std::string role = argv[1];
  if (role == "hostile" || role == "garbage" || role == "fds-missing") {
    return RunHostile(role == "garbage", role == "fds-missing");
  }
  if (absl::StartsWith(role, "spill-") || absl::StartsWith(role, "arena-")) {
    return RunBadMemory(role);
  }
  if (role == "count-duplicates") return CountDuplicatesOfPassedFds();

  auto watcher = PeerWatcher::Create();
  if (!watcher.ok()) return Fail("watcher", watcher.status());
  auto region = Region::Adopt(UniqueFd(kRegionFd), 0, Region::kMaxSize);
  if (!region.ok()) return Fail("adopt", region.status());

  if (role == "client-hang") {
    auto channel = ClientChannel::Open(*std::move(region), UniqueFd(kLivenessFd), **watcher);
    if (!channel.ok()) return Fail("open client", channel.status());
    auto call = (*channel)->BeginCall(64);
    if (!call.ok()) return Fail("begin", call.status());
    std::byte payload[8] = {};
    auto message = WriteEchoRequest(7, payload, call->buffer());
    auto reply = (*channel)->Call(*std::move(call), message);
    // The test never answers; we only get here if the server side died.
    return reply.ok() ? 0 : 3;
  }

  if (role == "hello-client" || role == "no-hello-client") {
    int calls = 0;
    if (argc < 3 || !absl::SimpleAtoi(argv[2], &calls)) {
      return Fail("usage", absl::InvalidArgumentError("number of calls missing"));
    }
    ChannelOptions options;
    options.hello_identity = role == "hello-client";
    auto channel =
        ClientChannel::Open(*std::move(region), UniqueFd(kLivenessFd), **watcher, options);
    if (!channel.ok()) return Fail("open client", channel.status());
    const absl::Status result = RunIdentityClient(**channel, calls);
    if (!result.ok()) std::fprintf(stderr, "channel_test_peer: %s\n", result.ToString().c_str());
    return IdentityExitCode(result);
  }

  auto channel = ServerChannel::Open(*std::move(region), UniqueFd(kLivenessFd), **watcher);
  if (!channel.ok()) return Fail("open server", channel.status());
  absl::Status ended;
  if (role == "echo") {
    ended = RunEchoServer(**channel);
  } else if (role == "ordering") {
    ended = RunOrderingServer(**channel);
  } else if (role == "fds") {
    ended = RunFdServer(**channel);
  } else if (role == "reply-then-exit") {
    // Answers one call and exits at once, racing its own death notice
    // against the reply (regression test for clobbered replies).
    auto call = (*channel)->Receive();
    if (!call.ok()) return Fail("receive", call.status());
    auto out = call->ReserveReply(8);
    if (!out.ok()) return Fail("reserve", out.status());
    std::memcpy(out->data(), "answered", 8);
    if (absl::Status sent = call->Reply(out->first(8)); !sent.ok()) return Fail("reply", sent);
    ::_exit(0);
  } else if (role == "hang") {
    auto call = (*channel)->Receive();
    if (!call.ok()) return Fail("receive", call.status());
    const char byte = 'x';
    (void)!::write(kNotifyFd, &byte, 1);
    SleepForever();
  } else {
    return Fail("usage", absl::InvalidArgumentError("unknown role " + role));
  }
  // The client going away is the normal end of a serving role.
  return IsPeerDead(ended) || absl::IsCancelled(ended) ? 0 : Fail("serve", ended);
}

}  // namespace
}  // namespace sluice::testing

int main(int argc, char** argv) { return sluice::testing::Main(argc, argv); }
