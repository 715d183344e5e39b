// Throttling and faults between the connector and the fake over TLS: Retry-After and the fake's
// own token buckets (request arrival times read with the shared fake clock), bounded attempts
// ending in rate_limited / jira_unavailable with retry_after, 409 "took too long", transport
// faults (retried for reads, never for writes), HTML where JSON was due, and stop tokens.
#include <gtest/gtest.h>

#include "jira/errors.h"
#include "jira/jobs.h"
#include "jira/rest.h"
#include "tests/jira/jira_env.h"

namespace cakewalk::testing {
namespace {

using std::chrono::seconds;

class RestTest : public JiraFixture {
 protected:
  void StartCloud() {
    FakeJiraOptions o;
    o.flavor = JiraFlavor::kCloud;
    StartJira(o);
    SeedCloudAdmin();
    conn_ = Open(CloudSettings());
  }
  void StartDc() {
    FakeJiraOptions o;
    o.version = "10.3.4";
    StartJira(o);
    SeedDcAdmin(false);
    conn_ = Open(DcSettings(false));
  }
  Result<Json::Value> Verify() {
    return jira::RunVerify(*conn_, Json::Value(Json::objectValue), {});
  }
  std::vector<SysTime> Times(std::string_view path) {
    std::vector<SysTime> out;
    for (const auto& r : RequestsTo(path)) out.push_back(r.at);
    return out;
  }
  std::unique_ptr<jira::Connection> conn_;
};

TEST_F(RestTest, RetryAfterIsRespectedBetweenAttempts) {
  StartCloud();
  FaultRule rule;
  rule.path_contains = "/rest/api/3/myself";
  rule.status = 429;
  rule.retry_after_seconds = 7;
  rule.count = 3;
  jira_->QueueFault(rule);
  auto out = Verify();
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  const auto times = Times("/rest/api/3/myself");
  ASSERT_EQ(times.size(), 4u);
  for (std::size_t i = 1; i < times.size(); ++i) {
    EXPECT_GE(times[i] - times[i - 1], seconds(7)) << i;
    EXPECT_LT(times[i] - times[i - 1], seconds(8)) << i;
  }
}

TEST_F(RestTest, TheFakesOwnBucketIsHonouredThroughItsHeaders) {
  StartCloud();
  // One request per 10 s for the admin: every call after the first is told to wait.
  jira_->SetRateLimit(kCloudAdmin, RateLimit{1, 1, seconds(10)});
  auto out = Verify();
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  // Between two requests that Jira accepted lies at least the refill interval.
  std::vector<SysTime> times;
  for (const auto& r : Requests()) {
    if (r.request.path.find("/rest/api/3/") != std::string::npos &&
        !r.request.Header("authorization").empty()) {
      times.push_back(r.at);
    }
  }
  ASSERT_GE(times.size(), 3u);  // myself and mypermissions, with refusals between
  EXPECT_GE(times.back() - times.front(), seconds(10));
  EXPECT_FALSE(sleeper_.sleeps().empty());
  for (auto s : sleeper_.sleeps()) EXPECT_LE(s, std::chrono::milliseconds(10'000));
}

TEST_F(RestTest, A429StormEndsInRateLimitedWithRetryAfter) {
  StartCloud();
  FaultRule rule;
  rule.path_contains = "/rest/api/3/myself";
  rule.status = 429;
  rule.retry_after_seconds = 5;
  rule.count = -1;
  jira_->QueueFault(rule);
  auto out = Verify();
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().reason(), "rate_limited");
  EXPECT_TRUE(out.status().retryable());
  ASSERT_TRUE(out.status().retry_after().has_value());
  EXPECT_EQ(*out.status().retry_after(), std::chrono::milliseconds(5000));
  EXPECT_EQ(Times("/rest/api/3/myself").size(),
            static_cast<std::size_t>(jira::RetryPolicy{}.max_attempts));
}

TEST_F(RestTest, AServerHintBeyondTheBudgetIsNotWaitedFor) {
  StartCloud();
  FaultRule rule;
  rule.path_contains = "/rest/api/3/myself";
  rule.status = 429;
  rule.retry_after_seconds = 600;  // 10 minutes: more than the 2-minute budget of one call
  rule.count = -1;
  jira_->QueueFault(rule);
  auto out = Verify();
  EXPECT_EQ(out.status().reason(), "rate_limited");
  EXPECT_EQ(*out.status().retry_after(), std::chrono::milliseconds(600'000));
  EXPECT_EQ(Times("/rest/api/3/myself").size(), 1u);
  EXPECT_TRUE(sleeper_.sleeps().empty());
}

TEST_F(RestTest, ServiceUnavailableWithAndWithoutRetryAfter) {
  StartDc();
  FaultRule with;
  with.path_contains = "/rest/api/2/mypermissions";
  with.status = 503;
  with.retry_after_seconds = 3;
  with.count = 1;
  jira_->QueueFault(with);
  FaultRule without;
  without.path_contains = "/rest/api/2/mypermissions";
  without.status = 503;
  without.html = true;
  without.count = 1;
  jira_->QueueFault(without);
  auto out = Verify();
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  const auto sleeps = sleeper_.sleeps();
  ASSERT_EQ(sleeps.size(), 2u);
  EXPECT_EQ(sleeps[0], std::chrono::milliseconds(3000));
  // Full jitter with the fixture's random 0.5: half of the second retry's 2 s bound.
  EXPECT_EQ(sleeps[1], std::chrono::milliseconds(1000));

  without.count = -1;
  jira_->QueueFault(without);
  auto down = Verify();
  EXPECT_EQ(down.status().reason(), "jira_unavailable");
  EXPECT_TRUE(down.status().retryable());
}

TEST_F(RestTest, ConflictMeansRetryOnlyWhereTheCallSaysSo) {
  StartCloud();
  auto client = conn_->Provisioning({});
  ASSERT_TRUE(client.ok());
  FaultRule slow;
  slow.path_contains = "/rest/api/3/users/search";
  slow.status = 409;
  slow.count = 2;
  jira_->QueueFault(slow);
  jira::SecretHeaderAuth auth(*credentials_, "api-token", jira::SecretHeaderAuth::Scheme::kBasic,
                              kCloudAdmin, "the API token", clock_);
  jira::RestCall call;
  call.path = {"rest", "api", "3", "users", "search"};
  call.retry_conflict = true;
  auto ok = conn_->site().Execute(call, &auth, {}, "GET users/search");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(Times("/users/search").size(), 3u);
  jira_->QueueFault(slow);
  call.retry_conflict = false;
  auto raw = conn_->site().Execute(call, &auth, {}, "GET users/search");
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->status, 409);
}

TEST_F(RestTest, TransportFaultsAreRetriedForReadsOnly) {
  StartDc();
  ASSERT_TRUE(Verify().ok());
  AddUser("zed", "zed@corp.example");
  FaultRule reset;
  reset.path_contains = "/rest/api/2/user";
  reset.method = "GET";
  reset.transport.kind = Fault::kResetBeforeHeaders;
  reset.count = 1;
  jira_->QueueFault(reset);
  Json::Value p;
  p["user"]["username"] = "zed";
  p["group"] = "jira-core-users";
  auto added = jira::RunGroupMembership(*conn_, p, true, {});
  ASSERT_TRUE(added.ok()) << added.status().ToString();

  // A write whose answer was lost (Jira did it) is not re-sent: the job fails retryably, and
  // running it again finds the work done.
  FaultRule lost;
  lost.path_contains = "/rest/api/2/group/user";
  lost.method = "DELETE";
  lost.transport.kind = Fault::kResetBeforeHeaders;
  lost.after_handling = true;
  lost.count = 1;
  jira_->QueueFault(lost);
  auto removed = jira::RunGroupMembership(*conn_, p, false, {});
  ASSERT_FALSE(removed.ok());
  EXPECT_EQ(removed.status().reason(), "jira_unavailable");
  EXPECT_TRUE(removed.status().retryable());
  EXPECT_EQ(RequestsTo("/rest/api/2/group/user").size(), 2u);  // the add and one delete
  auto again = jira::RunGroupMembership(*conn_, p, false, {});
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_FALSE((*again)["changed"].asBool());

  // The same for a write with a body, which rides the kept-alive connection of the look-up before
  // it: the connection's reset after Jira acted fails the job, and no second POST is sent.
  lost.method = "POST";
  jira_->QueueFault(lost);
  auto readded = jira::RunGroupMembership(*conn_, p, true, {});
  ASSERT_FALSE(readded.ok());
  EXPECT_EQ(readded.status().reason(), "jira_unavailable");
  EXPECT_TRUE(readded.status().retryable());
  EXPECT_NE(readded.status().message().find("it was not sent again"), std::string::npos)
      << readded.status().message();
  EXPECT_EQ(RequestsTo("/rest/api/2/group/user").size(), 3u);
  auto done = jira::RunGroupMembership(*conn_, p, true, {});
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_FALSE((*done)["changed"].asBool());
}

TEST_F(RestTest, HtmlOrTruncatedAnswersAreUnavailableNotData) {
  StartDc();
  ASSERT_TRUE(Verify().ok());
  FaultRule html;
  html.path_contains = "/rest/api/2/mypermissions";
  html.html = true;  // handled, then the body replaced by a maintenance page
  html.count = -1;
  jira_->QueueFault(html);
  EXPECT_EQ(Verify().status().reason(), "jira_unavailable");
  jira_->ClearFaults();
  FaultRule cut;
  cut.path_contains = "/rest/api/2/mypermissions";
  cut.transport.kind = Fault::kTruncateBody;
  cut.count = -1;
  jira_->QueueFault(cut);
  EXPECT_EQ(Verify().status().reason(), "jira_unavailable");
}

TEST_F(RestTest, StopTokenEndsARetryWait) {
  StartCloud();
  FaultRule rule;
  rule.path_contains = "/rest/api/3/myself";
  rule.status = 429;
  rule.retry_after_seconds = 30;
  rule.count = -1;
  jira_->QueueFault(rule);
  std::stop_source source;
  sleeper_.StopOnNextSleep(&source);
  auto out = jira::RunVerify(*conn_, Json::Value(Json::objectValue), source.get_token());
  EXPECT_EQ(out.status().reason(), "stopped");
  EXPECT_EQ(Times("/rest/api/3/myself").size(), 1u);
}

TEST_F(RestTest, UntrustedCertificateIsRefused) {
  StartDc();
  auto other = TestCa::Create("another-ca");
  WriteFile(dir_ / "other-ca.pem", other->cert_pem(), 0644);
  auto settings = DcSettings(false);
  settings.ca_file = dir_ / "other-ca.pem";
  auto c = Open(settings);
  auto out = jira::RunVerify(*c, Json::Value(Json::objectValue), {});
  EXPECT_EQ(out.status().reason(), "jira_unavailable");
  EXPECT_NE(out.status().message().find("certificate"), std::string::npos)
      << out.status().message();
  EXPECT_EQ(credentials_->gets("password"), 0);
}

}  // namespace
}  // namespace cakewalk::testing
