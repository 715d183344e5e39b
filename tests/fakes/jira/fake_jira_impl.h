// FakeJira's implementation, shared by fake_jira.cc (pipeline: faults, path parsing,
// authentication, rate limits, XSRF; seeding, control and ground truth), fake_jira_dc.cc (the
// Data Center routes), fake_jira_cloud.cc (Cloud site, gateway, organization admin API, token
// endpoint) and fake_jira_admin.cc (/_fake/... and the JSON state dump).
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <json/json.h>

#include "base/secret.h"
#include "tests/fakes/jira/directory.h"
#include "tests/fakes/jira/fake_jira.h"
#include "tests/fakes/jira/oauth_provider.h"

namespace cakewalk::testing {

using jira_fake::AppRole;
using jira_fake::Directory;
using jira_fake::GroupIndex;
using jira_fake::UserIndex;
using jira_fake::UserRecord;

class FakeJira::Impl {
 public:
  explicit Impl(FakeJiraOptions options);

  // ---- Per-request state ----------------------------------------------------------------------
  enum class Api { kDc, kCloudSite, kCloudGateway };

  struct Identity {
    enum Kind { kAnonymous, kUser, kOrgKey } kind = kAnonymous;
    UserIndex user = 0;
    std::string method;  // "basic", "session", "pat", "oauth", "api_token"
    bool cookie = false;
    bool failed_basic = false;  // wrong Basic credentials: carry on as anonymous
    bool basic_ok = false;
    // OAuth or scoped-token scopes; nullopt: unrestricted (the user's own rights).
    std::optional<std::vector<std::string>> scopes;
    std::size_t org_key = 0;
  };

  struct Ctx {
    Ctx(const HttpRequest& r, SysTime n) : req(r), now(n) {}
    const HttpRequest& req;
    SysTime now;
    Api api = Api::kDc;
    std::vector<std::string> segs;  // decoded segments after /rest (DC) or /rest/api/3 (Cloud)
    std::string base;               // site base URL (DC: with context path)
    std::string api_root;           // what self links start with: ".../rest/api/2" or "/3"
    Identity id;
  };

  // ---- Credentials ------------------------------------------------------------------------------
  struct Secrets {
    std::string password;  // test fake: kept as is; never logged or dumped
    bool password_expired = false;
    std::vector<std::uint8_t> totp_seed;
    bool tsv_enforced = false;
    std::set<std::uint64_t> used_steps;
    std::int64_t login_count = 0;
    std::optional<SysTime> previous_login, last_failed_login;
  };
  struct Pat {
    std::int64_t id = 0;
    UserIndex owner = 0;
    std::string name;
    std::string token;
    SysTime created;
    std::optional<SysTime> expires;
    std::optional<SysTime> last_accessed;
    bool revoked = false;
  };
  struct ApiToken {
    std::string id;
    UserIndex owner = 0;
    std::string label;
    std::string token;
    SysTime created;
    SysTime expires;
    std::optional<SysTime> last_access;
    bool scoped = false;
    std::vector<std::string> scopes;
  };
  struct OrgKey {
    std::string key;
    OrgApiKeySpec spec;
  };
  struct Session {
    UserIndex user = 0;
    std::string xsrf;
    SysTime created;
    SysTime last_used;
  };
  struct Conversation {
    UserIndex user = 0;
    SysTime created;
    int wrong_codes = 0;
    bool enrollment = false;
  };
  struct Bucket {
    double tokens = -1;  // -1: not initialised
    SysTime last_refill;
  };

  // ---- Pipeline (fake_jira.cc) ------------------------------------------------------------------
  HttpResponse Handle(const HttpRequest& req);
  HttpResponse HandleParsed(Ctx& ctx, const std::vector<std::string>& segs);
  std::optional<HttpResponse> AuthenticateDc(Ctx& ctx);
  std::optional<HttpResponse> AuthenticateCloud(Ctx& ctx);
  std::optional<HttpResponse> RateLimitCheck(Ctx& ctx, HttpResponse* headers_out);
  std::string IdentityName(const Identity& id) const;
  void FinishResponse(const Ctx* ctx, HttpResponse& resp, SysTime now);

  // ---- Routes
  // -------------------------------------------------------------------------------------
  HttpResponse RouteDc(Ctx& ctx);     // fake_jira_dc.cc
  HttpResponse RouteCloud(Ctx& ctx);  // fake_jira_cloud.cc
  HttpResponse RouteOrgAdmin(const HttpRequest& req, const std::vector<std::string>& segs,
                             SysTime now);
  HttpResponse RouteCloudToken(const HttpRequest& req, SysTime now);
  HttpResponse AccessibleResources(const HttpRequest& req, SysTime now);
  HttpResponse TenantInfo();
  HttpResponse RouteAdmin(const HttpRequest& req, const std::vector<std::string>& segs);  // /_fake

  // DC handlers.
  HttpResponse DcServerInfo(Ctx& ctx);
  HttpResponse DcMyself(Ctx& ctx);
  HttpResponse DcChangeMyPassword(Ctx& ctx);
  HttpResponse DcPasswordPolicy(Ctx& ctx);
  HttpResponse DcMyPermissions(Ctx& ctx);
  HttpResponse DcGetUser(Ctx& ctx);
  HttpResponse DcCreateUser(Ctx& ctx);
  HttpResponse DcUpdateUser(Ctx& ctx);
  HttpResponse DcDeleteUser(Ctx& ctx);
  HttpResponse DcUserSearch(Ctx& ctx);
  HttpResponse DcUserList(Ctx& ctx);
  HttpResponse DcKillSessions(Ctx& ctx, const std::string& username);
  HttpResponse DcUserApplication(Ctx& ctx, bool grant);
  HttpResponse DcGroupMembers(Ctx& ctx);
  HttpResponse DcGroupUser(Ctx& ctx, bool add);
  HttpResponse DcGroupCreateDelete(Ctx& ctx, bool create);
  HttpResponse DcGroupsPicker(Ctx& ctx);
  HttpResponse DcApplicationRoles(Ctx& ctx, const std::string* key);
  HttpResponse DcAuthSession(Ctx& ctx);
  HttpResponse DcTsvAuthenticate(Ctx& ctx);
  HttpResponse DcTsvTotpCode(Ctx& ctx);
  HttpResponse DcTsvStatus(Ctx& ctx);
  HttpResponse DcPats(Ctx& ctx);
  HttpResponse DcPatDelete(Ctx& ctx, const std::string& id);
  HttpResponse DcPatSearch(Ctx& ctx);
  HttpResponse DcApplicationLinks(Ctx& ctx);
  HttpResponse DcOAuthClients(Ctx& ctx);
  HttpResponse DcOAuthAuthorize(Ctx& ctx);
  HttpResponse DcOAuthToken(Ctx& ctx);

  // Cloud handlers.
  HttpResponse CloudServerInfo(Ctx& ctx);
  HttpResponse CloudMyself(Ctx& ctx);
  HttpResponse CloudMyPermissions(Ctx& ctx);
  HttpResponse CloudPermissionsCheck(Ctx& ctx);
  HttpResponse CloudGetUser(Ctx& ctx);
  HttpResponse CloudCreateUser(Ctx& ctx);
  HttpResponse CloudDeleteUser(Ctx& ctx);
  HttpResponse CloudUserGroups(Ctx& ctx);
  HttpResponse CloudUsersSearch(Ctx& ctx);
  HttpResponse CloudUserSearch(Ctx& ctx);
  HttpResponse CloudGroupBulk(Ctx& ctx);
  HttpResponse CloudGroupMembers(Ctx& ctx);
  HttpResponse CloudGroupUser(Ctx& ctx, bool add);
  HttpResponse CloudGroupCreateDelete(Ctx& ctx, bool create);
  HttpResponse CloudGroupsPicker(Ctx& ctx);
  HttpResponse CloudApplicationRoles(Ctx& ctx, const std::string* key);

  // ---- Shared helpers ---------------------------------------------------------------------------
  bool IsDc() const { return opt.flavor == JiraFlavor::kDataCenter; }
  bool VersionAtLeast(int major, int minor) const {
    return version_[0] > major || (version_[0] == major && version_[1] >= minor);
  }
  static HttpResponse JsonResponse(int status, const Json::Value& body);
  static HttpResponse ErrorResponse(int status, std::vector<std::string> messages,
                                    std::map<std::string, std::string> errors = {});
  static HttpResponse HtmlResponse(int status, std::string_view title);
  static HttpResponse Empty(int status);
  // The JSON body of a POST/PUT: 415 unless application/json, 400 when malformed.
  std::optional<HttpResponse> ReadJsonBody(const Ctx& ctx, Json::Value* out) const;
  // Strict integer query parameter: nullopt when absent; `bad` set when malformed.
  std::optional<std::int64_t> QueryInt(const Ctx& ctx, std::string_view name, bool* bad) const;
  std::optional<bool> QueryBool(const Ctx& ctx, std::string_view name, bool* bad) const;
  // 401 for anonymous callers, 403 unless the caller holds `permission` (and the OAuth scope).
  std::optional<HttpResponse> Require(const Ctx& ctx, std::string_view permission) const;
  std::optional<HttpResponse> RequireUser(const Ctx& ctx) const;
  // OAuth/scoped tokens: the request's scopes must include every `classic` scope, or every
  // `granular` one. Basic/session/PAT callers pass.
  std::optional<HttpResponse> RequireScopes(const Ctx& ctx, std::vector<std::string> classic,
                                            std::vector<std::string> granular = {}) const;
  // Cloud operations that accept Basic only (user create/delete).
  std::optional<HttpResponse> RequireBasicOnly(const Ctx& ctx) const;

  std::string UserLabel(UserIndex u) const;  // DC username, Cloud e-mail or accountId
  std::string UserId(UserIndex u) const;     // DC key, Cloud accountId
  std::string ActorLabel(const Ctx& ctx) const;
  std::optional<UserIndex> CloudFindUser(std::string_view account_id) const;
  Json::Value DcUserJson(const Ctx& ctx, UserIndex u, bool full, bool expand_groups,
                         bool expand_roles) const;
  Json::Value CloudUserJson(const Ctx& ctx, UserIndex u, bool full, bool expand_groups,
                            bool expand_roles) const;
  Json::Value AvatarUrls(const std::string& base, const std::string& id) const;
  Json::Value PermissionJson(const jira_fake::GlobalPermissionInfo& p, bool have) const;
  Json::Value ApplicationRoleJson(const Ctx& ctx, const AppRole& role) const;
  std::string RoleEtag(const std::vector<const AppRole*>& roles) const;
  std::string Url(const Ctx& ctx, std::string_view path,
                  std::vector<std::pair<std::string, std::string>> query) const;
  std::string JiraTime(SysTime t) const;  // "2026-01-01T10:00:00.000+0000"
  // Unreliable paging (options overlapping_items, reversed_pages): where a page starting at
  // `start` really starts, and its entries in the order served.
  // A page whose own range is empty stays empty (the end of a listing is still an empty page).
  std::uint64_t OverlapStart(std::uint64_t start, std::uint64_t end) const {
    if (start >= end) return start;
    const auto overlap = static_cast<std::uint64_t>(std::max(0, opt.overlapping_items));
    return start > overlap ? start - overlap : 0;
  }
  Json::Value Unreliable(Json::Value items) const;

  // Membership changes, logging the membership and any product access it changes.
  bool ChangeMembership(GroupIndex g, UserIndex u, bool add, const std::string& actor,
                        const std::string& via);
  // Seat check for granting `role` to `u`; nullopt when it fits.
  std::optional<std::string> SeatProblem(const AppRole& role, UserIndex u) const;
  void RemoveAllMemberships(UserIndex u, const std::string& actor, const std::string& via);

  void Log(std::string kind, std::string subject, std::string label, std::string object,
           std::string actor, std::string detail = {});
  void RecordLogin(std::string principal, std::string method, std::string outcome);
  // Password check for Basic, /rest/auth/1/session and 2SV step 1.
  enum class PasswordResult { kOk, kBad, kUnknownUser, kCaptcha, kExpired, kInactive };
  PasswordResult CheckPassword(const std::string& username, const std::string& password,
                               std::optional<UserIndex>* user, bool count_failure);
  bool CaptchaRequired(const std::string& username) const;
  HttpResponse CaptchaDenied(const Ctx& ctx) const;
  // A new JSESSIONID session for `u`; returns its id and sets both Set-Cookie headers on `resp`.
  std::string NewSession(UserIndex u, SysTime now, HttpResponse& resp);
  // Group members a listing shows (Cloud: without privacy-hidden users), optionally only the
  // active ones; cached until the directory changes.
  const std::vector<UserIndex>& ListedMembers(GroupIndex g, bool include_inactive) const;
  Secrets& SecretsOf(UserIndex u) { return secrets_[u]; }

  // Ground truth.
  UserTruth Truth(UserIndex u) const;
  bool ExpectedInSync(UserIndex u) const;
  std::uint64_t VisibleMemberCount(GroupIndex g) const;
  std::vector<CredentialTruth> CredentialList() const;
  Json::Value StateJson(std::size_t max_users) const;
  Json::Value MutationJson(const Mutation& m) const;

  // ---- State --------------------------------------------------------------------------------
  mutable std::mutex mu;
  const FakeJiraOptions initial_options;  // as constructed, for FakeJira::options()
  FakeJiraOptions opt;                    // live: control methods change it
  const Clock& clock;
  int version_[3] = {0, 0, 0};
  bool basic_enabled_ = true;
  bool deactivate_via_put_ = true;
  bool two_step_login_ = true;
  Directory dir;
  jira_fake::OAuthProvider oauth;

  std::unordered_map<UserIndex, Secrets> secrets_;
  std::vector<Pat> pats_;
  std::unordered_map<std::string, std::size_t> pat_by_token_;
  std::int64_t next_pat_id_ = 1;
  std::vector<ApiToken> api_tokens_;
  std::unordered_map<std::string, std::size_t> api_token_by_token_;
  std::unordered_set<UserIndex> token_owners_;
  std::vector<OrgKey> org_keys_;
  std::vector<ApplicationLinkSpec> app_links_;
  std::unordered_map<std::string, Session> sessions_;
  std::unordered_map<std::string, Conversation> conversations_;
  std::map<std::string, int> failed_logins_;  // lower-cased username -> failures
  std::vector<Mutation> mutations_;
  std::function<void(const Mutation&)> listener_;
  std::vector<LoginAttempt> login_attempts_;
  std::vector<TotpEvent> totp_events_;
  std::deque<FaultRule> faults_;
  std::map<std::string, Bucket> buckets_;
  std::uint64_t request_seq_ = 0;
  struct MemberCache {
    std::uint64_t version = 0;
    std::vector<UserIndex> members;
  };
  mutable std::map<std::pair<GroupIndex, bool>, MemberCache> member_cache_;
};

// Routing helpers shared by the route files.
// Exact match of path segments against a pattern; "*" matches any one segment.
bool PathIs(const std::vector<std::string>& segs, std::initializer_list<std::string_view> pattern);
// 405 with an empty body, as Jersey answers a known path with another method.
HttpResponse MethodNotAllowed();
using MethodHandlers =
    std::initializer_list<std::pair<std::string_view, std::function<HttpResponse()>>>;
// Runs the handler registered for `method`, or answers 405.
HttpResponse ByMethod(const std::string& method, MethodHandlers handlers);

// Strict request bodies: a JSON object whose members are all in `allowed` (Jira's JSON binding
// refuses unknown fields with 400); an error response otherwise.
std::optional<HttpResponse> CheckBodyKeys(const Json::Value& body,
                                          std::initializer_list<std::string_view> allowed);
// A string member: nullopt when absent or null; `bad` set when of another type.
std::optional<std::string> BodyString(const Json::Value& body, const char* key, bool* bad);
// An array-of-strings member: nullopt when absent; `bad` set when of another type.
std::optional<std::vector<std::string>> BodyStrings(const Json::Value& body, const char* key,
                                                    bool* bad);

// Percent-decoding of an application/x-www-form-urlencoded body ('+' is a space).
std::optional<std::map<std::string, std::string>> ParseForm(std::string_view body);

}  // namespace cakewalk::testing
