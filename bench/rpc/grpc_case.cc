#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bench.grpc.pb.h"
#include "bench.pb.h"
#include "bench/harness.h"
#include "bench/rpc/rpc_cases.h"
#include "grpcpp/grpcpp.h"
#include "ipc/base/errno_status.h"
#include "ipc/base/unique_fd.h"
#include "ipc/testing/subprocess.h"

namespace sluice::bench {
namespace {

using testing::Subprocess;

class GrpcClient final : public PingPongClient {
 public:
  GrpcClient(Subprocess child, UniqueFd control, std::string socket_path,
             std::unique_ptr<sluice_bench_pb::BenchService::Stub> stub)
      : child_(std::move(child)),
        control_(std::move(control)),
        socket_path_(std::move(socket_path)),
        stub_(std::move(stub)) {}

  ~GrpcClient() override { ::unlink(socket_path_.c_str()); }

  absl::StatusOr<uint64_t> RoundTrip(std::span<const std::byte> payload) override {
    // One request message reused across calls, as a careful gRPC client
    // would: set_data copies the caller's bytes into its existing string.
    request_.set_data(payload.data(), payload.size());
    grpc::ClientContext context;
    sluice_bench_pb::Ack ack;
    const grpc::Status status = stub_->Send(&context, request_, &ack);
    if (!status.ok()) {
      return absl::UnavailableError(
          absl::StrCat("gRPC Send: ", status.error_code(), " ", status.error_message()));
    }
    if (ack.size() != payload.size()) {
      return absl::DataLossError(absl::StrCat("gRPC server saw ", ack.size(), " bytes"));
    }
    return ack.checksum();
  }

  absl::Status Stop() override {
    stub_.reset();
    // End of stream on the control socket tells the server to shut down.
    control_.reset();
    absl::StatusOr<int> status = child_.Wait(absl::Seconds(10));
    if (!status.ok()) return status.status();
    if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      return absl::InternalError(absl::StrCat("gRPC server exited with wait status ", *status));
    }
    return absl::OkStatus();
  }

  pid_t server_pid() const override { return child_.pid(); }

 private:
  Subprocess child_;
  UniqueFd control_;
  std::string socket_path_;
  std::unique_ptr<sluice_bench_pb::BenchService::Stub> stub_;
  sluice_bench_pb::Payload request_;
};

class BenchServiceImpl final : public sluice_bench_pb::BenchService::Service {
 public:
  grpc::Status Send(grpc::ServerContext*, const sluice_bench_pb::Payload* request,
                    sluice_bench_pb::Ack* ack) override {
    const std::string& data = request->data();
    ack->set_checksum(SumWords(std::as_bytes(std::span(data.data(), data.size()))));
    ack->set_size(data.size());
    return grpc::Status::OK;
  }
};

// Waits up to `timeout_ms` for one byte on `fd`.
absl::Status AwaitByte(int fd, int timeout_ms) {
  pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
  const int n = RetryOnEintr([&] { return ::poll(&p, 1, timeout_ms); });
  if (n < 0) return ErrnoStatus("poll", errno);
  if (n == 0) return absl::DeadlineExceededError("gRPC server did not start in time");
  char byte = 0;
  const ssize_t got = RetryOnEintr([&] { return ::read(fd, &byte, 1); });
  if (got < 0) return ErrnoStatus("read", errno);
  if (got == 0) return absl::UnavailableError("gRPC server exited before it was ready");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PingPongClient>> StartGrpc() {
  static std::atomic<int> next_server{0};
  const std::string path =
      absl::StrCat("/tmp/sluice-rpc-bench-", ::getpid(), "-", next_server.fetch_add(1), ".sock");
  // One socket pair does both handshakes: the server writes a byte once it
  // listens (so the first connect never hits gRPC's reconnect backoff), and
  // our end closing tells it to stop (also when we die).
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return ErrnoStatus("socketpair", errno);
  }
  UniqueFd control(fds[0]);
  UniqueFd server_end(fds[1]);
  absl::StatusOr<Subprocess> child = Subprocess::Spawn(
      {testing::SelfExecutable(), "--role=grpc-server", absl::StrCat("--socket=", path)},
      {server_end.get()});
  if (!child.ok()) return child.status();
  server_end.reset();
  if (absl::Status s = AwaitByte(control.get(), 10'000); !s.ok()) return s;
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(absl::StrCat("unix:", path), grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    return absl::UnavailableError(absl::StrCat("gRPC channel to ", path, " did not connect"));
  }
  return std::make_unique<GrpcClient>(*std::move(child), std::move(control), path,
                                      sluice_bench_pb::BenchService::NewStub(channel));
}

int ServeGrpc(const std::string& socket_path) {
  ::unlink(socket_path.c_str());
  BenchServiceImpl service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("unix:", socket_path), grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    Die(absl::UnavailableError(absl::StrCat("cannot listen on unix:", socket_path)), "gRPC");
  }
  const char ready = 'r';
  if (RetryOnEintr([&] { return ::write(3, &ready, 1); }) != 1) {
    Die(ErrnoStatus("write", errno), "gRPC ready byte");
  }
  // Blocks until the client closes its end (or dies).
  char byte = 0;
  while (RetryOnEintr([&] { return ::read(3, &byte, 1); }) > 0) {
  }
  server->Shutdown();
  ::unlink(socket_path.c_str());
  return 0;
}

}  // namespace sluice::bench
