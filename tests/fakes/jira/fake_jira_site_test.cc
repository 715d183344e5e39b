// FakeJira: the large-site generator (determinism, counts, compact storage, lookups), the ground
// truth it exposes, and the fake's TOTP/Base32 helpers against RFC test vectors.
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <fstream>
#include <set>

#include "base/c_free.h"
#include "base/encoding.h"
#include "tests/fakes/jira/fake_jira.h"
#include "tests/fakes/jira/fake_jira_test_util.h"
#include "tests/fakes/jira/totp.h"
#include "tests/support/fake_clock.h"

namespace cakewalk::testing {
namespace {

std::string Digest(const FakeJira& jira) {
  CPtr<EVP_MD_CTX, EVP_MD_CTX_free> ctx(EVP_MD_CTX_new());
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  jira.ForEachExpectedSyncUser([&](const UserTruth& t) {
    const std::string line = WriteJson(UserTruthJson(t));
    EVP_DigestUpdate(ctx.get(), line.data(), line.size());
  });
  for (const auto& g : jira.Groups()) {
    const std::string line = g.id + "|" + g.name + "|" + std::to_string(g.member_count);
    EVP_DigestUpdate(ctx.get(), line.data(), line.size());
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), out, &len);
  return HexEncode(std::span<const std::uint8_t>(out, len));
}

SiteSpec Spec(std::uint64_t seed, std::uint32_t users) {
  SiteSpec s;
  s.seed = seed;
  s.users = users;
  s.groups = 40;
  s.memberships = users * 3ull;
  return s;
}

long RssKb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

TEST(FakeJiraSiteTest, GeneratorIsDeterministicPerSeedAndFlavor) {
  for (JiraFlavor flavor : {JiraFlavor::kDataCenter, JiraFlavor::kCloud}) {
    FakeJiraOptions o;
    o.flavor = flavor;
    FakeJira a(o), b(o), c(o);
    ASSERT_TRUE(a.GenerateSite(Spec(11, 5000)).ok());
    ASSERT_TRUE(b.GenerateSite(Spec(11, 5000)).ok());
    ASSERT_TRUE(c.GenerateSite(Spec(12, 5000)).ok());
    EXPECT_EQ(Digest(a), Digest(b));
    EXPECT_NE(Digest(a), Digest(c));
    EXPECT_FALSE(a.GenerateSite(Spec(11, 10)).ok());  // only once, on an empty fake
  }
}

TEST(FakeJiraSiteTest, GeneratorCountsAreExact) {
  FakeJiraOptions o;
  FakeJira jira(o);
  SiteSpec spec = Spec(3, 20000);
  ASSERT_TRUE(jira.GenerateSite(spec).ok());
  SiteCounts c = jira.Counts();
  EXPECT_EQ(c.users, 20000u);
  EXPECT_EQ(c.expected_sync_users, 20000u);
  EXPECT_EQ(c.groups, 5u + 40u);  // the standard Data Center groups plus the custom ones
  EXPECT_EQ(c.custom_memberships, 60000u);
  EXPECT_GT(c.memberships, c.custom_memberships);
  // About 2 % non-human.
  EXPECT_GT(c.non_human, 300u);
  EXPECT_LT(c.non_human, 500u);
  // Every DC service account and bot owns a PAT, plus about 1 % of the humans.
  std::uint64_t owners = 0, nhi_owners = 0;
  jira.ForEachExpectedSyncUser([&](const UserTruth& t) {
    owners += t.owns_token ? 1 : 0;
    nhi_owners +=
        t.owns_token && (t.nhi == NhiKind::kServiceAccount || t.nhi == NhiKind::kBot) ? 1 : 0;
  });
  EXPECT_EQ(c.credentials, owners);
  EXPECT_GT(owners - nhi_owners, 100u);
  std::uint64_t member_sum = 0;
  for (const auto& g : jira.Groups()) member_sum += g.member_count;
  EXPECT_EQ(member_sum, c.memberships);
}

TEST(FakeJiraSiteTest, GeneratedUsersAreFoundByEveryIdentifier) {
  for (JiraFlavor flavor : {JiraFlavor::kDataCenter, JiraFlavor::kCloud}) {
    FakeJiraOptions o;
    o.flavor = flavor;
    FakeJira jira(o);
    ASSERT_TRUE(jira.GenerateSite(Spec(5, 3000)).ok());
    std::vector<UserTruth> sample;
    std::size_t seen = 0;
    jira.ForEachExpectedSyncUser([&](const UserTruth& t) {
      if (seen++ % 97 == 0) sample.push_back(t);
    });
    ASSERT_GT(sample.size(), 20u);
    for (const UserTruth& t : sample) {
      auto by_id = jira.FindUser(t.id);
      ASSERT_TRUE(by_id.has_value()) << t.id;
      EXPECT_EQ(by_id->display_name, t.display_name);
      if (!t.username.empty()) {
        EXPECT_EQ(jira.FindUser(t.username)->id, t.id);
      }
      if (t.email) {
        EXPECT_EQ(jira.FindUser(*t.email)->id, t.id);
      }
    }
    EXPECT_FALSE(jira.FindUser("no.such.user42").has_value());
  }
}

TEST(FakeJiraSiteTest, NonHumanKindsPerFlavor) {
  FakeJiraOptions dc;
  FakeJira d(dc);
  ASSERT_TRUE(d.GenerateSite(Spec(9, 20000)).ok());
  std::set<NhiKind> dc_kinds;
  d.ForEachExpectedSyncUser([&](const UserTruth& t) {
    dc_kinds.insert(t.nhi);
    if (t.nhi == NhiKind::kServiceAccount) {
      EXPECT_EQ(t.username.rfind("svc-", 0), 0u);
    }
    if (t.nhi == NhiKind::kSystem) {
      EXPECT_TRUE(t.products.empty());
    }
  });
  EXPECT_EQ(dc_kinds, (std::set<NhiKind>{NhiKind::kHuman, NhiKind::kServiceAccount, NhiKind::kBot,
                                         NhiKind::kSystem}));
  FakeJiraOptions cloud;
  cloud.flavor = JiraFlavor::kCloud;
  FakeJira c(cloud);
  ASSERT_TRUE(c.GenerateSite(Spec(9, 20000)).ok());
  std::set<NhiKind> cloud_kinds;
  std::size_t hidden_emails = 0;
  c.ForEachExpectedSyncUser([&](const UserTruth& t) {
    cloud_kinds.insert(t.nhi);
    if (t.nhi == NhiKind::kApp) {
      EXPECT_EQ(t.account_type, "app");
    }
    if (t.nhi == NhiKind::kCustomer) {
      EXPECT_EQ(t.account_type, "customer");
    }
    if (t.nhi == NhiKind::kServiceAccount) {
      ASSERT_TRUE(t.email.has_value());
      EXPECT_NE(t.email->find("@serviceaccount.atlassian.com"), std::string::npos);
    }
    if (t.nhi == NhiKind::kHuman && !t.email) ++hidden_emails;
  });
  EXPECT_EQ(cloud_kinds, (std::set<NhiKind>{NhiKind::kHuman, NhiKind::kApp,
                                            NhiKind::kServiceAccount, NhiKind::kCustomer}));
  EXPECT_GT(hidden_emails, 1000u);
  // Privacy-hidden users are not expected from a sync.
  EXPECT_LT(c.Counts().expected_sync_users, 20000u);
}

TEST(FakeJiraSiteTest, ChangesToGeneratedUsersAreKeptAsDeltas) {
  FakeClock clock;
  FakeJiraOptions o;
  o.clock = &clock;
  FakeJira jira(o);
  ASSERT_TRUE(jira.GenerateSite(Spec(2, 1000)).ok());
  NewUser admin;
  admin.username = "admin";
  admin.email = "admin@corp.example";
  admin.password = "pw-admin-123";
  admin.groups = {"jira-administrators"};
  ASSERT_TRUE(jira.AddUser(admin).ok());
  UserTruth victim;
  jira.ForEachExpectedSyncUser([&](const UserTruth& t) {
    if (victim.id.empty() && t.directory == "Jira Internal Directory" && t.active) victim = t;
  });
  ASSERT_FALSE(victim.id.empty());
  Json::Value body;
  body["active"] = false;
  body["displayName"] = "Renamed Person";
  HttpResponse r = Call(jira, Req("PUT", "/rest/api/2/user?username=" + UrlEncode(victim.username))
                                  .Basic("admin", "pw-admin-123")
                                  .Json(body));
  ASSERT_EQ(r.status, 200) << r.body;
  auto after = jira.FindUser(victim.username);
  EXPECT_FALSE(after->active);
  EXPECT_EQ(after->display_name, "Renamed Person");
  EXPECT_EQ(after->groups, victim.groups);
  EXPECT_EQ(jira.FindUser(victim.id)->display_name, "Renamed Person");
}

TEST(FakeJiraSiteTest, MillionUserSiteStaysCompact) {
  const long before = RssKb();
  FakeJiraOptions o;
  o.flavor = JiraFlavor::kCloud;
  FakeJira jira(o);
  SiteSpec spec;
  spec.seed = 1;
  spec.users = 1000000;
  spec.groups = 2000;
  spec.memberships = 3000000;
  ASSERT_TRUE(jira.GenerateSite(spec).ok());
  const SiteCounts c = jira.Counts();
  EXPECT_EQ(c.users, 1000000u);
  EXPECT_EQ(c.custom_memberships, 3000000u);
  const long after = RssKb();
  // A figure, not a limit: speed and memory targets are benchmarks (scripts/bench).
  std::printf("fake-jira 1M-user Cloud site: %ld MiB resident for the fake (%llu memberships)\n",
              (after - before) / 1024, static_cast<unsigned long long>(c.memberships));
  // The user at the far end is there and complete.
  std::uint64_t n = 0;
  std::string last;
  jira.ForEachExpectedSyncUser([&](const UserTruth& t) {
    ++n;
    last = t.id;
  });
  EXPECT_EQ(n, c.expected_sync_users);
  EXPECT_TRUE(jira.FindUser(last).has_value());
}

TEST(FakeJiraTotpTest, HotpMatchesRfc4226Vectors) {
  const std::string secret = "12345678901234567890";
  const char* expected[] = {"755224", "287082", "359152", "969429", "338314",
                            "254676", "287922", "162583", "399871", "520489"};
  for (std::uint64_t i = 0; i < 10; ++i) {
    EXPECT_EQ(HotpCode(AsBytes(secret), i, TotpAlgorithm::kSha1, 6), expected[i]);
  }
}

TEST(FakeJiraTotpTest, TotpMatchesRfc6238Vectors) {
  const std::string sha1 = "12345678901234567890";
  const std::string sha256 = "12345678901234567890123456789012";
  const std::string sha512 = "1234567890123456789012345678901234567890123456789012345678901234";
  struct Vector {
    std::int64_t t;
    const char* s1;
    const char* s256;
    const char* s512;
  } vectors[] = {{59, "94287082", "46119246", "90693936"},
                 {1111111109, "07081804", "68084774", "25091201"},
                 {1234567890, "89005924", "91819424", "93441116"},
                 {20000000000, "65353130", "77737706", "47863826"}};
  for (const auto& v : vectors) {
    const std::uint64_t step = TotpStep(v.t, 30);
    EXPECT_EQ(HotpCode(AsBytes(sha1), step, TotpAlgorithm::kSha1, 8), v.s1);
    EXPECT_EQ(HotpCode(AsBytes(sha256), step, TotpAlgorithm::kSha256, 8), v.s256);
    EXPECT_EQ(HotpCode(AsBytes(sha512), step, TotpAlgorithm::kSha512, 8), v.s512);
    // And the test's own independent implementation agrees.
    EXPECT_EQ(ExpectedTotp(std::vector<std::uint8_t>(sha1.begin(), sha1.end()), v.t, 8), v.s1);
  }
  EXPECT_EQ(TotpCodeAt(AsBytes(sha1), SysTime(std::chrono::seconds(59))), "287082");
}

TEST(FakeJiraTotpTest, Base32RoundTripsAndNormalises) {
  EXPECT_EQ(Base32Encode(AsBytes(std::string("foobar"))), "MZXW6YTBOI");
  auto decoded = Base32Decode("mzxw 6ytb-oi======");
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(std::string(AsChars(*decoded)), "foobar");
  EXPECT_FALSE(Base32Decode("MZXW1").ok());
  std::vector<std::uint8_t> seed(20);
  for (std::size_t i = 0; i < seed.size(); ++i) seed[i] = static_cast<std::uint8_t>(i * 13 + 7);
  EXPECT_EQ(*Base32Decode(Base32Encode(seed)), seed);
}

}  // namespace
}  // namespace cakewalk::testing
