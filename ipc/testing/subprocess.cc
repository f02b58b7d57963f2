#include "ipc/testing/subprocess.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "ipc/base/errno_status.h"
#include "ipc/base/poll_timeout.h"
#include "ipc/base/unique_fd.h"

namespace sluice::testing {

absl::StatusOr<Subprocess> Subprocess::Spawn(const std::vector<std::string>& argv,
                                             const std::vector<int>& fds, std::optional<int> cpu) {
  if (argv.empty()) return absl::InvalidArgumentError("Spawn needs argv[0]");
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return ErrnoStatus("fork", errno);
  if (pid == 0) {
    // Child: only async-signal-safe calls from here to exec. First move every
    // fd above the target range so that dup2 cannot clobber a later source.
    std::vector<int> moved(fds.size());
    for (size_t i = 0; i < fds.size(); ++i) {
      // Close-on-exec: only the dup2 targets below may reach the new program,
      // or a child would hold a second copy of, say, a liveness socket.
      moved[i] = ::fcntl(fds[i], F_DUPFD_CLOEXEC, 3 + static_cast<int>(fds.size()) + 16);
      if (moved[i] < 0) ::_exit(126);
    }
    for (size_t i = 0; i < fds.size(); ++i) {
      // dup2 clears close-on-exec on the new descriptor.
      if (::dup2(moved[i], 3 + static_cast<int>(i)) < 0) ::_exit(126);
    }
    if (cpu.has_value()) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(*cpu, &set);
      if (::sched_setaffinity(0, sizeof(set), &set) != 0) ::_exit(126);
    }
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return Subprocess(pid);
}

absl::StatusOr<Subprocess> Subprocess::SpawnAndWaitReady(std::vector<std::string> argv) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus("pipe2", errno);
  UniqueFd read_end(fds[0]);
  UniqueFd write_end(fds[1]);
  argv.push_back("--ready_fd=3");
  auto child = Spawn(argv, {write_end.get()});
  if (!child.ok()) return child.status();
  write_end.reset();
  char buffer[16];
  if (RetryOnEintr([&] { return ::read(read_end.get(), buffer, sizeof(buffer)); }) <= 0) {
    return absl::UnavailableError(absl::StrCat(argv[0], " exited before it was ready"));
  }
  // Then the child closes its end: waiting for that too means the child no
  // longer holds the descriptor once this returns, so a test that counts a
  // peer's descriptors from here on counts a stable number (one left for
  // a moment between the write and the close once made a leak test fail).
  pollfd closed = {.fd = read_end.get(), .events = POLLIN, .revents = 0};
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  for (;;) {
    const int ms = PollTimeoutMs(give_up);
    if (RetryOnEintr([&] { return ::poll(&closed, 1, ms); }) == 0) {
      return absl::DeadlineExceededError(absl::StrCat(
          argv[0], " said it was ready but kept its ready descriptor open for 30 s"));
    }
    if (RetryOnEintr([&] { return ::read(read_end.get(), buffer, sizeof(buffer)); }) <= 0) break;
  }
  return child;
}

Subprocess::Subprocess(Subprocess&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    pid_ = std::exchange(other.pid_, -1);
  }
  return *this;
}

Subprocess::~Subprocess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    RetryOnEintr([&] { return ::waitpid(pid_, nullptr, 0); });
  }
}

absl::Status Subprocess::Kill(int signal) {
  if (pid_ <= 0) return absl::FailedPreconditionError("process already reaped");
  if (::kill(pid_, signal) != 0) return ErrnoStatus(absl::StrCat("kill(", pid_, ")"), errno);
  return absl::OkStatus();
}

absl::StatusOr<int> Subprocess::Wait(absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("process already reaped");
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t done = RetryOnEintr([&] { return ::waitpid(pid_, &status, WNOHANG); });
    if (done < 0) return ErrnoStatus("waitpid", errno);
    if (done == pid_) {
      pid_ = -1;
      return status;
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("process ", pid_, " still running after ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(1));
  }
}

std::string SelfExecutable() {
  char path[4096];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return {};
  return std::string(path, static_cast<size_t>(n));
}

namespace {

// Entries of a /proc directory, but "." and ".."; -1 if it cannot be read.
int CountEntries(const std::string& path) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return -1;
  int count = 0;
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(dir);
  return count;
}

}  // namespace

int CountOpenFds() {
  const int count = CountEntries("/proc/self/fd");
  return count < 0 ? -1 : count - 1;  // The directory stream's own descriptor.
}

int CountFdsOf(pid_t pid) { return CountEntries(absl::StrCat("/proc/", pid, "/fd")); }

int CountThreads(pid_t pid) {
  return CountEntries(pid == 0 ? std::string("/proc/self/task")
                               : absl::StrCat("/proc/", pid, "/task"));
}

int64_t RssKibOf(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  for (std::string line; std::getline(status, line);) {
    absl::string_view rest = line;
    if (!absl::ConsumePrefix(&rest, "VmRSS:")) continue;
    rest = absl::StripAsciiWhitespace(rest);
    absl::ConsumeSuffix(&rest, "kB");
    int64_t kib = 0;
    return absl::SimpleAtoi(absl::StripAsciiWhitespace(rest), &kib) ? kib : -1;
  }
  return -1;
}

int CountMappings(absl::string_view filter) {
  std::ifstream maps("/proc/self/maps");
  int count = 0;
  for (std::string line; std::getline(maps, line);) {
    if (absl::string_view(line).find(filter) != absl::string_view::npos) ++count;
  }
  return count;
}

}  // namespace sluice::testing
