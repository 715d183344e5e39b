// FakeJira: one in-process stand-in for Jira Data Center (REST API 2; 9.x, 10.0-10.2, 10.3 LTS,
// 11.x) and Jira Cloud (REST API 3 on the site and through the api.atlassian.com gateway, the
// organization admin API and the OAuth token endpoint). It is strict and reproduces the quirks a
// real Jira shows, so an agent that passes against it has met them:
//
//  - anonymous 200 + `X-Seraph-LoginReason: AUTHENTICATED_FAILED` for wrong Basic credentials on
//    endpoints anonymous users may call, 401 on /myself and admin endpoints;
//  - a failed-login counter: after `captcha_threshold` failures every password login of that user
//    answers 403 + AUTHENTICATION_DENIED + CAPTCHA_CHALLENGE until the test resets it;
//  - Jira 11 refuses Basic and /rest/auth/1/session but accepts PATs and the 2SV login session;
//  - the 2SV REST login (412 conversation -> totp-code 204 + cookies) checks real RFC 6238 codes
//    against the injected clock and refuses a code already used;
//  - cookie sessions, the XSRF check on non-GET requests, session expiry;
//  - the pagination of each endpoint (bare arrays with privacy-filtered short pages, PageBeans,
//    DC 10.x's 100-result cap on user/search, user/list cursors, group/member <= 50);
//  - rate limiting per identity with the DC and Cloud header names; 409/429/503 and transport
//    faults on demand (FaultRule);
//  - rotating OAuth refresh tokens with a reuse leeway and family revocation;
//  - licence seat limits, IdP-managed sites refusing group edits, Tomcat's refusal of encoded
//    slashes in DC paths.
//
// Behaviours the public documentation does not settle are marked "FAKE ASSUMPTION" where they are
// implemented (fake_jira_*.cc); the README of this folder lists them.
//
// Thread-safe: Handle() may be called from the server's connection threads while the test calls
// the control and ground-truth methods.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <json/json.h>

#include "base/clock.h"
#include "base/status.h"
#include "base/time.h"
#include "tests/fakes/https_server.h"
#include "tests/fakes/jira/totp.h"

namespace cakewalk::testing {

enum class JiraFlavor { kDataCenter, kCloud };

// What a user account really is (ground truth). Cloud exposes part of it as `accountType`; Data
// Center has no such field, so there it is only known to the fake and to the test.
enum class NhiKind { kHuman, kApp, kServiceAccount, kBot, kSystem, kCustomer };
std::string_view NhiKindName(NhiKind kind);  // "human", "app", "service_account", ...

enum class CloudAccountType { kAtlassian, kApp, kCustomer, kUnknown };
std::string_view CloudAccountTypeName(CloudAccountType type);  // "atlassian", "app", ...

// Token bucket per identity: `capacity` requests, refilled by `fill_per_interval` every
// `interval`. capacity 0 = unlimited.
struct RateLimit {
  int capacity = 0;
  int fill_per_interval = 0;
  std::chrono::seconds interval{1};
};

// A fault, as data. Matching requests (method and a substring of the decoded path, both optional)
// get it, for the next `count` matches (-1: until ClearFaults()).
struct FaultRule {
  std::string method;         // "" = any
  std::string path_contains;  // "" = any; compared with the percent-decoded path
  int count = 1;
  // Answer with this status instead of handling the request (409, 429, 500, 503, 401...).
  // 429 carries the flavor's rate-limit headers. The body is the flavor's JSON error body, or an
  // HTML page when `html` is set.
  std::optional<int> status;
  std::optional<int> retry_after_seconds;  // adds Retry-After to a `status` answer
  // With `status`: the canned answer is an HTML page. Without `status`: the request is handled
  // normally and its body is replaced by an HTML page (text/html), status kept.
  bool html = false;
  // Transport fault applied to the answer (delay, reset before headers, truncated body, stall).
  // A delay or a truncated body applies to the normal answer. A reset or a stall replaces it: the
  // request is not processed, unless `after_handling` is set ("the user was created but the
  // client never saw the 201").
  Fault transport;
  bool after_handling = false;
};

// How Cloud shows an e-mail address the user's privacy settings hide.
enum class HiddenEmailStyle { kNull, kAbsent };

struct FakeJiraOptions {
  JiraFlavor flavor = JiraFlavor::kDataCenter;
  // Data Center version reported by serverInfo; switches the per-version behaviours.
  std::string version = "10.3.4";
  // Data Center context path ("" or "/jira").
  std::string context_path;
  // Base URL for self links; empty: "https://" + the request's Host header (+ context path).
  std::string base_url;

  // Cloud identifiers and the paths that stand in for api.atlassian.com and auth.atlassian.com on
  // the same server.
  std::string cloud_id = "0f4c3a5e-9a5b-4c1e-8d3f-2b6a7c8d9e01";
  std::string org_id = "7d5e8a3b-1c2d-4e5f-9a8b-0c1d2e3f4a5b";
  std::string site_name = "cakewalk-test";
  std::string gateway_prefix;  // "" -> /ex/jira/{cloudId}/..., /oauth/token/accessible-resources
  std::string org_admin_prefix =
      "/admin-api";  // -> /admin-api/users/{id}/manage, /admin-api/admin/v1/...
  std::string oauth_token_path = "/oauth/token";  // Cloud token endpoint (auth.atlassian.com)

  const Clock* clock = nullptr;  // nullptr: SystemClock()

  // Two-step verification.
  int totp_step_tolerance = 1;  // accepted steps either side of the current one
  TotpParameters totp;
  int max_totp_attempts = 5;  // wrong codes before a conversation is dropped (FAKE ASSUMPTION)
  std::chrono::seconds tsv_conversation_lifetime{300};  // FAKE ASSUMPTION

  // Password logins: failures before CAPTCHA (0: never).
  int captcha_threshold = 3;
  // Data Center Basic auth; default: on below 11.0, off on 11.x.
  std::optional<bool> basic_auth_enabled;
  // Data Center two-step verification REST login (/rest/tsv/...); default: from 10.3 on (the
  // first version with it is UNVERIFIED; 10.3 instances are known to have it).
  std::optional<bool> two_step_login;
  // Data Center PUT /user {"active": false}; default: supported from 10.3 on (FAKE ASSUMPTION).
  std::optional<bool> deactivate_via_put;
  std::chrono::seconds session_idle_timeout{1800};
  int groups_picker_limit = 20;  // jira.ajax.autocomplete.limit

  // Unreliable paging, for de-duplication tests: each page of Cloud users/search, Data Center
  // user/search and user/list, and group/member (both flavors) also repeats the last
  // `overlapping_items` entries before its range, and `reversed_pages` returns every such page's
  // entries in reverse order.
  int overlapping_items = 0;
  bool reversed_pages = false;

  // Cloud.
  bool idp_managed = false;  // SCIM-managed site: group and user edits refused
  HiddenEmailStyle hidden_email_style = HiddenEmailStyle::kNull;

  // Licence seats per product key; absent = unlimited.
  std::map<std::string, int> seat_limits;

  // Rate limiting: the default bucket for every identity, and overrides by identity (DC username,
  // Cloud accountId or e-mail, "anonymous").
  RateLimit rate_limit;
  std::map<std::string, RateLimit> rate_limits;

  // OAuth (DC provider and Cloud 3LO).
  std::chrono::seconds access_token_lifetime{3600};
  std::chrono::seconds authorization_code_lifetime{600};  // Data Center default is 10 s
  std::chrono::seconds refresh_token_leeway{600};
  std::chrono::seconds refresh_token_inactivity{90 * 24 * 3600};
  std::chrono::seconds refresh_token_absolute{365 * 24 * 3600};

  // Serve /_fake/... (state dump, faults, CAPTCHA reset) without authentication. For the
  // standalone program and its demo; off in-process unless a test wants it.
  bool admin_endpoints = false;
};

// A user to seed. Fields that do not apply to the flavor are ignored.
struct NewUser {
  std::string username;  // Data Center login name (required there)
  std::string email;
  std::string display_name;
  bool active = true;
  CloudAccountType account_type = CloudAccountType::kAtlassian;
  NhiKind nhi = NhiKind::kHuman;
  bool email_visible = true;   // Cloud privacy setting
  bool search_hidden = false;  // Cloud: dropped by privacy filtering from users/search pages
  bool managed = true;         // Cloud: managed by the organization (verified domain)
  std::string directory = "Jira Internal Directory";  // Data Center
  std::optional<SysTime> last_login;
  std::vector<std::string> groups;
  std::string password;  // empty: cannot log in with a password
};

// Deterministic large-site generator.
struct SiteSpec {
  std::uint64_t seed = 1;
  std::uint32_t users = 1000;
  std::uint32_t groups = 50;         // custom groups, besides the standard ones
  std::uint64_t memberships = 3000;  // custom-group memberships, exact
  double non_human_fraction = 0.02;
  double inactive_fraction = 0.05;
  double product_access_fraction = 0.9;  // humans in the main product group
  double hidden_email_fraction = 0.10;   // Cloud
  double search_hidden_fraction = 0.01;  // Cloud
  double pat_owner_fraction = 0.01;      // humans owning a PAT / API token; every NHI owns one
};

// One user as the fake holds it (ground truth).
struct UserTruth {
  std::string id;                    // Data Center key, Cloud accountId
  std::string username;              // Data Center name; "" on Cloud
  std::optional<std::string> email;  // nullopt: hidden by privacy settings (Cloud)
  std::string display_name;
  bool active = true;
  bool deleted = false;        // DC: deleted (only visible with includeDeleted)
  bool search_hidden = false;  // Cloud: never returned by listings
  std::string account_type;    // Cloud accountType; "" on DC
  NhiKind nhi = NhiKind::kHuman;
  std::string directory;  // DC user directory
  bool managed = true;    // Cloud
  std::optional<SysTime> last_login;
  bool owns_token = false;  // owns a PAT (DC) or API token (Cloud)
  bool totp_enrolled = false;
  std::vector<std::string> groups;       // sorted
  std::vector<std::string> products;     // sorted application keys
  std::vector<std::string> permissions;  // sorted global permission keys
};

struct GroupTruth {
  std::string id;  // Cloud groupId; DC: the name
  std::string name;
  std::uint64_t member_count = 0;  // members an authorised listing returns
};

struct CredentialTruth {
  std::string id;
  std::string type;  // "personal_access_token", "api_token", "oauth_client", "application_link"
  std::string name;
  std::optional<std::string> owner_id;
  std::optional<SysTime> created_at, expires_at, last_used_at;
};

struct SiteCounts {
  std::uint64_t users = 0;  // every account, deleted included
  std::uint64_t expected_sync_users = 0;
  std::uint64_t non_human = 0;  // among expected_sync_users
  std::uint64_t groups = 0;
  std::uint64_t memberships = 0;
  std::uint64_t custom_memberships = 0;
  std::uint64_t credentials = 0;
};

// One state change.
struct Mutation {
  std::uint64_t seq = 0;
  SysTime time;
  // user_created, user_updated, user_deactivated, user_activated, user_deleted, group_created,
  // group_deleted, group_member_added, group_member_removed, product_granted, product_revoked,
  // sessions_killed, password_changed, application_role_updated, account_disabled,
  // account_enabled, pat_created, pat_revoked, oauth_family_revoked.
  std::string kind;
  std::string subject;  // the user (username on DC, accountId on Cloud) or group
  std::string label;    // readable name of the subject (DC username, Cloud e-mail or name)
  std::string object;   // the group, product, role... ("" when none)
  std::string actor;    // who did it ("" for the test itself)
  std::string detail;
  std::string Describe() const;  // one readable line: "alice added to jira-software-users"
};

struct LoginAttempt {
  SysTime time;
  std::string principal;  // username, e-mail, client id, "org-key"... never the secret
  // "basic", "rest_session", "tsv_password", "tsv_totp", "pat", "api_token", "oauth",
  // "org_key", "session_cookie"
  std::string method;
  // "ok", "bad_credentials", "unknown_user", "captcha", "basic_disabled", "expired", "inactive",
  // "wrong_endpoint", "revoked"
  std::string outcome;
};

struct TotpEvent {
  SysTime time;
  std::string username;
  std::string outcome;  // "accepted", "wrong_code", "reused", "unknown_conversation", "expired"
  std::optional<std::uint64_t> step;  // the matched step for accepted/reused codes
};

struct OAuthClientSpec {
  std::string client_id;
  std::string client_secret;
  std::string name;
  std::vector<std::string> redirect_uris;
  std::vector<std::string> scopes;  // DC: READ/WRITE/ADMIN/SYSTEM_ADMIN; Cloud: classic scopes
  // Cloud service-account credential: the client_credentials grant acts as this user.
  std::string service_account;
};

struct ApplicationLinkSpec {
  std::string id;
  std::string name;
  std::string type = "jira";  // typeId
  std::string display_url;
};

struct OrgApiKeySpec {
  bool scoped = false;  // keys created with scopes are refused by user management (UNVERIFIED)
  std::vector<std::string> privileges = {"lifecycle.enablement", "apiToken.read", "profile.read"};
};

class FakeJira {
 public:
  explicit FakeJira(FakeJiraOptions options = {});
  ~FakeJira();
  FakeJira(const FakeJira&) = delete;
  FakeJira& operator=(const FakeJira&) = delete;

  // The whole HTTP surface. Thread-safe.
  HttpResponse Handle(const HttpRequest& request);
  // The options as constructed (control methods below change the live values).
  const FakeJiraOptions& options() const;

  // ---- Seeding ---------------------------------------------------------------------------
  // A fresh fake holds the standard groups and application roles of its flavor and no users.
  // Users are named by a "user ref": DC username or key, Cloud accountId, or e-mail.
  Result<std::string> AddUser(const NewUser& user);       // returns the id (key / accountId)
  Result<std::string> AddGroup(const std::string& name);  // returns the id
  Status AddMember(std::string_view group, std::string_view user_ref);
  Status SetPassword(std::string_view user_ref, std::string_view password);
  Status SetPasswordExpired(std::string_view user_ref, bool expired);
  Status EnrolTotp(std::string_view user_ref, std::span<const std::uint8_t> seed);
  Status EnforceTwoStep(std::string_view user_ref, bool enforced);
  // Returns the raw token (Bearer on DC).
  Result<std::string> AddPersonalAccessToken(std::string_view user_ref, const std::string& name,
                                             std::optional<SysTime> expires);
  // Cloud API token (Basic e-mail:token). A scoped token works only through the gateway.
  Result<std::string> AddApiToken(std::string_view user_ref, const std::string& label,
                                  SysTime expires, bool scoped = false,
                                  std::vector<std::string> scopes = {});
  Status AddOAuthClient(const OAuthClientSpec& client);
  // Stands in for the browser consent: an authorization code for `user_ref`. `code_challenge`
  // (S256) is optional.
  Result<std::string> IssueAuthorizationCode(const std::string& client_id,
                                             std::string_view user_ref,
                                             const std::string& redirect_uri,
                                             const std::vector<std::string>& scopes,
                                             const std::string& code_challenge = {});
  Result<std::string> AddOrgApiKey(const OrgApiKeySpec& spec = {});  // returns the key
  Status AddApplicationLink(const ApplicationLinkSpec& link);
  // Generates a large site (users, groups, memberships, tokens) deterministically from
  // spec.seed. Call once, on a fake without other users.
  Status GenerateSite(const SiteSpec& spec);

  // ---- Control -----------------------------------------------------------------------------
  void QueueFault(FaultRule rule);
  void ClearFaults();
  void ResetFailedLoginCount(std::string_view username = {});  // "" = everyone
  void ExpireSessions(std::string_view user_ref = {});         // "" = every session
  void ExpireAccessTokens();
  void SetIdpManaged(bool managed);
  void SetSeatLimit(const std::string& product, std::optional<int> seats);
  void SetRateLimit(const std::string& identity, RateLimit limit);  // "" = default bucket
  void SetBasicAuthEnabled(bool enabled);
  // Called (under the fake's lock; keep it short) after every mutation.
  void SetMutationListener(std::function<void(const Mutation&)> listener);

  // ---- Ground truth ------------------------------------------------------------------------
  std::optional<UserTruth> FindUser(std::string_view user_ref) const;
  // Exactly the users a complete access sync must report, in a stable order: DC all non-deleted
  // users; Cloud every site user except those privacy filtering hides from listings.
  std::vector<UserTruth> ExpectedSyncUsers() const;
  // Streams the same set without holding it all (a million users). `fn` runs under the fake's
  // lock: it must not call back into the fake.
  void ForEachExpectedSyncUser(const std::function<void(const UserTruth&)>& fn) const;
  std::vector<GroupTruth> Groups() const;
  std::vector<std::string> GroupMemberIds(std::string_view group) const;
  std::vector<CredentialTruth> Credentials() const;
  SiteCounts Counts() const;
  std::vector<Mutation> Mutations() const;
  std::vector<LoginAttempt> LoginAttempts(std::string_view principal = {}) const;
  std::vector<TotpEvent> TotpEvents() const;
  int FailedLoginCount(std::string_view username) const;
  int ActiveSessionCount(std::string_view user_ref) const;
  // Users, groups, memberships, roles, credentials (no secrets) and counters as JSON. Intended
  // for small sites; `max_users` bounds the user list.
  Json::Value StateJson(std::size_t max_users = 10000) const;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// JSON forms of the ground truth (snake_case; null for absent values).
Json::Value UserTruthJson(const UserTruth& truth);
Json::Value CredentialTruthJson(const CredentialTruth& credential);

// The code the fake expects for `seed` at `t` with `params`.
std::string TotpCodeAt(std::span<const std::uint8_t> seed, SysTime t,
                       const TotpParameters& params = {});

}  // namespace cakewalk::testing
