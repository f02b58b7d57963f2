#include "ipc/base/errno_status.h"

#include <cerrno>
#include <cstring>
#include <ostream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace sluice {
namespace {

using ::sluice::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

struct Mapping {
  int error_number;
  absl::StatusCode code;
};

void PrintTo(const Mapping& mapping, std::ostream* os) {
  *os << strerrorname_np(mapping.error_number) << " -> " << absl::StatusCodeToString(mapping.code);
}

class ErrnoToCodeTest : public ::testing::TestWithParam<Mapping> {};

TEST_P(ErrnoToCodeTest, MapsToTheAgreedCanonicalCode) {
  EXPECT_EQ(ErrnoToCode(GetParam().error_number), GetParam().code)
      << strerrorname_np(GetParam().error_number);
}

INSTANTIATE_TEST_SUITE_P(AllMappedErrnos, ErrnoToCodeTest,
                         ::testing::Values(Mapping{EINVAL, absl::StatusCode::kInvalidArgument},
                                           Mapping{EBADF, absl::StatusCode::kInvalidArgument},
                                           Mapping{ENOTSOCK, absl::StatusCode::kInvalidArgument},
                                           Mapping{ENAMETOOLONG,
                                                   absl::StatusCode::kInvalidArgument},
                                           Mapping{ENOENT, absl::StatusCode::kNotFound},
                                           Mapping{ENXIO, absl::StatusCode::kNotFound},
                                           Mapping{ESRCH, absl::StatusCode::kNotFound},
                                           Mapping{EEXIST, absl::StatusCode::kAlreadyExists},
                                           Mapping{EADDRINUSE, absl::StatusCode::kAlreadyExists},
                                           Mapping{EPERM, absl::StatusCode::kPermissionDenied},
                                           Mapping{EACCES, absl::StatusCode::kPermissionDenied},
                                           Mapping{ENOMEM, absl::StatusCode::kResourceExhausted},
                                           Mapping{EMFILE, absl::StatusCode::kResourceExhausted},
                                           Mapping{ENFILE, absl::StatusCode::kResourceExhausted},
                                           Mapping{ENOSPC, absl::StatusCode::kResourceExhausted},
                                           Mapping{ENOBUFS, absl::StatusCode::kResourceExhausted},
                                           Mapping{EMSGSIZE, absl::StatusCode::kResourceExhausted},
                                           Mapping{ETIMEDOUT, absl::StatusCode::kDeadlineExceeded},
                                           Mapping{EPIPE, absl::StatusCode::kUnavailable},
                                           Mapping{ECONNRESET, absl::StatusCode::kUnavailable},
                                           Mapping{ECONNREFUSED, absl::StatusCode::kUnavailable},
                                           Mapping{ENOTCONN, absl::StatusCode::kUnavailable},
                                           Mapping{EAGAIN, absl::StatusCode::kUnavailable},
                                           Mapping{ENOSYS, absl::StatusCode::kUnimplemented},
                                           Mapping{EOPNOTSUPP, absl::StatusCode::kUnimplemented},
                                           Mapping{ECANCELED, absl::StatusCode::kCancelled}),
                         [](const ::testing::TestParamInfo<Mapping>& param_info) {
                           return std::string(strerrorname_np(param_info.param.error_number));
                         });

TEST(ErrnoToCodeTest, ZeroIsOk) { EXPECT_EQ(ErrnoToCode(0), absl::StatusCode::kOk); }

TEST(ErrnoToCodeTest, UnlistedErrnoIsInternal) {
  EXPECT_EQ(ErrnoToCode(EIO), absl::StatusCode::kInternal);
  EXPECT_EQ(ErrnoToCode(EBUSY), absl::StatusCode::kInternal);
  EXPECT_EQ(ErrnoToCode(9999), absl::StatusCode::kInternal);
  EXPECT_EQ(ErrnoToCode(-1), absl::StatusCode::kInternal);
}

TEST(ErrnoStatusTest, MessageNamesTheCallTheErrnoAndItsDescription) {
  const absl::Status status = ErrnoStatus("memfd_create(sluice-channel)", EMFILE);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kResourceExhausted,
                               AllOf(HasSubstr("memfd_create(sluice-channel)"), HasSubstr("EMFILE"),
                                     HasSubstr("(24)"), HasSubstr("Too many open files"))));
}

TEST(ErrnoStatusTest, MessageStartsWithTheCall) {
  const absl::Status status = ErrnoStatus("sendmsg", EPIPE);
  EXPECT_EQ(status.message().substr(0, 9), "sendmsg: ");
}

TEST(ErrnoStatusTest, CodeFollowsErrnoToCode) {
  for (int error_number : {EINVAL, ENOENT, EPERM, ENOMEM, ETIMEDOUT, EPIPE, ENOSYS, EIO}) {
    EXPECT_EQ(ErrnoStatus("call", error_number).code(), ErrnoToCode(error_number))
        << strerrorname_np(error_number);
  }
}

TEST(ErrnoStatusTest, UnknownErrnoStillNamesTheCallAndNumber) {
  const absl::Status status = ErrnoStatus("mystery_call", 9999);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInternal,
                               AllOf(HasSubstr("mystery_call"), HasSubstr("9999"))));
}

TEST(RetryOnEintrTest, RetriesWhileTheCallFailsWithEintr) {
  int calls = 0;
  const int result = RetryOnEintr([&] {
    if (++calls < 3) {
      errno = EINTR;
      return -1;
    }
    return 42;
  });
  EXPECT_EQ(result, 42);
  EXPECT_EQ(calls, 3);
}

TEST(RetryOnEintrTest, ReturnsOtherFailuresAtOnceWithErrnoIntact) {
  int calls = 0;
  const long result = RetryOnEintr([&] {
    ++calls;
    errno = EAGAIN;
    return -1L;
  });
  EXPECT_EQ(result, -1);
  EXPECT_EQ(errno, EAGAIN);
  EXPECT_EQ(calls, 1);
}

TEST(RetryOnEintrTest, DoesNotRetrySuccessEvenIfErrnoIsStale) {
  int calls = 0;
  errno = EINTR;
  const int result = RetryOnEintr([&] {
    ++calls;
    return 0;
  });
  EXPECT_EQ(result, 0);
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace sluice
