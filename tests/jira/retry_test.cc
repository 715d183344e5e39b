// Retry arithmetic and the pieces of pagination that read answers: server hints (Retry-After in
// seconds or as a date, Cloud's X-RateLimit-Reset with minute precision), the jitter bound, and
// cursor values taken out of links.next.
#include "jira/retry.h"

#include <gtest/gtest.h>

#include "base/time.h"
#include "jira/dc_client.h"
#include "jira/pagination.h"
#include "jira/settings.h"

namespace cakewalk::jira {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

http::Response With(std::initializer_list<http::Header> headers) {
  http::Response r;
  r.status = 429;
  for (const auto& h : headers) r.headers.push_back(h);
  return r;
}

const SysTime kNow = SysTime(seconds(1764850000));  // 2025-12-04T12:06:40Z

TEST(RetryTest, RetryAfterSecondsAndDates) {
  EXPECT_EQ(ServerRetryHint(With({{"retry-after", "7"}}), kNow), milliseconds(7000));
  EXPECT_EQ(ServerRetryHint(With({{"retry-after", "0"}}), kNow), milliseconds(0));
  EXPECT_EQ(ServerRetryHint(With({{"retry-after", FormatHttpDate(kNow + seconds(42))}}), kNow),
            milliseconds(42000));
  EXPECT_FALSE(ServerRetryHint(With({{"retry-after", "soon"}}), kNow).has_value());
  EXPECT_FALSE(ServerRetryHint(With({}), kNow).has_value());
}

TEST(RetryTest, CloudRateLimitResetWithMinutePrecision) {
  // 12:06:40 now, reset at 12:08 -> 80 s.
  EXPECT_EQ(ServerRetryHint(With({{"x-ratelimit-reset", "2025-12-04T12:08Z"}}), kNow),
            milliseconds(80000));
  // A reset in the past means "now".
  EXPECT_EQ(ServerRetryHint(With({{"x-ratelimit-reset", "2025-12-04T12:00Z"}}), kNow),
            milliseconds(0));
  // Far in the past: too far from now for nanoseconds (found by fuzzing: it overflowed).
  EXPECT_EQ(ServerRetryHint(With({{"x-ratelimit-reset", "1713-01-01T00:00:00Z"}}), kNow),
            milliseconds(0));
  // Full RFC 3339 is accepted too; Retry-After wins over the reset.
  EXPECT_EQ(ServerRetryHint(With({{"x-ratelimit-reset", "2025-12-04T12:06:50Z"}}), kNow),
            milliseconds(10000));
  EXPECT_EQ(ServerRetryHint(
                With({{"x-ratelimit-reset", "2025-12-04T12:08Z"}, {"retry-after", "3"}}), kNow),
            milliseconds(3000));
  EXPECT_FALSE(ServerRetryHint(With({{"x-ratelimit-reset", "12:08"}}), kNow).has_value());
}

TEST(RetryTest, JitterBoundDoublesUpToTheCap) {
  RetryPolicy p;
  p.initial = milliseconds(1000);
  p.cap = milliseconds(5000);
  EXPECT_EQ(JitterBound(p, 1), milliseconds(1000));
  EXPECT_EQ(JitterBound(p, 2), milliseconds(2000));
  EXPECT_EQ(JitterBound(p, 3), milliseconds(4000));
  EXPECT_EQ(JitterBound(p, 4), milliseconds(5000));
  EXPECT_EQ(JitterBound(p, 40), milliseconds(5000));
}

TEST(RetryTest, RealSleeperStopsEarly) {
  std::stop_source source;
  source.request_stop();
  Status s = RealSleeper().Sleep(milliseconds(60'000), source.get_token());
  EXPECT_EQ(s.reason(), "stopped");
  EXPECT_TRUE(RealSleeper().Sleep(milliseconds(1), {}).ok());
}

TEST(PaginationTest, CursorValuesComeOutOfLinksNext) {
  EXPECT_EQ(QueryParameter("https://api.example/admin/v1/orgs/o/users?cursor=aWR4OjIw&limit=20",
                           "cursor"),
            "aWR4OjIw");
  EXPECT_EQ(QueryParameter("/x?a=1&cursor=a%2Bb%3D", "cursor"), "a+b=");
  EXPECT_FALSE(QueryParameter("/x?a=1", "cursor").has_value());
  EXPECT_FALSE(QueryParameter("/x?cursor=%4", "cursor").has_value());
  EXPECT_FALSE(QueryParameter("/x?cursor=%zz", "cursor").has_value());
}

TEST(VersionTest, DataCenterUserListingByVersion) {
  auto listing = [](int a, int b, int c) {
    ServerInfo info;
    info.numbers = {a, b, c};
    return ChooseDcUserListing(info);
  };
  EXPECT_EQ(listing(9, 12, 0), DcUserListing::kSearchAll);
  EXPECT_EQ(listing(8, 20, 10), DcUserListing::kSearchAll);
  EXPECT_EQ(listing(10, 0, 2), DcUserListing::kGroupMembers);
  EXPECT_EQ(listing(10, 2, 9), DcUserListing::kGroupMembers);
  EXPECT_EQ(listing(10, 3, 0), DcUserListing::kUserList);
  EXPECT_EQ(listing(11, 0, 1), DcUserListing::kUserList);
}

TEST(SettingsTest, RefusesWhatCannotWork) {
  ConnectionSettings s;
  s.name = "c";
  s.base_url = "https://jira.example";
  s.provisioning = ProvisioningAuth::kPassword;
  s.username = "svc";
  EXPECT_TRUE(ValidateSettings(s).ok());
  s.base_url = "http://jira.example";
  EXPECT_FALSE(ValidateSettings(s).ok());
  s.base_url = "https://jira.example";
  s.flavor = Flavor::kCloud;
  EXPECT_FALSE(ValidateSettings(s).ok());  // passwords are not for Cloud
  s.provisioning = ProvisioningAuth::kApiToken;
  s.access_sync = AccessSyncAuth::kOAuth2;
  s.oauth.client_id = "id";
  s.oauth.authorize_url = "https://auth.example/authorize";
  s.oauth.token_url = "https://auth.example/oauth/token";
  s.oauth.redirect_uri = "https://localhost/cb";
  s.api_base_url = "https://api.example";
  EXPECT_FALSE(ValidateSettings(s).ok());  // Cloud OAuth goes through a {cloudId} gateway
  s.api_base_url = "https://api.example/ex/jira/{cloudId}";
  EXPECT_TRUE(ValidateSettings(s).ok());
}

}  // namespace
}  // namespace cakewalk::jira
