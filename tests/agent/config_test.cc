#include "agent/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "tests/support/temp_dir.h"

namespace cakewalk::agent {
namespace {

using ::testing::HasSubstr;

constexpr char kMinimal[] = R"({
  "control_plane": {"url": "https://agents.cakewalk.example/agent/v1/"},
  "token": {"uri": "pkcs11:token=cakewalk"},
  "connections": [
    {"name": "jira-prod", "type": "jira-datacenter", "base_url": "https://jira.corp.example",
     "provisioning": {"auth": "password", "username": "svc-cakewalk", "mfa": "totp"},
     "access_sync": {"auth": "pat"}}
  ]
})";

Result<Config> Parse(std::string_view text, ConfigEnvironment env = {}) {
  return ParseConfig(text, "/etc/cakewalk-agent/agent.json", env);
}

// Replaces the first occurrence of `from` in the minimal config.
std::string Minimal(std::string_view from, std::string_view to) {
  std::string s = kMinimal;
  const auto pos = s.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  s.replace(pos, from.size(), to);
  return s;
}

std::string ErrorOf(std::string_view text, ConfigEnvironment env = {}) {
  auto c = Parse(text, std::move(env));
  EXPECT_FALSE(c.ok()) << text;
  return c.ok() ? "" : c.status().message();
}

TEST(ConfigTest, MinimalFileGetsDefaults) {
  auto c = Parse(kMinimal);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->control_plane.url, "https://agents.cakewalk.example/agent/v1");
  EXPECT_EQ(c->state_dir, "/var/lib/cakewalk-agent");
  EXPECT_FALSE(c->token.module.has_value());
  EXPECT_FALSE(c->token.pin_file.has_value());
  EXPECT_EQ(c->jobs.max_concurrent, 4);
  EXPECT_TRUE(c->jobs.Allows("jira.user.provision"));
  EXPECT_FALSE(c->jobs.Allows("secret.rotate"));
  EXPECT_FALSE(c->jobs.allow_remote_secret_rotation);
  ASSERT_EQ(c->connections.size(), 1u);
  const auto& conn = c->connections[0];
  EXPECT_EQ(conn.flavor, JiraFlavor::kDataCenter);
  ASSERT_TRUE(conn.provisioning.has_value());
  EXPECT_TRUE(conn.provisioning->mfa_totp);
  EXPECT_EQ(conn.api_base_url, "https://jira.corp.example");
  EXPECT_EQ(c->FindConnection("jira-prod"), &conn);
  EXPECT_EQ(c->FindConnection("other"), nullptr);
}

TEST(ConfigTest, RelativePathsResolveAgainstTheFilesFolder) {
  auto c = Parse(Minimal(R"("uri": "pkcs11:token=cakewalk")",
                         R"("uri": "pkcs11:token=cakewalk", "pin_file": "secrets/pin",
                            "module": "../lib/libsofthsm2.so")"));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(*c->token.pin_file, "/etc/cakewalk-agent/secrets/pin");
  EXPECT_EQ(*c->token.module, "/etc/lib/libsofthsm2.so");
  auto named = Parse(Minimal(R"("uri": "pkcs11:token=cakewalk")",
                             R"("uri": "pkcs11:token=cakewalk", "module": "softhsm2")"));
  ASSERT_TRUE(named.ok());
  EXPECT_EQ(*named->token.module, "softhsm2");  // a p11-kit module name stays a name
}

TEST(ConfigTest, RefusesHttpControlPlaneWithPathAndFix) {
  std::string m = ErrorOf(Minimal("https://agents", "http://agents"));
  EXPECT_THAT(m, HasSubstr("$.control_plane.url: http:// is refused"));
  EXPECT_THAT(m, HasSubstr("use https://agents.cakewalk.example"));
  EXPECT_THAT(m, HasSubstr("/etc/cakewalk-agent/agent.json"));
}

TEST(ConfigTest, RefusesHttpJiraUrl) {
  EXPECT_THAT(ErrorOf(Minimal("https://jira", "http://jira")),
              HasSubstr("$.connections[0].base_url: http:// is refused"));
}

TEST(ConfigTest, RefusesUnknownKeysWithTheirPath) {
  EXPECT_THAT(ErrorOf(Minimal(R"("jira-prod", )", R"("jira-prod", "colour": "red", )")),
              HasSubstr("$.connections[0].colour: unknown key"));
  EXPECT_THAT(ErrorOf(Minimal(R"("token": {)", R"("tokne": {"a": 1}, "token": {)")),
              HasSubstr("$.tokne: unknown key"));
}

TEST(ConfigTest, RefusesWrongTypesAndMissingKeys) {
  EXPECT_THAT(ErrorOf(Minimal(R"("uri": "pkcs11:token=cakewalk")", R"("uri": 7)")),
              HasSubstr("$.token.uri: expected a string, found an integer"));
  EXPECT_THAT(ErrorOf(R"({"token": {"uri": "pkcs11:token=x"}, "connections": []})"),
              HasSubstr("$.control_plane: is required but missing"));
  EXPECT_THAT(ErrorOf(Minimal(R"(, "mfa": "totp")", R"(, "mfa": true)")),
              HasSubstr("$.connections[0].provisioning.mfa: expected a string, found a boolean"));
  EXPECT_THAT(ErrorOf(R"({"control_plane": {"url": "https://x"}, "token": {"uri": "pkcs11:"}})"),
              HasSubstr("$.connections: is required but missing"));
  EXPECT_THAT(ErrorOf(Minimal("{\n  \"control_plane\"",
                              "{\"jobs\": {\"max_concurrent\": 0},\n  \"control_plane\"")),
              HasSubstr("$.jobs.max_concurrent: must be between 1 and 64"));
}

TEST(ConfigTest, RefusesSecretsWhereTheyDoNotBelong) {
  EXPECT_THAT(ErrorOf(Minimal("pkcs11:token=cakewalk", "pkcs11:token=cakewalk?pin-value=1234")),
              HasSubstr("$.token.uri: must not carry a PIN"));
  EXPECT_THAT(ErrorOf(Minimal(R"(agent/v1/")", R"(agent/v1/", "proxy": "http://u:p@proxy:3128")")),
              HasSubstr("must not carry credentials"));
}

TEST(ConfigTest, FlavorRules) {
  std::string cloud = Minimal("jira-datacenter", "jira-cloud");
  EXPECT_THAT(ErrorOf(cloud), HasSubstr("$.connections[0].provisioning.auth: 'password' does not "
                                        "work on Jira Cloud"));
  EXPECT_THAT(ErrorOf(Minimal(R"("auth": "pat")", R"("auth": "api-token")")),
              HasSubstr("'api-token' is for Jira Cloud"));
  EXPECT_THAT(ErrorOf(Minimal(R"("auth": "pat")", R"("auth": "oauth2")")),
              HasSubstr("$.connections[0].access_sync.client_id: is required"));
  EXPECT_THAT(ErrorOf(Minimal(R"("type": "jira-datacenter")", R"("type": "jira-server")")),
              HasSubstr("'jira-server' is not one of: jira-datacenter, jira-cloud"));
}

TEST(ConfigTest, OAuthDefaultsPerFlavor) {
  auto dc = Parse(Minimal(R"("auth": "pat")", R"("auth": "oauth2", "client_id": "abc")"));
  ASSERT_TRUE(dc.ok()) << dc.status().ToString();
  EXPECT_EQ(dc->connections[0].access_sync->token_url,
            "https://jira.corp.example/rest/oauth2/latest/token");
  const std::string cloud_text = R"({
    "control_plane": {"url": "https://cp.example/agent/v1"},
    "token": {"uri": "pkcs11:token=cakewalk"},
    "connections": [{"name": "jc", "type": "jira-cloud", "base_url": "https://ex.atlassian.net",
      "provisioning": {"auth": "api-token", "username": "admin@example.com", "org_id": "o1"},
      "access_sync": {"auth": "oauth2", "client_id": "cid"}}]})";
  auto cloud = Parse(cloud_text);
  ASSERT_TRUE(cloud.ok()) << cloud.status().ToString();
  const auto& a = *cloud->connections[0].access_sync;
  EXPECT_EQ(a.token_url, "https://auth.atlassian.com/oauth/token");
  EXPECT_EQ(a.scopes.size(), 4u);
  EXPECT_EQ(cloud->connections[0].api_base_url, "https://api.atlassian.com/ex/jira/{cloudId}");
  EXPECT_EQ(cloud->connections[0].admin_api_url, "https://api.atlassian.com");
}

TEST(ConfigTest, ConnectionNamesAreValidatedAndUnique) {
  std::string dup = kMinimal;
  const std::string conn =
      R"({"name": "jira-prod", "type": "jira-datacenter", "base_url": "https://j2",
          "access_sync": {"auth": "pat"}})";
  dup.insert(dup.rfind(']'), "," + conn);
  EXPECT_THAT(ErrorOf(dup), HasSubstr("$.connections[1].name: 'jira-prod' is used by another"));
  EXPECT_THAT(ErrorOf(Minimal(R"("name": "jira-prod")", R"("name": "jira prod")")),
              HasSubstr("may use only letters, digits"));
  EXPECT_THAT(ErrorOf(Minimal(R"("name": "jira-prod")", R"("name": "control-plane")")),
              HasSubstr("reserved"));
}

TEST(ConfigTest, JobPolicyPatterns) {
  auto c = Parse(Minimal("\"connections\"",
                         R"("jobs": {"allowed_types": ["jira.user.*", "secret.rotate"]},
                            "connections")"));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->jobs.Allows("jira.user.provision"));
  EXPECT_TRUE(c->jobs.Allows("secret.rotate"));
  EXPECT_FALSE(c->jobs.Allows("jira.access_sync"));
  EXPECT_FALSE(c->jobs.Allows("jira.userx"));
  EXPECT_THAT(ErrorOf(Minimal("\"connections\"",
                              R"("jobs": {"allowed_types": ["shell.*"]}, "connections")")),
              HasSubstr("$.jobs.allowed_types[0]: 'shell.*' matches no job type"));
}

TEST(ConfigTest, ProxyFromEnvironmentOnlyWhenFileHasNone) {
  ConfigEnvironment env;
  env.vars = {{"HTTPS_PROXY", "http://upper:3128"},
              {"https_proxy", "http://lower:3128"},
              {"NO_PROXY", "internal.example"}};
  auto c = Parse(kMinimal, env);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c->control_plane.proxy, "http://lower:3128");  // lower case wins
  EXPECT_EQ(c->control_plane.proxy_source, "https_proxy");
  EXPECT_EQ(c->control_plane.no_proxy, "internal.example");

  auto file = Parse(Minimal(R"(agent/v1/")", R"(agent/v1/", "proxy": "http://conf:8080")"), env);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(*file->control_plane.proxy, "http://conf:8080");
  EXPECT_EQ(file->control_plane.no_proxy, "");

  ConfigEnvironment bad;
  bad.vars = {{"https_proxy", "http://user:secret@proxy:3128"}};
  EXPECT_THAT(ErrorOf(kMinimal, bad), HasSubstr("environment variable https_proxy"));
  EXPECT_THAT(ErrorOf(Minimal(R"(agent/v1/")", R"(agent/v1/", "proxy": "https://p:1")")),
              HasSubstr("must be an http:// URL of an HTTP CONNECT proxy"));
  EXPECT_THAT(ErrorOf(Minimal(R"(agent/v1/")", R"(agent/v1/", "proxy": "http://p")")),
              HasSubstr("must name its port, e.g. http://p:3128"));
  EXPECT_THAT(ErrorOf(Minimal(R"(agent/v1/")", R"(agent/v1/", "proxy": "http://p:1/x")")),
              HasSubstr("must not have a path"));
}

TEST(ConfigTest, SpkiPinsAreChecked) {
  EXPECT_THAT(ErrorOf(Minimal(R"(agent/v1/")", R"(agent/v1/", "pinned_spki_sha256": ["abc"])")),
              HasSubstr("$.control_plane.pinned_spki_sha256[0]: 'abc' is not a base64 SHA-256"));
  auto ok = Parse(Minimal(
      R"(agent/v1/")",
      R"(agent/v1/", "pinned_spki_sha256": ["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="])"));
  EXPECT_TRUE(ok.ok()) << ok.status().ToString();
}

TEST(ConfigTest, LoadConfigChecksTheFile) {
  testing::TempDir dir;
  auto missing = LoadConfig(dir / "absent.json", {});
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("--config"));
  testing::WriteFile(dir / "agent.json", kMinimal, 0666);
  chmod((dir / "agent.json").c_str(), 0666);
  EXPECT_THAT(LoadConfig(dir / "agent.json", {}).status().message(), HasSubstr("chmod o-w"));
  chmod((dir / "agent.json").c_str(), 0640);
  auto c = LoadConfig(dir / "agent.json", {});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->file, dir / "agent.json");
  testing::WriteFile(dir / "broken.json", "{\"control_plane\": ", 0600);
  EXPECT_THAT(LoadConfig(dir / "broken.json", {}).status().message(),
              HasSubstr("is not valid JSON"));
}

}  // namespace
}  // namespace cakewalk::agent
