// The real cakewalk-agent binary: argument and configuration errors, and the token commands
// (secret set/list, mfa enroll/code/activate) against a private SoftHSM token.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "base/encoding.h"
#include "base/json.h"
#include "tests/support/canary.h"
#include "tests/support/softhsm.h"
#include "tests/support/temp_dir.h"

namespace cakewalk::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto hsm = SoftHsm::Create("cakewalk-cli");
    ASSERT_TRUE(hsm.ok()) << hsm.status().ToString();
    hsm_ = std::move(hsm).value();
    WriteConfig(R"("provisioning": {"auth": "password", "username": "svc", "mfa": "totp"})");
  }

  void WriteConfig(const std::string& provisioning) {
    const std::string config = R"({
      "state_dir": "state",
      "control_plane": {"url": "https://cp.example/agent/v1"},
      "token": {"module": ")" + std::string(SoftHsm::kModulePath) +
                               R"(", "uri": ")" + hsm_->token().uri + R"(",
                "pin_file": ")" +
                               hsm_->token().pin_file.string() + R"("},
      "connections": [
        {"name": "jira-prod", "type": "jira-datacenter", "base_url": "https://jira.example",
         )" + provisioning + R"(},
        {"name": "jira-cloud", "type": "jira-cloud", "base_url": "https://x.atlassian.net",
         "provisioning": {"auth": "api-token", "username": "a@example.com"}}
      ]})";
    WriteFile(dir_ / "agent.json", config, 0640);
  }

  ProgramResult Agent(std::vector<std::string> args, std::string_view input = {}) {
    std::vector<std::string> argv = {CAKEWALK_AGENT_BINARY, "--config",
                                     (dir_ / "agent.json").string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProgram(argv, input);
  }

  // `algorithm` is "" (SHA-1), "=sha256" or "=sha512".
  static std::string Oathtool(const std::string& hex_key, long long unix_time,
                              const std::string& algorithm = "", int digits = 6) {
    // The key goes to oathtool on standard input ("-"), not on its command line.
    std::vector<std::string> argv = {"oathtool", "--totp" + algorithm,
                                     "-d",       std::to_string(digits),
                                     "-N",       "@" + std::to_string(unix_time),
                                     "-"};
    ProgramResult r = RunProgram(argv, hex_key + "\n");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::string out = r.out;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }

  static long long Now() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  // The code printed by `args` equals oathtool's for the same moment (allowing a step boundary
  // crossed while the agent ran).
  void ExpectCodeMatchesOathtool(const std::vector<std::string>& args, std::string_view input,
                                 const std::string& hex_key, const std::string& algorithm = "",
                                 int digits = 6) {
    const long long before = Now();
    ProgramResult r = Agent(args, input);
    const long long after = Now();
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::string code = r.out;
    while (!code.empty() && code.back() == '\n') code.pop_back();
    const std::string a = Oathtool(hex_key, before, algorithm, digits);
    const std::string b = Oathtool(hex_key, after, algorithm, digits);
    EXPECT_TRUE(code == a || code == b) << "agent " << code << ", oathtool " << a << "/" << b;
  }

  TempDir dir_{"cakewalk-cli"};
  std::unique_ptr<SoftHsm> hsm_;
};

TEST_F(CliTest, UsageErrorsExit64WithOneLine) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"bogus"}, {"secret"}, {"mfa", "code"}, {"secret", "list", "--force"}, {}}) {
    ProgramResult r = Agent(args);
    EXPECT_EQ(r.exit_code, 64) << r.err;
    EXPECT_THAT(r.err, HasSubstr("cakewalk-agent help"));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  ProgramResult v = Agent({"version"});
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_THAT(v.out, HasSubstr("cakewalk-agent "));
}

TEST_F(CliTest, ConfigurationErrorsExit78WithThePath) {
  WriteFile(dir_ / "agent.json", R"({"control_plane": {"url": "http://cp.example"}})", 0640);
  ProgramResult r = Agent({"secret", "list"});
  EXPECT_EQ(r.exit_code, 78);
  EXPECT_THAT(r.err, HasSubstr("$.control_plane.url: http:// is refused"));
}

TEST_F(CliTest, SecretSetListAndTheCanaryStaysInTheToken) {
  const std::string canary = MakeCanary("password");
  ProgramResult set = Agent({"secret", "set", "jira-prod", "password"}, canary + "\n");
  ASSERT_EQ(set.exit_code, 0) << set.err;
  EXPECT_THAT(set.out, HasSubstr("Stored jira-prod/password as version 1"));
  ProgramResult again = Agent({"secret", "set", "jira-prod", "password"}, canary + "2\n");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_THAT(again.out, HasSubstr("version 2"));

  ProgramResult list = Agent({"secret", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr("jira-prod"));
  EXPECT_THAT(list.out, HasSubstr("current"));
  EXPECT_THAT(list.out, HasSubstr("retired"));
  ProgramResult json = Agent({"secret", "list", "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  auto parsed = ParseJson(json.out, "secret list --json");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[1]["version"].asInt(), 2);
  EXPECT_EQ((*parsed)[1]["state"].asString(), "current");

  for (const ProgramResult* r : {&set, &again, &list, &json}) {
    EXPECT_THAT(FindCanaryIn(canary, r->out + r->err, "command output"), ::testing::IsEmpty());
  }
  EXPECT_THAT(FindCanaryInTree(canary, dir_.path()), ::testing::IsEmpty());
  EXPECT_THAT(FindCanaryInTree(canary, hsm_->dir()), ::testing::IsEmpty());
}

TEST_F(CliTest, SecretSetRefusesWrongTargetsAndStoresNothing) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {{"secret", "set", "jira-nope", "password"}, "no connection named 'jira-nope'"},
           {{"secret", "set", "jira-prod", "passwd"}, "'passwd' is not a secret name"},
           {{"secret", "set", "jira-prod", "api-token"}, "used only by jira-cloud"},
           {{"secret", "set", "jira-cloud", "pat"}, "used only by jira-datacenter"},
           {{"secret", "set", "control-plane", "proxy-password"}, "proxy_username is not set"},
           {{"secret", "set", "jira-prod", "password"}, "no value was given"},
       }) {
    ProgramResult r = Agent(c.args, "");
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.message));
  }
  ProgramResult list = Agent({"secret", "list"});
  EXPECT_THAT(list.out, HasSubstr("No secrets"));
}

TEST_F(CliTest, MfaEnrollAcceptsJiraStyleBase32AndCodesMatchOathtool) {
  // 20 random bytes shown the way Jira shows them: lower case, grouped with spaces, no padding.
  const std::vector<std::uint8_t> key = {0x3a, 0x91, 0x07, 0xfe, 0x55, 0x10, 0xc2,
                                         0x9d, 0x4b, 0x66, 0x01, 0xe8, 0x7f, 0x33,
                                         0x20, 0xaa, 0x5c, 0x0d, 0x99, 0x12};
  const std::string base32 = "hkiq p7sv cdbj 2s3g ahuh 6mza vjoa 3gis";  // base32 of `key`
  ExpectCodeMatchesOathtool({"mfa", "enroll", "jira-prod"}, base32 + "\n", HexEncode(key));
  ExpectCodeMatchesOathtool({"mfa", "code", "jira-prod"}, "", HexEncode(key));
  ProgramResult list = Agent({"secret", "list"});
  EXPECT_THAT(list.out, HasSubstr("totp"));
  EXPECT_THAT(list.out, Not(HasSubstr("hkiq")));
}

TEST_F(CliTest, MfaEnrollAcceptsOtpauthUrisWithParameters) {
  const std::vector<std::uint8_t> key(32, 0x42);
  // base32 of 32 bytes of 0x42.
  const std::string uri =
      "otpauth://totp/Atlassian:svc%40example.com?secret="
      "IJBEEQSCIJBEEQSCIJBEEQSCIJBEEQSCIJBEEQSCIJBEEQSCIJBA"
      "&issuer=Atlassian&algorithm=SHA256&digits=8&period=30";
  ExpectCodeMatchesOathtool({"mfa", "enroll", "jira-prod"}, uri + "\n", HexEncode(key), "=sha256",
                            8);
}

TEST_F(CliTest, MalformedMfaInputIsRefusedPreciselyAndChangesNothing) {
  struct Case {
    std::string input;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {"JBSW Y3DP EHPK 3PX1\n", "position"},
           {"otpauth://hotp/x?secret=JBSWY3DPEHPK3PXP&counter=1\n", "HOTP"},
           {"otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&digits=7\n", "digits"},
           {"otpauth://totp/x?issuer=Atlassian\n", "secret"},
           {"JBSWY3DP\n", "short"},
       }) {
    ProgramResult r = Agent({"mfa", "enroll", "jira-prod"}, c.input);
    EXPECT_EQ(r.exit_code, 1) << c.input;
    EXPECT_THAT(r.err, HasSubstr(c.message)) << c.input;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
  ProgramResult list = Agent({"secret", "list"});
  EXPECT_THAT(list.out, HasSubstr("No secrets"));
}

TEST_F(CliTest, MfaEnrollRequiresTwoStepVerificationInTheConfig) {
  WriteConfig(R"("provisioning": {"auth": "password", "username": "svc"})");
  ProgramResult r = Agent({"mfa", "enroll", "jira-prod"}, "JBSWY3DPEHPK3PXP\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("\"mfa\": \"totp\""));
}

TEST_F(CliTest, SecondMfaEnrollIsStagedUntilActivated) {
  const std::string first = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";  // "12345678901234567890"
  const std::string second = "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43U";
  ASSERT_EQ(Agent({"mfa", "enroll", "jira-prod"}, first + "\n").exit_code, 0);
  ProgramResult staged = Agent({"mfa", "enroll", "jira-prod"}, second + "\n");
  ASSERT_EQ(staged.exit_code, 0) << staged.err;
  EXPECT_THAT(staged.err, HasSubstr("staged"));
  EXPECT_THAT(staged.err, HasSubstr("mfa activate jira-prod"));
  // Until activation, codes come from the first key.
  ExpectCodeMatchesOathtool({"mfa", "code", "jira-prod"}, "",
                            HexEncode(AsBytes("12345678901234567890")));
  ProgramResult activate = Agent({"mfa", "activate", "jira-prod"});
  ASSERT_EQ(activate.exit_code, 0) << activate.err;
  ExpectCodeMatchesOathtool({"mfa", "code", "jira-prod"}, "",
                            HexEncode(AsBytes("abcdefghijklmnopqrst")));
  EXPECT_EQ(Agent({"mfa", "activate", "jira-prod"}).exit_code, 1);
}

TEST_F(CliTest, WrongPinExits77AfterOneAttemptAndDoesNotLockTheToken) {
  const auto pin_file = hsm_->token().pin_file;
  WriteFile(pin_file, "000000-wrong\n", 0600);
  ProgramResult r = Agent({"secret", "list"});
  EXPECT_EQ(r.exit_code, 77) << r.err;
  EXPECT_THAT(r.err, HasSubstr("PIN"));
  WriteFile(pin_file, hsm_->token().user_pin + "\n", 0600);
  ProgramResult ok = Agent({"secret", "list"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

TEST_F(CliTest, DoctorNamesEveryMissingSecretAndHowToStoreIt) {
  ProgramResult before = Agent({"doctor"});
  EXPECT_EQ(before.exit_code, 1) << before.err;
  EXPECT_THAT(before.out, HasSubstr("[ok  ] token: 'cakewalk-cli'"));
  EXPECT_THAT(before.out, HasSubstr("[FAIL] secret jira-prod/password: missing"));
  EXPECT_THAT(before.out, HasSubstr("run: cakewalk-agent mfa enroll jira-prod"));
  EXPECT_THAT(before.out, HasSubstr("[FAIL] secret jira-cloud/api-token: missing"));
  EXPECT_THAT(before.out, HasSubstr("[FAIL] enrollment: not enrolled"));
  EXPECT_THAT(before.err, HasSubstr("check(s) failed"));

  const std::string canary = MakeCanary("password");
  ASSERT_EQ(Agent({"secret", "set", "jira-prod", "password"}, canary + "\n").exit_code, 0);
  ASSERT_EQ(Agent({"mfa", "enroll", "jira-prod"}, "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\n").exit_code,
            0);
  ProgramResult after = Agent({"doctor"});
  EXPECT_THAT(after.out, HasSubstr("[ok  ] secret jira-prod/password: version 1"));
  EXPECT_THAT(after.out, HasSubstr("[ok  ] secret jira-prod/totp: version 1"));
  EXPECT_THAT(FindCanaryIn(canary, after.out + after.err, "doctor output"), ::testing::IsEmpty());

  WriteFile(hsm_->token().pin_file, "wrong-pin\n", 0600);
  ProgramResult locked_out = Agent({"doctor"});
  EXPECT_EQ(locked_out.exit_code, 77) << locked_out.err;
  EXPECT_THAT(locked_out.out, HasSubstr("[FAIL] token:"));
}

TEST_F(CliTest, MfaCodeWithoutAKeySaysHowToEnroll) {
  ProgramResult r = Agent({"mfa", "code", "jira-prod"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("cakewalk-agent mfa enroll jira-prod"));
}

}  // namespace
}  // namespace cakewalk::testing
