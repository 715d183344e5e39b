// The rules that judge a user (jira/sync_classify.h) and the progress line.
#include <gtest/gtest.h>

#include "jira/access_sync.h"
#include "jira/sync_classify.h"

namespace cakewalk::jira {
namespace {

TEST(GlobMatchTest, WildcardsAndCase) {
  EXPECT_TRUE(GlobMatch("svc-*", "svc-build"));
  EXPECT_TRUE(GlobMatch("svc-*", "SVC-Build"));
  EXPECT_TRUE(GlobMatch("svc-*", "svc-"));
  EXPECT_FALSE(GlobMatch("svc-*", "xsvc-build"));
  EXPECT_TRUE(GlobMatch("*-bot", "deploy-bot"));
  EXPECT_FALSE(GlobMatch("*-bot", "deploy-bot-2"));
  EXPECT_TRUE(GlobMatch("*-bot-*", "deploy-bot-2"));
  EXPECT_TRUE(GlobMatch("*a*b*c", "xxaxxbxxbc"));
  EXPECT_FALSE(GlobMatch("*a*b*c", "xxaxxbxxcb"));
  EXPECT_TRUE(GlobMatch("*", ""));
  EXPECT_FALSE(GlobMatch("", "x"));
  EXPECT_TRUE(GlobMatch("exact", "EXACT"));
  EXPECT_FALSE(GlobMatch("exact", "exactly"));
}

TEST(ClassifyCloudTest, AccountTypesAndServiceAccounts) {
  auto v = ClassifyCloudUser("atlassian", std::string("ada@corp.example"));
  EXPECT_TRUE(v.human);
  EXPECT_EQ(v.type, "");
  v = ClassifyCloudUser("app", std::nullopt);
  EXPECT_FALSE(v.human);
  EXPECT_EQ(v.type, "app");
  EXPECT_EQ(v.reason, "cloud_account_type:app");
  v = ClassifyCloudUser("app", std::string("ci-3@ServiceAccount.Atlassian.com"));
  EXPECT_EQ(v.type, "service_account");
  EXPECT_EQ(v.reason, "cloud_service_account");
  v = ClassifyCloudUser("customer", std::string("buyer@shop.example"));
  EXPECT_EQ(v.type, "customer");
  EXPECT_EQ(v.reason, "cloud_account_type:customer");
  v = ClassifyCloudUser("atlassian", std::string("x@serviceaccount.atlassian.com"));
  EXPECT_EQ(v.type, "service_account");
  EXPECT_EQ(v.reason, "service_account_email");
  // Look-alike domains are people.
  EXPECT_TRUE(
      ClassifyCloudUser("atlassian", std::string("x@serviceaccount.atlassian.com.evil")).human);
  EXPECT_TRUE(ClassifyCloudUser(std::nullopt, std::nullopt).human);
}

TEST(ClassifyDataCenterTest, EachRuleWithItsReason) {
  const std::vector<std::string> patterns = {"svc-*", "*-bot", "noreply*"};
  DcUserSignals u;
  u.username = "ada.lovelace";
  u.email = "ada@corp.example";
  u.has_product = true;
  u.ever_logged_in = true;
  EXPECT_TRUE(ClassifyDataCenterUser(u, patterns).human);

  u.username = "svc-backup";
  auto v = ClassifyDataCenterUser(u, patterns);
  EXPECT_EQ(v.type, "service_account");
  EXPECT_EQ(v.reason, "name_pattern:svc-*");

  u.username = "Deploy-BOT";
  v = ClassifyDataCenterUser(u, patterns);
  EXPECT_EQ(v.type, "bot");
  EXPECT_EQ(v.reason, "name_pattern:*-bot");

  u.username = "mailer";
  u.email = "noreply@corp.example";
  v = ClassifyDataCenterUser(u, patterns);
  EXPECT_EQ(v.reason, "name_pattern:noreply*");

  u.username = "integration";
  u.email = "integration@corp.example";
  u.owns_token = true;
  u.has_product = false;
  v = ClassifyDataCenterUser(u, patterns);
  EXPECT_EQ(v.type, "system");
  EXPECT_EQ(v.reason, "token_without_application_access");

  u.has_product = true;
  u.ever_logged_in = false;
  v = ClassifyDataCenterUser(u, patterns);
  EXPECT_EQ(v.type, "service_account");
  EXPECT_EQ(v.reason, "token_without_login");

  // A token alone does not make a person a machine; an unknown last login skips that rule.
  u.ever_logged_in = true;
  EXPECT_TRUE(ClassifyDataCenterUser(u, patterns).human);
  u.ever_logged_in = std::nullopt;
  EXPECT_TRUE(ClassifyDataCenterUser(u, patterns).human);
  // Never logged in without a token: a person who has not started yet.
  u.owns_token = false;
  u.ever_logged_in = false;
  EXPECT_TRUE(ClassifyDataCenterUser(u, patterns).human);
  // A type prefix names the kind.
  u.username = "sys-cron";
  v = ClassifyDataCenterUser(u, {"system:sys-*", "bot:*-ci"});
  EXPECT_EQ(v.type, "system");
  EXPECT_EQ(v.reason, "name_pattern:sys-*");
  u.username = "nightly-ci";
  EXPECT_EQ(ClassifyDataCenterUser(u, {"system:sys-*", "bot:*-ci"}).type, "bot");
  EXPECT_EQ(SplitPattern("svc-*").first, "service_account");
  EXPECT_EQ(SplitPattern("robots*").first, "bot");
  EXPECT_EQ(SplitPattern("unknown:x*").second, "unknown:x*");
  // No patterns configured: names decide nothing.
  u.username = "svc-backup";
  EXPECT_TRUE(ClassifyDataCenterUser(u, {}).human);
}

TEST(AccessLevelTest, Order) {
  EXPECT_EQ(AccessLevel(true, true, true), "system_admin");
  EXPECT_EQ(AccessLevel(true, false, false), "system_admin");
  EXPECT_EQ(AccessLevel(false, true, false), "admin");
  EXPECT_EQ(AccessLevel(false, false, true), "user");
  EXPECT_EQ(AccessLevel(false, false, false), "no_access");
}

TEST(DescribeProgressTest, SaysWhereTheSyncIs) {
  SyncProgress p;
  p.phase = "memberships";
  p.member_pages_done = 412;
  p.member_pages_known = 6104;
  p.member_pages_final = true;
  p.groups_done = 30;
  p.groups_known = 1005;
  p.users_seen = 20394;
  p.records = 1203;
  p.records_per_second = 850.4;
  p.requests = 980;
  p.concurrency = 6;
  p.eta = std::chrono::seconds(31);
  EXPECT_EQ(DescribeProgress(p),
            "access sync: memberships 412/6104 member pages, 30/1005 groups, 20394 users seen, "
            "1203 records sent (850/s), 980 requests, 6 parallel, ~31 s left");
  p.member_pages_final = false;
  p.phase = "users";
  p.eta = std::chrono::seconds(-1);
  EXPECT_EQ(DescribeProgress(p),
            "access sync: users, 20394 users seen, 1203 records sent (850/s), 980 requests, 6 "
            "parallel");
}

}  // namespace
}  // namespace cakewalk::jira
