#include "bench/pingpong.h"

#include "absl/strings/str_cat.h"
#include "bench/channel_transport.h"
#include "bench/raw_transports.h"
#include "ipc/testing/subprocess.h"

namespace sluice::bench {
namespace {

// The spin budget of each raw shared-memory transport (see StartRawShm).
int64_t RawSpinNs(Transport transport) {
  switch (transport) {
    case Transport::kRawSpin:
      return -1;
    case Transport::kRawSpinFutex:
      return kRawSpinBudgetNs;
    default:
      return 0;
  }
}

}  // namespace

absl::string_view TransportName(Transport transport) {
  switch (transport) {
    case Transport::kRawSpin:
      return "raw-spin";
    case Transport::kRawFutex:
      return "raw-futex";
    case Transport::kRawSpinFutex:
      return "raw-spin-futex";
    case Transport::kUnixSocket:
      return "unix-socket";
    case Transport::kPipe:
      return "pipe";
    case Transport::kChannel:
      return "channel";
  }
  return "?";
}

std::optional<Transport> ParseTransport(absl::string_view name) {
  for (Transport t : kAllTransports) {
    if (TransportName(t) == name) return t;
  }
  return std::nullopt;
}

absl::StatusOr<std::unique_ptr<PingPongClient>> StartPingPong(Transport transport,
                                                              const CaseSetup& setup,
                                                              PeerWatcher& watcher) {
  switch (transport) {
    case Transport::kRawSpin:
    case Transport::kRawFutex:
    case Transport::kRawSpinFutex:
      return StartRawShm(transport, RawSpinNs(transport), setup);
    case Transport::kUnixSocket:
    case Transport::kPipe:
      return StartStream(transport, setup);
    case Transport::kChannel:
      return StartChannel(setup, watcher);
  }
  return absl::InvalidArgumentError("unknown transport");
}

int ServeMain(Transport transport, const CaseSetup& setup) {
  switch (transport) {
    case Transport::kRawSpin:
    case Transport::kRawFutex:
    case Transport::kRawSpinFutex:
      return ServeRawShm(RawSpinNs(transport), setup.payload);
    case Transport::kUnixSocket:
    case Transport::kPipe:
      return ServeStream(setup.payload);
    case Transport::kChannel:
      return ServeChannel(setup);
  }
  return 2;
}

std::vector<std::string> ServerArgv(Transport transport, const CaseSetup& setup) {
  return {
      testing::SelfExecutable(),
      "--role=server",
      absl::StrCat("--transport=", TransportName(transport)),
      absl::StrCat("--payload=", setup.payload),
      absl::StrCat("--call_spin_us=", absl::ToInt64Microseconds(setup.channel_spin.call_spin)),
      absl::StrCat("--serve_spin_us=", absl::ToInt64Microseconds(setup.channel_spin.serve_spin))};
}

}  // namespace sluice::bench
