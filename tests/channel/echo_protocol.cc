#include "tests/channel/echo_protocol.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace sluice::testing {
namespace {

uint64_t LoadU64(const std::byte* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

void StoreU64(std::byte* p, uint64_t v) { std::memcpy(p, &v, sizeof(v)); }

}  // namespace

uint64_t Checksum(std::span<const std::byte> bytes) {
  // FNV-1a over 8-byte words, then the tail: cheap enough for 1M round trips.
  uint64_t h = 0xcbf29ce484222325ull;
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) h = (h ^ LoadU64(bytes.data() + i)) * 0x100000001b3ull;
  for (; i < bytes.size(); ++i) h = (h ^ static_cast<uint8_t>(bytes[i])) * 0x100000001b3ull;
  return h ^ bytes.size();
}

std::span<const std::byte> WriteEchoRequest(uint64_t tag, std::span<const std::byte> payload,
                                            std::span<std::byte> out) {
  StoreU64(out.data(), tag);
  StoreU64(out.data() + 8, Checksum(payload));
  if (!payload.empty()) std::memcpy(out.data() + kEchoHeader, payload.data(), payload.size());
  return out.first(kEchoHeader + payload.size());
}

absl::Status CheckEchoReply(uint64_t tag, std::span<const std::byte> payload,
                            std::span<const std::byte> reply) {
  if (reply.size() != kEchoHeader + payload.size()) {
    return absl::DataLossError(
        absl::StrCat("reply of ", reply.size(), " bytes, want ", kEchoHeader + payload.size()));
  }
  if (LoadU64(reply.data()) != tag) {
    return absl::DataLossError(
        absl::StrCat("reply for tag ", LoadU64(reply.data()), ", want ", tag));
  }
  if (LoadU64(reply.data() + 8) != Checksum(payload)) {
    return absl::DataLossError(absl::StrCat("reply checksum mismatch for tag ", tag));
  }
  for (size_t i = 0; i < payload.size(); ++i) {
    if ((reply[kEchoHeader + i] ^ std::byte{0x5a}) != payload[i]) {
      return absl::DataLossError(absl::StrCat("reply byte ", i, " wrong for tag ", tag));
    }
  }
  return absl::OkStatus();
}

absl::Status RunEchoServer(ServerChannel& channel) {
  for (;;) {
    absl::StatusOr<IncomingCall> call = channel.Receive();
    if (!call.ok()) return call.status();
    std::span<const std::byte> request = call->request();
    if (request.size() < kEchoHeader) {
      (void)call->Fail(absl::InvalidArgumentError("short request"));
      continue;
    }
    const uint64_t tag = LoadU64(request.data());
    const auto payload = request.subspan(kEchoHeader);
    const uint64_t sum = LoadU64(request.data() + 8);
    if (Checksum(payload) != sum) {
      (void)call->Fail(absl::DataLossError(absl::StrCat("request checksum mismatch, tag ", tag)));
      continue;
    }
    if (call->oneway()) continue;  // Dropping answers a oneway call.
    absl::StatusOr<std::span<std::byte>> out = call->ReserveReply(request.size());
    if (!out.ok()) {
      (void)call->Fail(out.status());
      continue;
    }
    StoreU64(out->data(), tag);
    StoreU64(out->data() + 8, sum);
    for (size_t i = 0; i < payload.size(); ++i) {
      (*out)[kEchoHeader + i] = payload[i] ^ std::byte{0x5a};
    }
    (void)call->Reply(*out);
  }
}

absl::Status RunOrderingServer(ServerChannel& channel) {
  uint64_t seen = 0;
  uint64_t out_of_order = 0;
  uint64_t last = 0;
  for (;;) {
    absl::StatusOr<IncomingCall> call = channel.Receive();
    if (!call.ok()) return call.status();
    std::span<const std::byte> request = call->request();
    if (request.size() < 8) {
      (void)call->Fail(absl::InvalidArgumentError("short request"));
      continue;
    }
    const uint64_t tag = LoadU64(request.data());
    if (call->oneway()) {
      if (seen > 0 && tag != last + 1) ++out_of_order;
      last = tag;
      ++seen;
      continue;
    }
    absl::StatusOr<std::span<std::byte>> out = call->ReserveReply(16);
    if (!out.ok()) {
      (void)call->Fail(out.status());
      continue;
    }
    StoreU64(out->data(), seen);
    StoreU64(out->data() + 8, out_of_order);
    (void)call->Reply(*out);
  }
}

absl::Status RunFdServer(ServerChannel& channel) {
  for (;;) {
    absl::StatusOr<IncomingCall> call = channel.Receive();
    if (!call.ok()) return call.status();
    std::vector<UniqueFd> fds = call->TakeFds();
    if (fds.size() != 2) {
      (void)call->Fail(absl::InvalidArgumentError(absl::StrCat("got ", fds.size(), " fds")));
      continue;
    }
    char text[64];
    const ssize_t got = ::pread(fds[0].get(), text, sizeof(text), 0);
    if (got < 0 || ::write(fds[1].get(), text, static_cast<size_t>(got)) != got) {
      (void)call->Fail(absl::InternalError("could not relay the memfd's contents"));
      continue;
    }
    UniqueFd answer(::memfd_create("reply", MFD_CLOEXEC));
    if (!answer || ::write(answer.get(), "reply fd", 8) != 8) {
      (void)call->Fail(absl::InternalError("memfd_create failed"));
      continue;
    }
    const int attach[] = {answer.get()};
    if (absl::Status attached = call->AttachReplyFds(attach); !attached.ok()) {
      (void)call->Fail(attached);
      continue;
    }
    (void)call->Reply({});
  }
}

absl::Status AnswerWithCaller(IncomingCall& call) {
  if (call.oneway()) return absl::OkStatus();
  const PeerCredentials& caller = call.caller();
  const uint32_t words[3] = {static_cast<uint32_t>(caller.pid), caller.uid, caller.gid};
  absl::StatusOr<std::span<std::byte>> out = call.ReserveReply(sizeof(words));
  if (!out.ok()) return call.Fail(out.status());
  std::memcpy(out->data(), words, sizeof(words));
  return call.Reply(out->first(sizeof(words)));
}

absl::StatusOr<PeerCredentials> AskCaller(ClientChannel& channel, absl::Time deadline) {
  absl::StatusOr<OutgoingCall> call = channel.BeginCall(8, deadline);
  if (!call.ok()) return call.status();
  StoreU64(call->buffer().data(), 0x77686f616d69ull);  // "whoami"
  absl::StatusOr<Reply> reply = channel.Call(*std::move(call), call->buffer().first(8), deadline);
  if (!reply.ok()) return reply.status();
  uint32_t words[3];
  if (reply->data().size() != sizeof(words)) {
    return absl::DataLossError(absl::StrCat("identity answer of ", reply->data().size(), " bytes"));
  }
  std::memcpy(words, reply->data().data(), sizeof(words));
  return PeerCredentials{static_cast<pid_t>(words[0]), words[1], words[2]};
}

absl::Status RunIdentityClient(ClientChannel& channel, int calls) {
  for (int i = 0; i < calls; ++i) {
    absl::StatusOr<PeerCredentials> seen = AskCaller(channel);
    if (!seen.ok()) return seen.status();
    if (seen->pid != ::getpid() || seen->uid != ::getuid() || seen->gid != ::getgid()) {
      return absl::DataLossError(absl::StrCat("call ", i, ": the server saw pid ", seen->pid,
                                              " uid ", seen->uid, " gid ", seen->gid));
    }
  }
  return absl::OkStatus();
}

}  // namespace sluice::testing
