// libFuzzer target: the object protocol as a hostile peer reaches it.
//
// Five surfaces, all served by the runtime's own pools in this process:
//   reverse     the reverse channel this process serves for the objects it
//               lent by handle (three Painters): calls addressed to any
//               handle and interface fold, Acquire, Release and Settle
//               (of the oneway ticket the lender opened) with any payload,
//               Clone of a handle, in any order. The fuzzer holds
//               the holder's end, as the peer would.
//   connection  a service connection served with ServeWithObjectProtocol:
//               Clone and OpenReverse (with no descriptors, with a memfd of
//               the input's bytes posing as a channel region, with a real
//               region, with too many) beside the service's own methods.
//   objects     a connection whose replies lend objects by handle (its
//               service, a LendingPainter, has a Lend method that attaches
//               fresh, repeated and long-lived local objects to its reply):
//               a script of steps, each a Lend (on the connection or on a
//               lent object), a Take of any interface field (one of the
//               host's own passed back, the caller's, raw values), an
//               Acquire (a raw control call), a Settle
//               of real, settled, unknown or no
//               tickets keeping lent, unlent and repeated handles, with
//               sizes right, short, ragged and too long, oneway or sync, a
//               Release of held and unheld handles, a call addressed to an
//               object word (any handle, any fold, the Painter methods,
//               Lend, Clone, control calls, raw method words), a Clone of a
//               handle or of the connection called through, or a reconnect
//               (with a small reply limit, so that a reply that lent objects
//               can fail after its ticket opened). The script keeps a model
//               of what the host lends and holds; at its end it settles and
//               releases the rest, and then every object lent must go while
//               the connection is still open, and every object at all once
//               it closed: a leak aborts.
//   replies     the other way round: the fuzzer is the service and the
//               runtime its caller, a PainterProxy that keeps its channel and
//               lends three Painters by handle on it. A script of steps, each
//               a Download the fuzzer answers with any reply word (none, a
//               ticket, a hold word, raw), a Blob of fields (handles lent,
//               handles of the caller's own passed back, raw values,
//               descriptor indices) or raw bytes, descriptors, now or after
//               the caller gave up; the caller takes each field as an object
//               (and calls it), as its own (TakeLocal), or as a descriptor,
//               and keeps or drops what it took and the Response. At the end
//               every ticket must have been settled once, every handle kept
//               released as often as it was kept, and nothing else released;
//               TakeLocal must find exactly the object lent under a handle.
//   passes      objects the holder passes in its calls on a reverse channel
//               (HolderObjects): the fuzzer is the holder and the service
//               of the connection the channel was opened on; the runtime
//               lends three KeepingPainters on it. A script of steps, each a
//               call on one of them, sync or oneway under any ticket,
//               passing a handle of the fuzzer's, one of the runtime's
//               passed back or a raw value, which the handler takes (as a
//               proxy, as its own), calls and keeps as the step says; the
//               Acquire keeping costs is granted or refused as it says; the
//               reply may lend an object on the reverse channel, whose
//               ticket the fuzzer settles keeping it or not, now or at the
//               end. Every oneway ticket must be settled once, keeping only
//               handles its call passed; every hold released; only passed
//               handles called or acquired; and what replies lent must go
//               once their tickets are settled and their holds released.
// Every input must end in a reply or an error; a call that outlives its
// deadline is a hang and aborts. A reverse channel or connection that the
// host closed as malformed is made again for the next input.
//
// Input: byte 0 flags (bit 0 surface: 0 reverse, 1 connection; with bit 7
// also set, the objects surface: bits 1-2 its first reply limit, then the
// script's steps, see ObjectScript; bit 7 alone, the replies surface, see
// ReplyScript::Step; bits 4-6 set and bits 0 and 7 clear, the passes
// surface, see PassScript::Step). Otherwise bit 1 oneway; bits 2-3 how
// to address the call; bits 4-6 which descriptors go with it; byte 1 a
// handle or method pick, bytes 2-17 an interface word and method word used
// when bits 2-3 say raw, then the request bytes.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/time/clock.h"
#include "ipc/channel/channel_region.h"
#include "ipc/channel/client_channel.h"
#include "ipc/rpc/object.h"
#include "ipc/rpc/object_wire.h"
#include "ipc/rpc/server_pool.h"
#include "ipc/rpc/stub.h"
#include "ipc/socket/unix_socket.h"
#include "tests/rpc/kitchen_sink_service.h"
#include "tests/testing/channel_pair.h"

namespace {

namespace rpc = ::sluice::rpc;
namespace sink = ::sluice::test::sink;
namespace wire = ::sluice::rpc::object_wire;

constexpr absl::Duration kPatience = absl::Seconds(5);
constexpr int kLent = 3;

// Handlers that wait by design (Hang never answers, Sleep sleeps as asked)
// are for the deadline tests, not for a fuzzer that treats a wait as a hang.
bool Waits(uint64_t method) {
  const uint32_t id = rpc::MethodIdOf(method);
  return id == rpc::MethodIdOf(sink::PainterInterface::kHang) ||
         id == rpc::MethodIdOf(sink::PainterInterface::kSleep);
}

// Methods whose cost is the size they are asked for (a Download or Produce
// of up to 64 MiB), which a script's raw calls leave to the other surfaces.
bool Heavy(uint64_t method) {
  const uint32_t id = rpc::MethodIdOf(method);
  return id == rpc::MethodIdOf(sink::PainterInterface::kDownload) ||
         id == rpc::MethodIdOf(sink::PainterInterface::kProduce);
}

[[noreturn]] void Hung(const absl::Status& status) {
  std::fprintf(stderr, "a call was not answered: %s\n", std::string(status.message()).c_str());
  std::abort();
}

// The lender side: three Painters lent by handle on `primary`, whose server
// end this fuzzer plays to take the reverse channel's holder end.
struct Lender {
  sluice::testing::LocalPair primary;
  std::shared_ptr<rpc::ExportLink> link;
  std::vector<rpc::ExportLink::Loan> loans;
  std::shared_ptr<rpc::RemoteObject> holder;

  ~Lender() {
    for (const auto& loan : loans) rpc::ExportLink::EndLoan(loan);
  }
};

// The holder's end of the reverse channel an OpenReverse hands over, as the
// fuzzer takes it in the holder's place.
std::shared_ptr<rpc::RemoteObject> AdoptReverseEnds(sluice::IncomingCall& call) {
  std::vector<sluice::UniqueFd> fds = call.TakeFds();
  if (fds.size() != 2) std::abort();
  auto holder = rpc::RemoteObject::Adopt(rpc::ObjectFds{std::move(fds[0]), std::move(fds[1])});
  if (!holder.ok()) std::abort();
  return *std::move(holder);
}

std::unique_ptr<Lender> MakeLender(sluice::PeerWatcher& watcher) {
  auto lender = std::make_unique<Lender>();
  lender->primary = *sluice::testing::MakeLocalPair(watcher);
  lender->link = rpc::ExportLink::Create(lender->primary.client.get());
  // The first loan opens the reverse channel: a synchronous OpenReverse on
  // primary, answered here with the holder's end adopted.
  std::thread answer([&lender] {
    auto call = lender->primary.server->Receive(absl::Now() + kPatience);
    if (!call.ok()) Hung(call.status());
    lender->holder = AdoptReverseEnds(*call);
    (void)call->Reply({});
  });
  for (int i = 0; i < kLent; ++i) {
    auto loan = lender->link->Lend(std::make_shared<sluice::testing::PainterService>(),
                                   absl::Now() + kPatience);
    if (!loan.ok()) std::abort();
    lender->loans.push_back(*std::move(loan));
  }
  answer.join();
  // And one lent as a oneway call lends it, under a ticket (the table's
  // first: 1) that the holder's Settle ends.
  rpc::ProxyBase proxy(rpc::ProxyTarget{.channel = lender->primary.client.get(),
                                        .owner = nullptr,
                                        .handle = 0,
                                        .reference = nullptr,
                                        .exports = lender->link});
  rpc::Attachments oneway(proxy, {}, /*oneway=*/true);
  if (!oneway
           .AddObject(std::make_shared<sluice::testing::PainterService>(), 0,
                      absl::Now() + kPatience)
           .ok() ||
      rpc::internal::LendUnderTicket(oneway) == 0) {
    std::abort();
  }
  return lender;
}

struct Harness {
  std::unique_ptr<sluice::PeerWatcher> watcher = *sluice::PeerWatcher::Create();
  std::unique_ptr<Lender> lender;
  rpc::ServerPool pool;
  std::unique_ptr<sluice::ClientChannel> connection;
  int connection_calls = 0;
};

void Connect(Harness& h) {
  h.connection.reset();
  auto pair = *sluice::testing::MakeLocalPair(*h.watcher);
  h.connection = std::move(pair.client);
  if (!h.pool
           .Add(std::move(pair.server),
                rpc::ServeWithObjectProtocol(std::make_shared<sluice::testing::PainterService>()))
           .ok()) {
    std::abort();
  }
  h.connection_calls = 0;
}

// Descriptors to send with a call, owned until it is made.
std::vector<sluice::UniqueFd> Descriptors(int pick, std::span<const uint8_t> bytes) {
  std::vector<sluice::UniqueFd> fds;
  auto socket = [] {
    auto pair = sluice::SeqPacketPair();
    return pair.ok() ? std::move(pair->first) : sluice::UniqueFd();
  };
  switch (pick) {
    case 1: {  // The input's bytes posing as a channel region, and a socket.
      sluice::UniqueFd memfd(::memfd_create("fuzz-region", MFD_CLOEXEC | MFD_ALLOW_SEALING));
      if (!bytes.empty() && ::write(memfd.get(), bytes.data(), bytes.size()) < 0) std::abort();
      // Sealed as a region must be, so its header, not its seals, is judged.
      (void)::fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
      fds.push_back(std::move(memfd));
      fds.push_back(socket());
      break;
    }
    case 2: {  // A well-formed region nobody serves, and a socket.
      auto region = sluice::CreateChannelRegion();
      if (!region.ok()) std::abort();
      fds.push_back(sluice::UniqueFd(::dup(region->fd())));
      fds.push_back(socket());
      break;
    }
    case 3:  // One descriptor too many.
      for (int i = 0; i < 3; ++i) fds.push_back(socket());
      break;
    case 4:  // Two descriptors of the wrong kind.
      fds.push_back(socket());
      fds.push_back(sluice::UniqueFd(::memfd_create("fuzz-liveness", MFD_CLOEXEC)));
      break;
    default:
      break;
  }
  return fds;
}

// Makes one call; DATA_LOSS from the host means it closed the channel.
void CallOn(sluice::ClientChannel& channel, const sluice::CallHeader& header, bool oneway,
            std::span<const uint8_t> body, const std::vector<sluice::UniqueFd>& fds) {
  auto call = channel.BeginCall(body.empty() ? 1 : body.size(), absl::Now() + kPatience);
  if (!call.ok()) {
    if (absl::IsDeadlineExceeded(call.status())) Hung(call.status());
    return;
  }
  if (!body.empty()) std::memcpy(call->buffer().data(), body.data(), body.size());
  call->header() = header;
  std::vector<int> raw;
  for (const auto& fd : fds) raw.push_back(fd.get());
  if (!call->AttachFds(raw).ok()) return;
  const auto message = call->buffer().first(body.size());
  if (oneway) {
    (void)channel.Send(*std::move(call), message);
    return;
  }
  auto reply = channel.Call(*std::move(call), message, absl::Now() + kPatience);
  if (!reply.ok() && absl::IsDeadlineExceeded(reply.status())) Hung(reply.status());
  // Descriptors in the reply (a Clone's) close here, ending that channel.
}

uint64_t PainterMethod(uint8_t pick) {
  constexpr uint64_t kMethods[] = {
      sink::PainterInterface::kSummarize, sink::PainterInterface::kEcho,
      sink::PainterInterface::kFail,      sink::PainterInterface::kNote,
      sink::PainterInterface::kTotal,     sink::PainterInterface::kUpload,
      sink::PainterInterface::kDownload,  sink::PainterInterface::kWhoAmI,
  };
  return kMethods[pick % std::size(kMethods)];
}

uint64_t ControlMethod(uint8_t pick) {
  switch (pick % 6) {
    case 0:
      return wire::kAcquireMethod;
    case 1:
      return wire::kReleaseMethod;
    case 2:
      return wire::kCloneMethod;
    case 3:
      return wire::kOpenReverseMethod;
    case 4:
      return wire::kSettleMethod;
    default:
      return uint64_t{pick} << 32 | pick;
  }
}

// --- The objects surface: objects lent in replies, on the connection --------

// LendingPainters alive, and of them those a Lend made to lend (fresh).
std::atomic<int64_t> g_painters{0};
std::atomic<int64_t> g_fresh{0};

// A Painter with one more method, Lend(Counter):Blob, whose handler lends
// local objects by handle in its reply (rpc::AttachObject). Request value:
// bits 0-2 how many, or, when bits 24-31 are 0xa5, one more than a reply
// lends by handle (the last goes as a dedicated channel); bits 3-4 which:
// 0 fresh ones, 1 one fresh object again and again, 2 this Painter's
// resident (the same object in every reply), 3 those three in turn; bit 5
// fail after attaching them; bits 8-14 the reply's padding, in 32-byte
// units, or KiB with bit 15 (to pass a reply limit, or spill). Reply data:
// the count, the field AttachObject returned for each (uint32 each), then
// the padding.
class LendingPainter final : public rpc::ServiceStub {
 public:
  static constexpr uint64_t kLendMethod =
      rpc::MethodWord(rpc::Fnv1a32("Lend"), rpc::Fnv1a32("Counter->Blob"));

  explicit LendingPainter(bool fresh) : fresh_(fresh) {
    g_painters.fetch_add(1);
    if (fresh_) g_fresh.fetch_add(1);
  }
  ~LendingPainter() override {
    if (fresh_) g_fresh.fetch_sub(1);
    g_painters.fetch_sub(1);
  }
  absl::string_view service_name() const override { return painter_.service_name(); }
  uint64_t interface_id() const override { return painter_.interface_id(); }

  static constexpr uint64_t kTakeMethod =
      rpc::MethodWord(rpc::Fnv1a32("Take"), rpc::Fnv1a32("Counter->Counter"));

  absl::Status Dispatch(sluice::IncomingCall& call, const rpc::CallContext& context) override {
    if (rpc::TargetInterface(call, context) == interface_id() &&
        rpc::MethodIdOf(call.header().method) == rpc::MethodIdOf(kLendMethod)) {
      return rpc::HandleCall<sink::Counter, sink::Blob>(
          call, context, kLendMethod, "fuzz.LendingPainter.Lend", lend_stats_,
          [this](const rpc::CallContext& c, const sink::Counter& r,
                 flatbuffers::FlatBufferBuilder& b) { return Lend(c, r, b); });
    }
    if (rpc::TargetInterface(call, context) == interface_id() &&
        rpc::MethodIdOf(call.header().method) == rpc::MethodIdOf(kTakeMethod)) {
      return rpc::HandleCall<sink::Counter, sink::Counter>(
          call, context, kTakeMethod, "fuzz.LendingPainter.Take", take_stats_,
          [](const rpc::CallContext& c, const sink::Counter& r, flatbuffers::FlatBufferBuilder& b) {
            return Take(c, r, b);
          });
    }
    return painter_.Dispatch(call, context);
  }

 private:
  absl::StatusOr<flatbuffers::Offset<sink::Blob>> Lend(const rpc::CallContext& context,
                                                       const sink::Counter& request,
                                                       flatbuffers::FlatBufferBuilder& reply) {
    const uint64_t value = request.value();
    const uint32_t count = (value >> 24) == 0xa5 ? wire::kMaxLoansPerTicket + 1 : value & 7;
    const uint32_t which = (value >> 3) & 3;
    const size_t padding = ((value >> 8) & 0x7f) * ((value & 0x8000) != 0 ? 1024 : 32);
    std::vector<uint32_t> words = {count};
    std::shared_ptr<LendingPainter> last;
    for (uint32_t i = 0; i < count; ++i) {
      std::shared_ptr<LendingPainter> object;
      switch (which == 3 ? i % 3 : which) {
        case 0:
          object = std::make_shared<LendingPainter>(/*fresh=*/true);
          break;
        case 1:
          object = last != nullptr ? last : std::make_shared<LendingPainter>(/*fresh=*/true);
          break;
        default:
          object = Resident();
          break;
      }
      last = object;
      absl::StatusOr<uint32_t> field = rpc::AttachObject(context, object);
      if (!field.ok()) return field.status();
      words.push_back(*field);
    }
    if ((value >> 5) & 1) return absl::AbortedError("Lend: failing after lending, as asked");
    uint8_t* out = nullptr;
    const size_t size = words.size() * sizeof(uint32_t);
    auto data = reply.CreateUninitializedVector(size + padding, &out);
    std::memcpy(out, words.data(), size);
    std::memset(out + size, 0, padding);
    return sink::CreateBlob(reply, data);
  }

  // Take(field): the peer's value as an interface field, taken as one of
  // ours (TakeLocal) and as a proxy, both dropped at once; errors are the
  // expected answer to most values and stay here.
  static absl::StatusOr<flatbuffers::Offset<sink::Counter>> Take(
      const rpc::CallContext& context, const sink::Counter& request,
      flatbuffers::FlatBufferBuilder& reply) {
    const uint64_t field = request.value();
    const bool local = rpc::TakeLocal<LendingPainter>(context, field).ok();
    const bool remote = rpc::TakeObject<sink::PainterProxy>(context, field).ok();
    return sink::CreateCounter(reply, uint64_t{local} | uint64_t{remote} << 1);
  }

  std::shared_ptr<LendingPainter> Resident() {
    std::lock_guard lock(mu_);
    if (resident_ == nullptr) resident_ = std::make_shared<LendingPainter>(/*fresh=*/false);
    return resident_;
  }

  const bool fresh_;
  sluice::testing::PainterService painter_;
  rpc::MethodStats lend_stats_;
  rpc::MethodStats take_stats_;
  std::mutex mu_;
  std::shared_ptr<LendingPainter> resident_;
};

[[noreturn]] void Wrong(const char* what) {
  std::fprintf(stderr, "object_protocol_fuzzer: %s (%lld LendingPainters alive, %lld lent ones)\n",
               what, static_cast<long long>(g_painters.load()),
               static_cast<long long>(g_fresh.load()));
  std::abort();
}

// Waits (bounded) for `done`, which the host owes us; a finding if it never
// comes.
template <typename Done>
void Eventually(Done done, const char* what) {
  const absl::Time deadline = absl::Now() + kPatience;
  while (!done()) {
    if (absl::Now() > deadline) Wrong(what);
    absl::SleepFor(absl::Microseconds(50));
  }
}

// One call on `channel`: whether it went, and its reply if it has one.
struct Outcome {
  bool sent = false;
  std::optional<absl::StatusOr<sluice::Reply>> reply;
};

Outcome Exchange(sluice::ClientChannel& channel, const sluice::CallHeader& header, bool oneway,
                 std::span<const uint8_t> body) {
  Outcome outcome;
  auto call = channel.BeginCall(body.empty() ? 1 : body.size(), absl::Now() + kPatience);
  if (!call.ok()) {
    if (absl::IsDeadlineExceeded(call.status())) Hung(call.status());
    return outcome;
  }
  if (!body.empty()) std::memcpy(call->buffer().data(), body.data(), body.size());
  call->header() = header;
  const auto message = call->buffer().first(body.size());
  if (oneway) {
    outcome.sent = channel.Send(*std::move(call), message).ok();
    return outcome;
  }
  outcome.sent = true;
  outcome.reply = channel.Call(*std::move(call), message, absl::Now() + kPatience);
  if (!outcome.reply->ok() && absl::IsDeadlineExceeded(outcome.reply->status())) {
    Hung(outcome.reply->status());
  }
  return outcome;
}

template <typename Build>
std::vector<uint8_t> Encode(Build build) {
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(build(fbb));
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

std::vector<uint8_t> CounterRequest(uint64_t value) {
  return Encode([&](auto& fbb) { return sink::CreateCounter(fbb, value); });
}
std::vector<uint8_t> EmptyRequest() {
  return Encode([](auto& fbb) { return sink::CreateEmpty(fbb); });
}

// The fields a Lend reply lists (see LendingPainter), if it is one.
std::vector<uint32_t> LentFields(const sluice::Reply& reply) {
  const auto bytes = reply.data();
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  flatbuffers::Verifier verifier(data, bytes.size());
  if (!verifier.VerifyBuffer<sink::Blob>(nullptr)) return {};
  const sink::Blob* blob = flatbuffers::GetRoot<sink::Blob>(data);
  if (blob->data() == nullptr || blob->data()->size() < sizeof(uint32_t)) return {};
  const uint8_t* words = blob->data()->data();
  uint32_t count = 0;
  std::memcpy(&count, words, sizeof(count));
  count = std::min<uint32_t>(count, blob->data()->size() / sizeof(uint32_t) - 1);
  std::vector<uint32_t> fields(count);
  if (count > 0) std::memcpy(fields.data(), words + sizeof(uint32_t), count * sizeof(uint32_t));
  return fields;
}

// A connection of the objects surface, and what the host lends and holds on
// it as this client's calls made it (which the host must agree with).
struct ObjectConnection {
  std::unique_ptr<sluice::ClientChannel> channel;
  struct Ticket {
    uint32_t ticket = 0;
    std::vector<uint32_t> lent;
    bool open = true;
  };
  std::vector<Ticket> tickets;    // Every reply ticket seen here, settled ones too.
  std::vector<uint32_t> handles;  // Every handle lent here, in order.
  absl::flat_hash_map<uint32_t, uint32_t> holds;
  // Sent something the host closes the connection for: the model says
  // nothing any more.
  bool doomed = false;
  // Settled a ticket no reply had given yet: the host closes the connection
  // for it, or, if a reply opened that ticket first, settles it (and then
  // the model's settle of the same ticket closes it).
  bool guessed = false;
};

// Small arenas: a connection per script is cheap to make, and a large
// reply (Lend's padding) spills to a memfd of its own.
constexpr sluice::channel_layout::Geometry kObjectsGeometry{
    .slot_count = 16, .request_arena_size = 64 * 1024, .reply_arena_size = 64 * 1024};

// The objects surface. A script is a sequence of steps, each an op byte
// (op & 7 says which: 0 and 7 Lend, 1 Settle, 2 Release, 3 a call to an
// object word, 4 Clone, 5 reconnect, 6 another control call; the other
// bits vary it) and the bytes it reads (see each step); missing bytes read
// as 0. A step on a connection the host closed first opens another.
class ObjectScript {
 public:
  // Bounds on what one script costs, so that the slowest stays far below
  // the fuzzer's timeout: steps, Lends of more than a reply lends by handle
  // (1024 objects each), clones, connections.
  static constexpr int kMaxSteps = 64;
  static constexpr int kMaxBigLends = 2;
  static constexpr int kMaxClones = 16;
  static constexpr int kMaxConnections = 16;

  ObjectScript(Harness& h, std::span<const uint8_t> steps) : h_(h), in_(steps) {}

  // Runs the script on a connection of its own, then closes it: the pool
  // must drop it, and every object made for it go.
  void Run(uint8_t flags) {
    Open(ReplyLimit(flags >> 1));
    for (int step = 0; step < kMaxSteps && at_ < in_.size(); ++step) Step();
    Finish();
    conn_.channel.reset();
    Eventually([&] { return ended_->load() == made_; },
               "the pool never dropped a connection this client closed");
    Eventually([&] { return g_painters.load() == 0 && References() <= references_; },
               "objects of a connection outlive it (and every clone of them)");
  }

 private:
  uint8_t Byte() { return at_ < in_.size() ? in_[at_++] : 0; }
  // A Lend's request value within the script's budget.
  uint32_t Budgeted(uint32_t value) {
    if ((value >> 24) == 0xa5 && ++big_lends_ > kMaxBigLends) value &= 0x00ffffff;
    return value;
  }
  uint32_t Word() {
    uint32_t word = 0;
    for (int i = 0; i < 4; ++i) word |= uint32_t{Byte()} << (8 * i);
    return word;
  }
  std::vector<uint8_t> Bytes(size_t n) {
    std::vector<uint8_t> bytes;
    for (size_t i = 0; i < n && at_ < in_.size(); ++i) bytes.push_back(Byte());
    return bytes;
  }
  static uint64_t ReplyLimit(uint8_t pick) {
    switch (pick & 3) {
      case 1:
        return 4096;
      case 2:
        return 64 * 1024;
      default:
        return sluice::ChannelOptions{}.max_message_size;
    }
  }

  void Open(uint64_t reply_limit) {
    sluice::ChannelOptions options;
    options.max_message_size = reply_limit;
    auto pair = *sluice::testing::MakeLocalPair(*h_.watcher, kObjectsGeometry, options);
    conn_ = ObjectConnection();
    conn_.channel = std::move(pair.client);
    // As a Connection<> does: this client takes objects in replies by handle.
    conn_.channel->AnnounceFeatures(wire::kTakesReplyHandles);
    ++made_;
    if (!h_.pool
             .Add(std::move(pair.server),
                  rpc::ServeWithObjectProtocol(std::make_shared<LendingPainter>(/*fresh=*/false)),
                  [ended = ended_](absl::Status) { ended->fetch_add(1); })
             .ok()) {
      std::abort();
    }
  }

  // A handle: p < 0x80 one of `preferred` (else of every handle lent
  // here); then small numbers, lent or not; then edge values.
  uint32_t Handle(uint8_t p, std::span<const uint32_t> preferred) {
    if (p < 0x80) {
      if (!preferred.empty()) return preferred[p % preferred.size()];
      if (!conn_.handles.empty()) return conn_.handles[p % conn_.handles.size()];
      return p & 7;
    }
    if (p < 0xe0) return p & 0x3f;
    const uint32_t next = conn_.handles.empty()
                              ? 1
                              : *std::max_element(conn_.handles.begin(), conn_.handles.end()) + 1;
    const uint32_t edges[] = {0, next, wire::kMaxHandle, wire::kHandleFlag | 1, 0xffffffff};
    return edges[p % std::size(edges)];
  }
  uint32_t Handle(uint8_t p) { return Handle(p, conn_.handles); }

  // One call on the connection; a reply with a ticket is recorded.
  Outcome Call(const sluice::CallHeader& header, bool oneway, std::span<const uint8_t> body) {
    Outcome outcome = Exchange(*conn_.channel, header, oneway, body);
    // A granted Acquire's word is its hold (ModelAcquire checks it).
    if (outcome.reply.has_value() && outcome.reply->ok() && (*outcome.reply)->word() != 0 &&
        !(header.interface_id == wire::kControlInterfaceId &&
          header.method == wire::kAcquireMethod)) {
      const uint64_t word = (*outcome.reply)->word();
      ObjectConnection::Ticket ticket;
      ticket.ticket = static_cast<uint32_t>(word);
      if (!wire::IsTicketWord(word)) Wrong("a reply word that is no ticket");
      for (uint32_t field : LentFields(**outcome.reply)) {
        if (!wire::IsHandleField(field)) continue;  // A dedicated channel (closes with the reply).
        ticket.lent.push_back(wire::HandleOfField(field));
        conn_.handles.push_back(wire::HandleOfField(field));
      }
      conn_.tickets.push_back(std::move(ticket));
    }
    if (!outcome.sent && oneway && !conn_.channel->health().ok()) conn_.doomed = true;
    return outcome;
  }

  // What a oneway Settle or Release the host received does to the model.
  void ModelSettle(std::span<const uint8_t> body) {
    if (body.size() % 4 != 0 || body.size() < 4 ||
        body.size() > (wire::kMaxLoansPerTicket + 1) * sizeof(uint32_t)) {
      conn_.doomed = true;
      return;
    }
    std::vector<uint32_t> words(body.size() / 4);
    std::memcpy(words.data(), body.data(), body.size());
    auto ticket = std::find_if(conn_.tickets.begin(), conn_.tickets.end(),
                               [&](const auto& t) { return t.open && t.ticket == words[0]; });
    if (ticket == conn_.tickets.end()) {
      conn_.doomed = true;
      // A number no reply gave yet: a reply still on its way may open it
      // before the host reads this (oneway) Settle, which then settles it.
      if (std::none_of(conn_.tickets.begin(), conn_.tickets.end(),
                       [&](const auto& t) { return t.ticket == words[0]; })) {
        conn_.guessed = true;
      }
      return;
    }
    ticket->open = false;
    std::vector<uint32_t> lent = ticket->lent;
    for (size_t i = 1; i < words.size(); ++i) {
      auto it = std::find(lent.begin(), lent.end(), words[i]);
      if (it == lent.end()) {
        conn_.doomed = true;
        return;
      }
      lent.erase(it);
      ++conn_.holds[words[i]];
    }
  }
  // A granted Acquire is one more hold (of a handle still lent); a
  // malformed one closes the connection.
  void ModelAcquire(const Outcome& outcome, std::span<const uint8_t> body) {
    if (body.size() != sizeof(uint32_t)) {
      if (outcome.sent) conn_.doomed = true;
      return;
    }
    if (!outcome.reply.has_value() || !outcome.reply->ok()) return;
    uint32_t handle = 0;
    std::memcpy(&handle, body.data(), sizeof(handle));
    // Its word names the hold, for a holder that gave up to give it back.
    if ((*outcome.reply)->word() != wire::HoldWord(handle)) std::abort();
    ++conn_.holds[handle];
  }
  void ModelRelease(std::span<const uint8_t> body) {
    if (body.size() % 4 != 0 || body.size() > wire::kMaxReleasesPerCall * sizeof(uint32_t)) {
      conn_.doomed = true;
      return;
    }
    for (size_t i = 0; i < body.size(); i += 4) {
      uint32_t handle = 0;
      std::memcpy(&handle, body.data() + i, 4);
      auto it = conn_.holds.find(handle);
      if (it == conn_.holds.end() || it->second == 0) {
        conn_.doomed = true;
        return;
      }
      if (--it->second == 0) conn_.holds.erase(it);
    }
  }
  void Control(uint64_t method, bool oneway, std::span<const uint8_t> body) {
    const Outcome outcome = Call({wire::kControlInterfaceId, method, 0}, oneway, body);
    if (!oneway && method == wire::kAcquireMethod && !conn_.doomed)
      return ModelAcquire(outcome, body);
    if (!oneway || !outcome.sent || conn_.doomed) return;
    if (method == wire::kSettleMethod) ModelSettle(body);
    if (method == wire::kReleaseMethod) ModelRelease(body);
  }

  void Step() {
    const uint8_t op = Byte();
    if (!conn_.channel->health().ok()) Reconnect(0);  // The host closed it.
    switch (op & 7) {
      case 0:
        return Lend(op);
      case 7:
        return Take(op);
      case 1:
        return Settle(op);
      case 2:
        return Release(op);
      case 3:
        return CallObject(op);
      case 4:
        return Clone(op);
      case 5:
        return Reconnect(op >> 3);
      default:
        return RawControl(op);
    }
  }

  // [op][value u32][handle pick if bit 3]: Lend on the connection, or on a
  // lent object (bit 3); oneway (bit 4) is the wrong kind.
  void Lend(uint8_t op) {
    const uint32_t value = Word();
    const uint64_t target =
        (op & 8) != 0 ? wire::ObjectWord(Handle(Byte()), sink::PainterInterface::kInterfaceId)
                      : sink::PainterInterface::kInterfaceId;
    (void)Call({target, LendingPainter::kLendMethod, 0}, (op & 16) != 0,
               CounterRequest(Budgeted(value)));
  }

  // [op][handle pick][u32 if raw]: Take of an interface field, on the
  // connection or on a lent object (bit 3): bits 4-5 the field: a handle of
  // ours passed back, a handle of the caller's, the raw u32, a descriptor
  // index.
  void Take(uint8_t op) {
    const uint32_t handle = Handle(Byte());
    uint64_t field = 0;
    switch ((op >> 4) & 3) {
      case 0:
        field = wire::ReturnedField(handle & wire::kMaxReturnedHandle);
        break;
      case 1:
        field = wire::HandleField(handle);
        break;
      case 2:
        field = Word();
        break;
      default:
        field = handle & 63;
        break;
    }
    const uint64_t target =
        (op & 8) != 0 ? wire::ObjectWord(Handle(Byte()), sink::PainterInterface::kInterfaceId)
                      : sink::PainterInterface::kInterfaceId;
    (void)Call({target, LendingPainter::kTakeMethod, 0}, false, CounterRequest(field));
  }

  // [op][ticket pick][count][handle picks...]: bit 3 sync; bits 4-5 the
  // ticket: a real one (open or settled), an unknown one, four input
  // bytes, or none; bits 6-7 the size: right, ragged, too long, too short.
  void Settle(uint8_t op) {
    const uint8_t ticket_pick = Byte();
    const ObjectConnection::Ticket* real =
        conn_.tickets.empty() ? nullptr : &conn_.tickets[ticket_pick % conn_.tickets.size()];
    std::vector<uint32_t> words;
    switch ((op >> 4) & 3) {
      case 0:
        words.push_back(real != nullptr ? real->ticket : ticket_pick + 1);
        break;
      case 1:
        words.push_back(0x10000u + ticket_pick);
        break;
      case 2:
        words.push_back(Word());
        break;
      default:
        break;
    }
    const std::span<const uint32_t> lent =
        real != nullptr ? std::span<const uint32_t>(real->lent) : std::span<const uint32_t>();
    const uint8_t count = Byte() % 16;
    for (uint8_t i = 0; i < count; ++i) words.push_back(Handle(Byte(), lent));
    std::vector<uint8_t> body(words.size() * 4);
    if (!words.empty()) std::memcpy(body.data(), words.data(), body.size());
    Mangle(body, op >> 6, wire::kMaxLoansPerTicket + 2);
    Control(wire::kSettleMethod, (op & 8) == 0, body);
  }

  // [op][count][handle picks...]: bit 3 sync; bits 4-5 the size: right,
  // ragged, too long, empty.
  void Release(uint8_t op) {
    const uint8_t count = Byte() % 16;
    std::vector<uint8_t> body;
    for (uint8_t i = 0; i < count; ++i) {
      const uint32_t handle = Handle(Byte());
      const auto* bytes = reinterpret_cast<const uint8_t*>(&handle);
      body.insert(body.end(), bytes, bytes + 4);
    }
    const uint8_t size = (op >> 4) & 3;
    if (size == 3) body.clear();
    Mangle(body, size, wire::kMaxReleasesPerCall + 1);
    Control(wire::kReleaseMethod, (op & 8) == 0, body);
  }

  // 1: 1-3 bytes more; 2: `too_many` words (repeating the first);
  // 3 (Settle only): fewer than 4 bytes.
  void Mangle(std::vector<uint8_t>& body, int how, size_t too_many) {
    if (how == 1) {
      body.resize(body.size() + 1 + Byte() % 3, 0xa5);
    } else if (how == 2) {
      uint32_t first = 1;
      if (body.size() >= 4) std::memcpy(&first, body.data(), 4);
      while (body.size() < too_many * 4) {
        const auto* bytes = reinterpret_cast<const uint8_t*>(&first);
        body.insert(body.end(), bytes, bytes + 4);
      }
    } else if (how == 3) {
      body.resize(std::min<size_t>(body.size(), Byte() % 4));
    }
  }

  // [op][handle pick][mode][...]: a call addressed to an object word. Bits
  // 3-4 the fold: Painter's, the control interface's, two input bytes,
  // Calculator's; bits 5-7 the method: Lend, Total, WhoAmI, Note, Echo,
  // Clone, a raw method word (8 bytes, then a length byte and the body), a
  // control method (pick byte, length byte, body). Mode bit 0: the other
  // kind (oneway for sync, sync for oneway).
  void CallObject(uint8_t op) {
    const uint32_t handle = Handle(Byte());
    const bool flip = (Byte() & 1) != 0;
    uint64_t fold_of = sink::PainterInterface::kInterfaceId;
    uint64_t word = 0;
    switch ((op >> 3) & 3) {
      case 1:
        fold_of = wire::kControlInterfaceId;
        break;
      case 2: {
        const uint64_t fold = Byte() | uint64_t{Byte()} << 8;
        word = (wire::kObjectTag << 48) | (fold << 32) | handle;
        break;
      }
      case 3:
        fold_of = sink::CalculatorInterface::kInterfaceId;
        break;
      default:
        break;
    }
    if (word == 0) word = wire::ObjectWord(handle, fold_of);
    uint64_t method = 0;
    bool oneway = false;
    std::vector<uint8_t> body;
    switch (op >> 5) {
      case 0:
        method = LendingPainter::kLendMethod;
        body = CounterRequest(Budgeted(Word()));
        break;
      case 1:
        method = sink::PainterInterface::kTotal;
        body = EmptyRequest();
        break;
      case 2:
        method = sink::PainterInterface::kWhoAmI;
        body = EmptyRequest();
        break;
      case 3:
        method = sink::PainterInterface::kNote;
        oneway = true;
        body = CounterRequest(Word());
        break;
      case 4: {
        const int64_t number = static_cast<int32_t>(Word());
        method = sink::PainterInterface::kEcho;
        body = Encode([&](auto& fbb) {
          sink::EchoRequestBuilder echo(fbb);
          echo.add_number(number);
          return echo.Finish();
        });
        break;
      }
      case 5:
        method = wire::kCloneMethod;
        break;
      case 6: {
        method = Word() | uint64_t{Word()} << 32;
        body = Bytes(Byte());
        break;
      }
      default:
        method = ControlMethod(Byte());
        if (Byte() & 1) method = wire::kSettleMethod;
        oneway = true;
        body = Bytes(Byte());
        break;
    }
    if (Waits(method) || Heavy(method)) return;
    if (rpc::MethodIdOf(method) == rpc::MethodIdOf(LendingPainter::kLendMethod)) {
      return;  // A raw Lend: its request is the input's, not budgeted.
    }
    (void)Call({word, method, 0}, oneway != flip, body);
  }

  // [op][handle pick][value u32]: Clone of a handle (or, bit 3, of the
  // connection's own object); bit 4 oneway (the wrong kind); bit 5 adopt
  // the clone and call it: bits 6-7 WhoAmI, Lend(value), Clone of the
  // clone, Lend(value) and a Settle keeping all it lent.
  void Clone(uint8_t op) {
    const uint64_t target = (op & 8) != 0
                                ? wire::kControlInterfaceId
                                : wire::ObjectWord(Handle(Byte()), wire::kControlInterfaceId);
    const uint32_t value = Word();
    if (++clones_ > kMaxClones) return;
    Outcome outcome = Call({target, wire::kCloneMethod, 0}, (op & 16) != 0, {});
    if ((op & 32) == 0 || !outcome.reply.has_value() || !outcome.reply->ok()) return;
    std::vector<sluice::UniqueFd> fds = (*outcome.reply)->TakeFds();
    if (fds.size() != 2) Wrong("a Clone answered without its two descriptors");
    auto clone = rpc::RemoteObject::Adopt(rpc::ObjectFds{std::move(fds[0]), std::move(fds[1])});
    if (!clone.ok()) Wrong("a Clone's descriptors are no object channel");
    sluice::ClientChannel& channel = (*clone)->channel();
    const uint64_t painter = sink::PainterInterface::kInterfaceId;
    switch (op >> 6) {
      case 0:
        (void)Exchange(channel, {painter, sink::PainterInterface::kWhoAmI, 0}, false,
                       EmptyRequest());
        break;
      case 2:
        (void)Exchange(channel, {wire::kControlInterfaceId, wire::kCloneMethod, 0}, false, {});
        break;
      default: {
        Outcome lent = Exchange(channel, {painter, LendingPainter::kLendMethod, 0}, false,
                                CounterRequest(Budgeted(value)));
        if ((op >> 6) != 3 || !lent.reply.has_value() || !lent.reply->ok()) break;
        const uint64_t ticket = (*lent.reply)->word();
        if (ticket == 0) break;
        std::vector<uint32_t> words = {static_cast<uint32_t>(ticket)};
        for (uint32_t field : LentFields(**lent.reply)) {
          if (wire::IsHandleField(field)) words.push_back(wire::HandleOfField(field));
        }
        lent.reply.reset();
        std::vector<uint8_t> body(words.size() * 4);
        std::memcpy(body.data(), words.data(), body.size());
        (void)Exchange(channel, {wire::kControlInterfaceId, wire::kSettleMethod, 0}, true, body);
        break;
      }
    }
    // The clone closes here, and with it everything it holds.
  }

  // [op][method pick][length][body]: a control call on the connection;
  // bit 3 sync. The pick: ControlMethod's, or (bit 0 of the length byte
  // set and pick odd) Settle.
  void RawControl(uint8_t op) {
    const uint8_t pick = Byte();
    const uint8_t length = Byte();
    uint64_t method = ControlMethod(pick);
    if ((pick & 1) != 0 && (length & 1) != 0) method = wire::kSettleMethod;
    if (method == wire::kOpenReverseMethod) return;  // The connection surface's.
    Control(method, (op & 8) == 0, Bytes(length));
  }

  // Ends this connection the polite way (Finish) and opens another.
  void Reconnect(uint8_t limit) {
    if (++connections_ > kMaxConnections) return;
    Finish();
    conn_.channel.reset();
    Open(ReplyLimit(limit));
  }

  // Objects this process lends or serves on dedicated channels; those of
  // the other surfaces stay put (or go) while a script runs.
  static size_t References() { return rpc::ObjectHost::Get().reference_count(); }

  // Ends what this connection did, so that nothing is cut off by its close
  // (the host serves oneway calls after the client saw them go): a doomed
  // one must be closed by the host; otherwise every open ticket is settled
  // keeping nothing and every hold released, and then no object may stay
  // lent while the connection is still open. (After a guessed ticket, the
  // host closes the connection or the model's own Settle of it does.)
  void Finish() {
    sluice::ClientChannel& channel = *conn_.channel;
    if (!channel.health().ok()) return;
    if (conn_.doomed && !conn_.guessed) {
      Eventually([&] { return !channel.health().ok(); },
                 "the host kept a connection whose client sent a malformed Settle or Release, "
                 "an unknown ticket, a handle its ticket did not lend, or one it did not hold");
      return;
    }
    for (const ObjectConnection::Ticket& ticket : conn_.tickets) {
      if (!ticket.open) continue;
      const auto* bytes = reinterpret_cast<const uint8_t*>(&ticket.ticket);
      if (!Exchange(*conn_.channel, {wire::kControlInterfaceId, wire::kSettleMethod, 0}, true,
                    std::span(bytes, 4))
               .sent) {
        return;
      }
    }
    std::vector<uint32_t> held;
    for (const auto& [handle, holds] : conn_.holds) held.insert(held.end(), holds, handle);
    for (size_t i = 0; i < held.size(); i += wire::kMaxReleasesPerCall) {
      const size_t n = std::min<size_t>(held.size() - i, wire::kMaxReleasesPerCall);
      const auto* bytes = reinterpret_cast<const uint8_t*>(held.data() + i);
      if (!Exchange(*conn_.channel, {wire::kControlInterfaceId, wire::kReleaseMethod, 0}, true,
                    std::span(bytes, n * 4))
               .sent) {
        return;
      }
    }
    Eventually(
        [&] {
          return (g_fresh.load() == 0 && References() <= references_) || !channel.health().ok();
        },
        "objects stay lent on an open connection whose tickets are all settled and "
        "whose holds are all released");
  }

  Harness& h_;
  std::span<const uint8_t> in_;
  size_t at_ = 0;
  ObjectConnection conn_;
  const size_t references_ = References();
  int big_lends_ = 0;
  int clones_ = 0;
  int connections_ = 1;
  int made_ = 0;
  std::shared_ptr<std::atomic<int>> ended_ = std::make_shared<std::atomic<int>>(0);
};

// --- The replies surface: a hostile service answering the runtime -----------

// The services the replies and passes surfaces play, for the runtime as the
// client of their connection.

// The request as 4-byte words (handles, tickets), ragged tail dropped.
std::vector<uint32_t> RequestWords(const sluice::IncomingCall& call) {
  const std::span<const std::byte> request = call.request();
  std::vector<uint32_t> words(request.size() / sizeof(uint32_t));
  if (!words.empty()) std::memcpy(words.data(), request.data(), words.size() * sizeof(uint32_t));
  return words;
}

absl::Status ReplyWith(sluice::IncomingCall& call, std::span<const uint8_t> bytes) {
  absl::StatusOr<std::span<std::byte>> space = call.ReserveReply(std::max<size_t>(bytes.size(), 1));
  if (!space.ok()) {
    (void)call.Fail(space.status());
    return space.status();  // Failed: whatever the reply word said, it carries nothing.
  }
  if (!bytes.empty()) std::memcpy(space->data(), bytes.data(), bytes.size());
  return call.Reply(space->first(bytes.size()));
}

// A Settle or Release the runtime sent as a holder, counted: `settles` by
// ticket, `kept` and `released` by handle; a Settle may keep only handles
// `lent` lists under its ticket (else `unlent`). False for any other call.
bool CountSettleOrRelease(const sluice::IncomingCall& call, const std::vector<uint32_t>& words,
                          absl::flat_hash_map<uint32_t, absl::flat_hash_set<uint32_t>>& lent,
                          absl::flat_hash_map<uint32_t, int>& settles,
                          absl::flat_hash_map<uint32_t, int>& kept,
                          absl::flat_hash_map<uint32_t, int>& released, const char* unlent) {
  const uint64_t method = call.header().method;
  if (method == wire::kSettleMethod && call.oneway() && !words.empty()) {
    ++settles[words[0]];
    for (size_t i = 1; i < words.size(); ++i) {
      if (!lent[words[0]].contains(words[i])) Wrong(unlent);
      ++kept[words[i]];
    }
    return true;
  }
  if (method == wire::kReleaseMethod && call.oneway()) {
    for (uint32_t handle : words) ++released[handle];
    return true;
  }
  return false;
}

// Serves `server` with `answer` until `stop`.
template <typename Answer>
void ServeUntil(sluice::ServerChannel& server, const std::atomic<bool>& stop, Answer&& answer) {
  while (!stop.load()) {
    auto call = server.Receive(absl::Now() + absl::Milliseconds(20));
    if (call.ok()) answer(*call);
  }
}

// Answers what `server` holds now: a barrier's reply waits for what the
// runtime sent before it.
template <typename Answer>
void AnswerQueued(sluice::ServerChannel& server, Answer&& answer) {
  for (;;) {
    auto before = server.Receive(absl::Now());
    if (!before.ok()) return;
    answer(*before);
  }
}

// The fuzzer is the service and the runtime its caller: a PainterProxy that
// keeps its channel (so replies may lend it objects by handle) and lends
// kLent Painters on the connection (so replies may pass them back). Each step
// the proxy calls Download and this answers as the step says; the caller
// takes the reply's fields as the step says. What the caller sends back is
// checked against what it was sent (see Check).
class ReplyScript {
 public:
  ReplyScript(Harness& h, std::span<const uint8_t> in) : h_(h), in_(in) {}

  void Run() {
    auto pair = sluice::testing::MakeLocalPair(*h_.watcher);
    if (!pair.ok()) std::abort();
    channel_ = std::shared_ptr<sluice::ClientChannel>(std::move(pair->client));
    server_ = std::move(pair->server);
    std::thread service([this] { Serve(); });
    {
      auto exports = rpc::ExportLink::Create(channel_.get(), channel_);
      std::vector<rpc::ExportLink::Loan> loans;
      for (int i = 0; i < kLent; ++i) {
        auto painter = std::make_shared<sluice::testing::PainterService>();
        // The first opens the reverse channel (answered by Serve).
        auto loan = exports->Lend(painter, absl::Now() + kPatience);
        if (!loan.ok()) Hung(loan.status());
        lent_[loan->handle] = painter.get();
        loans.push_back(*std::move(loan));
      }
      {
        sink::PainterProxy proxy(
            rpc::ProxyTarget{.channel = channel_.get(), .owner = channel_, .exports = exports});
        for (int steps = 0; at_ < in_.size() && steps < kMaxSteps; ++steps) Step(proxy);
        kept_objects_.clear();
        kept_responses_.clear();
        // Each Total is answered once what came before it was served: the
        // first waits out late replies, the second finds them unread (and
        // settles them after its call), the third sees those settles.
        for (int i = 0; i < 3; ++i) {
          if (auto total = proxy.Total({.deadline = absl::Now() + kPatience}); !total.ok()) {
            Hung(total.status());
          }
        }
      }
      for (const auto& loan : loans) rpc::ExportLink::EndLoan(loan);
    }
    stop_.store(true);
    service.join();
    Check();
    holder_.reset();
    server_.reset();
    channel_.reset();
  }

 private:
  static constexpr int kMaxSteps = 24;
  static constexpr int kMaxLate = 2;

  // What the service answers the next Download with.
  struct Plan {
    uint64_t word = 0;
    bool raw = false;   // The field bytes as they are, not a Blob.
    bool late = false;  // After the caller gave up.
    int fds = 0;        // Descriptors() pick.
    std::vector<uint64_t> fields;
  };

  uint8_t Byte() { return at_ < in_.size() ? in_[at_++] : 0; }
  uint32_t Word() {
    uint32_t word = 0;
    for (int i = 0; i < 4; ++i) word |= uint32_t{Byte()} << (8 * i);
    return word;
  }

  // [op][word bytes][fds pick if bit 4][count][fields...]. op bits 0-1 the
  // reply word: none, a ticket (u32), a hold word (u32 handle), raw (two
  // u32); bit 2 raw payload; bit 3 late; bit 4 descriptors; bit 5 keep the
  // Response past the step; bit 6 keep what was taken; bit 7 call each
  // object taken. Each field: [kind][value]: kind bits 0-1 the form (a
  // handle passed back, a handle lent, raw, a descriptor index), bits 2-3
  // the take (TakeObject, TakeLocal, TakeFd, TakeObject then TakeLocal), bit
  // 4 a u32 value (else one byte, mod 6: mostly the lent handles 1..3).
  void Step(sink::PainterProxy& proxy) {
    const uint8_t op = Byte();
    Plan plan;
    switch (op & 3) {
      case 1:
        plan.word = Word();
        if (plan.word == 0) plan.word = 1;
        break;
      case 2:
        plan.word = wire::HoldWord(Word());
        break;
      case 3:
        plan.word = Word();
        plan.word |= uint64_t{Word()} << 32;
        break;
      default:
        break;
    }
    plan.raw = (op & 4) != 0;
    plan.late = (op & 8) != 0 && ++late_ <= kMaxLate;
    if ((op & 16) != 0) plan.fds = 1 + Byte() % 4;
    const int count = Byte() % 8;
    std::vector<uint8_t> takes;
    for (int i = 0; i < count; ++i) {
      const uint8_t kind = Byte();
      const uint32_t value = (kind & 16) != 0 ? Word() : Byte() % 6;
      uint64_t field = value;
      switch (kind & 3) {
        case 0:
          field = wire::ReturnedField(value & wire::kMaxReturnedHandle);
          break;
        case 1:
          field = wire::HandleField(value & wire::kMaxHandle);
          break;
        case 3:
          field = value & 7;
          break;
        default:
          break;
      }
      plan.fields.push_back(field);
      takes.push_back((kind >> 2) & 3);
    }
    const bool late = plan.late;
    const bool ticketed = wire::IsTicketWord(plan.word);
    // The service finds the plan by the step's number: it may still be
    // serving an earlier, late step when this one's call goes.
    const uint64_t number = ++steps_;
    {
      std::lock_guard<std::mutex> lock(mu_);
      plans_[number] = std::move(plan);
    }
    rpc::CallOptions options;
    options.deadline = absl::Now() + (late ? absl::Milliseconds(1) : kPatience);
    auto response = proxy.Download(number, options);
    if (!response.ok()) {
      if (!late && absl::IsDeadlineExceeded(response.status())) Hung(response.status());
      return;
    }
    const auto* data = (*response)->data();
    const size_t fields = data == nullptr ? 0 : data->size() / sizeof(uint64_t);
    for (size_t i = 0; i < fields && i < takes.size(); ++i) {
      uint64_t field;
      std::memcpy(&field, data->data() + i * sizeof(uint64_t), sizeof(field));
      if (takes[i] == 0 || takes[i] == 3) {
        auto object = rpc::TakeObject<sink::PainterProxy>(*response, field);
        // Descriptors posing as a reference lead nowhere worth calling.
        const bool by_handle = wire::IsHandleField(field) || wire::IsReturnedField(field);
        if (object.ok() && by_handle && (op & 128) != 0) {
          (void)(*object)->Total({.deadline = absl::Now() + kPatience});
        }
        if (object.ok() && (op & 64) != 0) kept_objects_.push_back(*std::move(object));
      }
      if (takes[i] == 1 || takes[i] == 3) {
        auto local = rpc::TakeLocal<sluice::testing::PainterService>(*response, field);
        // Only a handle passed back that we lent finds anything, and then
        // the very object lent under it, while a ticket keeps it.
        const auto it = wire::IsReturnedField(field)
                            ? lent_.find(wire::HandleOfReturnedField(field))
                            : lent_.end();
        if (local.ok() && (it == lent_.end() || local->get() != it->second)) {
          Wrong("TakeLocal on a reply gave an object not lent under that handle");
        }
        if (!local.ok() && it != lent_.end() && ticketed) {
          Wrong("TakeLocal on a reply missed an object lent under that handle");
        }
      }
      if (takes[i] == 2) (void)rpc::TakeFd(*response, field);
    }
    if ((op & 32) != 0) kept_responses_.push_back(*std::move(response));
  }

  // The service: answers OpenReverse, counts the caller's Settles and
  // Releases, answers Download with the plan and Total once everything the
  // caller sent before it was served.
  void Serve() {
    ServeUntil(*server_, stop_, [this](sluice::IncomingCall& call) { Answer(call); });
  }

  void Answer(sluice::IncomingCall& call) {
    const sluice::CallHeader header = call.header();
    const std::span<const std::byte> request = call.request();
    const std::vector<uint32_t> words = RequestWords(call);
    if (header.interface_id == wire::kControlInterfaceId) {
      if (header.method == wire::kOpenReverseMethod) {
        holder_ = AdoptReverseEnds(call);
        (void)call.Reply({});
        return;
      }
      if (!CountSettleOrRelease(call, words, lends_, settles_, kept_, released_,
                                "a Settle keeps a handle its ticket's replies never lent")) {
        Wrong("the caller sent a control call it has no reason to send");
      }
      (void)call.Reply({});
      return;
    }
    if (rpc::MethodIdOf(header.method) == rpc::MethodIdOf(sink::PainterInterface::kTotal)) {
      AnswerQueued(*server_, [this](sluice::IncomingCall& queued) { Answer(queued); });
      flatbuffers::FlatBufferBuilder fbb;
      fbb.Finish(sink::CreateCounter(fbb, 0));
      (void)ReplyWith(call, std::span(fbb.GetBufferPointer(), fbb.GetSize()));
      return;
    }
    if (header.interface_id != sink::PainterInterface::kInterfaceId ||
        header.method != sink::PainterInterface::kDownload) {
      (void)call.Fail(absl::UnimplementedError("not served by this fuzzer"));
      return;
    }
    Plan plan;
    auto request_bytes =
        std::span(reinterpret_cast<const uint8_t*>(request.data()), request.size());
    auto counter = rpc::VerifyMessage<sink::Counter>(request_bytes, "Download");
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = counter.ok() ? plans_.find((*counter)->value()) : plans_.end();
      if (it == plans_.end()) Wrong("a Download of no step");
      plan = std::move(it->second);
      plans_.erase(it);
    }
    std::vector<uint8_t> bytes(plan.fields.size() * sizeof(uint64_t));
    if (!bytes.empty()) std::memcpy(bytes.data(), plan.fields.data(), bytes.size());
    flatbuffers::FlatBufferBuilder fbb;
    if (!plan.raw) {
      fbb.Finish(sink::CreateBlob(fbb, fbb.CreateVector(bytes)));
      bytes.assign(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
    }
    std::vector<sluice::UniqueFd> fds = Descriptors(plan.fds, {});
    std::vector<int> raw;
    for (const auto& fd : fds) raw.push_back(fd.get());
    if (plan.late) absl::SleepFor(absl::Milliseconds(3));
    if (!call.AttachReplyFds(raw).ok()) {
      (void)call.Fail(absl::InternalError("descriptors"));
      return;
    }
    call.set_reply_word(plan.word);
    if (!ReplyWith(call, bytes).ok()) return;
    if (wire::IsHoldWord(plan.word)) ++holds_sent_[wire::HandleOfHoldWord(plan.word)];
    if (!wire::IsTicketWord(plan.word)) return;
    const auto ticket = static_cast<uint32_t>(plan.word);
    ++(plan.late ? late_tickets_ : tickets_)[ticket];
    for (uint64_t field : plan.fields) {
      if (wire::IsHandleField(field)) lends_[ticket].insert(wire::HandleOfField(field));
    }
  }

  // Once everything was dropped and served: every reply's ticket settled
  // once (a late one at most once), every handle kept released as often as
  // it was kept, and nothing released that was neither kept nor a hold the
  // service claimed in a late reply.
  void Check() {
    for (const auto& [ticket, sent] : tickets_) {
      const int settled = settles_.contains(ticket) ? settles_.at(ticket) : 0;
      const int late = late_tickets_.contains(ticket) ? late_tickets_.at(ticket) : 0;
      if (settled < sent || settled > sent + late) Wrong("a reply's ticket was not settled once");
    }
    for (const auto& [ticket, settled] : settles_) {
      const int sent = (tickets_.contains(ticket) ? tickets_.at(ticket) : 0) +
                       (late_tickets_.contains(ticket) ? late_tickets_.at(ticket) : 0);
      if (settled > sent) Wrong("a ticket no reply carried was settled");
    }
    for (const auto& [handle, kept] : kept_) {
      const int released = released_.contains(handle) ? released_.at(handle) : 0;
      if (released < kept) Wrong("a handle kept from a reply was never released");
    }
    for (const auto& [handle, released] : released_) {
      const int kept = kept_.contains(handle) ? kept_.at(handle) : 0;
      const int claimed = holds_sent_.contains(handle) ? holds_sent_.at(handle) : 0;
      if (released > kept + claimed) Wrong("a handle was released more often than it was kept");
    }
  }

  Harness& h_;
  std::span<const uint8_t> in_;
  size_t at_ = 0;
  int late_ = 0;
  std::shared_ptr<sluice::ClientChannel> channel_;
  std::unique_ptr<sluice::ServerChannel> server_;
  absl::flat_hash_map<uint32_t, const sluice::testing::PainterService*> lent_;
  std::vector<rpc::Response<sink::Blob>> kept_responses_;
  std::vector<rpc::Remote<sink::PainterProxy>> kept_objects_;
  std::atomic<bool> stop_{false};
  uint64_t steps_ = 0;
  std::mutex mu_;
  absl::flat_hash_map<uint64_t, Plan> plans_;  // Guarded by mu_.
  // The service thread's, read by Check after it ended.
  std::shared_ptr<rpc::RemoteObject> holder_;
  absl::flat_hash_map<uint32_t, int> tickets_, late_tickets_, settles_;
  absl::flat_hash_map<uint32_t, absl::flat_hash_set<uint32_t>> lends_;
  absl::flat_hash_map<uint32_t, int> kept_, released_, holds_sent_;
};

// --- The passes surface: objects the holder passes in calls on the reverse channel

// Taken and kept by KeepingPainters until the script that made them ends.
std::mutex g_keeps_mu;
std::vector<rpc::Remote<sink::PainterProxy>> g_keeps;  // Guarded by g_keeps_mu.
// Keep calls whose handler ran to its end.
std::atomic<int64_t> g_keep_calls{0};
// Painters a Keep reply lent on the reverse channel, alive.
std::atomic<int64_t> g_reply_lent{0};

class ReplyLent final : public sluice::testing::PainterService {
 public:
  ReplyLent() { g_reply_lent.fetch_add(1); }
  ~ReplyLent() override { g_reply_lent.fetch_sub(1); }
};

// A Painter lent by handle on a reverse channel, with two more methods,
// Keep(AddRequest):AddResponse and its oneway twin Hold(AddRequest). `a` is
// an interface field as the holder wrote it; `b` what the handler does
// with it: bit 0 take it as a proxy (TakeObject), bit 1 keep that proxy
// until the script ends, bit 2 call Total on it, bit 3 take it as one of
// ours (TakeLocal), which must find exactly the KeepingPainter lent under
// that handle, or nothing; bit 4 (Keep only) lend a fresh ReplyLent in the
// reply, on the reverse channel's table under the reply's ticket. The
// reply's `sum`: the bits that worked, and that object's field << 32.
class KeepingPainter final : public rpc::ServiceStub {
 public:
  static constexpr uint64_t kKeepMethod =
      rpc::MethodWord(rpc::Fnv1a32("Keep"), rpc::Fnv1a32("AddRequest->AddResponse"));
  // The same, oneway: Hold(AddRequest) (oneway).
  static constexpr uint64_t kHoldMethod =
      rpc::MethodWord(rpc::Fnv1a32("Hold"), rpc::Fnv1a32("AddRequest->Empty"));
  using Lent = absl::flat_hash_map<uint32_t, const KeepingPainter*>;

  // `lent`: every KeepingPainter lent on the channel, by handle; filled
  // before the first call and read-only after.
  explicit KeepingPainter(const Lent* lent) : lent_(lent) {}
  absl::string_view service_name() const override { return painter_.service_name(); }
  uint64_t interface_id() const override { return painter_.interface_id(); }

  absl::Status Dispatch(sluice::IncomingCall& call, const rpc::CallContext& context) override {
    if (rpc::TargetInterface(call, context) != interface_id()) {
      return painter_.Dispatch(call, context);
    }
    const uint32_t method = rpc::MethodIdOf(call.header().method);
    if (method == rpc::MethodIdOf(kKeepMethod)) {
      return rpc::HandleCall<sink::AddRequest, sink::AddResponse>(
          call, context, kKeepMethod, "fuzz.KeepingPainter.Keep", stats_,
          [this](const rpc::CallContext& c, const sink::AddRequest& r,
                 flatbuffers::FlatBufferBuilder& b)
              -> absl::StatusOr<flatbuffers::Offset<sink::AddResponse>> {
            return sink::CreateAddResponse(b, Keep(c, r, /*sync=*/true));
          });
    }
    if (method == rpc::MethodIdOf(kHoldMethod)) {
      return rpc::HandleOneway<sink::AddRequest>(
          call, context, kHoldMethod, "fuzz.KeepingPainter.Hold", stats_,
          [this](const rpc::CallContext& c, const sink::AddRequest& r) {
            (void)Keep(c, r, /*sync=*/false);
            return absl::OkStatus();
          });
    }
    return painter_.Dispatch(call, context);
  }

 private:
  // What it did: the request's bits that worked.
  int64_t Keep(const rpc::CallContext& context, const sink::AddRequest& request, bool sync) {
    const auto field = static_cast<uint64_t>(request.a());
    const auto what = static_cast<uint64_t>(request.b());
    int64_t done = 0;
    if ((what & 8) != 0) {
      auto local = rpc::TakeLocal<KeepingPainter>(context, field);
      const auto it = wire::IsReturnedField(field) ? lent_->find(wire::HandleOfReturnedField(field))
                                                   : lent_->end();
      if (local.ok() && (it == lent_->end() || local->get() != it->second)) {
        Wrong("TakeLocal in a reverse call gave an object not lent under that handle");
      }
      if (!local.ok() && it != lent_->end()) {
        Wrong("TakeLocal in a reverse call missed an object lent under that handle");
      }
      done |= local.ok() ? 8 : 0;
    }
    if ((what & 1) != 0) {
      auto object = rpc::TakeObject<sink::PainterProxy>(context, field);
      if (object.ok()) {
        done |= 1;
        if ((what & 4) != 0) {
          if ((*object)->Total({.deadline = absl::Now() + kPatience}).ok()) done |= 4;
        }
        if ((what & 2) != 0) {
          std::lock_guard lock(g_keeps_mu);
          g_keeps.push_back(*std::move(object));
        }
      }
    }
    if ((what & 16) != 0 && sync) {
      absl::StatusOr<uint32_t> lent = rpc::AttachObject(context, std::make_shared<ReplyLent>());
      if (lent.ok()) done |= 16 | int64_t{*lent} << 32;
    }
    g_keep_calls.fetch_add(1);
    return done;
  }

  const Lent* const lent_;
  sluice::testing::PainterService painter_;
  rpc::MethodStats stats_;
};

// The fuzzer is the holder of a reverse channel and the service of the
// connection it was opened on: the runtime is the lender, a client that
// lends kLent KeepingPainters by handle on its connection (with an owner, so
// that objects passed in calls on them can be taken: HolderObjects). Each
// step the fuzzer calls Keep on one of them, passing an object handle of its
// own (as if lent on the connection), one of the runtime's (passed back),
// or a raw value, sync or oneway under a ticket of its choosing, and answers
// the Acquire that keeping it costs as the step says. What the runtime sends
// on the connection is checked against what it was passed (see Check).
class PassScript {
 public:
  PassScript(Harness& h, std::span<const uint8_t> in) : h_(h), in_(in) {}

  void Run() {
    auto pair = sluice::testing::MakeLocalPair(*h_.watcher);
    if (!pair.ok()) std::abort();
    channel_ = std::shared_ptr<sluice::ClientChannel>(std::move(pair->client));
    server_ = std::move(pair->server);
    std::thread service([this] { Serve(); });
    {
      auto exports = rpc::ExportLink::Create(channel_.get(), channel_);
      std::vector<rpc::ExportLink::Loan> loans;
      std::vector<std::shared_ptr<KeepingPainter>> painters;
      for (int i = 0; i < kLent; ++i) {
        painters.push_back(std::make_shared<KeepingPainter>(&lent_));
        // The first opens the reverse channel (answered by Serve).
        auto loan = exports->Lend(painters.back(), absl::Now() + kPatience);
        if (!loan.ok()) Hung(loan.status());
        lent_[loan->handle] = painters.back().get();
        loans.push_back(*std::move(loan));
      }
      {
        std::lock_guard lock(mu_);
        holder_ = holder_end_;
      }
      // As a holder whose proxies keep their channel does: replies to its
      // calls may lend it objects by handle (TakeReplyLoans settles them).
      holder_->channel().AnnounceFeatures(wire::kTakesReplyHandles);
      const int64_t calls_before = g_keep_calls.load();
      const size_t references = rpc::ObjectHost::Get().reference_count();
      for (int steps = 0; at_ < in_.size() && steps < kMaxSteps; ++steps) Step();
      // Every Keep handled and every oneway ticket settled before the keeps go.
      Eventually(
          [&] {
            return !holder_->channel().health().ok() ||
                   (g_keep_calls.load() - calls_before >= keep_calls_ && SettlesSent());
          },
          "a oneway call on the reverse channel was never served, or its ticket never settled");
      std::vector<rpc::Remote<sink::PainterProxy>> keeps;
      {
        std::lock_guard lock(g_keeps_mu);
        keeps.swap(g_keeps);
      }
      keeps.clear();
      // What Keep replies lent here, given back: then none of it stays.
      for (uint32_t ticket : reply_tickets_) SendControl(wire::kSettleMethod, {ticket});
      for (size_t i = 0; i < reply_holds_.size(); i += wire::kMaxReleasesPerCall) {
        const size_t n = std::min<size_t>(reply_holds_.size() - i, wire::kMaxReleasesPerCall);
        SendControl(wire::kReleaseMethod,
                    std::vector<uint32_t>(reply_holds_.begin() + i, reply_holds_.begin() + i + n));
      }
      Eventually([&] { return g_reply_lent.load() == 0 || !holder_->channel().health().ok(); },
                 "an object a reply on the reverse channel lent stays after its ticket was "
                 "settled and its holds released");
      {
        sink::PainterProxy proxy(
            rpc::ProxyTarget{.channel = channel_.get(), .owner = channel_, .exports = exports});
        if (auto total = proxy.Total({.deadline = absl::Now() + kPatience}); !total.ok()) {
          Hung(total.status());
        }
      }
      // A Release may still be in another thread's flush.
      Eventually([&] { return Released(); },
                 "an object handle held after a call on the reverse channel was never released");
      // Our own objects the holder passed back, taken as proxies over
      // channels to ourselves, went with the keeps.
      Eventually([&] { return rpc::ObjectHost::Get().reference_count() <= references; },
                 "a reference to our own object passed back stays after its proxy went");
      for (const auto& loan : loans) rpc::ExportLink::EndLoan(loan);
    }
    stop_.store(true);
    service.join();
    Check();
    holder_.reset();
    holder_end_.reset();
    server_.reset();
    channel_.reset();
  }

 private:
  static constexpr int kMaxSteps = 24;

  uint8_t Byte() { return at_ < in_.size() ? in_[at_++] : 0; }
  uint32_t Word() {
    uint32_t word = 0;
    for (int i = 0; i < 4; ++i) word |= uint32_t{Byte()} << (8 * i);
    return word;
  }

  // [op][handle][kind][value: a byte, or a u32 with kind bit 2, or two][what]
  // [word: a byte, or a u32 with op bit 5; sync, then a u32 more]. op bit 0
  // oneway; bit 1 a word: oneway, a ticket (the request word); sync, a chain
  // id; bits 2-3 how the next Acquire is answered
  // (granted with its hold word, granted bare, granted with a ticket-like
  // word, refused); bit 4 the wrong interface fold; bit 6 the method word
  // of the other kind (Keep oneway, Hold sync); bit 7 keep what the reply
  // lends (see TakeReplyLoans). handle mod kLent+2 (the lent are
  // 1..kLent). kind bits 0-1: a handle of ours (HandleField), one of the
  // runtime's passed back (ReturnedField), raw u32, raw u64. what:
  // KeepingPainter's bits.
  void Step() {
    const uint8_t op = Byte();
    const uint32_t handle = Byte() % (kLent + 2);
    const uint8_t kind = Byte();
    uint64_t value = (kind & 4) != 0 ? Word() : Byte() % 6;
    uint64_t field = value;
    switch (kind & 3) {
      case 0:
        field = wire::HandleField(value & wire::kMaxHandle);
        break;
      case 1:
        field = wire::ReturnedField(value & wire::kMaxReturnedHandle);
        break;
      case 3:
        field = value | uint64_t{Word()} << 32;
        break;
      default:
        break;
    }
    const uint8_t what = Byte() & 31;
    const bool oneway = (op & 1) != 0;
    uint64_t word = 0;
    if ((op & 2) != 0) {
      word = (op & 32) != 0 ? Word() : 1 + Byte();
      if (!oneway) word |= uint64_t{Word()} << 32;
    }
    const bool addressed = handle >= 1 && handle <= kLent && (op & (16 | 64)) == 0;
    const bool ticketed = oneway && wire::IsTicketWord(word);
    {
      std::lock_guard lock(mu_);
      acquire_answer_ = (op >> 2) & 3;
      if (wire::IsHandleField(field)) {
        passed_.insert(wire::HandleOfField(field));
        if (ticketed) passes_[static_cast<uint32_t>(word)].insert(wire::HandleOfField(field));
      }
    }
    const uint64_t fold_of = (op & 16) != 0 ? sink::CalculatorInterface::kInterfaceId
                                            : sink::PainterInterface::kInterfaceId;
    const std::vector<uint8_t> body = Encode(
        [&](auto& fbb) { return sink::CreateAddRequest(fbb, static_cast<int64_t>(field), what); });
    // Bit 6: the other one's method word, which the stub refuses.
    const uint64_t method =
        (oneway != ((op & 64) != 0)) ? KeepingPainter::kHoldMethod : KeepingPainter::kKeepMethod;
    // Sync, the word is a chain id the holder claims the call is part of.
    const sluice::CallHeader header{.interface_id = wire::ObjectWord(handle, fold_of),
                                    .method = method,
                                    .chain_id = oneway ? 0 : word,
                                    .word = oneway ? word : 0};
    const Outcome outcome = Exchange(holder_->channel(), header, oneway, body);
    if (!outcome.sent) return;
    if (addressed) ++keep_calls_;
    if (outcome.reply.has_value() && outcome.reply->ok()) TakeReplyLoans(**outcome.reply, op);
    if (ticketed) {
      std::lock_guard lock(mu_);
      ++tickets_[static_cast<uint32_t>(word)];
    }
  }

  // A Keep reply's ticket, if it lent an object: settled now keeping that
  // object (op bit 7, then released at the end) or keeping nothing, or
  // left open (op bits 2-3 both set) until the end settles it.
  void TakeReplyLoans(const sluice::Reply& reply, uint8_t op) {
    if (!wire::IsTicketWord(reply.word())) return;
    const auto ticket = static_cast<uint32_t>(reply.word());
    const auto bytes = reply.data();
    auto response = rpc::VerifyMessage<sink::AddResponse>(
        std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), "Keep");
    const uint64_t sum = response.ok() ? static_cast<uint64_t>((*response)->sum()) : 0;
    const uint64_t field = sum >> 32;
    if ((op & 12) == 12) {
      reply_tickets_.push_back(ticket);
      return;
    }
    std::vector<uint32_t> words = {ticket};
    if ((op & 128) != 0 && (sum & 16) != 0 && wire::IsHandleField(field)) {
      words.push_back(wire::HandleOfField(field));
      reply_holds_.push_back(wire::HandleOfField(field));
    }
    SendControl(wire::kSettleMethod, words);
  }

  void SendControl(uint64_t method, const std::vector<uint32_t>& words) {
    std::vector<uint8_t> body(words.size() * sizeof(uint32_t));
    std::memcpy(body.data(), words.data(), body.size());
    (void)Exchange(holder_->channel(), {wire::kControlInterfaceId, method, 0}, true, body);
  }

  // Every ticket of a oneway call settled as often as it was sent.
  bool SettlesSent() {
    std::lock_guard lock(mu_);
    for (const auto& [ticket, sent] : tickets_) {
      if (!settles_.contains(ticket) || settles_.at(ticket) < sent) return false;
    }
    return true;
  }

  // Every hold the runtime got (an Acquire granted, a Settle that kept)
  // given back, now that it keeps nothing.
  bool Released() {
    std::lock_guard lock(mu_);
    for (const auto& [handle, held] : held_) {
      if (!released_.contains(handle) || released_.at(handle) < held) return false;
    }
    return true;
  }

  // The connection's service: answers OpenReverse, Acquire as the step
  // said, calls on the objects taken, and Total once everything before it
  // was served; counts Settles and Releases.
  void Serve() {
    ServeUntil(*server_, stop_, [this](sluice::IncomingCall& call) { Answer(call); });
  }

  void Answer(sluice::IncomingCall& call) {
    const sluice::CallHeader header = call.header();
    const std::vector<uint32_t> words = RequestWords(call);
    if (header.interface_id == wire::kControlInterfaceId) {
      Control(call, header, words);
      return;
    }
    if (wire::IsObjectWord(header.interface_id)) {
      {
        std::lock_guard lock(mu_);
        if (!passed_.contains(wire::HandleOfWord(header.interface_id))) {
          Wrong("the lender called an object handle the holder never passed it");
        }
      }
      if (rpc::MethodIdOf(header.method) != rpc::MethodIdOf(sink::PainterInterface::kTotal)) {
        (void)call.Fail(absl::UnimplementedError("not served by this fuzzer"));
        return;
      }
    } else if (rpc::MethodIdOf(header.method) == rpc::MethodIdOf(sink::PainterInterface::kTotal)) {
      AnswerQueued(*server_, [this](sluice::IncomingCall& queued) { Answer(queued); });
    } else {
      (void)call.Fail(absl::UnimplementedError("not served by this fuzzer"));
      return;
    }
    flatbuffers::FlatBufferBuilder fbb;
    fbb.Finish(sink::CreateCounter(fbb, 0));
    (void)ReplyWith(call, std::span(fbb.GetBufferPointer(), fbb.GetSize()));
  }

  void Control(sluice::IncomingCall& call, const sluice::CallHeader& header,
               const std::vector<uint32_t>& words) {
    std::lock_guard lock(mu_);
    if (header.method == wire::kOpenReverseMethod && holder_end_ == nullptr) {
      holder_end_ = AdoptReverseEnds(call);
      (void)call.Reply({});
      return;
    }
    if (header.method == wire::kAcquireMethod && !call.oneway() && words.size() == 1) {
      const uint32_t handle = words[0];
      if (!passed_.contains(handle)) Wrong("the lender acquired a handle the holder never passed");
      if (acquire_answer_ == 3) {
        (void)call.Fail(absl::FailedPreconditionError("refused by the fuzzer"));
        return;
      }
      call.set_reply_word(acquire_answer_ == 0   ? wire::HoldWord(handle)
                          : acquire_answer_ == 2 ? 7
                                                 : 0);
      if (call.Reply({}).ok()) ++held_[handle];
      return;
    }
    // A Settle's kept handles are holds like an Acquire's.
    if (!CountSettleOrRelease(call, words, passes_, settles_, held_, released_,
                              "a Settle keeps a handle no call under its ticket passed")) {
      Wrong("the lender sent a control call it has no reason to send");
    }
    (void)call.Reply({});
  }

  // Once everything was dropped and served: every ticket settled as often
  // as a oneway call carried it (no more even if the channel closed), and
  // nothing released more often than it was held.
  void Check() {
    const bool open = holder_->channel().health().ok();
    for (const auto& [ticket, sent] : tickets_) {
      const int settled = settles_.contains(ticket) ? settles_.at(ticket) : 0;
      if (settled > sent || (open && settled < sent)) {
        Wrong("a oneway call's ticket was not settled once");
      }
    }
    for (const auto& [ticket, settled] : settles_) {
      if (!tickets_.contains(ticket)) Wrong("a ticket no oneway call carried was settled");
    }
    for (const auto& [handle, released] : released_) {
      const int held = held_.contains(handle) ? held_.at(handle) : 0;
      if (released > held) Wrong("a handle was released more often than it was held");
    }
  }

  Harness& h_;
  std::span<const uint8_t> in_;
  size_t at_ = 0;
  int64_t keep_calls_ = 0;
  // Tickets of Keep replies left open, and holds of what they lent.
  std::vector<uint32_t> reply_tickets_;
  std::vector<uint32_t> reply_holds_;
  KeepingPainter::Lent lent_;
  std::shared_ptr<sluice::ClientChannel> channel_;
  std::unique_ptr<sluice::ServerChannel> server_;
  std::shared_ptr<rpc::RemoteObject> holder_;  // The script thread's copy of holder_end_.
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  // Guarded by mu_: what the steps passed (every handle; by ticket) and how
  // Acquire is answered; what the service thread was sent.
  std::shared_ptr<rpc::RemoteObject> holder_end_;
  int acquire_answer_ = 0;
  absl::flat_hash_set<uint32_t> passed_;
  absl::flat_hash_map<uint32_t, absl::flat_hash_set<uint32_t>> passes_;
  absl::flat_hash_map<uint32_t, int> tickets_, settles_, held_, released_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness* harness = new Harness();
  if (size >= 1 && (data[0] & 0xf1) == 0x70) {
    PassScript(*harness, std::span(data + 1, std::min<size_t>(size - 1, 4096))).Run();
    return 0;
  }
  if (size >= 1 && (data[0] & 0x81) == 0x80) {
    ReplyScript(*harness, std::span(data + 1, std::min<size_t>(size - 1, 4096))).Run();
    return 0;
  }
  if (size >= 1 && (data[0] & 0x81) == 0x81) {
    ObjectScript(*harness, std::span(data + 1, std::min<size_t>(size - 1, 64 * 1024))).Run(data[0]);
    return 0;
  }
  if (size < 18) return 0;
  const uint8_t flags = data[0];
  const uint8_t pick = data[1];
  sluice::CallHeader header;
  std::memcpy(&header.interface_id, data + 2, 8);
  std::memcpy(&header.method, data + 10, 8);
  const bool oneway = (flags & 2) != 0;
  const int addressing = (flags >> 2) & 3;
  const std::span<const uint8_t> body(data + 18, std::min<size_t>(size - 18, 64 * 1024));

  if ((flags & 1) == 0) {
    Harness& h = *harness;
    if (h.lender == nullptr || !h.lender->holder->channel().health().ok()) {
      h.lender = MakeLender(*h.watcher);
    }
    // Handles 1..kLent are lent; 0 and kLent+1.. are not.
    const uint32_t handle = pick % (kLent + 3);
    switch (addressing) {
      case 0:  // A Painter method on a handle, with the right fold.
        header.interface_id = wire::ObjectWord(handle, sink::PainterInterface::kInterfaceId);
        header.method = PainterMethod(pick >> 3);
        break;
      case 1:  // A handle with whatever fold the input has.
        header.interface_id =
            (wire::kObjectTag << 48) | (header.interface_id & 0x0000ffff00000000) | handle;
        break;
      case 2:  // A control call: Acquire, Release, Settle (words from the input), Clone.
        header.interface_id = (pick & 0x80) != 0
                                  ? wire::ObjectWord(handle, wire::kControlInterfaceId)
                                  : wire::kControlInterfaceId;
        header.method = ControlMethod(pick >> 4);
        break;
      default:  // Raw.
        break;
    }
    if (Waits(header.method)) return 0;
    CallOn(h.lender->holder->channel(), header, oneway, body, {});
    return 0;
  }

  Harness& h = *harness;
  // A fresh connection when the host closed the last one, and now and then
  // so that the bound on reverse channels per connection is not all it sees.
  if (h.connection == nullptr || !h.connection->health().ok() || ++h.connection_calls > 32) {
    Connect(h);
  }
  switch (addressing) {
    case 0:
    case 1:
      header.interface_id = wire::kControlInterfaceId;
      header.method = ControlMethod(pick);
      break;
    case 2:
      header.interface_id = sink::PainterInterface::kInterfaceId;
      header.method = PainterMethod(pick);
      break;
    default:
      break;
  }
  if (Waits(header.method)) return 0;
  const std::vector<sluice::UniqueFd> fds = Descriptors((flags >> 4) & 7, body);
  CallOn(*h.connection, header, oneway, body, fds);
  return 0;
}
