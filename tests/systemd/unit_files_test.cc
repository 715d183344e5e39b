// The shipped systemd files: the unit's exposure score and verification, its key directives,
// and the sysusers.d / tmpfiles.d entries applied to a scratch root.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "agent/config.h"
#include "tests/support/temp_dir.h"
#include "tests/systemd/process.h"

namespace cakewalk::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

const std::string kSystemdDir = std::string(CAKEWALK_SOURCE_DIR) + "/systemd";
const std::string kUnit = kSystemdDir + "/cakewalk-agent.service";

// "Overall exposure level for cakewalk-agent.service: 1.0 OK" -> 1.0 (or -1 when absent).
// (No std::regex: GCC 12 with sanitizers warns inside <regex>.)
double Exposure(const std::string& out) {
  const std::string marker = "Overall exposure level for ";
  const auto at = out.find(marker);
  if (at == std::string::npos) return -1;
  const auto colon = out.find(": ", at);
  if (colon == std::string::npos) return -1;
  const std::string number = out.substr(colon + 2, out.find(' ', colon + 2) - colon - 2);
  if (number.empty() || number.find_first_not_of("0123456789.") != std::string::npos) return -1;
  return std::stod(number);
}

ProcessResult Analyze(const std::string& unit_text) {
  TempDir dir;
  WriteFile(dir / "cakewalk-agent.service", unit_text, 0644);
  return RunProcess(
      {"systemd-analyze", "security", "--offline=yes", (dir / "cakewalk-agent.service").string()});
}

// Unit file lines "Key=value", in order (comments and sections dropped).
std::vector<std::pair<std::string, std::string>> Directives(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#' || line[0] == '[') continue;
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    out.emplace_back(line.substr(0, eq), line.substr(eq + 1));
  }
  return out;
}

std::vector<std::string> ValuesOf(const std::string& text, const std::string& key) {
  std::vector<std::string> out;
  for (const auto& [k, v] : Directives(text)) {
    if (k == key) out.push_back(v);
  }
  return out;
}

std::string WithoutLinesMatching(const std::string& text, const std::string& prefix) {
  std::istringstream in(text);
  std::string line;
  std::string out;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) out += line + "\n";
  }
  return out;
}

TEST(UnitFileTest, ExposureIsAtMostOnePointZeroAndTheAnalyzerIsSilent) {
  ProcessResult r = Analyze(ReadFile(kUnit));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // systemd-analyze warns about unparseable values on stderr and then ignores them (rc 0).
  EXPECT_THAT(r.err, IsEmpty());
  const double score = Exposure(r.out);
  ASSERT_GE(score, 0.0) << r.out;
  EXPECT_LE(score, 1.0) << r.out;
}

TEST(UnitFileTest, TheScoreCheckNoticesAWeakerUnit) {
  const std::string unit = ReadFile(kUnit);
  // Without the capability and system-call lines the same parse must report a worse score.
  std::string weaker = WithoutLinesMatching(unit, "SystemCallFilter=");
  weaker = WithoutLinesMatching(weaker, "CapabilityBoundingSet=");
  ProcessResult r = Analyze(weaker);
  EXPECT_GT(Exposure(r.out), 1.0) << r.out;
}

TEST(UnitFileTest, TheSystemCallAllowListComesFirst) {
  // The first SystemCallFilter= line decides allow list vs deny list: a "~" line first would
  // silently turn @system-service into nothing (the score rises, which this also proves).
  const std::string unit = ReadFile(kUnit);
  const auto filters = ValuesOf(unit, "SystemCallFilter");
  ASSERT_FALSE(filters.empty());
  EXPECT_EQ(filters.front(), "@system-service");
  EXPECT_THAT(filters, ::testing::Contains("~listen accept accept4"));
  EXPECT_THAT(filters, ::testing::Contains("~@privileged @resources"));

  std::string reordered = WithoutLinesMatching(unit, "SystemCallFilter=~listen");
  reordered.replace(reordered.find("SystemCallFilter=@system-service"), 0,
                    "SystemCallFilter=~listen accept accept4\n");
  EXPECT_GT(Exposure(Analyze(reordered).out), 1.0);
}

TEST(UnitFileTest, KeyDirectivesAreThere) {
  const std::string unit = ReadFile(kUnit);
  auto one = [&](const std::string& key) {
    const auto v = ValuesOf(unit, key);
    return v.size() == 1 ? v[0] : "<" + std::to_string(v.size()) + " values>";
  };
  EXPECT_EQ(one("Type"), "notify");
  EXPECT_EQ(one("NotifyAccess"), "main");
  EXPECT_EQ(one("ExecStart"), "/usr/bin/cakewalk-agent run");
  EXPECT_EQ(one("ExecReload"), "/bin/kill -HUP $MAINPID");
  EXPECT_EQ(one("WatchdogSec"), "30s");
  EXPECT_EQ(one("Restart"), "on-failure");
  EXPECT_EQ(one("RestartSec"), "5s");
  EXPECT_EQ(one("RestartPreventExitStatus"), "77 78");
  EXPECT_EQ(one("User"), "cakewalk-agent");
  EXPECT_EQ(one("Group"), "cakewalk-agent");
  EXPECT_EQ(one("SupplementaryGroups"), "tss");
  EXPECT_THAT(ValuesOf(unit, "DynamicUser"), IsEmpty());
  EXPECT_EQ(one("StateDirectory"), "cakewalk-agent");
  EXPECT_EQ(one("StateDirectoryMode"), "0700");
  EXPECT_EQ(one("UMask"), "0077");
  EXPECT_EQ(one("LimitCORE"), "0");
  EXPECT_EQ(one("LoadCredentialEncrypted"),
            "hsm-pin:/etc/credstore.encrypted/cakewalk-agent.hsm-pin");
  EXPECT_EQ(one("Environment"), "SOFTHSM2_CONF=/etc/cakewalk-agent/softhsm2.conf");
  EXPECT_EQ(one("PrivateDevices"), "yes");
  EXPECT_EQ(one("BindPaths"), "-/dev/tpmrm0");  // '-': hosts without a TPM still start
  EXPECT_EQ(one("DeviceAllow"), "/dev/tpmrm0 rw");
  EXPECT_EQ(one("CapabilityBoundingSet"), "");
  EXPECT_EQ(one("ProtectProc"), "invisible");
  EXPECT_EQ(one("IPAddressDeny"), "any");
  EXPECT_FALSE(ValuesOf(unit, "StartLimitIntervalSec").empty());
  EXPECT_FALSE(ValuesOf(unit, "StartLimitBurst").empty());
  EXPECT_FALSE(ValuesOf(unit, "TimeoutStartSec").empty());
}

TEST(UnitFileTest, VerifiesCleanly) {
  // systemd-analyze verify insists that ExecStart's binary exists. Point it at the built agent
  // when there is one; otherwise at /bin/true, which checks everything except that path.
  std::string unit = ReadFile(kUnit);
  const std::string binary = CAKEWALK_AGENT_BINARY[0] != '\0' ? CAKEWALK_AGENT_BINARY : "/bin/true";
  const std::string from = "ExecStart=/usr/bin/cakewalk-agent";
  ASSERT_NE(unit.find(from), std::string::npos);
  unit.replace(unit.find(from), from.size(), "ExecStart=" + binary);
  TempDir dir;
  WriteFile(dir / "cakewalk-agent.service", unit, 0644);
  ProcessResult r =
      RunProcess({"systemd-analyze", "verify", (dir / "cakewalk-agent.service").string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, IsEmpty());
  if (CAKEWALK_AGENT_BINARY[0] == '\0') {
    std::cout << "note: the cakewalk-agent binary is not built yet; verified with /bin/true\n";
  }
}

struct Scratch {
  TempDir root{"cakewalk-root"};
  ProcessResult sysusers;
  ProcessResult tmpfiles;

  Scratch() {
    std::filesystem::create_directories(root / "etc");
    sysusers = RunProcess({"systemd-sysusers", "--root=" + root.path().string(),
                           kSystemdDir + "/cakewalk-agent.sysusers"});
    tmpfiles = RunProcess({"systemd-tmpfiles", "--root=" + root.path().string(), "--create",
                           kSystemdDir + "/cakewalk-agent.tmpfiles"});
  }

  std::map<std::string, std::vector<std::string>> Table(const std::string& file) {
    std::map<std::string, std::vector<std::string>> out;
    std::istringstream in(ReadFile(root / "etc" / file));
    std::string line;
    while (std::getline(in, line)) {
      std::vector<std::string> fields;
      std::string f;
      std::istringstream ls(line);
      while (std::getline(ls, f, ':')) fields.push_back(f);
      if (line.back() == ':') fields.push_back("");
      out[fields[0]] = fields;
    }
    return out;
  }
};

TEST(SysusersTest, CreatesTheAgentUserAndTheGroups) {
  Scratch s;
  ASSERT_EQ(s.sysusers.exit_code, 0) << s.sysusers.err;
  auto passwd = s.Table("passwd");
  auto group = s.Table("group");
  ASSERT_TRUE(passwd.count("cakewalk-agent"));
  const auto& u = passwd["cakewalk-agent"];
  EXPECT_LT(std::stoi(u[2]), 1000);  // a system user
  EXPECT_EQ(u[5], "/var/lib/cakewalk-agent");
  EXPECT_EQ(u[6], "/usr/sbin/nologin");
  ASSERT_TRUE(group.count("cakewalk-agent"));
  EXPECT_EQ(group["cakewalk-agent"][2], u[3]);  // primary group
  ASSERT_TRUE(group.count("cakewalk-admin"));
  EXPECT_EQ(group["cakewalk-admin"][3], "");  // operators are added by the admin
  ASSERT_TRUE(group.count("tss"));
  EXPECT_EQ(group["tss"][3], "cakewalk-agent");
}

TEST(TmpfilesTest, CreatesPrivateDirectoriesWithTheRightOwners) {
  Scratch s;
  ASSERT_EQ(s.tmpfiles.exit_code, 0) << s.tmpfiles.err;
  const auto uid = static_cast<uid_t>(std::stoul(s.Table("passwd")["cakewalk-agent"][2]));
  const auto gid = static_cast<gid_t>(std::stoul(s.Table("group")["cakewalk-agent"][2]));
  struct Want {
    std::string path;
    mode_t mode;
    uid_t uid;
    gid_t gid;
  };
  for (const Want& w :
       {Want{"var/lib/cakewalk-agent", 0700, uid, gid},
        Want{"var/lib/cakewalk-agent/softhsm-tokens", 0700, uid, gid},
        Want{"etc/cakewalk-agent", 0750, 0, gid}, Want{"etc/credstore.encrypted", 0700, 0, 0},
        Want{"etc/credstore", 0700, 0, 0}}) {
    struct stat st {};
    ASSERT_EQ(stat((s.root / w.path).c_str(), &st), 0) << w.path;
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << w.path;
    EXPECT_EQ(st.st_mode & 07777, w.mode) << w.path;
    EXPECT_EQ(st.st_uid, w.uid) << w.path;
    EXPECT_EQ(st.st_gid, w.gid) << w.path;
  }
}

TEST(CompanionFilesTest, SoftHsmTokensLiveInTheStateDirectory) {
  const std::string conf = ReadFile(kSystemdDir + "/softhsm2.conf");
  EXPECT_THAT(conf, HasSubstr("\ndirectories.tokendir = /var/lib/cakewalk-agent/softhsm-tokens\n"));
  EXPECT_THAT(conf, HasSubstr("\nobjectstore.backend = file\n"));
}

TEST(CompanionFilesTest, TheExampleConfigurationLoads) {
  // As the operator would use it: copied to /etc/cakewalk-agent/agent.json.
  auto config = agent::ParseConfig(ReadFile(kSystemdDir + "/agent.json.example"),
                                   "/etc/cakewalk-agent/agent.json", agent::ConfigEnvironment{});
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->state_dir, "/var/lib/cakewalk-agent");
  EXPECT_FALSE(config->token.pin_file.has_value());  // the systemd credential is the default
  EXPECT_EQ(config->connections.size(), 2u);
}

}  // namespace
}  // namespace cakewalk::testing
