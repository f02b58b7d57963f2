#include "services/servicemanager/logger.h"

#include <unistd.h>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace sluice {

absl::StatusOr<Logger::Level> Logger::ParseLevel(absl::string_view text) {
  if (text == "debug") return Level::kDebug;
  if (text == "info") return Level::kInfo;
  if (text == "warning") return Level::kWarning;
  if (text == "error") return Level::kError;
  if (text == "off") return Level::kOff;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown log level '", text, "' (debug, info, warning, error, off)"));
}

void Logger::Log(Level level, absl::string_view message) const {
  if (!Enabled(level)) return;
  static constexpr char kLetters[] = "DIWE";
  std::string line = absl::StrCat(
      absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(), absl::UTCTimeZone()), " ",
      absl::string_view(&kLetters[static_cast<int>(level)], 1), " servicemanager: ", message, "\n");
  // A failed log write has nowhere to be reported.
  (void)!::write(fd_, line.data(), line.size());
}

}  // namespace sluice
