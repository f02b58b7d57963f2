// GoogleTest helpers for absl::Status / absl::StatusOr.
//
// Debian 12's abseil ships no status matchers, so the project keeps these:
//   EXPECT_OK(expr), ASSERT_OK(expr)          expr is a Status or StatusOr
//   ASSERT_OK_AND_ASSIGN(auto x, expr)        x = *expr, or fail the test
//   EXPECT_THAT(expr, StatusIs(code))         code matches
//   EXPECT_THAT(expr, StatusIs(code, HasSubstr("...")))
#ifndef SLUICE_TESTS_TESTING_STATUS_MATCHERS_H_
#define SLUICE_TESTS_TESTING_STATUS_MATCHERS_H_

#include <ostream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sluice::testing {

inline const absl::Status& GetStatus(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

MATCHER_P2(StatusIsImpl, code, message_matcher, "") {
  const absl::Status& status = GetStatus(arg);
  if (status.code() != code) {
    *result_listener << "status is " << status;
    return false;
  }
  return ::testing::ExplainMatchResult(message_matcher, std::string(status.message()),
                                       result_listener);
}

inline auto StatusIs(absl::StatusCode code) { return StatusIsImpl(code, ::testing::_); }
template <typename M>
auto StatusIs(absl::StatusCode code, M message_matcher) {
  return StatusIsImpl(code, ::testing::MatcherCast<std::string>(message_matcher));
}

}  // namespace sluice::testing

#define EXPECT_OK(expr) EXPECT_EQ(::sluice::testing::GetStatus(expr), ::absl::OkStatus())
#define ASSERT_OK(expr) ASSERT_EQ(::sluice::testing::GetStatus(expr), ::absl::OkStatus())

#define SLUICE_TESTING_CONCAT_INNER_(a, b) a##b
#define SLUICE_TESTING_CONCAT_(a, b) SLUICE_TESTING_CONCAT_INNER_(a, b)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(SLUICE_TESTING_CONCAT_(status_or_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  ASSERT_OK(tmp);                                  \
  lhs = *std::move(tmp)

#endif  // SLUICE_TESTS_TESTING_STATUS_MATCHERS_H_
