#include "tests/jira/jira_env.h"

#include <openssl/rand.h>

#include "hsm/pin.h"
#include "jira/errors.h"
#include "tests/support/canary.h"

namespace cakewalk::testing {

Status FakeSleeper::Sleep(std::chrono::milliseconds duration, std::stop_token stop) {
  std::stop_source* to_stop = nullptr;
  {
    std::lock_guard lock(mu_);
    to_stop = stop_next_;
    stop_next_ = nullptr;
  }
  if (to_stop != nullptr) to_stop->request_stop();
  if (stop.stop_requested()) return jira::Stopped();
  {
    std::lock_guard lock(mu_);
    sleeps_.push_back(duration);
  }
  clock_.Advance(duration);
  return Status::Ok();
}

std::vector<std::chrono::milliseconds> FakeSleeper::sleeps() const {
  std::lock_guard lock(mu_);
  return sleeps_;
}

std::chrono::milliseconds FakeSleeper::total() const {
  std::lock_guard lock(mu_);
  std::chrono::milliseconds sum{0};
  for (auto s : sleeps_) sum += s;
  return sum;
}

Result<SecretBytes> CountingCredentials::Get(std::string_view name, std::string_view purpose) {
  {
    std::lock_guard lock(mu_);
    ++gets_[std::string(name)];
    purposes_.emplace_back(purpose);
  }
  return inner_->Get(name, purpose);
}

Result<hsm::TotpCode> CountingCredentials::Totp(std::uint32_t version, hsm::TotpTime at,
                                                std::string_view purpose) {
  {
    std::lock_guard lock(mu_);
    ++totps_;
    purposes_.emplace_back(purpose);
  }
  return inner_->Totp(version, at, purpose);
}

Status CountingCredentials::Put(std::string_view name, const SecretBytes& value) {
  {
    std::lock_guard lock(mu_);
    if (!fail_put_.empty() && fail_put_ == name) {
      fail_put_.clear();
      return Status(Code::kUnavailable, "injected token failure",
                    std::string(jira::reason::kTokenUnavailable));
    }
    ++puts_[std::string(name)];
  }
  return inner_->Put(name, value);
}

int CountingCredentials::gets(std::string_view name) const {
  std::lock_guard lock(mu_);
  auto it = gets_.find(name);
  return it == gets_.end() ? 0 : it->second;
}

int CountingCredentials::puts(std::string_view name) const {
  std::lock_guard lock(mu_);
  auto it = puts_.find(name);
  return it == puts_.end() ? 0 : it->second;
}

int CountingCredentials::totps() const {
  std::lock_guard lock(mu_);
  return totps_;
}

std::vector<std::string> CountingCredentials::purposes() const {
  std::lock_guard lock(mu_);
  return purposes_;
}

void JiraFixture::SetUp() {
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
  credentials_ = std::make_unique<CountingCredentials>(jira::TokenCredentials(*store_, kConn));

  password_ = MakeCanary("password");
  api_token_ = MakeCanary("apitoken");
  org_key_ = MakeCanary("orgkey");
  totp_seed_.resize(20);
  ASSERT_EQ(RAND_bytes(totp_seed_.data(), 20), 1);
}

void JiraFixture::TearDown() {
  if (server_) server_->Stop();
}

void JiraFixture::StartJira(FakeJiraOptions options) {
  options.clock = &jira_clock_;
  auto served =
      ServedJira::Start(std::move(options), [this](const HttpRequest& req, FakeJira& jira) {
        {
          std::lock_guard lock(log_mu_);
          log_.push_back({clock_.Now(), req});
        }
        return jira.Handle(req);
      });
  ASSERT_TRUE(served.ok()) << served.status().ToString();
  served_ = std::move(served).value();
  jira_ = &served_->jira();
  server_ = &served_->server();
  base_url_ = served_->base_url();
  WriteFile(ca_file_, served_->ca_pem(), 0644);
}

void JiraFixture::PutSecret(std::string_view name, std::string_view value) {
  auto stored = store_->Put(kConn, name, SecretBytes::CopyOf(value));
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
}

void JiraFixture::SeedDcAdmin(bool totp) {
  NewUser admin;
  admin.username = kDcAdmin;
  admin.email = "svc-cakewalk@corp.example";
  admin.display_name = "Cakewalk Agent";
  admin.password = password_;
  admin.groups = {"jira-administrators", "jira-system-administrators", "jira-software-users"};
  ASSERT_TRUE(jira_->AddUser(admin).ok());
  PutSecret("password", password_);
  if (totp) {
    ASSERT_TRUE(jira_->EnrolTotp(kDcAdmin, totp_seed_).ok());
    hsm::TotpSeed seed;
    seed.key = SecretBytes::CopyOf(std::span<const std::uint8_t>(totp_seed_));
    auto enrolled = store_->EnrollTotp(kConn, seed, hsm::Activation::kCurrent);
    ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
  }
}

void JiraFixture::SeedCloudAdmin() {
  NewUser admin;
  admin.email = kCloudAdmin;
  admin.display_name = "Site Admin";
  admin.groups = {"jira-administrators", "site-admins", "jira-software-users"};
  ASSERT_TRUE(jira_->AddUser(admin).ok());
  auto token =
      jira_->AddApiToken(kCloudAdmin, "cakewalk", clock_.Now() + std::chrono::hours(24 * 365));
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  api_token_ = *token;  // the fake mints its own value; it is the canary from here on
  PutSecret("api-token", api_token_);
  auto key = jira_->AddOrgApiKey();
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  org_key_ = *key;
  PutSecret("org-api-key", org_key_);
}

std::string JiraFixture::AddUser(const std::string& username, const std::string& email,
                                 std::vector<std::string> groups, bool active) {
  NewUser u;
  u.username = username;
  u.email = email;
  u.display_name = username.empty() ? email : username;
  u.groups = std::move(groups);
  u.active = active;
  auto id = jira_->AddUser(u);
  EXPECT_TRUE(id.ok()) << id.status().ToString();
  return id.ok() ? *id : "";
}

jira::ConnectionSettings JiraFixture::DcSettings(bool totp) const {
  jira::ConnectionSettings s;
  s.name = kConn;
  s.flavor = jira::Flavor::kDataCenter;
  s.base_url = base_url_;
  s.ca_file = ca_file_;
  s.provisioning = jira::ProvisioningAuth::kPassword;
  s.username = kDcAdmin;
  s.mfa_totp = totp;
  s.api_base_url = base_url_;
  s.state_dir = state_dir_;
  return s;
}

jira::ConnectionSettings JiraFixture::CloudSettings() const {
  jira::ConnectionSettings s;
  s.name = kConn;
  s.flavor = jira::Flavor::kCloud;
  s.base_url = base_url_;
  s.ca_file = ca_file_;
  s.provisioning = jira::ProvisioningAuth::kApiToken;
  s.username = kCloudAdmin;
  s.org_id = jira_->options().org_id;
  s.api_base_url = base_url_;
  s.admin_api_url = base_url_ + "/admin-api";
  s.state_dir = state_dir_;
  return s;
}

std::unique_ptr<jira::Connection> JiraFixture::Open(jira::ConnectionSettings settings,
                                                    jira::OAuthHooks hooks) {
  jira::ConnectionOptions o;
  o.clock = &clock_;
  o.sleeper = &sleeper_;
  o.random = [] { return 0.5; };
  o.oauth_hooks = std::move(hooks);
  auto c = jira::Connection::Open(std::move(settings), *credentials_, std::move(o));
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(*c) : nullptr;
}

std::vector<LoggedRequest> JiraFixture::Requests() const {
  std::lock_guard lock(log_mu_);
  return log_;
}

std::vector<LoggedRequest> JiraFixture::RequestsTo(std::string_view path_part) const {
  std::vector<LoggedRequest> out;
  for (auto& r : Requests()) {
    if (r.request.path.find(path_part) != std::string::npos) out.push_back(r);
  }
  return out;
}

void JiraFixture::ClearRequests() {
  std::lock_guard lock(log_mu_);
  log_.clear();
}

std::vector<std::string> JiraFixture::MutationLines() const {
  std::vector<std::string> out;
  for (const Mutation& m : jira_->Mutations()) {
    out.push_back(m.kind + " " + m.subject + " " + m.object);
  }
  return out;
}

std::string Str(const Json::Value& v, const char* key) {
  return v.isObject() && v[key].isString() ? v[key].asString() : std::string("<none>");
}

std::vector<std::string> Strings(const Json::Value& array) {
  std::vector<std::string> out;
  if (!array.isArray()) return out;
  for (const auto& v : array) out.push_back(v.isString() ? v.asString() : "<non-string>");
  return out;
}

}  // namespace cakewalk::testing
