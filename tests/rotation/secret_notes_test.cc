// The rotation policy's warnings outside the command line: secrets past rotation.max_age_days are
// named in the heartbeat's connection detail (a body the control plane's strict parser still
// accepts: no field the protocol does not have), staged versions only in `status`.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/heartbeat.h"
#include "tests/fakes/control_plane/wire.h"

namespace cakewalk::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

SysTime Day(int n) { return SysTime(std::chrono::hours(24 * n)); }

hsm::SecretInfo Info(std::string connection, std::string name, std::uint32_t version,
                     hsm::SecretState state, SysTime created) {
  hsm::SecretInfo i;
  i.connection = std::move(connection);
  i.name = std::move(name);
  i.version = version;
  i.state = state;
  i.created = created;
  return i;
}

std::vector<hsm::SecretInfo> Secrets() {
  return {Info("jira-prod", "password", 3, hsm::SecretState::kCurrent, Day(1000)),
          Info("jira-prod", "password", 4, hsm::SecretState::kPending, Day(1119)),
          Info("jira-prod", "totp", 1, hsm::SecretState::kCurrent, Day(1100)),
          Info("jira-prod", "password", 2, hsm::SecretState::kRetired, Day(900)),
          Info("jira-other", "pat", 1, hsm::SecretState::kCurrent, Day(10))};
}

TEST(SecretNotesTest, OldCurrentSecretsAndStagedVersions) {
  const SysTime now = Day(1120);
  const std::string notes =
      agent::SecretNotes(Secrets(), "jira-prod", std::chrono::hours(24 * 90), now, true);
  EXPECT_EQ(notes,
            "; password v3 is 120 days old (rotation.max_age_days: 90): rotate it"
            "; password v4 staged (rotation in progress)");
  EXPECT_EQ(agent::SecretNotes(Secrets(), "jira-prod", std::chrono::hours(24 * 90), now, false),
            "; password v3 is 120 days old (rotation.max_age_days: 90): rotate it");
  EXPECT_EQ(agent::SecretNotes(Secrets(), "jira-prod", std::chrono::hours(24 * 200), now, false),
            "");
}

TEST(SecretNotesTest, TheHeartbeatNamesOldSecretsAndStaysWithinTheProtocol) {
  agent::HeartbeatInputs in;
  in.agent_version = "0.1.0";
  in.certificate_expires_at = Day(1200);
  in.token = {"SoftHSM project", "SoftHSM v2", "1234", "cakewalk"};
  agent::ConnectionConfig c;
  c.name = "jira-prod";
  c.provisioning = agent::ProvisioningConfig{};
  c.provisioning->mfa_totp = true;
  in.connections = {c};
  in.secrets = Secrets();
  in.max_age = std::chrono::hours(24 * 90);
  in.now = Day(1120);
  Json::Value body = agent::BuildHeartbeatBody(in, nullptr);
  const std::string detail = body["connections"][0]["detail"].asString();
  EXPECT_EQ(body["connections"][0]["status"].asString(), "ok");
  EXPECT_THAT(detail, HasSubstr("password v3 is 120 days old"));
  EXPECT_THAT(detail, Not(HasSubstr("totp v1")));  // 20 days
  EXPECT_THAT(detail, Not(HasSubstr("staged")));
  // Current versions only.
  ASSERT_EQ(body["secrets"].size(), 3u);
  for (const auto& s : body["secrets"]) EXPECT_NE(s["version"].asInt(), 4);
  auto parsed = wire::ParseHeartbeat(body);
  EXPECT_TRUE(parsed.ok()) << parsed.status().ToString();
}

}  // namespace
}  // namespace cakewalk::testing
