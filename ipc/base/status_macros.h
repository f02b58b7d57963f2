// Early-return helpers for absl::Status / absl::StatusOr.
//
// Debian 12's abseil (20220623) ships without RETURN_IF_ERROR and
// ASSIGN_OR_RETURN, so the project carries its own, prefixed to avoid
// clashing with a newer abseil later.
#ifndef SLUICE_IPC_BASE_STATUS_MACROS_H_
#define SLUICE_IPC_BASE_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SLUICE_RETURN_IF_ERROR(expr)                                  \
  do {                                                                \
    if (absl::Status sluice_status_ = (expr); !sluice_status_.ok()) { \
      return sluice_status_;                                          \
    }                                                                 \
  } while (0)

#define SLUICE_STATUS_CONCAT_INNER_(a, b) a##b
#define SLUICE_STATUS_CONCAT_(a, b) SLUICE_STATUS_CONCAT_INNER_(a, b)

// SLUICE_ASSIGN_OR_RETURN(auto x, MakeX()); declares x, or returns the error.
#define SLUICE_ASSIGN_OR_RETURN(lhs, expr) \
  SLUICE_ASSIGN_OR_RETURN_IMPL_(SLUICE_STATUS_CONCAT_(sluice_statusor_, __LINE__), lhs, expr)

#define SLUICE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) {                                    \
    return std::move(statusor).status();                   \
  }                                                        \
  lhs = *std::move(statusor)

#endif  // SLUICE_IPC_BASE_STATUS_MACROS_H_
