#include "base/status.h"

#include <gtest/gtest.h>

namespace cakewalk {
namespace {

Result<int> Half(int n) {
  if (n % 2 != 0) return InvalidArgument(std::to_string(n) + " is odd");
  return n / 2;
}

Result<int> Quarter(int n) {
  CW_ASSIGN_OR_RETURN(int h, Half(n));
  CW_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Status Check(int n) {
  CW_RETURN_IF_ERROR(Half(n));
  return Status::Ok();
}

TEST(StatusTest, PropagatesFirstError) {
  EXPECT_EQ(*Quarter(8), 2);
  auto r = Quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "3 is odd");
  EXPECT_TRUE(Check(4).ok());
  EXPECT_FALSE(Check(5).ok());
}

TEST(StatusTest, ContextAndReasonCompose) {
  Status s = Unavailable("connection reset").WithReason("jira_unavailable").WithContext("GET /x");
  EXPECT_EQ(s.message(), "GET /x: connection reset");
  EXPECT_EQ(s.reason(), "jira_unavailable");
  EXPECT_TRUE(s.retryable());
  EXPECT_EQ(s.ToString(), "UNAVAILABLE (jira_unavailable): GET /x: connection reset");
  EXPECT_FALSE(FailedPrecondition("x").retryable());
  EXPECT_TRUE(Status::Ok().WithContext("ignored").ok());
  Status limited =
      ResourceExhausted("429").WithRetryAfter(std::chrono::seconds(7)).WithContext("c");
  ASSERT_TRUE(limited.retry_after().has_value());
  EXPECT_EQ(*limited.retry_after(), std::chrono::seconds(7));
  EXPECT_FALSE(s.retry_after().has_value());
}

}  // namespace
}  // namespace cakewalk
