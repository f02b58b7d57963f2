// Logger: leveled log lines on a file descriptor (stderr in the daemon).
//
//   2026-11-22T00:16:17.123456Z W servicemanager: lookup of 'audio' denied ...
//
// One write(2) per line, so lines from several threads never interleave. The
// daemon's main() creates one and passes it down; tests pass one with a
// higher threshold (or a pipe) to keep output quiet. Thread safe.
#ifndef SLUICE_SERVICES_SERVICEMANAGER_LOGGER_H_
#define SLUICE_SERVICES_SERVICEMANAGER_LOGGER_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace sluice {

class Logger {
 public:
  enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kOff = 4 };

  explicit Logger(Level threshold = Level::kInfo, int fd = 2) : threshold_(threshold), fd_(fd) {}

  // "debug", "info", "warning", "error" or "off".
  static absl::StatusOr<Level> ParseLevel(absl::string_view text);

  bool Enabled(Level level) const { return level >= threshold_; }
  void Log(Level level, absl::string_view message) const;

  template <typename... Args>
  void Debug(const Args&... args) const {
    if (Enabled(Level::kDebug)) Log(Level::kDebug, absl::StrCat(args...));
  }
  template <typename... Args>
  void Info(const Args&... args) const {
    if (Enabled(Level::kInfo)) Log(Level::kInfo, absl::StrCat(args...));
  }
  template <typename... Args>
  void Warning(const Args&... args) const {
    if (Enabled(Level::kWarning)) Log(Level::kWarning, absl::StrCat(args...));
  }
  template <typename... Args>
  void Error(const Args&... args) const {
    if (Enabled(Level::kError)) Log(Level::kError, absl::StrCat(args...));
  }

 private:
  Level threshold_;
  int fd_;
};

}  // namespace sluice

#endif  // SLUICE_SERVICES_SERVICEMANAGER_LOGGER_H_
