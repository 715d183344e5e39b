// A child process for the OAuth crash test: opens the SoftHSM token, refreshes the Cloud OAuth
// access token through the fake, and dies by SIGKILL right after the token endpoint answered and
// before the new refresh token is stored — the worst moment for a rotating refresh token.
//
//   jira_oauth_crash_helper TOKEN_URI PIN_FILE BASE_URL CA_FILE CLIENT_ID REDIRECT_URI STATE_DIR
//
// Exit 0 never happens on the crash path; 2 means a setup error (printed on stderr).
#include <signal.h>

#include <cstdio>
#include <iostream>

#include "base/log.h"
#include "hsm/module.h"
#include "hsm/pin.h"
#include "hsm/secret_store.h"
#include "hsm/token.h"
#include "jira/connection.h"
#include "jira/credentials.h"
#include "tests/support/softhsm.h"

using namespace cakewalk;

namespace {
int Fail(const std::string& what, const Status& s) {
  std::cerr << "helper: " << what << ": " << s.ToString() << "\n";
  return 2;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 8) {
    std::cerr << "usage: jira_oauth_crash_helper TOKEN_URI PIN_FILE BASE_URL CA_FILE CLIENT_ID "
                 "REDIRECT_URI STATE_DIR\n";
    return 2;
  }
  NullLogSink audit;
  auto module = hsm::Module::Load(testing::SoftHsm::kModulePath);
  if (!module.ok()) return Fail("module", module.status());
  auto pin = hsm::ResolvePin(std::filesystem::path(argv[2]));
  if (!pin.ok()) return Fail("pin", pin.status());
  auto token = hsm::Token::Open(**module, argv[1], std::move(*pin));
  if (!token.ok()) return Fail("token", token.status());
  auto store = hsm::SecretStore::Open(**token, audit);
  if (!store.ok()) return Fail("store", store.status());
  auto credentials = jira::TokenCredentials(**store, "jira-test");

  jira::ConnectionSettings s;
  s.name = "jira-test";
  s.flavor = jira::Flavor::kCloud;
  s.base_url = argv[3];
  s.ca_file = argv[4];
  s.access_sync = jira::AccessSyncAuth::kOAuth2;
  s.oauth.client_id = argv[5];
  s.oauth.redirect_uri = argv[6];
  s.oauth.authorize_url = s.base_url + "/authorize";
  s.oauth.token_url = s.base_url + "/oauth/token";
  s.api_base_url = s.base_url + "/ex/jira/{cloudId}";
  s.state_dir = argv[7];
  jira::ConnectionOptions o;
  o.oauth_hooks.after_token_response = []() -> Status {
    std::fflush(nullptr);
    ::raise(SIGKILL);
    return Internal("not reached");
  };
  auto conn = jira::Connection::Open(s, *credentials, std::move(o));
  if (!conn.ok()) return Fail("connection", conn.status());
  auto client = (*conn)->AccessSync({});
  if (!client.ok()) return Fail("access sync", client.status());
  auto me = (*client)->Myself({});
  return Fail("survived the refresh", me.status());
}
