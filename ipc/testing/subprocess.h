// Subprocess: a child process started with fork + exec, for multi-process
// tests, benchmarks and demos.
//
// Chosen descriptors are handed to the child at fixed numbers (the first at
// 3, the next at 4, ...), everything else is closed by close-on-exec. The
// child is killed (SIGKILL) and reaped when the Subprocess is destroyed
// without having been waited for, so a failing test leaves no strays.
#ifndef SLUICE_IPC_TESTING_SUBPROCESS_H_
#define SLUICE_IPC_TESTING_SUBPROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sluice::testing {

class Subprocess {
 public:
  // Starts `argv[0]` (a path) with `argv`, passing `fds[i]` as descriptor 3+i.
  // `cpu`, if set, pins the child to that CPU before exec.
  static absl::StatusOr<Subprocess> Spawn(const std::vector<std::string>& argv,
                                          const std::vector<int>& fds = {},
                                          std::optional<int> cpu = std::nullopt);

  // Spawns `argv` plus "--ready_fd=3" with a pipe at fd 3, and returns once
  // the child wrote to it and closed it (the convention of
  // sluice-servicemanager, kv_server and the test peers). UNAVAILABLE if the
  // child exits first; DEADLINE_EXCEEDED if it keeps the pipe open 30 s.
  static absl::StatusOr<Subprocess> SpawnAndWaitReady(std::vector<std::string> argv);

  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  ~Subprocess();

  pid_t pid() const { return pid_; }

  // Sends `signal` to the child.
  absl::Status Kill(int signal);
  // Waits for the child to exit, up to `timeout`. Returns the raw wait
  // status (use WIFEXITED etc.). DEADLINE_EXCEEDED if it is still running.
  absl::StatusOr<int> Wait(absl::Duration timeout = absl::Seconds(30));

 private:
  explicit Subprocess(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;  // -1 once reaped.
};

// Path of the running executable (/proc/self/exe), to re-exec it in a role.
std::string SelfExecutable();

// Number of open descriptors in this process, for leak checks.
int CountOpenFds();
// Descriptors process `pid` has open now (-1 if /proc does not show it).
int CountFdsOf(pid_t pid);
// Threads of process `pid` now; of this process when 0.
int CountThreads(pid_t pid = 0);
// Resident set of process `pid` (VmRSS) in KiB, -1 if unknown.
int64_t RssKibOf(pid_t pid);
// Number of mappings in this process whose /proc/self/maps line contains
// `filter` (all when empty). Leak checks filter on "memfd:" because malloc and
// thread stacks map and unmap at will.
int CountMappings(absl::string_view filter = "");

}  // namespace sluice::testing

#endif  // SLUICE_IPC_TESTING_SUBPROCESS_H_
