#include "tests/rotation/rotation_env.h"

#include <openssl/rand.h>

#include "base/json.h"
#include "base/time.h"
#include "hsm/pin.h"
#include "tests/support/canary.h"

namespace cakewalk::testing {

void RotationFixture::SetUp() {
  ca_file_ = dir_ / "jira-ca.pem";
  state_dir_ = dir_ / "state";
  auto h = SoftHsm::Create();
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  softhsm_ = std::move(*h);
  auto m = hsm::Module::Load(std::string(SoftHsm::kModulePath));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  module_ = std::move(*m);
  auto pin = hsm::ResolvePin(softhsm_->token().pin_file);
  ASSERT_TRUE(pin.ok()) << pin.status().ToString();
  auto t = hsm::Token::Open(*module_, softhsm_->token().uri, std::move(*pin));
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  token_ = std::move(*t);
  auto s = hsm::SecretStore::Open(*token_, audit_, clock_);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  store_ = std::move(*s);
  password_ = MakeCanary("jira-password");
  totp_seed_.resize(20);
  ASSERT_EQ(RAND_bytes(totp_seed_.data(), 20), 1);
}

void RotationFixture::TearDown() {
  rotator_.reset();
  connections_.reset();
  if (served_) served_->server().Stop();
}

void RotationFixture::StartJira(bool totp, FakeJiraOptions options, std::string directory) {
  options.clock = &clock_;
  auto served = ServedJira::Start(
      std::move(options), [this](const HttpRequest& req, FakeJira& jira) -> HttpResponse {
        std::function<std::optional<HttpResponse>(const HttpRequest&)> fn;
        {
          std::lock_guard lock(mu_);
          fn = override_;
        }
        if (fn) {
          if (std::optional<HttpResponse> answer = fn(req)) return *answer;
        }
        return jira.Handle(req);
      });
  ASSERT_TRUE(served.ok()) << served.status().ToString();
  served_ = std::move(served).value();
  jira_ = &served_->jira();
  base_url_ = served_->base_url();
  WriteFile(ca_file_, served_->ca_pem(), 0644);

  NewUser admin;
  admin.username = kRotAdmin;
  admin.email = "svc-cakewalk@corp.example";
  admin.display_name = "Cakewalk Agent";
  admin.password = password_;
  admin.directory = std::move(directory);
  admin.groups = {"jira-administrators", "jira-system-administrators", "jira-software-users"};
  ASSERT_TRUE(jira_->AddUser(admin).ok());
  ASSERT_TRUE(store_->Put(kRotConn, "password", SecretBytes::CopyOf(password_)).ok());
  if (totp) {
    ASSERT_TRUE(jira_->EnrolTotp(kRotAdmin, totp_seed_).ok());
    hsm::TotpSeed seed;
    seed.key = SecretBytes::CopyOf(std::span<const std::uint8_t>(totp_seed_));
    ASSERT_TRUE(store_->EnrollTotp(kRotConn, seed, hsm::Activation::kCurrent).ok());
  }
}

void RotationFixture::Configure(bool totp, bool cloud, std::function<void(agent::Config&)> tweak) {
  auto config = std::make_shared<agent::Config>();
  config->file = dir_ / "agent.json";
  config->state_dir = state_dir_;
  agent::ConnectionConfig c;
  c.name = kRotConn;
  c.flavor = cloud ? agent::JiraFlavor::kCloud : agent::JiraFlavor::kDataCenter;
  c.base_url = base_url_;
  c.ca_file = ca_file_;
  agent::ProvisioningConfig p;
  p.auth = cloud ? agent::ProvisioningConfig::Auth::kApiToken
                 : agent::ProvisioningConfig::Auth::kPassword;
  p.username = cloud ? "admin@corp.example" : kRotAdmin;
  p.mfa_totp = totp;
  c.provisioning = p;
  if (cloud) c.api_base_url = base_url_;
  config->connections.push_back(c);
  if (tweak) tweak(*config);
  config_ = config;
  jira::ConnectionOptions options;
  options.clock = &clock_;
  options.sleeper = &sleeper_;
  connections_ = std::make_unique<agent::JiraConnections>(*store_, state_dir_, std::move(options));
  agent::SecretRotator::Deps deps;
  deps.config = [this] { return config_; };
  deps.secrets = store_.get();
  deps.connections = [this](const agent::ConnectionConfig& conn) {
    return connections_->Get(conn);
  };
  deps.audit = &audit_;
  deps.clock = &clock_;
  rotator_ = std::make_unique<agent::SecretRotator>(std::move(deps));
}

std::string RotationFixture::CurrentPassword() {
  auto v = store_->Unseal(kRotConn, "password", "test: read the password");
  if (!v.ok()) return "<" + v.status().ToString() + ">";
  return std::string(v->RevealString(SecretAccess::Grant()));
}

std::string RotationFixture::PasswordVersionValue(std::uint32_t version) {
  auto v = store_->UnsealVersion(kRotConn, "password", version, "test: read a version");
  if (!v.ok()) return "<" + v.status().ToString() + ">";
  return std::string(v->RevealString(SecretAccess::Grant()));
}

std::map<std::uint32_t, hsm::SecretState> RotationFixture::Versions(const std::string& name) {
  std::map<std::uint32_t, hsm::SecretState> out;
  auto list = store_->List();
  EXPECT_TRUE(list.ok());
  if (!list.ok()) return out;
  for (const auto& i : *list) {
    if (i.connection == kRotConn && i.name == name) out[i.version] = i.state;
  }
  return out;
}

int RotationFixture::PasswordChanges() const {
  int n = 0;
  for (const Mutation& m : jira_->Mutations()) n += m.kind == "password_changed" ? 1 : 0;
  return n;
}

std::vector<std::string> RotationFixture::PasswordLogins() const {
  std::vector<std::string> out;
  for (const LoginAttempt& a : jira_->LoginAttempts(kRotAdmin)) {
    if (a.method == "tsv_password" || a.method == "rest_session") out.push_back(a.outcome);
  }
  return out;
}

std::vector<HttpRequest> RotationFixture::Requests() const {
  return served_ ? served_->requests() : std::vector<HttpRequest>{};
}

void RotationFixture::Override(std::function<std::optional<HttpResponse>(const HttpRequest&)> fn) {
  std::lock_guard lock(mu_);
  override_ = std::move(fn);
}

std::filesystem::path RotationFixture::RecordPath() const {
  return agent::SecretRotator::Folder(state_dir_) / (std::string(kRotConn) + ".password.json");
}

void RotationFixture::WriteRecord(const std::string& step, std::uint32_t from, std::uint32_t to) {
  std::filesystem::create_directories(RecordPath().parent_path());
  std::filesystem::permissions(state_dir_, std::filesystem::perms::owner_all);
  std::filesystem::permissions(RecordPath().parent_path(), std::filesystem::perms::owner_all);
  Json::Value j(Json::objectValue);
  j["format"] = 1;
  j["connection"] = kRotConn;
  j["secret"] = "password";
  j["step"] = step;
  j["from"] = from;
  j["to"] = to;
  j["started_at"] = FormatRfc3339(clock_.Now());
  j["updated_at"] = FormatRfc3339(clock_.Now());
  WriteFile(RecordPath(), WriteJson(j), 0600);
}

std::vector<std::string> RotationFixture::RotationSteps() const {
  std::vector<std::string> out;
  for (const LogEntry& e : audit_.WithId(event::kSecretRotation)) {
    out.push_back(e.Field("ROTATION_STEP"));
  }
  return out;
}

}  // namespace cakewalk::testing
