// A child process for the OAuth crash tests: opens the SoftHSM token and makes one Access Sync
// call through a Cloud OAuth connection (a refresh first: it has no access token), dying by
// SIGKILL at the fault point named by CAKEWALK_TEST_CRASH_AT (oauth.refresh.before-request,
// oauth.refresh.answered, oauth.refresh.sealed), or living through it when none is named.
//
//   rotation_oauth_fault_helper TOKEN_URI PIN_FILE BASE_URL CA_FILE CLIENT_ID
//                               REDIRECT_URI STATE_DIR
//
// Exit 0: the call succeeded ("ok" on standard output); 2: setup error; killed: the fault point.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "base/fault_point.h"
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

std::string g_crash_at;

void CrashAt(std::string_view point) noexcept {
  if (point != g_crash_at) return;
  std::fprintf(stderr, "helper: SIGKILL at %.*s\n", static_cast<int>(point.size()), point.data());
  std::fflush(nullptr);
  ::raise(SIGKILL);
}

int Fail(const std::string& what, const Status& s) {
  std::cerr << "helper: " << what << ": " << s.ToString() << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 8) {
    std::cerr << "usage: rotation_oauth_fault_helper TOKEN_URI PIN_FILE BASE_URL CA_FILE "
                 "CLIENT_ID REDIRECT_URI STATE_DIR\n";
    return 2;
  }
  if (const char* at = std::getenv("CAKEWALK_TEST_CRASH_AT"); at != nullptr && *at != '\0') {
    g_crash_at = at;
    SetFaultHookForTesting(&CrashAt);
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
  auto conn = jira::Connection::Open(s, *credentials);
  if (!conn.ok()) return Fail("connection", conn.status());
  auto client = (*conn)->AccessSync({});
  if (!client.ok()) return Fail("access sync", client.status());
  auto me = (*client)->Myself({});
  if (!me.ok()) return Fail("myself", me.status());
  std::cout << "ok\n";
  return 0;
}
