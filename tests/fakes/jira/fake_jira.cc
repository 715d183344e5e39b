// FakeJira: the request pipeline (faults, path parsing, authentication, rate limits, XSRF), the
// helpers every route uses, and the seeding / control / ground-truth API.
#include "tests/fakes/jira/fake_jira.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "base/encoding.h"
#include "base/json.h"
#include "base/secret.h"
#include "tests/fakes/jira/fake_jira_impl.h"

namespace cakewalk::testing {

using jira_fake::ToLower;

std::string_view NhiKindName(NhiKind kind) {
  switch (kind) {
    case NhiKind::kHuman:
      return "human";
    case NhiKind::kApp:
      return "app";
    case NhiKind::kServiceAccount:
      return "service_account";
    case NhiKind::kBot:
      return "bot";
    case NhiKind::kSystem:
      return "system";
    case NhiKind::kCustomer:
      return "customer";
  }
  return "unknown";
}

std::string_view CloudAccountTypeName(CloudAccountType type) {
  switch (type) {
    case CloudAccountType::kAtlassian:
      return "atlassian";
    case CloudAccountType::kApp:
      return "app";
    case CloudAccountType::kCustomer:
      return "customer";
    case CloudAccountType::kUnknown:
      return "unknown";
  }
  return "unknown";
}

std::string Mutation::Describe() const {
  const std::string& who = label.empty() ? subject : label;
  if (kind == "user_created") return "created user " + who;
  if (kind == "user_deleted") return "deleted user " + who;
  if (kind == "user_deactivated") return who + " deactivated";
  if (kind == "user_activated") return who + " activated";
  if (kind == "user_updated") return who + " updated (" + detail + ")";
  if (kind == "group_member_added") return who + " added to " + object;
  if (kind == "group_member_removed") return who + " removed from " + object;
  if (kind == "product_granted") return who + " granted " + object;
  if (kind == "product_revoked") return who + " lost " + object;
  if (kind == "sessions_killed") return "sessions of " + who + " ended";
  if (kind == "password_changed") return "password of " + who + " changed";
  if (kind == "group_created") return "created group " + who;
  if (kind == "group_deleted") return "deleted group " + who;
  if (kind == "account_disabled") return who + " disabled by the organization";
  if (kind == "account_enabled") return who + " enabled by the organization";
  if (kind == "pat_created") return who + " created token " + object;
  if (kind == "pat_revoked") return who + " revoked token " + object;
  if (kind == "oauth_family_revoked") return "OAuth grant of " + who + " revoked (" + detail + ")";
  if (kind == "application_role_updated") return "application role " + who + " updated";
  return kind + " " + who + (object.empty() ? "" : " " + object);
}

std::string TotpCodeAt(std::span<const std::uint8_t> seed, SysTime t,
                       const TotpParameters& params) {
  const auto unix = std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
  return HotpCode(seed, TotpStep(unix, params.period_seconds), params.algorithm, params.digits);
}

namespace {

bool PercentDecode(std::string_view in, bool plus_is_space, std::string* out) {
  auto hex = [](char h) {
    return h >= '0' && h <= '9'   ? h - '0'
           : h >= 'a' && h <= 'f' ? h - 'a' + 10
           : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                  : -1;
  };
  out->clear();
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      const int hi = hex(in[i + 1]);
      const int lo = hex(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      *out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      *out += ' ';
    } else {
      *out += c;
    }
  }
  return true;
}

struct SplitResult {
  std::vector<std::string> segs;
  int error_status = 0;  // 0: fine
};

// Splits the raw (still encoded) path into decoded segments, as a servlet container would route
// it: "." and ".." segments would be normalised elsewhere (404 here), and Tomcat refuses encoded
// slashes and backslashes (Data Center: 400).
SplitResult SplitPath(std::string_view raw, bool tomcat) {
  SplitResult r;
  if (raw.empty() || raw[0] != '/') {
    r.error_status = 400;
    return r;
  }
  raw.remove_prefix(1);
  if (raw.empty()) return r;
  while (true) {
    const std::size_t slash = raw.find('/');
    const std::string_view piece = raw.substr(0, slash);
    std::string decoded;
    if (!PercentDecode(piece, false, &decoded)) {
      r.error_status = 400;
      return r;
    }
    if (piece.empty() || decoded == "." || decoded == "..") {
      r.error_status = 404;
      return r;
    }
    if (tomcat &&
        (decoded.find('/') != std::string::npos || decoded.find('\\') != std::string::npos)) {
      r.error_status = 400;
      return r;
    }
    r.segs.push_back(std::move(decoded));
    if (slash == std::string_view::npos) break;
    raw.remove_prefix(slash + 1);
  }
  return r;
}

std::vector<std::string> PrefixSegments(std::string_view prefix) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < prefix.size()) {
    while (i < prefix.size() && prefix[i] == '/') ++i;
    const std::size_t j = prefix.find('/', i);
    const std::size_t end = j == std::string_view::npos ? prefix.size() : j;
    if (end > i) out.emplace_back(prefix.substr(i, end - i));
    i = end;
  }
  return out;
}

bool StartsWith(const std::vector<std::string>& segs, const std::vector<std::string>& prefix) {
  if (segs.size() < prefix.size()) return false;
  return std::equal(prefix.begin(), prefix.end(), segs.begin());
}

std::map<std::string, std::string> ParseCookies(std::string_view header) {
  std::map<std::string, std::string> out;
  while (!header.empty()) {
    const std::size_t semi = header.find(';');
    std::string_view pair = header.substr(0, semi);
    while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
    const std::size_t eq = pair.find('=');
    if (eq != std::string_view::npos) {
      out.emplace(std::string(pair.substr(0, eq)), std::string(pair.substr(eq + 1)));
    }
    if (semi == std::string_view::npos) break;
    header.remove_prefix(semi + 1);
  }
  return out;
}

bool HasHeader(const HttpResponse& r, std::string_view name) {
  for (const auto& [n, v] : r.headers) {
    if (ToLower(n) == ToLower(name)) return true;
  }
  return false;
}

bool SecretEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool IsAscii(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

[[noreturn]] void Misuse(const std::string& what) {
  std::fprintf(stderr, "FakeJira misuse: %s\n", what.c_str());
  std::abort();
}

}  // namespace

std::optional<std::map<std::string, std::string>> ParseForm(std::string_view body) {
  std::map<std::string, std::string> out;
  while (!body.empty()) {
    const std::size_t amp = body.find('&');
    const std::string_view pair = body.substr(0, amp);
    const std::size_t eq = pair.find('=');
    std::string name, value;
    if (!PercentDecode(pair.substr(0, eq), true, &name)) return std::nullopt;
    if (eq != std::string_view::npos && !PercentDecode(pair.substr(eq + 1), true, &value)) {
      return std::nullopt;
    }
    if (!name.empty()) out[name] = value;
    if (amp == std::string_view::npos) break;
    body.remove_prefix(amp + 1);
  }
  return out;
}

bool PathIs(const std::vector<std::string>& segs, std::initializer_list<std::string_view> pattern) {
  if (segs.size() != pattern.size()) return false;
  std::size_t i = 0;
  for (std::string_view p : pattern) {
    if (p != "*" && segs[i] != p) return false;
    ++i;
  }
  return true;
}

HttpResponse MethodNotAllowed() {
  HttpResponse r;
  r.status = 405;
  return r;
}

HttpResponse ByMethod(const std::string& method, MethodHandlers handlers) {
  for (const auto& [verb, fn] : handlers) {
    if (verb == method) return fn();
  }
  return MethodNotAllowed();
}

std::optional<HttpResponse> CheckBodyKeys(const Json::Value& body,
                                          std::initializer_list<std::string_view> allowed) {
  if (!body.isObject()) {
    return FakeJira::Impl::ErrorResponse(400, {"The request body must be a JSON object."});
  }
  for (const auto& name : body.getMemberNames()) {
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      return FakeJira::Impl::ErrorResponse(
          400, {"Unrecognized field \"" + name + "\" in the request body."});
    }
  }
  return std::nullopt;
}

std::optional<std::string> BodyString(const Json::Value& body, const char* key, bool* bad) {
  if (!body.isMember(key) || body[key].isNull()) return std::nullopt;
  if (!body[key].isString()) {
    *bad = true;
    return std::nullopt;
  }
  return body[key].asString();
}

std::optional<std::vector<std::string>> BodyStrings(const Json::Value& body, const char* key,
                                                    bool* bad) {
  if (!body.isMember(key) || body[key].isNull()) return std::nullopt;
  if (!body[key].isArray()) {
    *bad = true;
    return std::nullopt;
  }
  std::vector<std::string> out;
  for (const auto& v : body[key]) {
    if (!v.isString()) {
      *bad = true;
      return std::nullopt;
    }
    out.push_back(v.asString());
  }
  return out;
}

// ---- Construction -------------------------------------------------------------------------------

FakeJira::Impl::Impl(FakeJiraOptions options)
    : initial_options(options),
      opt(std::move(options)),
      clock(opt.clock != nullptr ? *opt.clock : SystemClock()),
      dir(opt.flavor, opt.site_name),
      oauth(jira_fake::OAuthSettings{opt.flavor == JiraFlavor::kCloud, opt.access_token_lifetime,
                                     opt.authorization_code_lifetime, opt.refresh_token_leeway,
                                     opt.refresh_token_inactivity, opt.refresh_token_absolute}) {
  if (IsDc()) {
    int parts[3] = {0, 0, 0};
    char tail = 0;
    const int n =
        std::sscanf(opt.version.c_str(), "%d.%d.%d%c", &parts[0], &parts[1], &parts[2], &tail);
    if (n != 3 || parts[0] < 8) Misuse("Data Center version must look like 10.3.4: " + opt.version);
    std::copy(parts, parts + 3, version_);
  } else {
    version_[0] = 1001;
  }
  if (!opt.context_path.empty() &&
      (opt.context_path.front() != '/' || opt.context_path.back() == '/')) {
    Misuse("context_path must be empty or look like /jira");
  }
  // Jira 11.0 turns Basic auth off by default.
  basic_enabled_ = opt.basic_auth_enabled.value_or(version_[0] < 11);
  // FAKE ASSUMPTION (UNVERIFIED): PUT /user {"active": false} works from 10.3
  // on and answers 400 error.no.value.found.to.be.changed below.
  deactivate_via_put_ = opt.deactivate_via_put.value_or(VersionAtLeast(10, 3));
  two_step_login_ = opt.two_step_login.value_or(VersionAtLeast(10, 3));
  for (const auto& [product, seats] : opt.seat_limits) {
    if (dir.FindRole(product) == nullptr) Misuse("seat limit for unknown product " + product);
  }
}

// ---- Pipeline -----------------------------------------------------------------------------------

HttpResponse FakeJira::Impl::Handle(const HttpRequest& req) {
  std::lock_guard lock(mu);
  const SysTime now = clock.Now();
  ++request_seq_;
  const std::string& raw = req.raw_path.empty() ? req.path : req.raw_path;
  SplitResult split = SplitPath(raw, IsDc());

  if (opt.admin_endpoints && split.error_status == 0 && !split.segs.empty() &&
      split.segs[0] == "_fake") {
    HttpResponse resp = RouteAdmin(req, split.segs);
    FinishResponse(nullptr, resp, now);
    return resp;
  }

  // Faults, in the order they were queued; the first matching one applies.
  std::optional<FaultRule> fault;
  for (auto it = faults_.begin(); it != faults_.end(); ++it) {
    if (!it->method.empty() && it->method != req.method) continue;
    if (!it->path_contains.empty() && req.path.find(it->path_contains) == std::string::npos) {
      continue;
    }
    fault = *it;
    if (it->count > 0 && --it->count == 0) faults_.erase(it);
    break;
  }
  if (fault && fault->status) {
    const int status = *fault->status;
    HttpResponse resp;
    if (fault->html) {
      resp = HtmlResponse(status, status == 503 ? "Service Unavailable" : "Error");
    } else if (status == 409) {
      resp = ErrorResponse(409, {"The request took longer than 10 seconds and was interrupted."});
    } else if (status == 429) {
      resp = ErrorResponse(429, {"Rate limit exceeded."});
    } else {
      resp = ErrorResponse(status, {"The fake was told to answer " + std::to_string(status) + "."});
    }
    if (status == 429) {
      const std::string reset = FormatRfc3339(now + std::chrono::seconds(60));
      resp.WithHeader("X-RateLimit-Limit", "100").WithHeader("X-RateLimit-Remaining", "0");
      if (IsDc()) {
        resp.WithHeader("X-RateLimit-Interval-Seconds", "1")
            .WithHeader("X-RateLimit-FillRate", "10");
      } else {
        resp.WithHeader("X-RateLimit-Reset", reset.substr(0, 16) + "Z")
            .WithHeader("RateLimit-Reason", "jira-burst-based");
      }
    }
    if (fault->retry_after_seconds) {
      resp.WithHeader("Retry-After", std::to_string(*fault->retry_after_seconds));
    }
    resp.fault = fault->transport;
    FinishResponse(nullptr, resp, now);
    return resp;
  }
  const bool drops = fault && (fault->transport.kind == Fault::kResetBeforeHeaders ||
                               fault->transport.kind == Fault::kStall);
  if (drops && !fault->after_handling) {
    HttpResponse resp = Empty(503);
    resp.fault = fault->transport;
    return resp;
  }

  HttpResponse resp;
  if (split.error_status != 0) {
    resp = split.error_status == 404 ? HtmlResponse(404, "Page Not Found")
                                     : HtmlResponse(400, "Bad Request");
    FinishResponse(nullptr, resp, now);
  } else {
    Ctx ctx{req, now};
    resp = HandleParsed(ctx, split.segs);
  }
  if (fault) {
    if (fault->html) {
      const int status = resp.status;
      HttpResponse html = HtmlResponse(status, "Jira");
      std::erase_if(resp.headers, [](const auto& h) { return ToLower(h.first) == "content-type"; });
      resp.headers.emplace_back("Content-Type", "text/html;charset=UTF-8");
      resp.body = html.body;
    }
    resp.fault = fault->transport;
  }
  return resp;
}

HttpResponse FakeJira::Impl::HandleParsed(Ctx& ctx, const std::vector<std::string>& segs) {
  const HttpRequest& req = ctx.req;
  const std::string host = req.Header("host").empty() ? "localhost" : req.Header("host");
  const std::string host_base = "https://" + host;
  auto finish = [&](HttpResponse r, bool with_ctx) {
    FinishResponse(with_ctx ? &ctx : nullptr, r, ctx.now);
    return r;
  };

  std::vector<std::string> rest;
  if (IsDc()) {
    const auto context = PrefixSegments(opt.context_path);
    if (!StartsWith(segs, context)) return finish(HtmlResponse(404, "Page Not Found"), false);
    rest.assign(segs.begin() + static_cast<std::ptrdiff_t>(context.size()), segs.end());
    if (rest.empty() || rest[0] != "rest")
      return finish(HtmlResponse(404, "Page Not Found"), false);
    ctx.api = Api::kDc;
    ctx.base = opt.base_url.empty() ? host_base + opt.context_path : opt.base_url;
    ctx.api_root = ctx.base + "/rest/api/2";
    ctx.segs.assign(rest.begin() + 1, rest.end());
    if (auto early = AuthenticateDc(ctx)) return finish(std::move(*early), true);
  } else {
    if (segs == std::vector<std::string>{"_edge", "tenant_info"})
      return finish(TenantInfo(), false);
    if (segs == PrefixSegments(opt.oauth_token_path)) {
      return finish(RouteCloudToken(req, ctx.now), false);
    }
    const auto gateway = PrefixSegments(opt.gateway_prefix);
    auto resources = gateway;
    for (const char* s : {"oauth", "token", "accessible-resources"}) resources.emplace_back(s);
    if (segs == resources) return finish(AccessibleResources(req, ctx.now), false);
    const auto org = PrefixSegments(opt.org_admin_prefix);
    if (!org.empty() && StartsWith(segs, org)) {
      std::vector<std::string> tail(segs.begin() + static_cast<std::ptrdiff_t>(org.size()),
                                    segs.end());
      return finish(RouteOrgAdmin(req, tail, ctx.now), false);
    }
    ctx.base = opt.base_url.empty() ? host_base : opt.base_url;
    auto ex = gateway;
    for (const char* s : {"ex", "jira"}) ex.emplace_back(s);
    std::size_t skip = 0;
    if (StartsWith(segs, ex)) {
      if (segs.size() <= ex.size() || segs[ex.size()] != opt.cloud_id) {
        return finish(JsonResponse(404, Json::Value("Not Found")), false);
      }
      ctx.api = Api::kCloudGateway;
      skip = ex.size() + 1;
      ctx.api_root = host_base + opt.gateway_prefix + "/ex/jira/" + opt.cloud_id + "/rest/api/3";
    } else {
      ctx.api = Api::kCloudSite;
      ctx.api_root = ctx.base + "/rest/api/3";
    }
    rest.assign(segs.begin() + static_cast<std::ptrdiff_t>(skip), segs.end());
    if (rest.size() < 3 || rest[0] != "rest" || rest[1] != "api" || rest[2] != "3") {
      return finish(HtmlResponse(404, "Page Not Found"), false);
    }
    ctx.segs.assign(rest.begin() + 3, rest.end());
    if (auto early = AuthenticateCloud(ctx)) return finish(std::move(*early), true);
  }

  HttpResponse rate_headers;
  if (auto limited = RateLimitCheck(ctx, &rate_headers)) return finish(std::move(*limited), true);

  // XSRF: a cookie-authenticated request that changes something must say X-Atlassian-Token:
  // no-check, JSON requests included.
  if (ctx.id.cookie && req.method != "GET" && req.method != "HEAD" && req.method != "OPTIONS" &&
      ToLower(req.Header("x-atlassian-token")) != "no-check") {
    HttpResponse r;
    r.status = 403;
    r.headers.emplace_back("Content-Type", "text/plain;charset=UTF-8");
    r.body = "XSRF check failed";
    return finish(std::move(r), true);
  }

  HttpResponse resp = IsDc() ? RouteDc(ctx) : RouteCloud(ctx);
  for (auto& h : rate_headers.headers) resp.headers.push_back(std::move(h));
  return finish(std::move(resp), true);
}

std::optional<HttpResponse> FakeJira::Impl::AuthenticateDc(Ctx& ctx) {
  const HttpRequest& req = ctx.req;
  Identity& id = ctx.id;
  const auto cookies = ParseCookies(req.Header("cookie"));
  if (auto c = cookies.find("JSESSIONID"); c != cookies.end()) {
    auto it = sessions_.find(c->second);
    if (it != sessions_.end()) {
      Session& s = it->second;
      const bool alive = ctx.now - s.last_used <= opt.session_idle_timeout &&
                         dir.IsActive(s.user) && !dir.IsDeleted(s.user);
      if (alive) {
        s.last_used = ctx.now;
        id.kind = Identity::kUser;
        id.user = s.user;
        id.method = "session";
        id.cookie = true;
      } else {
        RecordLogin(UserLabel(s.user), "session_cookie", "expired");
        sessions_.erase(it);
      }
    }
  }
  const std::string auth = req.Header("authorization");
  if (auth.empty() || id.kind != Identity::kAnonymous) return std::nullopt;

  if (auth.rfind("Bearer ", 0) == 0) {
    const std::string token = auth.substr(7);
    if (auto it = pat_by_token_.find(token); it != pat_by_token_.end()) {
      Pat& pat = pats_[it->second];
      const std::string who = UserLabel(pat.owner);
      if (pat.revoked) {
        RecordLogin(who, "pat", "revoked");
      } else if (pat.expires && ctx.now >= *pat.expires) {
        RecordLogin(who, "pat", "expired");
      } else if (!dir.IsActive(pat.owner) || dir.IsDeleted(pat.owner)) {
        RecordLogin(who, "pat", "inactive");
      } else {
        pat.last_accessed = ctx.now;
        RecordLogin(who, "pat", "ok");
        id.kind = Identity::kUser;
        id.user = pat.owner;
        id.method = "pat";
        return std::nullopt;
      }
      return ErrorResponse(401, {"The personal access token is not valid."});
    }
    if (const jira_fake::AccessToken* at = oauth.FindAccessToken(token, ctx.now)) {
      RecordLogin(at->client_id, "oauth", "ok");
      id.kind = Identity::kUser;
      id.user = at->user;
      id.method = "oauth";
      id.scopes = at->scopes;
      return std::nullopt;
    }
    RecordLogin("bearer", "pat", "bad_credentials");
    return ErrorResponse(401, {"You are not authenticated. Authentication required to perform "
                               "this operation."});
  }

  if (auth.rfind("Basic ", 0) == 0) {
    auto decoded = Base64Decode(auth.substr(6));
    std::string pair = decoded.ok() ? std::string(AsChars(*decoded)) : std::string();
    const std::size_t colon = pair.find(':');
    const std::string username = colon == std::string::npos ? pair : pair.substr(0, colon);
    const std::string password = colon == std::string::npos ? "" : pair.substr(colon + 1);
    WipeString(pair);
    if (!basic_enabled_) {
      RecordLogin(username, "basic", "basic_disabled");
      // FAKE ASSUMPTION (UNVERIFIED): the status and text Jira 11 gives a Basic
      // request when Basic auth is off.
      return ErrorResponse(401, {"Basic authentication has been disabled on this instance."});
    }
    std::optional<UserIndex> user;
    // Non-ASCII user names and passwords fail Basic auth (JRASERVER-59828).
    const PasswordResult result =
        IsAscii(username) && IsAscii(password)
            ? CheckPassword(username, password, &user, true)
            : (dir.FindByName(username) ? PasswordResult::kBad : PasswordResult::kUnknownUser);
    switch (result) {
      case PasswordResult::kOk:
        RecordLogin(username, "basic", "ok");
        id.kind = Identity::kUser;
        id.user = *user;
        id.method = "basic";
        id.basic_ok = true;
        return std::nullopt;
      case PasswordResult::kCaptcha:
        RecordLogin(username, "basic", "captcha");
        return CaptchaDenied(ctx);
      case PasswordResult::kUnknownUser:
        RecordLogin(username, "basic", "unknown_user");
        break;
      case PasswordResult::kExpired:
        RecordLogin(username, "basic", "expired");
        break;
      case PasswordResult::kInactive:
        RecordLogin(username, "basic", "inactive");
        break;
      case PasswordResult::kBad:
        RecordLogin(username, "basic", "bad_credentials");
        break;
    }
    // Wrong credentials do not end the request: it carries on as anonymous (JRA-41559).
    id.failed_basic = true;
  }
  return std::nullopt;
}

std::optional<HttpResponse> FakeJira::Impl::AuthenticateCloud(Ctx& ctx) {
  const HttpRequest& req = ctx.req;
  Identity& id = ctx.id;
  const std::string auth = req.Header("authorization");
  const bool gateway = ctx.api == Api::kCloudGateway;
  auto unauthorized = [] {
    return ErrorResponse(401, {"Client must be authenticated to access this resource."});
  };
  auto accept_token = [&](ApiToken& tok,
                          const std::string& principal) -> std::optional<HttpResponse> {
    if (ctx.now >= tok.expires) {
      RecordLogin(principal, "api_token", "expired");
      return unauthorized();
    }
    // Scoped tokens work only through the gateway. FAKE ASSUMPTION: classic
    // tokens are refused by the gateway.
    if (tok.scoped != gateway) {
      RecordLogin(principal, "api_token", "wrong_endpoint");
      return unauthorized();
    }
    if (!dir.IsActive(tok.owner) || dir.IsDeleted(tok.owner)) {
      RecordLogin(principal, "api_token", "inactive");
      return unauthorized();
    }
    tok.last_access = ctx.now;
    RecordLogin(principal, "api_token", "ok");
    id.kind = Identity::kUser;
    id.user = tok.owner;
    id.method = "api_token";
    if (tok.scoped) id.scopes = tok.scopes;
    return std::nullopt;
  };

  if (auth.rfind("Basic ", 0) == 0) {
    auto decoded = Base64Decode(auth.substr(6));
    std::string pair = decoded.ok() ? std::string(AsChars(*decoded)) : std::string();
    const std::size_t colon = pair.find(':');
    const std::string email = colon == std::string::npos ? pair : pair.substr(0, colon);
    std::string secret = colon == std::string::npos ? "" : pair.substr(colon + 1);
    WipeString(pair);
    auto it = api_token_by_token_.find(secret);
    if (it != api_token_by_token_.end()) {
      ApiToken& tok = api_tokens_[it->second];
      const UserRecord owner = dir.User(tok.owner);
      if (owner.email && ToLower(*owner.email) == ToLower(email)) {
        WipeString(secret);
        return accept_token(tok, email);
      }
    }
    // Password Basic has been gone from Cloud since 2019.
    for (UserIndex u : dir.FindByEmail(email)) {
      auto s = secrets_.find(u);
      if (s != secrets_.end() && !s->second.password.empty() &&
          SecretEquals(s->second.password, secret)) {
        WipeString(secret);
        RecordLogin(email, "basic", "password_refused");
        return ErrorResponse(401, {"Basic authentication with passwords is deprecated. Use an "
                                   "API token instead."});
      }
    }
    WipeString(secret);
    RecordLogin(email, "api_token", "bad_credentials");
    if (gateway) return unauthorized();
    id.failed_basic = true;  // the site carries on as anonymous
    return std::nullopt;
  }
  if (auth.rfind("Bearer ", 0) == 0) {
    const std::string token = auth.substr(7);
    if (!gateway) {
      // OAuth and scoped tokens are for the gateway only.
      RecordLogin("bearer", "oauth", "wrong_endpoint");
      return unauthorized();
    }
    if (const jira_fake::AccessToken* at = oauth.FindAccessToken(token, ctx.now)) {
      RecordLogin(at->client_id, "oauth", "ok");
      id.kind = Identity::kUser;
      id.user = at->user;
      id.method = "oauth";
      id.scopes = at->scopes;
      return std::nullopt;
    }
    if (auto it = api_token_by_token_.find(token); it != api_token_by_token_.end()) {
      ApiToken& tok = api_tokens_[it->second];
      return accept_token(tok, UserLabel(tok.owner));
    }
    RecordLogin("bearer", "oauth", "bad_credentials");
    return unauthorized();
  }
  if (gateway) return unauthorized();
  return std::nullopt;
}

std::string FakeJira::Impl::IdentityName(const Identity& id) const {
  if (id.kind != Identity::kUser) return "anonymous";
  return IsDc() ? dir.User(id.user).name : dir.User(id.user).account_id;
}

std::optional<HttpResponse> FakeJira::Impl::RateLimitCheck(Ctx& ctx, HttpResponse* headers_out) {
  const std::string who = IdentityName(ctx.id);
  const RateLimit* limit = &opt.rate_limit;
  if (auto it = opt.rate_limits.find(who); it != opt.rate_limits.end()) {
    limit = &it->second;
  } else if (ctx.id.kind == Identity::kUser) {
    const UserRecord r = dir.User(ctx.id.user);
    if (r.email) {
      if (auto e = opt.rate_limits.find(*r.email); e != opt.rate_limits.end()) limit = &e->second;
    }
  }
  if (limit->capacity <= 0) return std::nullopt;
  if (IsDc()) {
    // Requests that look like the browser UI are not limited (Atlassian KB on rate limiting and
    // cookies).
    const auto cookies = ParseCookies(ctx.req.Header("cookie"));
    if (cookies.count("JSESSIONID") != 0 && cookies.count("atlassian.xsrf.token") != 0) {
      return std::nullopt;
    }
  }
  Bucket& b = buckets_[who];
  if (b.tokens < 0) {
    b.tokens = limit->capacity;
    b.last_refill = ctx.now;
  }
  const auto interval = std::max<std::chrono::seconds>(limit->interval, std::chrono::seconds(1));
  const auto intervals = (ctx.now - b.last_refill) / interval;
  if (intervals > 0) {
    b.tokens = std::min<double>(
        limit->capacity, b.tokens + static_cast<double>(intervals) * limit->fill_per_interval);
    b.last_refill += intervals * interval;
  }
  const bool allowed = b.tokens >= 1;
  if (allowed) b.tokens -= 1;
  const int remaining = static_cast<int>(b.tokens);
  const auto next_refill = b.last_refill + interval;
  const auto wait = std::chrono::ceil<std::chrono::seconds>(next_refill - ctx.now).count();
  HttpResponse& h = *headers_out;
  h.WithHeader("X-RateLimit-Limit", std::to_string(limit->capacity));
  h.WithHeader("X-RateLimit-Remaining", std::to_string(remaining));
  if (IsDc()) {
    h.WithHeader("X-RateLimit-Interval-Seconds", std::to_string(interval.count()));
    h.WithHeader("X-RateLimit-FillRate", std::to_string(limit->fill_per_interval));
    h.WithHeader("Retry-After", allowed ? "0" : std::to_string(std::max<long long>(wait, 1)));
  } else {
    const std::string reset = FormatRfc3339(next_refill);
    h.WithHeader("X-RateLimit-Reset", reset.substr(0, 16) + "Z");
    if (remaining * 5 < limit->capacity) h.WithHeader("X-RateLimit-NearLimit", "true");
    if (!allowed) {
      h.WithHeader("Retry-After", std::to_string(std::max<long long>(wait, 1)));
      h.WithHeader("RateLimit-Reason", "jira-burst-based");
    }
  }
  if (allowed) return std::nullopt;
  HttpResponse resp = ErrorResponse(429, {"Rate limit exceeded."});
  for (auto& hd : h.headers) resp.headers.push_back(std::move(hd));
  h.headers.clear();
  return resp;
}

void FakeJira::Impl::FinishResponse(const Ctx* ctx, HttpResponse& resp, SysTime now) {
  if (!HasHeader(resp, "Date")) resp.WithHeader("Date", FormatHttpDate(now));
  char id[32];
  std::snprintf(id, sizeof id, "%llux%llux1", static_cast<unsigned long long>(request_seq_ % 1440),
                static_cast<unsigned long long>(request_seq_));
  resp.WithHeader("X-AREQUESTID", id);
  resp.WithHeader("Cache-Control", "no-cache, no-store, no-transform");
  if (ctx == nullptr) return;
  if (IsDc()) {
    resp.WithHeader("X-AUSERNAME",
                    ctx->id.kind == Identity::kUser ? dir.User(ctx->id.user).name : "anonymous");
  }
  if (!HasHeader(resp, "X-Seraph-LoginReason")) {
    if (ctx->id.failed_basic) {
      resp.WithHeader("X-Seraph-LoginReason", "AUTHENTICATED_FAILED");
    } else if (ctx->id.basic_ok) {
      resp.WithHeader("X-Seraph-LoginReason", "OK");
    }
  }
}

// ---- Response helpers ---------------------------------------------------------------------------

HttpResponse FakeJira::Impl::JsonResponse(int status, const Json::Value& body) {
  HttpResponse r;
  r.status = status;
  r.headers.emplace_back("Content-Type", "application/json;charset=UTF-8");
  r.body = WriteJson(body);
  return r;
}

HttpResponse FakeJira::Impl::ErrorResponse(int status, std::vector<std::string> messages,
                                           std::map<std::string, std::string> errors) {
  Json::Value body(Json::objectValue);
  body["errorMessages"] = Json::Value(Json::arrayValue);
  for (auto& m : messages) body["errorMessages"].append(std::move(m));
  body["errors"] = Json::Value(Json::objectValue);
  for (auto& [k, v] : errors) body["errors"][k] = v;
  return JsonResponse(status, body);
}

HttpResponse FakeJira::Impl::HtmlResponse(int status, std::string_view title) {
  HttpResponse r;
  r.status = status;
  r.headers.emplace_back("Content-Type", "text/html;charset=UTF-8");
  r.body = "<!DOCTYPE html>\n<html><head><title>" + std::string(title) +
           " - Jira</title></head><body><h1>" + std::string(title) + "</h1><p>HTTP Status " +
           std::to_string(status) + "</p></body></html>\n";
  return r;
}

HttpResponse FakeJira::Impl::Empty(int status) {
  HttpResponse r;
  r.status = status;
  return r;
}

std::optional<HttpResponse> FakeJira::Impl::ReadJsonBody(const Ctx& ctx, Json::Value* out) const {
  const std::string type = ToLower(ctx.req.Header("content-type"));
  if (type.rfind("application/json", 0) != 0) {
    HttpResponse r;
    r.status = 415;
    r.headers.emplace_back("Content-Type", "text/html;charset=UTF-8");
    r.body = "Unsupported Media Type";
    return r;
  }
  auto parsed = ParseJson(ctx.req.body, "request body");
  if (!parsed.ok()) {
    return ErrorResponse(
        400, {"Unexpected character in the request body: " + parsed.status().message()});
  }
  *out = std::move(*parsed);
  return std::nullopt;
}

std::optional<std::int64_t> FakeJira::Impl::QueryInt(const Ctx& ctx, std::string_view name,
                                                     bool* bad) const {
  auto v = ctx.req.Query(name);
  if (!v) return std::nullopt;
  if (v->empty() || v->size() > 12) {
    *bad = true;
    return std::nullopt;
  }
  std::int64_t n = 0;
  bool negative = false;
  std::size_t i = 0;
  if ((*v)[0] == '-') {
    negative = true;
    i = 1;
  }
  if (i == v->size()) {
    *bad = true;
    return std::nullopt;
  }
  for (; i < v->size(); ++i) {
    const char c = (*v)[i];
    if (c < '0' || c > '9') {
      *bad = true;
      return std::nullopt;
    }
    n = n * 10 + (c - '0');
  }
  return negative ? -n : n;
}

std::optional<bool> FakeJira::Impl::QueryBool(const Ctx& ctx, std::string_view name,
                                              bool* bad) const {
  auto v = ctx.req.Query(name);
  if (!v) return std::nullopt;
  const std::string lower = ToLower(*v);
  if (lower == "true") return true;
  if (lower == "false") return false;
  *bad = true;
  return std::nullopt;
}

std::optional<HttpResponse> FakeJira::Impl::RequireUser(const Ctx& ctx) const {
  if (ctx.id.kind != Identity::kUser) {
    return ErrorResponse(401, {"You are not authenticated. Authentication required to perform "
                               "this operation."});
  }
  return std::nullopt;
}

std::optional<HttpResponse> FakeJira::Impl::Require(const Ctx& ctx,
                                                    std::string_view permission) const {
  if (auto r = RequireUser(ctx)) return r;
  if (!dir.HasPermission(ctx.id.user, permission)) {
    return ErrorResponse(403, {permission == "SYSTEM_ADMIN"
                                   ? "You must be a site administrator to perform this operation."
                                   : "You do not have the permission to perform this operation. "
                                     "Administer Jira global permission is required."});
  }
  return std::nullopt;
}

std::optional<HttpResponse> FakeJira::Impl::RequireScopes(const Ctx& ctx,
                                                          std::vector<std::string> classic,
                                                          std::vector<std::string> granular) const {
  if (!ctx.id.scopes) return std::nullopt;
  const auto& have = *ctx.id.scopes;
  auto has = [&](const std::string& s) {
    return std::find(have.begin(), have.end(), s) != have.end();
  };
  if (IsDc()) {
    // DC provider scopes are levels: READ < WRITE < ADMIN < SYSTEM_ADMIN, capped by the user.
    static const std::vector<std::string> kLevels = {"READ", "WRITE", "ADMIN", "SYSTEM_ADMIN"};
    auto level = [&](const std::string& s) {
      auto it = std::find(kLevels.begin(), kLevels.end(), s);
      return it == kLevels.end() ? -1 : static_cast<int>(it - kLevels.begin());
    };
    int held = -1;
    for (const auto& s : have) held = std::max(held, level(s));
    const int needed = classic.empty() ? 0 : level(classic.front());
    if (held >= needed) return std::nullopt;
    return ErrorResponse(403,
                         {"The OAuth 2.0 token does not have the scope this operation needs."});
  }
  auto all = [&](const std::vector<std::string>& need) {
    return !need.empty() && std::all_of(need.begin(), need.end(), has);
  };
  if (classic.empty() || all(classic) || all(granular)) return std::nullopt;
  Json::Value body;
  body["code"] = 401;
  body["message"] = "Unauthorized; scope does not match";
  return JsonResponse(401, body);
}

std::optional<HttpResponse> FakeJira::Impl::RequireBasicOnly(const Ctx& ctx) const {
  if (ctx.id.method == "oauth") {
    return ErrorResponse(401, {"OAuth 2.0 is not enabled for this method."});
  }
  return std::nullopt;
}

std::string FakeJira::Impl::UserLabel(UserIndex u) const {
  const UserRecord r = dir.User(u);
  if (IsDc()) return r.name;
  if (r.email) return *r.email;
  return r.display_name;
}

std::string FakeJira::Impl::UserId(UserIndex u) const {
  const UserRecord r = dir.User(u);
  return IsDc() ? r.key : r.account_id;
}

std::string FakeJira::Impl::ActorLabel(const Ctx& ctx) const {
  return ctx.id.kind == Identity::kUser ? UserLabel(ctx.id.user) : std::string("anonymous");
}

std::string FakeJira::Impl::Url(const Ctx& ctx, std::string_view path,
                                std::vector<std::pair<std::string, std::string>> query) const {
  std::string url = ctx.api_root + std::string(path);
  char sep = '?';
  for (const auto& [k, v] : query) {
    url += sep + k + "=" + UrlEncode(v);
    sep = '&';
  }
  return url;
}

std::string FakeJira::Impl::JiraTime(SysTime t) const {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03d+0000", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  return buf;
}

// ---- State changes ------------------------------------------------------------------------------

void FakeJira::Impl::Log(std::string kind, std::string subject, std::string label,
                         std::string object, std::string actor, std::string detail) {
  Mutation m;
  m.seq = mutations_.size() + 1;
  m.time = clock.Now();
  m.kind = std::move(kind);
  m.subject = std::move(subject);
  m.label = std::move(label);
  m.object = std::move(object);
  m.actor = std::move(actor);
  m.detail = std::move(detail);
  mutations_.push_back(m);
  if (listener_) listener_(mutations_.back());
}

void FakeJira::Impl::RecordLogin(std::string principal, std::string method, std::string outcome) {
  login_attempts_.push_back(
      LoginAttempt{clock.Now(), std::move(principal), std::move(method), std::move(outcome)});
}

bool FakeJira::Impl::ChangeMembership(GroupIndex g, UserIndex u, bool add, const std::string& actor,
                                      const std::string& via) {
  const auto before = dir.ProductsOf(u);
  const bool changed = add ? dir.AddMember(g, u) : dir.RemoveMember(g, u);
  if (!changed) return false;
  const std::string subject = IsDc() ? dir.User(u).name : dir.User(u).account_id;
  const std::string label = UserLabel(u);
  Log(add ? "group_member_added" : "group_member_removed", subject, label, dir.group(g).name, actor,
      via);
  const auto after = dir.ProductsOf(u);
  for (const auto& p : after) {
    if (std::find(before.begin(), before.end(), p) == before.end()) {
      Log("product_granted", subject, label, p, actor, "via group " + dir.group(g).name);
    }
  }
  for (const auto& p : before) {
    if (std::find(after.begin(), after.end(), p) == after.end()) {
      Log("product_revoked", subject, label, p, actor, "via group " + dir.group(g).name);
    }
  }
  return true;
}

void FakeJira::Impl::RemoveAllMemberships(UserIndex u, const std::string& actor,
                                          const std::string& via) {
  for (GroupIndex g : dir.GroupsOf(u)) ChangeMembership(g, u, false, actor, via);
}

std::optional<std::string> FakeJira::Impl::SeatProblem(const AppRole& role, UserIndex u) const {
  auto it = opt.seat_limits.find(role.key);
  if (it == opt.seat_limits.end() || dir.HasProduct(u, role)) return std::nullopt;
  if (dir.RoleUserCount(role) + 1 > static_cast<std::uint64_t>(it->second)) {
    return "The user limit for " + role.name + " has been reached (" + std::to_string(it->second) +
           " seats). Licence exceeded.";
  }
  return std::nullopt;
}

// ---- Password logins ----------------------------------------------------------------------------

bool FakeJira::Impl::CaptchaRequired(const std::string& username) const {
  if (opt.captcha_threshold <= 0) return false;
  auto it = failed_logins_.find(ToLower(username));
  return it != failed_logins_.end() && it->second >= opt.captcha_threshold;
}

FakeJira::Impl::PasswordResult FakeJira::Impl::CheckPassword(const std::string& username,
                                                             const std::string& password,
                                                             std::optional<UserIndex>* user,
                                                             bool count_failure) {
  auto u = dir.FindByName(username);
  if (!u || dir.IsDeleted(*u)) return PasswordResult::kUnknownUser;
  if (CaptchaRequired(username)) return PasswordResult::kCaptcha;
  Secrets& s = secrets_[*u];
  if (s.password.empty() || !SecretEquals(s.password, password)) {
    if (count_failure) {
      ++failed_logins_[ToLower(username)];
      s.last_failed_login = clock.Now();
    }
    return PasswordResult::kBad;
  }
  if (!dir.IsActive(*u)) return PasswordResult::kInactive;
  if (s.password_expired) return PasswordResult::kExpired;
  failed_logins_.erase(ToLower(username));
  *user = u;
  ++s.login_count;
  UserRecord r = dir.User(*u);
  s.previous_login = r.last_login;
  r.last_login = clock.Now();
  dir.PutUser(*u, std::move(r));
  return PasswordResult::kOk;
}

HttpResponse FakeJira::Impl::CaptchaDenied(const Ctx& ctx) const {
  HttpResponse r = HtmlResponse(403, "Forbidden");
  r.WithHeader("X-Seraph-LoginReason", "AUTHENTICATION_DENIED");
  r.WithHeader("X-Authentication-Denied-Reason",
               "CAPTCHA_CHALLENGE; login-url=" + ctx.base + "/login.jsp");
  return r;
}

std::string FakeJira::Impl::NewSession(UserIndex u, SysTime now, HttpResponse& resp) {
  const std::string id = jira_fake::RandomToken(24);
  const std::string xsrf = jira_fake::RandomToken(15) + "|lin";
  sessions_[id] = Session{u, xsrf, now, now};
  const std::string path = opt.context_path.empty() ? "/" : opt.context_path;
  resp.WithHeader("Set-Cookie", "JSESSIONID=" + id + "; Path=" + path + "; Secure; HttpOnly");
  resp.WithHeader("Set-Cookie", "atlassian.xsrf.token=" + xsrf + "; Path=" + path + "; Secure");
  return id;
}

const std::vector<UserIndex>& FakeJira::Impl::ListedMembers(GroupIndex g,
                                                            bool include_inactive) const {
  const auto& all = dir.group(g).members;
  if (IsDc() && include_inactive) return all;
  MemberCache& cache = member_cache_[{g, include_inactive}];
  if (cache.version != dir.version()) {
    cache.members.clear();
    for (UserIndex u : all) {
      if (!IsDc() && dir.IsSearchHidden(u)) continue;
      if (!include_inactive && !dir.IsActive(u)) continue;
      cache.members.push_back(u);
    }
    cache.version = dir.version();
  }
  return cache.members;
}

Json::Value FakeJira::Impl::Unreliable(Json::Value items) const {
  if (!opt.reversed_pages || !items.isArray()) return items;
  Json::Value out(Json::arrayValue);
  for (Json::ArrayIndex i = items.size(); i > 0; --i) out.append(std::move(items[i - 1]));
  return out;
}

// ---- Ground truth -------------------------------------------------------------------------------

UserTruth FakeJira::Impl::Truth(UserIndex u) const {
  const UserRecord r = dir.User(u);
  UserTruth t;
  t.id = IsDc() ? r.key : r.account_id;
  t.username = IsDc() ? r.name : "";
  if (r.email && !r.email_hidden) t.email = r.email;
  t.display_name = r.display_name;
  t.active = r.active;
  t.deleted = r.deleted;
  t.search_hidden = r.search_hidden;
  t.account_type = IsDc() ? "" : std::string(CloudAccountTypeName(r.account_type));
  t.nhi = r.nhi;
  t.directory = r.directory;
  t.managed = r.managed;
  t.last_login = r.last_login;
  t.owns_token = token_owners_.count(u) != 0;
  auto s = secrets_.find(u);
  t.totp_enrolled = s != secrets_.end() && !s->second.totp_seed.empty();
  for (GroupIndex g : dir.GroupsOf(u)) t.groups.push_back(dir.group(g).name);
  std::sort(t.groups.begin(), t.groups.end());
  t.products = dir.ProductsOf(u);
  t.permissions = dir.PermissionsOf(u);
  return t;
}

bool FakeJira::Impl::ExpectedInSync(UserIndex u) const {
  return IsDc() ? !dir.IsDeleted(u) : !dir.IsSearchHidden(u);
}

std::uint64_t FakeJira::Impl::VisibleMemberCount(GroupIndex g) const {
  return ListedMembers(g, true).size();
}

std::vector<CredentialTruth> FakeJira::Impl::CredentialList() const {
  std::vector<CredentialTruth> out;
  for (const Pat& p : pats_) {
    if (p.revoked) continue;
    out.push_back({std::to_string(p.id), "personal_access_token", p.name, UserId(p.owner),
                   p.created, p.expires, p.last_accessed});
  }
  for (const ApiToken& t : api_tokens_) {
    out.push_back(
        {t.id, "api_token", t.label, UserId(t.owner), t.created, t.expires, t.last_access});
  }
  for (const OAuthClientSpec* c : oauth.Clients()) {
    out.push_back({c->client_id, "oauth_client", c->name, std::nullopt, std::nullopt, std::nullopt,
                   std::nullopt});
  }
  for (const ApplicationLinkSpec& l : app_links_) {
    out.push_back(
        {l.id, "application_link", l.name, std::nullopt, std::nullopt, std::nullopt, std::nullopt});
  }
  return out;
}

// ---- Public API ---------------------------------------------------------------------------------

FakeJira::FakeJira(FakeJiraOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
FakeJira::~FakeJira() = default;

HttpResponse FakeJira::Handle(const HttpRequest& request) { return impl_->Handle(request); }
const FakeJiraOptions& FakeJira::options() const { return impl_->initial_options; }

Result<std::string> FakeJira::AddUser(const NewUser& user) {
  std::lock_guard lock(impl_->mu);
  Impl& m = *impl_;
  UserRecord r;
  r.name = user.username;
  if (!user.email.empty()) r.email = user.email;
  r.email_hidden = !user.email_visible;
  r.display_name = user.display_name.empty() ? user.username : user.display_name;
  r.active = user.active;
  r.account_type = user.account_type;
  r.nhi = user.nhi;
  r.search_hidden = user.search_hidden;
  r.managed = user.managed;
  r.directory = m.IsDc() ? user.directory : "";
  r.last_login = user.last_login;
  if (!m.IsDc()) r.name.clear();
  CW_ASSIGN_OR_RETURN(UserIndex u, m.dir.AddUser(std::move(r)));
  if (!user.password.empty()) m.secrets_[u].password = user.password;
  for (const auto& name : user.groups) {
    auto g = m.dir.FindGroup(name);
    if (!g) return NotFound("no group '" + name + "'");
    m.dir.AddMember(*g, u);
  }
  return m.UserId(u);
}

Result<std::string> FakeJira::AddGroup(const std::string& name) {
  std::lock_guard lock(impl_->mu);
  CW_ASSIGN_OR_RETURN(GroupIndex g, impl_->dir.AddGroup(name));
  return impl_->IsDc() ? impl_->dir.group(g).name : impl_->dir.group(g).id;
}

Status FakeJira::AddMember(std::string_view group, std::string_view user_ref) {
  std::lock_guard lock(impl_->mu);
  auto g = impl_->dir.FindGroup(group);
  if (!g) return NotFound("no group '" + std::string(group) + "'");
  auto u = impl_->dir.FindRef(user_ref);
  if (!u) return NotFound("no user '" + std::string(user_ref) + "'");
  impl_->dir.AddMember(*g, *u);
  return Status::Ok();
}

Status FakeJira::SetPassword(std::string_view user_ref, std::string_view password) {
  std::lock_guard lock(impl_->mu);
  auto u = impl_->dir.FindRef(user_ref);
  if (!u) return NotFound("no user '" + std::string(user_ref) + "'");
  impl_->secrets_[*u].password = std::string(password);
  return Status::Ok();
}

Status FakeJira::SetPasswordExpired(std::string_view user_ref, bool expired) {
  std::lock_guard lock(impl_->mu);
  auto u = impl_->dir.FindRef(user_ref);
  if (!u) return NotFound("no user '" + std::string(user_ref) + "'");
  impl_->secrets_[*u].password_expired = expired;
  return Status::Ok();
}

Status FakeJira::EnrolTotp(std::string_view user_ref, std::span<const std::uint8_t> seed) {
  std::lock_guard lock(impl_->mu);
  auto u = impl_->dir.FindRef(user_ref);
  if (!u) return NotFound("no user '" + std::string(user_ref) + "'");
  if (seed.size() < 10) return InvalidArgument("a TOTP seed has at least 80 bits");
  impl_->secrets_[*u].totp_seed.assign(seed.begin(), seed.end());
  return Status::Ok();
}

Status FakeJira::EnforceTwoStep(std::string_view user_ref, bool enforced) {
  std::lock_guard lock(impl_->mu);
  auto u = impl_->dir.FindRef(user_ref);
  if (!u) return NotFound("no user '" + std::string(user_ref) + "'");
  impl_->secrets_[*u].tsv_enforced = enforced;
  return Status::Ok();
}

Result<std::string> FakeJira::AddPersonalAccessToken(std::string_view user_ref,
                                                     const std::string& name,
                                                     std::optional<SysTime> expires) {
  std::lock_guard lock(impl_->mu);
  Impl& m = *impl_;
  if (!m.IsDc()) return FailedPrecondition("personal access tokens are a Data Center feature");
  auto u = m.dir.FindRef(user_ref);
  if (!u) return NotFound("no user '" + std::string(user_ref) + "'");
  Impl::Pat pat;
  pat.id = m.next_pat_id_++;
  pat.owner = *u;
  pat.name = name;
  pat.token = jira_fake::RandomToken(33);
  pat.created = m.clock.Now();
  pat.expires = expires;
  m.pat_by_token_[pat.token] = m.pats_.size();
  m.token_owners_.insert(*u);
  m.pats_.push_back(pat);
  return pat.token;
}

Result<std::string> FakeJira::AddApiToken(std::string_view user_ref, const std::string& label,
                                          SysTime expires, bool scoped,
                                          std::vector<std::string> scopes) {
  std::lock_guard lock(impl_->mu);
  Impl& m = *impl_;
  if (m.IsDc()) return FailedPrecondition("API tokens are a Cloud feature");
  auto u = m.dir.FindRef(user_ref);
  if (!u) return NotFound("no user '" + std::string(user_ref) + "'");
  Impl::ApiToken t;
  t.id = jira_fake::RandomToken(12);
  t.owner = *u;
  t.label = label;
  t.token = "ATATT" + jira_fake::RandomToken(40);
  t.created = m.clock.Now();
  t.expires = expires;
  t.scoped = scoped;
  t.scopes = std::move(scopes);
  m.api_token_by_token_[t.token] = m.api_tokens_.size();
  m.token_owners_.insert(*u);
  m.api_tokens_.push_back(t);
  return t.token;
}

Status FakeJira::AddOAuthClient(const OAuthClientSpec& client) {
  std::lock_guard lock(impl_->mu);
  std::optional<UserIndex> service_account;
  if (!client.service_account.empty()) {
    service_account = impl_->dir.FindRef(client.service_account);
    if (!service_account) return NotFound("no user '" + client.service_account + "'");
  }
  return impl_->oauth.AddClient(client, service_account);
}

Result<std::string> FakeJira::IssueAuthorizationCode(const std::string& client_id,
                                                     std::string_view user_ref,
                                                     const std::string& redirect_uri,
                                                     const std::vector<std::string>& scopes,
                                                     const std::string& code_challenge) {
  std::lock_guard lock(impl_->mu);
  auto u = impl_->dir.FindRef(user_ref);
  if (!u) return NotFound("no user '" + std::string(user_ref) + "'");
  return impl_->oauth.IssueCode(client_id, *u, redirect_uri, scopes, code_challenge,
                                impl_->clock.Now());
}

Result<std::string> FakeJira::AddOrgApiKey(const OrgApiKeySpec& spec) {
  std::lock_guard lock(impl_->mu);
  if (impl_->IsDc()) return FailedPrecondition("organization API keys are a Cloud feature");
  std::string key = "ATCTT3x" + jira_fake::RandomToken(40);
  impl_->org_keys_.push_back({key, spec});
  return key;
}

Status FakeJira::AddApplicationLink(const ApplicationLinkSpec& link) {
  std::lock_guard lock(impl_->mu);
  if (link.id.empty() || link.name.empty()) return InvalidArgument("a link needs an id and a name");
  impl_->app_links_.push_back(link);
  return Status::Ok();
}

Status FakeJira::GenerateSite(const SiteSpec& spec) {
  std::lock_guard lock(impl_->mu);
  Impl& m = *impl_;
  CW_RETURN_IF_ERROR(m.dir.Generate(spec));
  // Tokens: every DC service account and bot owns a PAT, every Cloud service account an API
  // token, and `pat_owner_fraction` of the humans one as well.
  const SysTime reference = SysTime(std::chrono::seconds(1767225600));
  for (UserIndex u = 0; u < spec.users; ++u) {
    const NhiKind nhi = m.dir.Nhi(u);
    const bool owns = m.IsDc() ? (nhi == NhiKind::kServiceAccount || nhi == NhiKind::kBot)
                               : nhi == NhiKind::kServiceAccount;
    const bool human_owns =
        nhi == NhiKind::kHuman &&
        jira_fake::HashBelow(jira_fake::Hash64(spec.seed, u, 40), spec.pat_owner_fraction);
    if (!owns && !human_owns) continue;
    const std::uint64_t h = jira_fake::Hash64(spec.seed, u, 41);
    const SysTime created = reference - std::chrono::hours(24 * static_cast<long>(h % 700));
    const std::string token = "gen" + std::to_string(spec.seed) + "x" + std::to_string(u) + "x" +
                              std::to_string(h % 1000000007);
    m.token_owners_.insert(u);
    if (m.IsDc()) {
      Impl::Pat pat;
      pat.id = m.next_pat_id_++;
      pat.owner = u;
      pat.name = owns ? "automation" : "my laptop";
      pat.token = token;
      pat.created = created;
      if (h % 3 != 0) pat.expires = created + std::chrono::hours(24 * 365);
      if (h % 5 != 0)
        pat.last_accessed = created + std::chrono::hours(24 * static_cast<long>(h % 30));
      m.pat_by_token_[pat.token] = m.pats_.size();
      m.pats_.push_back(std::move(pat));
    } else {
      Impl::ApiToken t;
      t.id = "tok-" + std::to_string(u);
      t.owner = u;
      t.label = owns ? "automation" : "scripts";
      t.token = token;
      t.created = created;
      t.expires = created + std::chrono::hours(24 * 365);
      t.scoped = owns;
      if (owns) t.scopes = {"read:jira-user", "read:jira-work"};
      if (h % 5 != 0) t.last_access = created + std::chrono::hours(24 * static_cast<long>(h % 30));
      m.api_token_by_token_[t.token] = m.api_tokens_.size();
      m.api_tokens_.push_back(std::move(t));
    }
  }
  return Status::Ok();
}

void FakeJira::QueueFault(FaultRule rule) {
  std::lock_guard lock(impl_->mu);
  if (rule.count == 0 || rule.count < -1) Misuse("FaultRule.count must be positive or -1");
  impl_->faults_.push_back(std::move(rule));
}

void FakeJira::ClearFaults() {
  std::lock_guard lock(impl_->mu);
  impl_->faults_.clear();
}

void FakeJira::ResetFailedLoginCount(std::string_view username) {
  std::lock_guard lock(impl_->mu);
  if (username.empty()) {
    impl_->failed_logins_.clear();
  } else {
    impl_->failed_logins_.erase(ToLower(username));
  }
}

void FakeJira::ExpireSessions(std::string_view user_ref) {
  std::lock_guard lock(impl_->mu);
  if (user_ref.empty()) {
    impl_->sessions_.clear();
    return;
  }
  auto u = impl_->dir.FindRef(user_ref);
  if (!u) return;
  std::erase_if(impl_->sessions_, [&](const auto& s) { return s.second.user == *u; });
}

void FakeJira::ExpireAccessTokens() {
  std::lock_guard lock(impl_->mu);
  impl_->oauth.ExpireAccessTokens();
}

void FakeJira::SetIdpManaged(bool managed) {
  std::lock_guard lock(impl_->mu);
  impl_->opt.idp_managed = managed;
}

void FakeJira::SetSeatLimit(const std::string& product, std::optional<int> seats) {
  std::lock_guard lock(impl_->mu);
  if (impl_->dir.FindRole(product) == nullptr) Misuse("seat limit for unknown product " + product);
  if (seats) {
    impl_->opt.seat_limits[product] = *seats;
  } else {
    impl_->opt.seat_limits.erase(product);
  }
}

void FakeJira::SetRateLimit(const std::string& identity, RateLimit limit) {
  std::lock_guard lock(impl_->mu);
  if (identity.empty()) {
    impl_->opt.rate_limit = limit;
  } else {
    impl_->opt.rate_limits[identity] = limit;
  }
  impl_->buckets_.clear();
}

void FakeJira::SetBasicAuthEnabled(bool enabled) {
  std::lock_guard lock(impl_->mu);
  impl_->basic_enabled_ = enabled;
}

void FakeJira::SetMutationListener(std::function<void(const Mutation&)> listener) {
  std::lock_guard lock(impl_->mu);
  impl_->listener_ = std::move(listener);
}

std::optional<UserTruth> FakeJira::FindUser(std::string_view user_ref) const {
  std::lock_guard lock(impl_->mu);
  auto u = impl_->dir.FindRef(user_ref);
  if (!u) return std::nullopt;
  return impl_->Truth(*u);
}

void FakeJira::ForEachExpectedSyncUser(const std::function<void(const UserTruth&)>& fn) const {
  std::lock_guard lock(impl_->mu);
  for (UserIndex u = 0; u < impl_->dir.user_count(); ++u) {
    if (impl_->ExpectedInSync(u)) fn(impl_->Truth(u));
  }
}

std::vector<UserTruth> FakeJira::ExpectedSyncUsers() const {
  std::vector<UserTruth> out;
  ForEachExpectedSyncUser([&](const UserTruth& t) { out.push_back(t); });
  return out;
}

std::vector<GroupTruth> FakeJira::Groups() const {
  std::lock_guard lock(impl_->mu);
  std::vector<GroupTruth> out;
  for (GroupIndex g = 0; g < impl_->dir.group_count(); ++g) {
    const auto& group = impl_->dir.group(g);
    if (group.deleted) continue;
    out.push_back(
        {impl_->IsDc() ? group.name : group.id, group.name, impl_->VisibleMemberCount(g)});
  }
  return out;
}

std::vector<std::string> FakeJira::GroupMemberIds(std::string_view group) const {
  std::lock_guard lock(impl_->mu);
  std::vector<std::string> out;
  auto g = impl_->dir.FindGroup(group);
  if (!g) return out;
  for (UserIndex u : impl_->dir.group(*g).members) out.push_back(impl_->UserId(u));
  return out;
}

std::vector<CredentialTruth> FakeJira::Credentials() const {
  std::lock_guard lock(impl_->mu);
  return impl_->CredentialList();
}

SiteCounts FakeJira::Counts() const {
  std::lock_guard lock(impl_->mu);
  const Impl& m = *impl_;
  SiteCounts c;
  c.users = m.dir.user_count();
  for (UserIndex u = 0; u < m.dir.user_count(); ++u) {
    if (!m.ExpectedInSync(u)) continue;
    ++c.expected_sync_users;
    if (m.dir.Nhi(u) != NhiKind::kHuman) ++c.non_human;
  }
  for (GroupIndex g = 0; g < m.dir.group_count(); ++g) {
    if (!m.dir.group(g).deleted) ++c.groups;
  }
  c.memberships = m.dir.membership_count();
  c.custom_memberships = m.dir.custom_membership_count();
  c.credentials = m.CredentialList().size();
  return c;
}

std::vector<Mutation> FakeJira::Mutations() const {
  std::lock_guard lock(impl_->mu);
  return impl_->mutations_;
}

std::vector<LoginAttempt> FakeJira::LoginAttempts(std::string_view principal) const {
  std::lock_guard lock(impl_->mu);
  std::vector<LoginAttempt> out;
  for (const auto& a : impl_->login_attempts_) {
    if (principal.empty() || a.principal == principal) out.push_back(a);
  }
  return out;
}

std::vector<TotpEvent> FakeJira::TotpEvents() const {
  std::lock_guard lock(impl_->mu);
  return impl_->totp_events_;
}

int FakeJira::FailedLoginCount(std::string_view username) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->failed_logins_.find(ToLower(username));
  return it == impl_->failed_logins_.end() ? 0 : it->second;
}

int FakeJira::ActiveSessionCount(std::string_view user_ref) const {
  std::lock_guard lock(impl_->mu);
  auto u = impl_->dir.FindRef(user_ref);
  if (!u) return 0;
  const SysTime now = impl_->clock.Now();
  int n = 0;
  for (const auto& [id, s] : impl_->sessions_) {
    if (s.user == *u && now - s.last_used <= impl_->opt.session_idle_timeout) ++n;
  }
  return n;
}

Json::Value FakeJira::StateJson(std::size_t max_users) const {
  std::lock_guard lock(impl_->mu);
  return impl_->StateJson(max_users);
}

}  // namespace cakewalk::testing
