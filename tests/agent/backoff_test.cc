// Back-off (agent/backoff.h): the full-jitter schedule of docs/protocol.md §2, its floor and cap,
// Retry-After, identity rejections, reset, and how failures are classified.
#include "agent/backoff.h"

#include <gtest/gtest.h>

#include <deque>

#include "agent/control_plane.h"
#include "jira/http.h"

namespace cakewalk::agent {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

Status Transient() { return Status(Code::kUnavailable, "HTTP 500", cp_reason::kServerError); }
Status Network() {
  return Status(Code::kUnavailable, "connection refused", http::reason::kConnectFailed);
}
Status RateLimited(std::optional<milliseconds> after = std::nullopt) {
  Status s(Code::kResourceExhausted, "HTTP 429", cp_reason::kRateLimited);
  return after ? s.WithRetryAfter(*after) : s;
}
Status Identity() {
  return Status(Code::kUnauthenticated, "certificate_revoked", cp_reason::kIdentityRejected);
}

TEST(BackoffTest, UpperBoundsDoubleFromOneSecondToTheCap) {
  const std::int64_t expected[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000};
  for (int retry = 1; retry <= 9; ++retry) {
    EXPECT_EQ(Backoff::UpperBound(retry).count(), expected[retry - 1]) << "retry " << retry;
  }
  EXPECT_EQ(Backoff::UpperBound(1000000), kBackoffCap);
}

TEST(BackoffTest, FullJitterSpansTheWholeIntervalAboveTheFloor) {
  // u = 1 - epsilon gives (almost) the bound, u = 0.5 half of it, u = 0 the floor.
  std::deque<double> draws = {0.999999, 0.999999, 0.5, 0.0, 0.999999, 0.999999, 0.999999, 0.25};
  Backoff b([&] {
    double u = draws.front();
    draws.pop_front();
    return u;
  });
  EXPECT_EQ(b.NextDelay(Transient()).count(), 999);
  EXPECT_EQ(b.NextDelay(Network()).count(), 1999);
  EXPECT_EQ(b.NextDelay(Transient()).count(), 2000);  // half of 4 s
  EXPECT_EQ(b.NextDelay(Transient()), kMinRetryDelay) << "never closer than the floor";
  EXPECT_EQ(b.NextDelay(Transient()).count(), 15999);
  EXPECT_EQ(b.NextDelay(Transient()).count(), 31999);
  EXPECT_EQ(b.NextDelay(Transient()).count(), 59999);
  EXPECT_EQ(b.NextDelay(Transient()).count(), 15000);  // a quarter of the 60 s cap
  EXPECT_EQ(b.retries(), 8);
}

TEST(BackoffTest, ResetStartsOverAtOneSecond) {
  Backoff b([] { return 0.999999; });
  for (int i = 0; i < 10; ++i) (void)b.NextDelay(Transient());
  EXPECT_GE(b.NextDelay(Transient()), seconds(59));
  b.Reset();
  EXPECT_LT(b.NextDelay(Transient()), seconds(1));
}

TEST(BackoffTest, RandomDelaysStayWithinBounds) {
  Backoff b;
  for (int round = 0; round < 200; ++round) {
    if (round % 12 == 0) b.Reset();
    const milliseconds d = b.NextDelay(Transient());
    EXPECT_GE(d, kMinRetryDelay);
    EXPECT_LE(d, Backoff::UpperBound(b.retries()));
  }
}

TEST(BackoffTest, RetryAfterIsHonouredWithinLimits) {
  Backoff b([] { return 0.0; });
  EXPECT_EQ(b.NextDelay(RateLimited(seconds(7))), seconds(7));
  EXPECT_EQ(b.NextDelay(RateLimited(seconds(0))), seconds(1)) << "Retry-After: 0 is not a loop";
  EXPECT_EQ(b.NextDelay(RateLimited(std::chrono::hours(3))), std::chrono::minutes(15));
  // 429/503 without Retry-After: the exponential schedule (which kept advancing).
  Backoff c([] { return 0.999999; });
  (void)c.NextDelay(RateLimited(seconds(3)));
  EXPECT_EQ(c.NextDelay(RateLimited()).count(), 1999);
}

TEST(BackoffTest, IdentityRejectionWaitsFiveMinutes) {
  Backoff b([] { return 0.0; });
  EXPECT_EQ(b.NextDelay(Identity()), std::chrono::minutes(5));
  EXPECT_EQ(b.NextDelay(Identity()), std::chrono::minutes(5));
}

TEST(BackoffTest, ClassificationAndConnectionResets) {
  EXPECT_EQ(ClassifyFailure(Identity()), Failure::kIdentityRejected);
  EXPECT_EQ(ClassifyFailure(RateLimited()), Failure::kRateLimited);
  EXPECT_EQ(ClassifyFailure(Status(Code::kAborted, "409", cp_reason::kConflict)),
            Failure::kConflict);
  EXPECT_EQ(ClassifyFailure(Status(Code::kInvalidArgument, "422", cp_reason::kRequestRejected)),
            Failure::kRequestRejected);
  EXPECT_EQ(ClassifyFailure(Transient()), Failure::kTransient);
  EXPECT_EQ(ClassifyFailure(Network()), Failure::kTransient);
  EXPECT_TRUE(ShouldResetConnections(Network()));
  EXPECT_TRUE(ShouldResetConnections(Transient()));
  EXPECT_TRUE(ShouldResetConnections(Status(Code::kUnavailable, "reset", http::reason::kProtocol)));
  EXPECT_FALSE(ShouldResetConnections(RateLimited()));
  EXPECT_FALSE(ShouldResetConnections(Identity()));
}

}  // namespace
}  // namespace cakewalk::agent
