// FakeJira, Data Center dialect: every quirk the agent must meet, driven through Handle().
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <set>

#include "tests/fakes/jira/fake_jira.h"
#include "tests/fakes/jira/fake_jira_test_util.h"
#include "tests/support/fake_clock.h"

namespace cakewalk::testing {
namespace {

constexpr char kAdminPassword[] = "admin-pass-1";
constexpr char kAlicePassword[] = "alice-pass-1";

class DcTest : public ::testing::Test {
 protected:
  void Make(std::string version = "10.3.4",
            const std::function<void(FakeJiraOptions&)>& tweak = {}) {
    FakeJiraOptions o;
    o.version = std::move(version);
    o.clock = &clock_;
    if (tweak) tweak(o);
    jira_ = std::make_unique<FakeJira>(o);
    NewUser admin;
    admin.username = "admin";
    admin.email = "admin@corp.example";
    admin.display_name = "Admin";
    admin.password = kAdminPassword;
    admin.groups = {"jira-administrators", "jira-system-administrators", "jira-software-users"};
    ASSERT_TRUE(jira_->AddUser(admin).ok());
    NewUser alice;
    alice.username = "alice";
    alice.email = "alice@corp.example";
    alice.display_name = "Alice Liddell";
    alice.password = kAlicePassword;
    alice.groups = {"jira-software-users"};
    ASSERT_TRUE(jira_->AddUser(alice).ok());
  }
  HttpResponse Get(const std::string& target) {
    return Call(*jira_, Req("GET", target).Basic("admin", kAdminPassword));
  }
  // Logs in through /rest/auth/1/session; returns the Cookie header value.
  std::string SessionCookie(const std::string& user, const std::string& password) {
    Json::Value body;
    body["username"] = user;
    body["password"] = password;
    HttpResponse r = Call(*jira_, Req("POST", "/rest/auth/1/session").Json(body));
    EXPECT_EQ(r.status, 200) << r.body;
    return "JSESSIONID=" + SetCookie(r, "JSESSIONID") +
           "; atlassian.xsrf.token=" + SetCookie(r, "atlassian.xsrf.token");
  }
  std::int64_t Unix() const {
    return std::chrono::duration_cast<std::chrono::seconds>(clock_.Now().time_since_epoch())
        .count();
  }

  FakeClock clock_;
  std::unique_ptr<FakeJira> jira_;
};

TEST_F(DcTest, ServerInfoReportsTheConfiguredVersionAnonymously) {
  Make("9.12.0");
  HttpResponse r = Call(*jira_, Req("GET", "/rest/api/2/serverInfo"));
  ASSERT_EQ(r.status, 200);
  Json::Value j = Body(r);
  EXPECT_EQ(j["version"].asString(), "9.12.0");
  EXPECT_EQ(j["versionNumbers"][0].asInt(), 9);
  EXPECT_EQ(j["versionNumbers"][1].asInt(), 12);
  EXPECT_EQ(j["baseUrl"].asString(), "https://jira.test");
  EXPECT_EQ(HeaderOf(r, "X-AUSERNAME"), "anonymous");
  // The Date header follows the injected clock (the agent measures skew against it).
  EXPECT_EQ(HeaderOf(r, "Date"), FormatHttpDate(clock_.Now()));
}

TEST_F(DcTest, ContextPathPrefixesEveryRoute) {
  Make("10.3.4", [](FakeJiraOptions& o) { o.context_path = "/jira"; });
  EXPECT_EQ(Call(*jira_, Req("GET", "/jira/rest/api/2/serverInfo")).status, 200);
  HttpResponse outside = Call(*jira_, Req("GET", "/rest/api/2/serverInfo"));
  EXPECT_EQ(outside.status, 404);
  EXPECT_NE(HeaderOf(outside, "Content-Type").find("text/html"), std::string::npos);
  EXPECT_EQ(Body(Call(*jira_, Req("GET", "/jira/rest/api/2/serverInfo")))["baseUrl"].asString(),
            "https://jira.test/jira");
}

TEST_F(DcTest, WrongBasicCredentialsGiveAnonymous200OnPermissiveEndpointsAnd401OnMyself) {
  Make("10.3.4", [](FakeJiraOptions& o) { o.captcha_threshold = 5; });
  HttpResponse info = Call(*jira_, Req("GET", "/rest/api/2/serverInfo").Basic("admin", "wrong"));
  EXPECT_EQ(info.status, 200);
  EXPECT_EQ(HeaderOf(info, "X-Seraph-LoginReason"), "AUTHENTICATED_FAILED");
  EXPECT_EQ(HeaderOf(info, "X-AUSERNAME"), "anonymous");

  HttpResponse search =
      Call(*jira_, Req("GET", "/rest/api/2/user/search?username=.").Basic("admin", "wrong"));
  EXPECT_EQ(search.status, 200);
  EXPECT_EQ(Body(search).size(), 0u);  // an empty directory, not an error
  EXPECT_EQ(HeaderOf(search, "X-Seraph-LoginReason"), "AUTHENTICATED_FAILED");

  HttpResponse me = Call(*jira_, Req("GET", "/rest/api/2/myself").Basic("admin", "wrong"));
  EXPECT_EQ(me.status, 401);
  EXPECT_EQ(HeaderOf(me, "X-Seraph-LoginReason"), "AUTHENTICATED_FAILED");

  HttpResponse ok = Get("/rest/api/2/myself");
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(HeaderOf(ok, "X-Seraph-LoginReason"), "OK");
  EXPECT_EQ(Body(ok)["name"].asString(), "admin");

  auto attempts = jira_->LoginAttempts("admin");
  ASSERT_EQ(attempts.size(), 4u);
  EXPECT_EQ(attempts[0].outcome, "bad_credentials");
  EXPECT_EQ(attempts[3].outcome, "ok");
}

TEST_F(DcTest, CaptchaAfterThresholdIsStickyEvenForTheRightPasswordUntilReset) {
  Make("10.3.4", [](FakeJiraOptions& o) { o.captcha_threshold = 3; });
  for (int i = 0; i < 3; ++i) {
    HttpResponse r = Call(*jira_, Req("GET", "/rest/api/2/myself").Basic("alice", "nope"));
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(HeaderOf(r, "X-Seraph-LoginReason"), "AUTHENTICATED_FAILED");
  }
  EXPECT_EQ(jira_->FailedLoginCount("alice"), 3);
  for (int i = 0; i < 2; ++i) {
    HttpResponse r = Call(*jira_, Req("GET", "/rest/api/2/myself").Basic("alice", kAlicePassword));
    EXPECT_EQ(r.status, 403);
    EXPECT_EQ(HeaderOf(r, "X-Seraph-LoginReason"), "AUTHENTICATION_DENIED");
    EXPECT_EQ(HeaderOf(r, "X-Authentication-Denied-Reason"),
              "CAPTCHA_CHALLENGE; login-url=https://jira.test/login.jsp");
  }
  // Other users are not affected.
  EXPECT_EQ(Get("/rest/api/2/myself").status, 200);
  jira_->ResetFailedLoginCount("alice");
  HttpResponse after =
      Call(*jira_, Req("GET", "/rest/api/2/myself").Basic("alice", kAlicePassword));
  EXPECT_EQ(after.status, 200);
  EXPECT_EQ(HeaderOf(after, "X-Seraph-LoginReason"), "OK");
}

TEST_F(DcTest, SuccessfulLoginBelowThresholdResetsTheCounter) {
  Make("10.3.4", [](FakeJiraOptions& o) { o.captcha_threshold = 3; });
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 2; ++i) Call(*jira_, Req("GET", "/rest/api/2/myself").Basic("alice", "x"));
    EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/myself").Basic("alice", kAlicePassword)).status,
              200);
    EXPECT_EQ(jira_->FailedLoginCount("alice"), 0);
  }
}

TEST_F(DcTest, NonAsciiBasicCredentialsFail) {
  Make();
  ASSERT_TRUE(jira_->SetPassword("alice", "pässwort-1").ok());
  HttpResponse r = Call(*jira_, Req("GET", "/rest/api/2/myself").Basic("alice", "pässwort-1"));
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(HeaderOf(r, "X-Seraph-LoginReason"), "AUTHENTICATED_FAILED");
}

TEST_F(DcTest, Jira11RefusesBasicAndSessionLoginButAcceptsPatAndTwoStepLogin) {
  Make("11.0.1");
  HttpResponse basic = Get("/rest/api/2/myself");
  EXPECT_EQ(basic.status, 401);
  EXPECT_EQ(jira_->LoginAttempts("admin").back().outcome, "basic_disabled");
  Json::Value login;
  login["username"] = "admin";
  login["password"] = kAdminPassword;
  EXPECT_EQ(Call(*jira_, Req("POST", "/rest/auth/1/session").Json(login)).status, 403);

  auto pat = jira_->AddPersonalAccessToken("admin", "agent", std::nullopt);
  ASSERT_TRUE(pat.ok());
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/myself").Bearer(*pat)).status, 200);

  login["rememberMe"] = false;
  login["targetUrl"] = "";
  HttpResponse tsv = Call(*jira_, Req("POST", "/rest/tsv/1.0/authenticate").NoCheck().Json(login));
  ASSERT_EQ(tsv.status, 200) << tsv.body;
  const std::string cookie = "JSESSIONID=" + SetCookie(tsv, "JSESSIONID");
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/myself").Cookie(cookie)).status, 200);

  // A test may turn Basic back on (the basic-auth allow-list case).
  jira_->SetBasicAuthEnabled(true);
  EXPECT_EQ(Get("/rest/api/2/myself").status, 200);
}

TEST_F(DcTest, CookieSessionNeedsNoCheckHeaderForWrites) {
  Make();
  const std::string cookie = SessionCookie("admin", kAdminPassword);
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/myself").Cookie(cookie)).status, 200);
  Json::Value body;
  body["name"] = "alice";
  HttpResponse refused =
      Call(*jira_, Req("POST", "/rest/api/2/group/user?groupname=jira-administrators")
                       .Cookie(cookie)
                       .Json(body));
  EXPECT_EQ(refused.status, 403);
  EXPECT_EQ(refused.body, "XSRF check failed");
  EXPECT_EQ(jira_->FindUser("alice")->groups, std::vector<std::string>{"jira-software-users"});
  HttpResponse ok = Call(*jira_, Req("POST", "/rest/api/2/group/user?groupname=jira-administrators")
                                     .Cookie(cookie)
                                     .NoCheck()
                                     .Json(body));
  EXPECT_EQ(ok.status, 201) << ok.body;
  // Basic-authenticated writes need no such header.
  EXPECT_EQ(Call(*jira_, Req("DELETE",
                             "/rest/api/2/group/user?groupname=jira-administrators&username=alice")
                             .Basic("admin", kAdminPassword))
                .status,
            200);
}

TEST_F(DcTest, SessionsExpireWhenIdleAndWhenTheTestSaysSo) {
  Make("10.3.4", [](FakeJiraOptions& o) { o.session_idle_timeout = std::chrono::seconds(600); });
  std::string cookie = SessionCookie("admin", kAdminPassword);
  clock_.Advance(std::chrono::seconds(599));
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/myself").Cookie(cookie)).status, 200);
  clock_.Advance(std::chrono::seconds(601));
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/myself").Cookie(cookie)).status, 401);
  cookie = SessionCookie("admin", kAdminPassword);
  EXPECT_EQ(jira_->ActiveSessionCount("admin"), 1);
  jira_->ExpireSessions("admin");
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/myself").Cookie(cookie)).status, 401);
}

class TwoStepTest : public DcTest {
 protected:
  void SetUp() override {
    Make("10.3.4", [](FakeJiraOptions& o) { o.totp_step_tolerance = 1; });
    ASSERT_TRUE(jira_->EnrolTotp("admin", seed_).ok());
  }
  std::string StartLogin() {
    Json::Value login;
    login["username"] = "admin";
    login["password"] = kAdminPassword;
    login["rememberMe"] = false;
    login["targetUrl"] = "";
    HttpResponse r = Call(*jira_, Req("POST", "/rest/tsv/1.0/authenticate").NoCheck().Json(login));
    EXPECT_EQ(r.status, 412) << r.body;
    Json::Value j = Body(r);
    EXPECT_EQ(j["nextLoginStep"].asString(), "TOTP_CODE_VERIFICATION");
    EXPECT_TRUE(SetCookie(r, "JSESSIONID").empty());  // no session before the second factor
    return j["conversationId"].asString();
  }
  HttpResponse SendCode(const std::string& conversation, const std::string& code) {
    Json::Value body;
    body["conversationId"] = conversation;
    body["totpCode"] = code;
    return Call(*jira_, Req("POST", "/rest/tsv/1.0/authenticate/totp-code").NoCheck().Json(body));
  }
  std::vector<std::uint8_t> seed_ = {0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x30,
                                     0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x30};
};

TEST_F(TwoStepTest, CorrectCodeGives204WithSessionCookies) {
  const std::string conversation = StartLogin();
  HttpResponse r = SendCode(conversation, ExpectedTotp(seed_, Unix()));
  ASSERT_EQ(r.status, 204) << r.body;
  const std::string session = SetCookie(r, "JSESSIONID");
  const std::string xsrf = SetCookie(r, "atlassian.xsrf.token");
  EXPECT_FALSE(session.empty());
  EXPECT_FALSE(xsrf.empty());
  HttpResponse me = Call(*jira_, Req("GET", "/rest/api/2/myself").Cookie("JSESSIONID=" + session));
  EXPECT_EQ(me.status, 200);
  EXPECT_EQ(Body(me)["name"].asString(), "admin");
  // The conversation is spent.
  EXPECT_EQ(SendCode(conversation, ExpectedTotp(seed_, Unix())).status, 400);
  ASSERT_FALSE(jira_->TotpEvents().empty());
  EXPECT_EQ(jira_->TotpEvents().front().outcome, "accepted");
}

TEST_F(TwoStepTest, WrongCodeIs401AndUnknownConversationIs400) {
  const std::string conversation = StartLogin();
  const std::string right = ExpectedTotp(seed_, Unix());
  std::string wrong = right;
  wrong[5] = wrong[5] == '9' ? '0' : static_cast<char>(wrong[5] + 1);
  EXPECT_EQ(SendCode(conversation, wrong).status, 401);
  EXPECT_EQ(SendCode("no-such-conversation", right).status, 400);
  // A wrong code does not spend the conversation (below the attempt limit).
  EXPECT_EQ(SendCode(conversation, right).status, 204);
}

TEST_F(TwoStepTest, ACodeIsAcceptedOnlyOnce) {
  const std::string code = ExpectedTotp(seed_, Unix());
  EXPECT_EQ(SendCode(StartLogin(), code).status, 204);
  HttpResponse again = SendCode(StartLogin(), code);
  EXPECT_EQ(again.status, 401);
  EXPECT_EQ(jira_->TotpEvents().back().outcome, "reused");
  clock_.Advance(std::chrono::seconds(30));
  EXPECT_EQ(SendCode(StartLogin(), ExpectedTotp(seed_, Unix())).status, 204);
}

TEST_F(TwoStepTest, StepToleranceIsRespected) {
  const std::int64_t now = Unix();
  EXPECT_EQ(SendCode(StartLogin(), ExpectedTotp(seed_, now - 30)).status, 204);
  EXPECT_EQ(SendCode(StartLogin(), ExpectedTotp(seed_, now - 60)).status, 401);
  EXPECT_EQ(SendCode(StartLogin(), ExpectedTotp(seed_, now + 30)).status, 204);
  EXPECT_EQ(SendCode(StartLogin(), ExpectedTotp(seed_, now + 90)).status, 401);
}

TEST_F(DcTest, ZeroToleranceRefusesThePreviousStep) {
  Make("10.3.4", [](FakeJiraOptions& o) { o.totp_step_tolerance = 0; });
  std::vector<std::uint8_t> seed(20, 0x42);
  ASSERT_TRUE(jira_->EnrolTotp("admin", seed).ok());
  Json::Value login;
  login["username"] = "admin";
  login["password"] = kAdminPassword;
  auto start = [&] {
    return Body(Call(
        *jira_, Req("POST", "/rest/tsv/1.0/authenticate").NoCheck().Json(login)))["conversationId"]
        .asString();
  };
  auto send = [&](const std::string& c, const std::string& code) {
    Json::Value b;
    b["conversationId"] = c;
    b["totpCode"] = code;
    return Call(*jira_, Req("POST", "/rest/tsv/1.0/authenticate/totp-code").NoCheck().Json(b))
        .status;
  };
  EXPECT_EQ(send(start(), ExpectedTotp(seed, Unix() - 30)), 401);
  EXPECT_EQ(send(start(), ExpectedTotp(seed, Unix())), 204);
}

TEST_F(TwoStepTest, ConversationsExpireAndWrongCodesAreLimited) {
  std::string conversation = StartLogin();
  clock_.Advance(std::chrono::seconds(301));
  EXPECT_EQ(SendCode(conversation, ExpectedTotp(seed_, Unix())).status, 400);
  EXPECT_EQ(jira_->TotpEvents().back().outcome, "expired");
  conversation = StartLogin();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(SendCode(conversation, "000000").status, 401);
  EXPECT_EQ(SendCode(conversation, ExpectedTotp(seed_, Unix())).status, 400);
}

TEST_F(DcTest, TwoStepLoginExistsFrom10_3On) {
  Json::Value login;
  login["username"] = "alice";
  login["password"] = kAlicePassword;
  Make("9.12.0");
  EXPECT_EQ(Call(*jira_, Req("POST", "/rest/tsv/1.0/authenticate").NoCheck().Json(login)).status,
            404);
  Make("10.2.0", [](FakeJiraOptions& o) { o.two_step_login = true; });
  EXPECT_EQ(Call(*jira_, Req("POST", "/rest/tsv/1.0/authenticate").NoCheck().Json(login)).status,
            200);
  Make("10.3.0");
  EXPECT_EQ(Call(*jira_, Req("POST", "/rest/tsv/latest/authenticate").NoCheck().Json(login)).status,
            200);
}

TEST_F(DcTest, TwoStepEnforcedWithoutEnrolmentAsksForEnrollment) {
  Make();
  ASSERT_TRUE(jira_->EnforceTwoStep("alice", true).ok());
  Json::Value login;
  login["username"] = "alice";
  login["password"] = kAlicePassword;
  HttpResponse r = Call(*jira_, Req("POST", "/rest/tsv/1.0/authenticate").NoCheck().Json(login));
  EXPECT_EQ(r.status, 412);
  EXPECT_EQ(Body(r)["nextLoginStep"].asString(), "ENROLLMENT");
  // And the password-only session login cannot skip the second factor.
  EXPECT_EQ(Call(*jira_, Req("POST", "/rest/auth/1/session").Json(login)).status, 403);
}

TEST_F(DcTest, TwoStepPasswordFailuresCountTowardsCaptchaAndReportExpiry) {
  Make("10.3.4", [](FakeJiraOptions& o) { o.captcha_threshold = 2; });
  Json::Value login;
  login["username"] = "alice";
  login["password"] = "wrong";
  for (int i = 0; i < 2; ++i) {
    HttpResponse r = Call(*jira_, Req("POST", "/rest/tsv/1.0/authenticate").NoCheck().Json(login));
    EXPECT_EQ(r.status, 401);
    EXPECT_FALSE(Body(r)["expiredCredentials"].asBool());
  }
  login["password"] = kAlicePassword;
  HttpResponse captcha =
      Call(*jira_, Req("POST", "/rest/tsv/1.0/authenticate").NoCheck().Json(login));
  EXPECT_EQ(captcha.status, 401);
  EXPECT_TRUE(Body(captcha)["captchaRequired"].asBool());
  jira_->ResetFailedLoginCount();
  ASSERT_TRUE(jira_->SetPasswordExpired("alice", true).ok());
  HttpResponse expired =
      Call(*jira_, Req("POST", "/rest/tsv/1.0/authenticate").NoCheck().Json(login));
  EXPECT_EQ(expired.status, 401);
  EXPECT_TRUE(Body(expired)["expiredCredentials"].asBool());
  EXPECT_FALSE(Body(expired)["captchaRequired"].asBool());
}

TEST_F(DcTest, UserSearchOn9xPagesThrough1000PerPageAndDotMatchesEveryone) {
  Make("9.12.0");
  SiteSpec spec;
  spec.users = 2500;
  spec.groups = 5;
  spec.memberships = 100;
  spec.inactive_fraction = 0;
  FakeJiraOptions o;
  o.version = "9.12.0";
  o.clock = &clock_;
  jira_ = std::make_unique<FakeJira>(o);
  ASSERT_TRUE(jira_->GenerateSite(spec).ok());
  NewUser admin;
  admin.username = "admin";
  admin.email = "admin@corp.example";
  admin.password = kAdminPassword;
  admin.groups = {"jira-administrators", "jira-software-users"};
  ASSERT_TRUE(jira_->AddUser(admin).ok());
  std::set<std::string> seen;
  int pages = 0;
  for (int start = 0;; start += 1000) {
    Json::Value page = OkArray(
        Get("/rest/api/2/user/search?username=.&maxResults=5000&startAt=" + std::to_string(start)));
    ++pages;
    EXPECT_LE(page.size(), 1000u);
    for (const auto& u : page) EXPECT_TRUE(seen.insert(u["key"].asString()).second);
    if (page.empty()) break;
  }
  EXPECT_EQ(seen.size(), 2501u);
  EXPECT_EQ(pages, 4);
}

TEST_F(DcTest, UserSearchOn10xReachesOnlyTheFirst100Results) {
  for (const char* version : {"10.1.1", "10.3.4", "11.0.1"}) {
    FakeJiraOptions o;
    o.version = version;
    o.clock = &clock_;
    o.basic_auth_enabled = true;
    jira_ = std::make_unique<FakeJira>(o);
    SiteSpec spec;
    spec.users = 300;
    spec.groups = 2;
    spec.memberships = 10;
    ASSERT_TRUE(jira_->GenerateSite(spec).ok());
    NewUser admin;
    admin.username = "admin";
    admin.email = "admin@corp.example";
    admin.password = kAdminPassword;
    admin.groups = {"jira-administrators", "jira-software-users"};
    ASSERT_TRUE(jira_->AddUser(admin).ok());
    EXPECT_EQ(Body(Get("/rest/api/2/user/search?username=.&maxResults=1000")).size(), 100u)
        << version;
    EXPECT_EQ(Body(Get("/rest/api/2/user/search?username=.&startAt=90&maxResults=50")).size(), 10u);
    EXPECT_EQ(Body(Get("/rest/api/2/user/search?username=.&startAt=100&maxResults=50")).size(), 0u);
  }
}

TEST_F(DcTest, UserSearchMatchesPrefixesAndFiltersInactive) {
  Make();
  NewUser bob;
  bob.username = "bob";
  bob.email = "robert@corp.example";
  bob.display_name = "Robert Tables";
  bob.active = false;
  ASSERT_TRUE(jira_->AddUser(bob).ok());
  EXPECT_EQ(Body(Get("/rest/api/2/user/search?username=ali")).size(), 1u);
  EXPECT_EQ(Body(Get("/rest/api/2/user/search?username=liddell")).size(), 1u);  // display-name word
  EXPECT_EQ(Body(Get("/rest/api/2/user/search?username=tables")).size(), 0u);   // inactive
  EXPECT_EQ(Body(Get("/rest/api/2/user/search?username=tables&includeInactive=true")).size(), 1u);
  EXPECT_EQ(Get("/rest/api/2/user/search").status, 400);
}

TEST_F(DcTest, UserListCursorsReturnEveryUserOnceAndUnknownCursorsGiveAnEmptyLastPage) {
  FakeJiraOptions o;
  o.clock = &clock_;
  jira_ = std::make_unique<FakeJira>(o);
  SiteSpec spec;
  spec.users = 5000;
  spec.groups = 10;
  spec.memberships = 1000;
  ASSERT_TRUE(jira_->GenerateSite(spec).ok());
  NewUser admin;
  admin.username = "admin";
  admin.email = "admin@corp.example";
  admin.password = kAdminPassword;
  admin.groups = {"jira-administrators", "jira-software-users"};
  ASSERT_TRUE(jira_->AddUser(admin).ok());
  // Delete a few users, so the listing has gaps.
  std::vector<std::string> victims;
  for (const auto& u : jira_->ExpectedSyncUsers()) {
    if (u.directory == "Jira Internal Directory" && u.username != "admin")
      victims.push_back(u.username);
  }
  ASSERT_GT(victims.size(), 100u);
  for (std::size_t k : {std::size_t{0}, std::size_t{1}, victims.size() / 2, victims.size() - 1}) {
    ASSERT_EQ(Call(*jira_, Req("DELETE", "/rest/api/2/user?username=" + UrlEncode(victims[k]))
                               .Basic("admin", kAdminPassword))
                  .status,
              204);
  }
  std::set<std::string> expected;
  for (const auto& u : jira_->ExpectedSyncUsers()) expected.insert(u.id);
  std::set<std::string> seen;
  std::string next = "/rest/api/2/user/list?maxResults=700";
  int pages = 0;
  while (true) {
    Json::Value page = OkPage(Get(next));
    ++pages;
    for (const auto& u : page["values"]) EXPECT_TRUE(seen.insert(u["key"].asString()).second);
    if (page["isLast"].asBool()) {
      EXPECT_FALSE(page.isMember("nextCursor"));
      break;
    }
    next = "/rest/api/2/user/list?maxResults=700&cursor=" + page["nextCursor"].asString();
    EXPECT_EQ(page["nextPage"].asString(), "https://jira.test" + next.substr(0, next.find('?')) +
                                               "?cursor=" + page["nextCursor"].asString() +
                                               "&maxResults=700");
  }
  EXPECT_EQ(seen, expected);
  EXPECT_EQ(pages, 8);
  EXPECT_EQ(Body(Get("/rest/api/2/user/list"))["values"].size(), 2000u);  // the default page size
  for (const char* cursor : {"99999999", "garbage", "-5"}) {
    HttpResponse r = Get(std::string("/rest/api/2/user/list?cursor=") + cursor);
    ASSERT_EQ(r.status, 200) << cursor;
    EXPECT_TRUE(Body(r)["isLast"].asBool());
    EXPECT_EQ(Body(r)["values"].size(), 0u);
  }
}

TEST_F(DcTest, UserListExistsFrom10_3On) {
  Make("10.2.0");
  EXPECT_EQ(Get("/rest/api/2/user/list").status, 404);
  Make("10.3.0");
  EXPECT_EQ(Get("/rest/api/2/user/list").status, 200);
  Make("11.2.0", [](FakeJiraOptions& o) { o.basic_auth_enabled = true; });
  EXPECT_EQ(Get("/rest/api/2/user/list").status, 200);
}

TEST_F(DcTest, GroupMemberPagesHoldAtMost50AndHonourIncludeInactive) {
  FakeJiraOptions o;
  o.clock = &clock_;
  jira_ = std::make_unique<FakeJira>(o);
  SiteSpec spec;
  spec.users = 400;
  spec.groups = 1;
  spec.memberships = 0;
  spec.product_access_fraction = 1.0;
  spec.non_human_fraction = 0;
  spec.inactive_fraction = 0.25;
  ASSERT_TRUE(jira_->GenerateSite(spec).ok());
  NewUser admin;
  admin.username = "admin";
  admin.email = "admin@corp.example";
  admin.password = kAdminPassword;
  admin.groups = {"jira-administrators"};
  ASSERT_TRUE(jira_->AddUser(admin).ok());
  std::size_t all = 0, active = 0;
  for (bool inactive : {true, false}) {
    std::set<std::string> seen;
    int start = 0;
    while (true) {
      Json::Value page = OkPage(
          Get("/rest/api/2/group/member?groupname=jira-software-users&maxResults=200&startAt=" +
              std::to_string(start) + (inactive ? "&includeInactiveUsers=true" : "")));
      EXPECT_EQ(page["maxResults"].asInt(), 50);
      EXPECT_LE(page["values"].size(), 50u);
      for (const auto& u : page["values"]) {
        EXPECT_TRUE(seen.insert(u["name"].asString()).second);
        if (!inactive) {
          EXPECT_TRUE(u["active"].asBool());
        }
      }
      if (page["isLast"].asBool()) {
        EXPECT_FALSE(page.isMember("nextPage"));
        EXPECT_EQ(page["total"].asUInt64(), seen.size());
        break;
      }
      EXPECT_TRUE(page.isMember("nextPage"));
      start += 50;
    }
    (inactive ? all : active) = seen.size();
  }
  EXPECT_EQ(all, 400u);
  EXPECT_LT(active, all);
  EXPECT_GT(active, 250u);
  EXPECT_EQ(Get("/rest/api/2/group/member?groupname=nope").status, 404);
  EXPECT_EQ(Get("/rest/api/2/group/member").status, 400);
}

TEST_F(DcTest, GroupMembershipChangesAreLoggedWithTheirProductEffects) {
  Make();
  Json::Value body;
  body["name"] = "alice";
  HttpResponse added =
      Call(*jira_, Req("POST", "/rest/api/2/group/user?groupname=jira-servicedesk-users")
                       .Basic("admin", kAdminPassword)
                       .Json(body));
  ASSERT_EQ(added.status, 201);
  EXPECT_EQ(Body(added)["name"].asString(), "jira-servicedesk-users");
  EXPECT_EQ(Call(*jira_, Req("POST", "/rest/api/2/group/user?groupname=jira-servicedesk-users")
                             .Basic("admin", kAdminPassword)
                             .Json(body))
                .status,
            400);
  EXPECT_EQ(Call(*jira_, Req("POST", "/rest/api/2/group/user?groupname=no-such-group")
                             .Basic("admin", kAdminPassword)
                             .Json(body))
                .status,
            404);
  body["name"] = "nobody";
  EXPECT_EQ(Call(*jira_, Req("POST", "/rest/api/2/group/user?groupname=jira-servicedesk-users")
                             .Basic("admin", kAdminPassword)
                             .Json(body))
                .status,
            404);
  auto alice = jira_->FindUser("alice");
  EXPECT_EQ(alice->products, (std::vector<std::string>{"jira-servicedesk", "jira-software"}));
  auto log = jira_->Mutations();
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].kind, "group_member_added");
  EXPECT_EQ(log[0].Describe(), "alice added to jira-servicedesk-users");
  EXPECT_EQ(log[0].actor, "admin");
  EXPECT_EQ(log[1].kind, "product_granted");
  EXPECT_EQ(log[1].object, "jira-servicedesk");

  const std::string remove =
      "/rest/api/2/group/user?groupname=jira-servicedesk-users&username=alice";
  EXPECT_EQ(Call(*jira_, Req("DELETE", remove).Basic("admin", kAdminPassword)).status, 200);
  EXPECT_EQ(Call(*jira_, Req("DELETE", remove).Basic("admin", kAdminPassword)).status, 400);
  EXPECT_EQ(jira_->Mutations().back().kind, "product_revoked");
  // Non-admins are refused; system-admin groups need a system administrator.
  body["name"] = "alice";
  EXPECT_EQ(Call(*jira_, Req("POST", "/rest/api/2/group/user?groupname=jira-core-users")
                             .Basic("alice", kAlicePassword)
                             .Json(body))
                .status,
            403);
}

TEST_F(DcTest, ApplicationAccessGrantRevokeAndSeatLimits) {
  Make("10.3.4", [](FakeJiraOptions& o) { o.seat_limits["jira-servicedesk"] = 1; });
  const std::string grant =
      "/rest/api/2/user/application?username=alice&applicationKey=jira-servicedesk";
  EXPECT_EQ(Call(*jira_, Req("POST", grant).Basic("admin", kAdminPassword)).status, 200);
  EXPECT_EQ(jira_->FindUser("alice")->groups,
            (std::vector<std::string>{"jira-servicedesk-users", "jira-software-users"}));
  // The only seat is taken: the admin cannot get one.
  HttpResponse full = Call(
      *jira_,
      Req("POST", "/rest/api/2/user/application?username=admin&applicationKey=jira-servicedesk")
          .Basic("admin", kAdminPassword));
  EXPECT_EQ(full.status, 400);
  EXPECT_NE(Body(full)["errorMessages"][0].asString().find("Licence exceeded"), std::string::npos);
  Json::Value roles = Body(Get("/rest/api/2/applicationrole/jira-servicedesk"));
  EXPECT_EQ(roles["numberOfSeats"].asInt(), 1);
  EXPECT_EQ(roles["remainingSeats"].asInt(), 0);
  EXPECT_EQ(roles["userCount"].asInt(), 1);
  EXPECT_EQ(Call(*jira_, Req("DELETE", grant).Basic("admin", kAdminPassword)).status, 204);
  EXPECT_EQ(jira_->FindUser("alice")->products, std::vector<std::string>{"jira-software"});
  EXPECT_EQ(
      Call(*jira_, Req("POST", "/rest/api/2/user/application?username=alice&applicationKey=nope")
                       .Basic("admin", kAdminPassword))
          .status,
      400);
}

TEST_F(DcTest, ApplicationRoleUpdatesNeedAFreshEtag) {
  Make();
  HttpResponse get = Get("/rest/api/2/applicationrole/jira-core");
  const std::string etag = HeaderOf(get, "ETag");
  ASSERT_FALSE(etag.empty());
  Json::Value body;
  body["groups"].append("jira-core-users");
  body["groups"].append("jira-software-users");
  body["defaultGroups"].append("jira-core-users");
  HttpResponse put = Call(*jira_, Req("PUT", "/rest/api/2/applicationrole/jira-core")
                                      .Basic("admin", kAdminPassword)
                                      .Header("If-Match", etag)
                                      .Json(body));
  ASSERT_EQ(put.status, 200) << put.body;
  EXPECT_NE(HeaderOf(put, "ETag"), etag);
  EXPECT_EQ(jira_->FindUser("alice")->products,
            (std::vector<std::string>{"jira-core", "jira-software"}));
  HttpResponse stale = Call(*jira_, Req("PUT", "/rest/api/2/applicationrole/jira-core")
                                        .Basic("admin", kAdminPassword)
                                        .Header("If-Match", etag)
                                        .Json(body));
  EXPECT_EQ(stale.status, 412);
  Json::Value all = Body(Get("/rest/api/2/applicationrole"));
  ASSERT_TRUE(all.isArray());
  EXPECT_EQ(all.size(), 3u);
}

TEST_F(DcTest, DeactivationThroughPutDependsOnTheVersion) {
  Json::Value body;
  body["active"] = false;
  Make("10.3.4");
  HttpResponse ok =
      Call(*jira_,
           Req("PUT", "/rest/api/2/user?username=alice").Basic("admin", kAdminPassword).Json(body));
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_FALSE(Body(ok)["active"].asBool());
  EXPECT_FALSE(jira_->FindUser("alice")->active);
  EXPECT_EQ(jira_->Mutations().back().kind, "user_deactivated");
  // An inactive user cannot log in.
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/myself").Basic("alice", kAlicePassword)).status,
            401);

  Make("10.1.1");
  HttpResponse refused =
      Call(*jira_,
           Req("PUT", "/rest/api/2/user?username=alice").Basic("admin", kAdminPassword).Json(body));
  EXPECT_EQ(refused.status, 400);
  EXPECT_EQ(Body(refused)["errorMessages"][0].asString(), "error.no.value.found.to.be.changed");
  EXPECT_TRUE(jira_->FindUser("alice")->active);
  EXPECT_TRUE(jira_->Mutations().empty());
}

TEST_F(DcTest, UsersInReadOnlyDirectoriesCannotBeChanged) {
  Make();
  NewUser ldap;
  ldap.username = "carol";
  ldap.email = "carol@corp.example";
  ldap.directory = "Corporate LDAP";
  ASSERT_TRUE(jira_->AddUser(ldap).ok());
  Json::Value body;
  body["active"] = false;
  EXPECT_EQ(
      Call(*jira_,
           Req("PUT", "/rest/api/2/user?username=carol").Basic("admin", kAdminPassword).Json(body))
          .status,
      403);
  EXPECT_EQ(
      Call(*jira_, Req("DELETE", "/rest/api/2/user?username=carol").Basic("admin", kAdminPassword))
          .status,
      400);
}

TEST_F(DcTest, CreateUserValidatesAndGrantsDefaultApplications) {
  Make();
  Json::Value body;
  body["name"] = "dave";
  body["emailAddress"] = "dave@corp.example";
  body["displayName"] = "Dave";
  HttpResponse created =
      Call(*jira_, Req("POST", "/rest/api/2/user").Basic("admin", kAdminPassword).Json(body));
  ASSERT_EQ(created.status, 201) << created.body;
  Json::Value j = Body(created);
  EXPECT_EQ(j["name"].asString(), "dave");
  EXPECT_TRUE(j["key"].asString().rfind("JIRAUSER", 0) == 0);
  EXPECT_EQ(j["self"].asString(), "https://jira.test/rest/api/2/user?username=dave");
  EXPECT_EQ(jira_->FindUser("dave")->products, std::vector<std::string>{"jira-software"});
  EXPECT_EQ(jira_->Mutations().front().Describe(), "created user dave");
  HttpResponse dup =
      Call(*jira_, Req("POST", "/rest/api/2/user").Basic("admin", kAdminPassword).Json(body));
  EXPECT_EQ(dup.status, 400);
  EXPECT_TRUE(Body(dup)["errors"].isMember("username"));
  Json::Value partial;
  partial["name"] = "erin";
  HttpResponse missing =
      Call(*jira_, Req("POST", "/rest/api/2/user").Basic("admin", kAdminPassword).Json(partial));
  EXPECT_EQ(missing.status, 400);
  EXPECT_TRUE(Body(missing)["errors"].isMember("email"));
  body["name"] = "frank";
  body["applicationKeys"] = Json::Value(Json::arrayValue);
  body["applicationKeys"].append("jira-core");
  body["unexpected"] = true;
  EXPECT_EQ(Call(*jira_, Req("POST", "/rest/api/2/user").Basic("admin", kAdminPassword).Json(body))
                .status,
            400);
  body.removeMember("unexpected");
  ASSERT_EQ(Call(*jira_, Req("POST", "/rest/api/2/user").Basic("admin", kAdminPassword).Json(body))
                .status,
            201);
  EXPECT_EQ(jira_->FindUser("frank")->products, std::vector<std::string>{"jira-core"});
  // JSON only.
  HttpResponse text = Call(*jira_, Req("POST", "/rest/api/2/user")
                                       .Basic("admin", kAdminPassword)
                                       .Header("content-type", "text/plain"));
  EXPECT_EQ(text.status, 415);
  // Non-admins cannot create users.
  body["name"] = "gina";
  EXPECT_EQ(Call(*jira_, Req("POST", "/rest/api/2/user").Basic("alice", kAlicePassword).Json(body))
                .status,
            403);
}

TEST_F(DcTest, DeleteUserAndKillSessions) {
  Make();
  const std::string cookie = SessionCookie("alice", kAlicePassword);
  HttpResponse killed =
      Call(*jira_, Req("DELETE", "/rest/api/2/user/session/alice").Basic("admin", kAdminPassword));
  EXPECT_EQ(killed.status, 200);
  EXPECT_EQ(jira_->Mutations().back().kind, "sessions_killed");
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/myself").Cookie(cookie)).status, 401);
  EXPECT_EQ(
      Call(*jira_, Req("DELETE", "/rest/api/2/user/session/nobody").Basic("admin", kAdminPassword))
          .status,
      404);

  EXPECT_EQ(
      Call(*jira_, Req("DELETE", "/rest/api/2/user?username=admin").Basic("admin", kAdminPassword))
          .status,
      400);
  EXPECT_EQ(
      Call(*jira_, Req("DELETE", "/rest/api/2/user?username=alice").Basic("admin", kAdminPassword))
          .status,
      204);
  EXPECT_EQ(Get("/rest/api/2/user?username=alice").status, 404);
  HttpResponse tomb = Get("/rest/api/2/user?username=alice&includeDeleted=true");
  ASSERT_EQ(tomb.status, 200);
  EXPECT_TRUE(Body(tomb)["deleted"].asBool());
  EXPECT_TRUE(jira_->FindUser("alice")->groups.empty());
  EXPECT_EQ(jira_->Mutations().back().kind, "user_deleted");
  for (const auto& u : jira_->ExpectedSyncUsers()) EXPECT_NE(u.username, "alice");
}

TEST_F(DcTest, InjectionShapedNamesArriveExactlyAndEscapingPathsAreRefused) {
  Make();
  ASSERT_TRUE(jira_->AddGroup("a&b/../x").ok());
  NewUser odd;
  odd.username = "a&b/../x";
  odd.email = "odd@corp.example";
  ASSERT_TRUE(jira_->AddUser(odd).ok());
  Json::Value body;
  body["name"] = "a&b/../x";
  HttpResponse r =
      Call(*jira_, Req("POST", "/rest/api/2/group/user?groupname=" + UrlEncode("a&b/../x"))
                       .Basic("admin", kAdminPassword)
                       .Json(body));
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(jira_->GroupMemberIds("a&b/../x").size(), 1u);
  EXPECT_EQ(jira_->FindUser("a&b/../x")->groups, std::vector<std::string>{"a&b/../x"});
  HttpResponse user = Get("/rest/api/2/user?username=" + UrlEncode("a&b/../x"));
  ASSERT_EQ(user.status, 200);
  EXPECT_EQ(Body(user)["name"].asString(), "a&b/../x");
  // In a path segment: Tomcat refuses encoded slashes; unencoded ones route elsewhere.
  EXPECT_EQ(Call(*jira_, Req("DELETE", "/rest/api/2/user/session/" + UrlEncode("a&b/../x"))
                             .Basic("admin", kAdminPassword))
                .status,
            400);
  EXPECT_EQ(Call(*jira_,
                 Req("DELETE", "/rest/api/2/user/session/a&b/../x").Basic("admin", kAdminPassword))
                .status,
            404);
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/%2e%2e/serverInfo")).status, 404);
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/user/session/%zz")).status, 400);
  // The group did not get anyone else; no other state changed.
  EXPECT_EQ(jira_->Mutations().size(), 1u);
}

TEST_F(DcTest, RateLimitingUsesTheDataCenterHeadersAndSparesBrowserRequests) {
  Make("10.3.4", [](FakeJiraOptions& o) {
    o.rate_limits["admin"] = RateLimit{2, 1, std::chrono::seconds(10)};
  });
  HttpResponse first = Get("/rest/api/2/myself");
  EXPECT_EQ(first.status, 200);
  EXPECT_EQ(HeaderOf(first, "X-RateLimit-Limit"), "2");
  EXPECT_EQ(HeaderOf(first, "X-RateLimit-Remaining"), "1");
  EXPECT_EQ(HeaderOf(first, "X-RateLimit-Interval-Seconds"), "10");
  EXPECT_EQ(HeaderOf(first, "X-RateLimit-FillRate"), "1");
  EXPECT_EQ(HeaderOf(first, "Retry-After"), "0");
  EXPECT_EQ(Get("/rest/api/2/myself").status, 200);
  HttpResponse limited = Get("/rest/api/2/myself");
  EXPECT_EQ(limited.status, 429);
  EXPECT_EQ(HeaderOf(limited, "X-RateLimit-Remaining"), "0");
  EXPECT_EQ(HeaderOf(limited, "Retry-After"), "10");
  // Other identities have their own bucket (here: none).
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/myself").Basic("alice", kAlicePassword)).status,
            200);
  // Requests that carry both browser cookies are not limited.
  const std::string cookie = SessionCookie("admin", kAdminPassword);
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/myself").Cookie(cookie)).status, 200);
  clock_.Advance(std::chrono::seconds(10));
  EXPECT_EQ(Get("/rest/api/2/myself").status, 200);
  EXPECT_EQ(Get("/rest/api/2/myself").status, 429);
}

TEST_F(DcTest, FaultsAreData) {
  Make();
  FaultRule unavailable;
  unavailable.status = 503;
  unavailable.retry_after_seconds = 7;
  unavailable.path_contains = "/myself";
  jira_->QueueFault(unavailable);
  FaultRule bare;
  bare.status = 503;
  bare.path_contains = "/myself";
  jira_->QueueFault(bare);
  HttpResponse a = Get("/rest/api/2/myself");
  EXPECT_EQ(a.status, 503);
  EXPECT_EQ(HeaderOf(a, "Retry-After"), "7");
  HttpResponse b = Get("/rest/api/2/myself");
  EXPECT_EQ(b.status, 503);
  EXPECT_EQ(HeaderOf(b, "Retry-After"), "");
  EXPECT_EQ(Get("/rest/api/2/myself").status, 200);

  FaultRule html;
  html.html = true;
  html.count = 2;
  jira_->QueueFault(html);
  HttpResponse h = Get("/rest/api/2/serverInfo");
  EXPECT_EQ(h.status, 200);
  EXPECT_NE(HeaderOf(h, "Content-Type").find("text/html"), std::string::npos);
  EXPECT_EQ(h.body.rfind("<!DOCTYPE html>", 0), 0u);
  FaultRule html401;
  html401.status = 401;
  html401.html = true;
  jira_->ClearFaults();
  jira_->QueueFault(html401);
  HttpResponse h401 = Get("/rest/api/2/myself");
  EXPECT_EQ(h401.status, 401);
  EXPECT_NE(HeaderOf(h401, "Content-Type").find("text/html"), std::string::npos);

  // A reset before the request is processed changes nothing...
  Json::Value body;
  body["name"] = "alice";
  FaultRule reset;
  reset.method = "POST";
  reset.transport.kind = Fault::kResetBeforeHeaders;
  jira_->QueueFault(reset);
  HttpResponse lost = Call(*jira_, Req("POST", "/rest/api/2/group/user?groupname=jira-core-users")
                                       .Basic("admin", kAdminPassword)
                                       .Json(body));
  EXPECT_EQ(lost.fault.kind, Fault::kResetBeforeHeaders);
  EXPECT_TRUE(jira_->Mutations().empty());
  // ...one after it leaves the change done and the client in the dark.
  reset.after_handling = true;
  jira_->QueueFault(reset);
  HttpResponse done = Call(*jira_, Req("POST", "/rest/api/2/group/user?groupname=jira-core-users")
                                       .Basic("admin", kAdminPassword)
                                       .Json(body));
  EXPECT_EQ(done.fault.kind, Fault::kResetBeforeHeaders);
  EXPECT_EQ(jira_->Mutations().front().kind, "group_member_added");

  FaultRule slow;
  slow.transport.kind = Fault::kDelay;
  slow.transport.delay = std::chrono::milliseconds(1500);
  slow.count = -1;
  jira_->QueueFault(slow);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Get("/rest/api/2/serverInfo").fault.kind, Fault::kDelay);
  jira_->ClearFaults();
  EXPECT_EQ(Get("/rest/api/2/serverInfo").fault.kind, Fault::kNone);
}

TEST_F(DcTest, PersonalAccessTokens) {
  Make();
  Json::Value body;
  body["name"] = "agent";
  body["expirationDuration"] = 30;
  HttpResponse created = Call(
      *jira_, Req("POST", "/rest/pat/latest/tokens").Basic("admin", kAdminPassword).Json(body));
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string token = Body(created)["rawToken"].asString();
  ASSERT_FALSE(token.empty());
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/myself").Bearer(token)).status, 200);
  // A PAT cannot mint another PAT.
  EXPECT_EQ(Call(*jira_, Req("POST", "/rest/pat/latest/tokens").Bearer(token).Json(body)).status,
            403);
  Json::Value mine = Body(Call(*jira_, Req("GET", "/rest/pat/latest/tokens").Bearer(token)));
  ASSERT_EQ(mine.size(), 1u);
  EXPECT_TRUE(mine[0].isMember("lastAccessedAt"));
  EXPECT_FALSE(mine[0].isMember("rawToken"));
  Json::Value search;
  search["limit"] = 10;
  Json::Value found = Body(Call(
      *jira_,
      Req("POST", "/rest/pat/latest/tokens/search").Basic("admin", kAdminPassword).Json(search)));
  ASSERT_EQ(found["values"].size(), 1u);
  EXPECT_EQ(found["values"][0]["userProfileResource"]["name"].asString(), "admin");
  EXPECT_EQ(jira_->Credentials().size(), 1u);
  EXPECT_TRUE(jira_->FindUser("admin")->owns_token);
  clock_.Advance(std::chrono::hours(24 * 31));
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/myself").Bearer(token)).status, 401);
  EXPECT_EQ(jira_->LoginAttempts("admin").back().outcome, "expired");
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/myself").Bearer("not-a-token")).status, 401);
}

TEST_F(DcTest, ChangingTheOwnPasswordIsLoggedAndTakesEffect) {
  Make();
  Json::Value policy =
      Body(Call(*jira_, Req("GET", "/rest/api/2/password/policy?hasOldPassword=true")));
  EXPECT_EQ(policy.size(), 2u);
  Json::Value body;
  body["currentPassword"] = "wrong";
  body["password"] = "new-admin-pass-2";
  HttpResponse bad = Call(
      *jira_, Req("PUT", "/rest/api/2/myself/password").Basic("admin", kAdminPassword).Json(body));
  EXPECT_EQ(bad.status, 400);
  EXPECT_TRUE(Body(bad)["errors"].isMember("currentPassword"));
  body["currentPassword"] = kAdminPassword;
  body["password"] = "short";
  EXPECT_EQ(
      Call(*jira_,
           Req("PUT", "/rest/api/2/myself/password").Basic("admin", kAdminPassword).Json(body))
          .status,
      400);
  body["password"] = "new-admin-pass-2";
  EXPECT_EQ(
      Call(*jira_,
           Req("PUT", "/rest/api/2/myself/password").Basic("admin", kAdminPassword).Json(body))
          .status,
      204);
  EXPECT_EQ(jira_->Mutations().back().kind, "password_changed");
  EXPECT_EQ(Get("/rest/api/2/myself").status, 401);
  EXPECT_EQ(
      Call(*jira_, Req("GET", "/rest/api/2/myself").Basic("admin", "new-admin-pass-2")).status,
      200);
}

TEST_F(DcTest, OAuthProviderChecksPkceAndRedirectAndRotatesRefreshTokens) {
  Make();
  OAuthClientSpec client;
  client.client_id = "agent";
  client.client_secret = "agent-secret";
  client.redirect_uris = {"https://cb.example/oauth"};
  client.scopes = {"READ", "WRITE", "ADMIN"};
  ASSERT_TRUE(jira_->AddOAuthClient(client).ok());
  const std::string verifier = "verifier-0123456789-0123456789-0123456789-abcdef";
  // The browser step, through the authorize endpoint with a logged-in admin.
  HttpResponse redirect =
      Call(*jira_, Req("GET", "/rest/oauth2/latest/authorize?client_id=agent&redirect_uri=" +
                                  UrlEncode("https://cb.example/oauth") +
                                  "&response_type=code&scope=READ&state=s1&code_challenge=" +
                                  PkceS256(verifier) + "&code_challenge_method=S256")
                       .Basic("admin", kAdminPassword));
  ASSERT_EQ(redirect.status, 302) << redirect.body;
  const std::string location = HeaderOf(redirect, "Location");
  ASSERT_EQ(location.rfind("https://cb.example/oauth?code=", 0), 0u);
  EXPECT_NE(location.find("&state=s1"), std::string::npos);
  const std::string code = TestDecode(location.substr(30, location.find("&state") - 30), false);
  auto token = [&](const std::string& form) {
    return Call(*jira_, Req("POST", "/rest/oauth2/latest/token").Form(form));
  };
  const std::string base = "client_id=agent&client_secret=agent-secret&redirect_uri=" +
                           UrlEncode("https://cb.example/oauth");
  EXPECT_EQ(Body(token(base + "&grant_type=authorization_code&code=" + UrlEncode(code) +
                       "&code_verifier=wrong-verifier"))["error"]
                .asString(),
            "invalid_grant");
  HttpResponse issued = token(base + "&grant_type=authorization_code&code=" + UrlEncode(code) +
                              "&code_verifier=" + verifier);
  ASSERT_EQ(issued.status, 200) << issued.body;
  const std::string access = Body(issued)["access_token"].asString();
  const std::string refresh1 = Body(issued)["refresh_token"].asString();
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/myself").Bearer(access)).status, 200);
  // READ does not allow writes.
  Json::Value body;
  body["name"] = "alice";
  EXPECT_EQ(
      Call(
          *jira_,
          Req("POST", "/rest/api/2/group/user?groupname=jira-core-users").Bearer(access).Json(body))
          .status,
      403);
  // The refresh grant needs redirect_uri on Data Center.
  EXPECT_EQ(
      Body(token(
          "client_id=agent&client_secret=agent-secret&grant_type=refresh_token&refresh_token=" +
          refresh1))["error"]
          .asString(),
      "invalid_request");
  HttpResponse r2 = token(base + "&grant_type=refresh_token&refresh_token=" + refresh1);
  ASSERT_EQ(r2.status, 200);
  const std::string refresh2 = Body(r2)["refresh_token"].asString();
  EXPECT_NE(refresh2, refresh1);
  // The old token still works inside the leeway...
  clock_.Advance(std::chrono::seconds(300));
  EXPECT_EQ(token(base + "&grant_type=refresh_token&refresh_token=" + refresh1).status, 200);
  // ...and revokes the whole family after it.
  clock_.Advance(std::chrono::seconds(301));
  HttpResponse reuse = token(base + "&grant_type=refresh_token&refresh_token=" + refresh1);
  EXPECT_EQ(reuse.status, 400);
  EXPECT_EQ(Body(reuse)["error"].asString(), "invalid_grant");
  EXPECT_EQ(jira_->Mutations().back().kind, "oauth_family_revoked");
  EXPECT_EQ(
      Body(token(base + "&grant_type=refresh_token&refresh_token=" + refresh2))["error"].asString(),
      "invalid_grant");
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/myself").Bearer(access)).status, 401);
  // A code works once.
  EXPECT_EQ(Body(token(base + "&grant_type=authorization_code&code=" + UrlEncode(code) +
                       "&code_verifier=" + verifier))["error"]
                .asString(),
            "invalid_grant");
  // JSON is not a token request on Data Center.
  Json::Value json;
  json["grant_type"] = "refresh_token";
  EXPECT_EQ(Call(*jira_, Req("POST", "/rest/oauth2/latest/token").Json(json)).status, 400);
}

TEST_F(DcTest, MyPermissionsNeedsALoginAndReportsGlobalPermissions) {
  Make();
  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/2/mypermissions?permissions=ADMINISTER")).status,
            401);
  Json::Value admin = Body(Get("/rest/api/2/mypermissions?permissions=ADMINISTER,SYSTEM_ADMIN"));
  EXPECT_TRUE(admin["permissions"]["ADMINISTER"]["havePermission"].asBool());
  EXPECT_TRUE(admin["permissions"]["SYSTEM_ADMIN"]["havePermission"].asBool());
  EXPECT_EQ(admin["permissions"]["ADMINISTER"]["type"].asString(), "GLOBAL");
  Json::Value alice =
      Body(Call(*jira_, Req("GET", "/rest/api/2/mypermissions?permissions=ADMINISTER")
                            .Basic("alice", kAlicePassword)));
  EXPECT_FALSE(alice["permissions"]["ADMINISTER"]["havePermission"].asBool());
  EXPECT_EQ(Get("/rest/api/2/mypermissions?permissions=NOT_A_PERMISSION").status, 400);
}

TEST_F(DcTest, GroupsPickerIsCappedByTheAutocompleteLimit) {
  Make("10.3.4", [](FakeJiraOptions& o) { o.groups_picker_limit = 3; });
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(jira_->AddGroup("team-" + std::to_string(i)).ok());
  Json::Value j = Body(Get("/rest/api/2/groups/picker?query=team&maxResults=10000"));
  EXPECT_EQ(j["total"].asInt(), 5);
  EXPECT_EQ(j["groups"].size(), 3u);
  EXPECT_EQ(j["header"].asString(), "Showing 3 of 5 matching groups");
  EXPECT_EQ(j["groups"][0]["html"].asString(), "<b>team</b>-0");
  EXPECT_EQ(Body(Call(*jira_, Req("GET", "/rest/api/2/groups/picker?query=team")))["total"].asInt(),
            0);
}

TEST_F(DcTest, UnknownRestPathsAnswerLikeJersey) {
  Make();
  HttpResponse r = Get("/rest/api/2/nothing-here");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(Body(r)["status-code"].asInt(), 404);
  EXPECT_EQ(Call(*jira_, Req("PATCH", "/rest/api/2/user").Basic("admin", kAdminPassword)).status,
            405);
}

}  // namespace
}  // namespace cakewalk::testing
