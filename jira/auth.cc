#include "jira/auth.h"

#include <algorithm>
#include <cctype>

#include "base/encoding.h"
#include "base/fault_point.h"
#include "jira/errors.h"
#include "jira/secret_text.h"

namespace cakewalk::jira {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool CaptchaDenied(const http::Response& r) {
  return Lower(r.Header("x-authentication-denied-reason").value_or("")).find("captcha") !=
         std::string::npos;
}

// An Authenticator that presents one fixed cookie and never renews: used to confirm a new
// session with /myself before it is shared.
class FixedCookie final : public Authenticator {
 public:
  explicit FixedCookie(const SecretBytes& cookie) : cookie_(cookie) {}
  Result<std::uint64_t> Apply(http::Request& request, std::stop_token) override {
    request.cookie = cookie_.Clone();
    return 0u;
  }
  bool Renew(std::uint64_t) override { return false; }
  Status Refused(const http::Response& response, std::string_view what) override {
    return AuthFailed("Jira did not accept the session it had just opened (" + std::string(what) +
                      ": HTTP " + std::to_string(response.status) + ")");
  }
  bool cookies() const override { return true; }

 private:
  const SecretBytes& cookie_;
};

}  // namespace

// ---- SecretHeaderAuth ---------------------------------------------------------------------------

SecretHeaderAuth::SecretHeaderAuth(Credentials& credentials, std::string secret_name, Scheme scheme,
                                   std::string user, std::string describe, const Clock& clock)
    : credentials_(credentials),
      secret_name_(std::move(secret_name)),
      scheme_(scheme),
      user_(std::move(user)),
      describe_(std::move(describe)),
      clock_(clock) {}

Result<std::uint64_t> SecretHeaderAuth::Apply(http::Request& request, std::stop_token) {
  std::lock_guard lock(mu_);
  const SysTime now = clock_.Now();
  if (header_.empty() || now - read_at_ > kSecretCacheLifetime || now < read_at_) {
    CW_ASSIGN_OR_RETURN(SecretBytes value,
                        credentials_.Get(secret_name_, "jira api request: " + describe_));
    SecretBytes header;
    if (scheme_ == Scheme::kBearer) {
      header.Append("Bearer ");
      header.Append(value);
    } else {
      SecretBytes pair;
      pair.Append(user_);
      pair.Append(":");
      pair.Append(value);
      std::string encoded = Base64Encode(pair.Reveal(SecretAccess::Grant()));
      header.Append("Basic ");
      header.Append(encoded);
      WipeString(encoded);
    }
    header_ = std::move(header);
    read_at_ = now;
    ++generation_;
  }
  request.authorization = header_.Clone();
  return generation_;
}

bool SecretHeaderAuth::Renew(std::uint64_t generation) {
  std::lock_guard lock(mu_);
  if (generation == generation_) header_.Wipe();  // read it again: it may have been rotated
  return true;
}

Status SecretHeaderAuth::Refused(const http::Response& response, std::string_view what) {
  std::string detail = "Jira refused " + describe_ + " (" + std::string(what) + ": HTTP " +
                       std::to_string(response.status);
  if (auto reason = response.Header("x-seraph-loginreason")) detail += ", " + *reason;
  detail += ")";
  if (scheme_ == Scheme::kBasic) {
    detail +=
        "; Jira Cloud API tokens expire: create a new one and store it with 'cakewalk-agent "
        "secret set <connection> api-token'";
  } else {
    detail +=
        "; it may have expired or been revoked: store a new one with 'cakewalk-agent secret "
        "set'";
  }
  return AuthFailed(detail);
}

// ---- DcSessionAuth ------------------------------------------------------------------------------

DcSessionAuth::DcSessionAuth(const ConnectionSettings& settings, RestClient& site,
                             Credentials& credentials, ConnectionState& state,
                             DcLoginOptions options)
    : settings_(settings),
      site_(site),
      credentials_(credentials),
      state_(state),
      options_(options) {}

Result<std::uint64_t> DcSessionAuth::Apply(http::Request& request, std::stop_token stop) {
  std::lock_guard lock(mu_);
  if (!cookie_) CW_RETURN_IF_ERROR(LoginLocked(stop));
  request.cookie = cookie_->Clone();
  return generation_;
}

bool DcSessionAuth::Renew(std::uint64_t generation) {
  std::lock_guard lock(mu_);
  if (generation == generation_) cookie_.reset();  // expired: the next Apply logs in again
  return true;
}

Status DcSessionAuth::Refused(const http::Response& response, std::string_view what) {
  if (CaptchaDenied(response)) {
    return Stop(reason::kCaptchaRequired, "Jira demands a CAPTCHA for " + settings_.username +
                                              " (" + std::string(what) + ")");
  }
  return AuthFailed("Jira did not accept a freshly opened session for " + settings_.username +
                    " (" + std::string(what) + ": HTTP " + std::to_string(response.status) + ")");
}

Status DcSessionAuth::EnsureSession(std::stop_token stop) {
  std::lock_guard lock(mu_);
  if (cookie_) return Status::Ok();
  return LoginLocked(stop);
}

void DcSessionAuth::Logout(std::stop_token stop) {
  std::lock_guard lock(mu_);
  if (!cookie_) return;
  FixedCookie fixed(*cookie_);
  RestCall call;
  call.method = "DELETE";
  call.path = {"rest", "auth", "1", "session"};
  // Jira 11 may refuse this path; the session then ends by itself.
  site_.Execute(call, &fixed, stop, "logout").status().IgnoreError();
  cookie_.reset();
  ++generation_;
}

bool DcSessionAuth::used_totp() const {
  std::lock_guard lock(mu_);
  return used_totp_;
}

int DcSessionAuth::logins() const {
  std::lock_guard lock(mu_);
  return logins_;
}

std::uint32_t DcSessionAuth::password_version() const {
  std::lock_guard lock(mu_);
  return password_version_;
}

Status DcSessionAuth::CheckLoginStop() {
  std::optional<LoginStop> stop = state_.login_stop();
  if (!stop) return Status::Ok();
  CW_ASSIGN_OR_RETURN(std::uint32_t password, credentials_.CurrentVersion(secret::kPassword));
  // A stop about the second factor (a refused code, an enrolment demand) also ends when a new MFA
  // key is enrolled, even when there was none before.
  const bool about_totp = stop->totp_version != 0 || stop->reason == reason::kMfaFailed;
  std::uint32_t totp = 0;
  if (about_totp) {
    CW_ASSIGN_OR_RETURN(totp, credentials_.CurrentVersion(secret::kTotp));
  }
  if (password != stop->password_version || totp != stop->totp_version) {
    // An operator stored a new password or MFA key since: the stop has served its purpose.
    return state_.ClearLoginStop();
  }
  return Status(
      stop->reason == reason::kAuthFailed ? Code::kUnauthenticated : Code::kFailedPrecondition,
      stop->message + " [no login attempted since " + FormatRfc3339(stop->since) + "]",
      stop->reason);
}

Status DcSessionAuth::Stop(std::string_view why, std::string message) {
  auto password = credentials_.CurrentVersion(secret::kPassword);
  auto totp = credentials_.CurrentVersion(secret::kTotp);
  const std::string conn = settings_.name;
  std::string action;
  if (why == reason::kCaptchaRequired) {
    action =
        "An operator must act: log in to Jira in a browser as " + settings_.username +
        " (answering the CAPTCHA), or have a Jira admin reset the failed-login count; then store "
        "the password again with 'cakewalk-agent secret set " +
        conn + " password' (a new version lifts the stop).";
  } else if (why == reason::kMfaFailed) {
    action =
        "An operator must act: check the agent host's clock and that the MFA key in the token "
        "is the one Jira has (compare 'cakewalk-agent mfa code " +
        conn + "' with the authenticator app), then enrol it again with 'cakewalk-agent mfa " +
        "enroll " + conn + "' (a new version lifts the stop).";
  } else {
    action = "An operator must act: store the right password with 'cakewalk-agent secret set " +
             conn + " password' (a new version lifts the stop).";
  }
  std::string full = message +
                     ". No further login will be attempted with these credentials, so "
                     "that Jira does not lock the account. " +
                     action;
  LoginStop stop;
  stop.reason = std::string(why);
  stop.message = full;
  stop.password_version = password.ok() ? *password : 0;
  stop.totp_version = (why == reason::kMfaFailed || used_totp_) && totp.ok() ? *totp : 0;
  stop.since = site_.runtime().clock->Now();
  Status saved = state_.SetLoginStop(stop);
  if (!saved.ok()) full += " (the stop could not be saved: " + saved.message() + ")";
  return Status(why == reason::kAuthFailed ? Code::kUnauthenticated : Code::kFailedPrecondition,
                full, std::string(why));
}

Status DcSessionAuth::LoginLocked(std::stop_token stop) {
  cookie_.reset();
  used_totp_ = false;
  CW_ASSIGN_OR_RETURN(LoginLock lock, state_.LockLogins());
  CW_RETURN_IF_ERROR(CheckLoginStop());
  if (settings_.mfa_totp) {
    // Refuse before the password is sent when the code could not be right anyway. The skew is
    // measured from an anonymous serverInfo when no answer has told it yet.
    if (!site_.skew().skew()) {
      RestCall info;
      info.path = {"rest", "api", "2", "serverInfo"};
      CW_RETURN_IF_ERROR(site_.Execute(info, nullptr, stop, "GET serverInfo").status());
    }
    const auto skew = site_.skew().skew();
    if (skew && std::chrono::abs(*skew) >= kMaxTotpSkew) {
      return MfaFailed("the agent's clock differs from Jira's by " + std::to_string(skew->count()) +
                       " s, more than one TOTP time step: fix the time (NTP) on the agent host or "
                       "on Jira; no login was attempted");
    }
  }
  // The passwords to try, in order (see the header: a pending version only after a refusal).
  struct Candidate {
    std::uint32_t version = 0;
    bool pending = false;
  };
  std::vector<Candidate> candidates;
  if (options_.password_version != 0) {
    candidates.push_back({options_.password_version, false});
  } else {
    CW_ASSIGN_OR_RETURN(std::vector<SecretVersion> versions,
                        credentials_.Versions(secret::kPassword));
    std::uint32_t current = 0;
    for (const SecretVersion& v : versions) {
      if (v.current) current = v.version;
    }
    candidates.push_back({current, false});  // 0: none, and Get says what to store
    if (current != 0) {
      for (auto it = versions.rbegin(); it != versions.rend(); ++it) {
        if (it->pending && it->version > current) {
          candidates.push_back({it->version, true});
          break;
        }
      }
    }
  }
  const std::string purpose = "jira login of " + settings_.username;
  ++logins_;
  std::string refusals;
  bool accepted = false;
  for (std::size_t i = 0; i < candidates.size() && !accepted; ++i) {
    const Candidate& c = candidates[i];
    SecretBytes password;
    if (options_.password_version == 0 && !c.pending) {
      CW_ASSIGN_OR_RETURN(password, credentials_.Get(secret::kPassword, purpose));
    } else {
      CW_ASSIGN_OR_RETURN(
          password, credentials_.GetVersion(secret::kPassword, c.version,
                                            c.pending ? purpose + " (staged password)" : purpose));
    }
    std::string refusal;
    CW_ASSIGN_OR_RETURN(Attempt attempt, TryPassword(password, refusal, stop));
    password.Wipe();
    if (attempt == Attempt::kRefused) {
      refusals += (refusals.empty() ? "" : "; ") + refusal +
                  (c.version != 0 ? " (password version " + std::to_string(c.version) + ")" : "");
      continue;
    }
    accepted = true;
    if (c.pending) {
      // Jira has the staged password: a rotation changed it and was not promoted yet, or was
      // interrupted after the change. It becomes the current one.
      FaultPoint("jira.login.staged-password-accepted");
      CW_RETURN_IF_ERROR(credentials_.Promote(secret::kPassword, c.version));
    }
    password_version_ = c.version;
  }
  if (!accepted) {
    if (options_.stop_on_refusal) return Stop(reason::kAuthFailed, refusals);
    cookie_.reset();
    return AuthFailed(refusals + " (not recorded as a login stop)");
  }
  Status confirmed = ConfirmIdentity(stop);
  if (!confirmed.ok()) {
    cookie_.reset();
    return confirmed;
  }
  return Status::Ok();
}

Result<DcSessionAuth::Attempt> DcSessionAuth::TryPassword(const SecretBytes& password,
                                                          std::string& refusal,
                                                          std::stop_token stop) {
  RestCall call;
  call.method = "POST";
  call.path = {"rest", "tsv", "1.0", "authenticate"};
  call.headers.push_back({"X-Atlassian-Token", "no-check"});
  call.secret_body = SecretBodyBuilder(SecretBodyBuilder::Format::kJson)
                         .Add("username", settings_.username)
                         .AddSecret("password", password)
                         .AddBool("rememberMe", false)
                         .Add("targetUrl", "")
                         .Finish();
  CW_ASSIGN_OR_RETURN(RestReply reply, site_.Execute(call, nullptr, stop, "login"));
  const std::string who = settings_.username;
  switch (reply.status) {
    case 200:
      CW_RETURN_IF_ERROR(TakeSession(reply.response, false));
      return Attempt::kAccepted;
    case 412:
      CW_RETURN_IF_ERROR(TwoStep(reply, stop));
      return Attempt::kAccepted;
    case 401: {
      // Jira's words, when they are an object (jsoncpp throws on members of anything else).
      const Json::Value& j = reply.json.isObject() ? reply.json : Json::Value::nullSingleton();
      if (j["captchaRequired"].isBool() && j["captchaRequired"].asBool()) {
        return Stop(reason::kCaptchaRequired, "Jira demands a CAPTCHA before " + who +
                                                  " may log in again (too many failed logins)");
      }
      if (j["expiredCredentials"].isBool() && j["expiredCredentials"].asBool()) {
        refusal = "Jira says the password of " + who + " has expired";
      } else {
        refusal = "Jira refused the user name or password of " + who;
      }
      return Attempt::kRefused;
    }
    case 403:
      if (CaptchaDenied(reply.response)) {
        return Stop(reason::kCaptchaRequired,
                    "Jira demands a CAPTCHA before " + who + " may log in again");
      }
      return UnexpectedReply(reply, "the two-step login of " + who);
    case 404:
      // No two-step verification login on this server: the classic session login.
      return LegacySessionLogin(password, refusal, stop);
    default:
      return UnexpectedReply(reply, "the login of " + who);
  }
}

Status DcSessionAuth::TwoStep(const RestReply& first, std::stop_token stop) {
  const std::string who = settings_.username;
  const Json::Value& j = first.json;
  if (!j.isObject() || !j["conversationId"].isString() || !j["nextLoginStep"].isString()) {
    return JiraInternal("Jira's two-step login answer has no conversationId / nextLoginStep");
  }
  const std::string conversation = j["conversationId"].asString();
  const std::string next = j["nextLoginStep"].asString();
  if (next == "ENROLLMENT") {
    return Stop(reason::kMfaFailed,
                "Jira requires " + who +
                    " to enrol in two-step verification. The agent never enrols by itself: log in "
                    "to Jira as " +
                    who +
                    " in a browser, enrol an authenticator app, and give the agent the same "
                    "key");
  }
  if (next != "TOTP_CODE_VERIFICATION") {
    return MfaFailed("Jira asks " + who + " for a login step the agent does not know ('" + next +
                     "')");
  }
  // Candidates: a seed staged by `mfa enroll` (newest first), then the current one.
  CW_ASSIGN_OR_RETURN(std::vector<SecretVersion> versions, credentials_.Versions(secret::kTotp));
  std::vector<SecretVersion> candidates;
  for (auto it = versions.rbegin(); it != versions.rend(); ++it) {
    if (it->pending) {
      candidates.push_back(*it);
      break;
    }
  }
  for (const SecretVersion& v : versions) {
    if (v.current) candidates.push_back(v);
  }
  if (candidates.empty()) {
    Status missing = MissingSecret(settings_.name, secret::kTotp);
    return Status(missing.code(),
                  "Jira asks " + who + " for a two-step verification code, but " +
                      missing.message() +
                      " (and set \"mfa\": \"totp\" in its provisioning section)",
                  missing.reason());
  }
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const std::uint32_t version = candidates[i].version;
    CW_ASSIGN_OR_RETURN(hsm::TotpCode code, NextCode(version, stop));
    // Remember the step before sending: even after a crash, this code is never sent again.
    CW_RETURN_IF_ERROR(state_.SetLastTotpStep(code.window.counter));
    RestCall call;
    call.method = "POST";
    call.path = {"rest", "tsv", "1.0", "authenticate", "totp-code"};
    call.headers.push_back({"X-Atlassian-Token", "no-check"});
    call.secret_body = SecretBodyBuilder(SecretBodyBuilder::Format::kJson)
                           .Add("conversationId", conversation)
                           .Add("totpCode", code.code.Reveal(SecretAccess::Grant()))
                           .Finish();
    CW_ASSIGN_OR_RETURN(RestReply reply,
                        site_.Execute(call, nullptr, stop, "the two-step verification code"));
    if (reply.status == 204 || reply.status == 200) {
      if (candidates[i].pending) {
        // The staged key works: it becomes the current one.
        FaultPoint("jira.login.staged-totp-accepted");
        CW_RETURN_IF_ERROR(credentials_.Promote(secret::kTotp, version));
      }
      return TakeSession(reply.response, true);
    }
    if (reply.status == 401) {
      used_totp_ = true;
      if (i + 1 < candidates.size()) continue;
      const auto skew = site_.skew().skew().value_or(std::chrono::seconds(0));
      return Stop(reason::kMfaFailed,
                  "Jira refused the one-time code for " + who +
                      " (measured clock skew to Jira: " + std::to_string(skew.count()) + " s)");
    }
    if (reply.status == 400) {
      return MfaFailed("Jira dropped the two-step login conversation of " + who +
                       " before the code arrived; the next job logs in again");
    }
    return UnexpectedReply(reply, "the two-step verification code of " + who);
  }
  return JiraInternal("no TOTP seed was tried");
}

Result<hsm::TotpCode> DcSessionAuth::NextCode(std::uint32_t version, std::stop_token stop) {
  const Runtime& rt = site_.runtime();
  const std::string purpose = "jira two-step login of " + settings_.username;
  for (int round = 0; round < 4; ++round) {
    const std::chrono::seconds skew = site_.skew().skew().value_or(std::chrono::seconds(0));
    const SysTime at = rt.clock->Now() + skew;
    CW_ASSIGN_OR_RETURN(hsm::TotpCode code, credentials_.Totp(version, at, purpose));
    const auto period = code.window.valid_until - code.window.valid_from;
    if (std::chrono::abs(skew) >= period) {
      return MfaFailed("the agent's clock differs from Jira's by " + std::to_string(skew.count()) +
                       " s, more than one TOTP time step (" + std::to_string(period.count()) +
                       " s): fix the time (NTP) on the agent host or on Jira; no code was sent");
    }
    const std::optional<std::uint64_t> last = state_.last_totp_step();
    const bool reused = last && code.window.counter <= *last;
    const bool expiring = code.remaining < kTotpMinRemaining;
    if (!reused && !expiring) return code;
    // Wait for the next step (for a reused step: the one after the last used).
    SysTime until = SysTime(code.window.valid_until);
    if (reused && *last > code.window.counter) {
      until += std::chrono::duration_cast<SysTime::duration>(
          period * static_cast<std::int64_t>(*last - code.window.counter));
    }
    const auto wait =
        std::chrono::ceil<std::chrono::milliseconds>(until - at) + std::chrono::milliseconds(200);
    if (wait > std::chrono::minutes(5)) {
      return MfaFailed("the last TOTP step used lies far in the future; check the clock");
    }
    CW_RETURN_IF_ERROR(rt.sleeper->Sleep(wait, stop));
  }
  return MfaFailed("no fresh TOTP time step came up; check the clock");
}

Result<DcSessionAuth::Attempt> DcSessionAuth::LegacySessionLogin(const SecretBytes& password,
                                                                 std::string& refusal,
                                                                 std::stop_token stop) {
  const std::string who = settings_.username;
  RestCall call;
  call.method = "POST";
  call.path = {"rest", "auth", "1", "session"};
  call.headers.push_back({"X-Atlassian-Token", "no-check"});
  call.secret_body = SecretBodyBuilder(SecretBodyBuilder::Format::kJson)
                         .Add("username", who)
                         .AddSecret("password", password)
                         .Finish();
  CW_ASSIGN_OR_RETURN(RestReply reply, site_.Execute(call, nullptr, stop, "session login"));
  if (reply.status == 200) {
    CW_RETURN_IF_ERROR(TakeSession(reply.response, false));
    return Attempt::kAccepted;
  }
  if (reply.status == 401) {
    refusal = "Jira refused the user name or password of " + who;
    return Attempt::kRefused;
  }
  if (reply.status == 403 && CaptchaDenied(reply.response)) {
    return Stop(reason::kCaptchaRequired,
                "Jira demands a CAPTCHA before " + who + " may log in again");
  }
  if (reply.status == 403 || reply.status == 404) {
    return AuthFailed(
        "this Jira offers neither the two-step verification login nor the session login for " +
        who + " (Jira 11 turns /rest/auth/1/session off): use a personal access token (\"auth\": " +
        "\"pat\") or enable the two-step login (" + reply.ErrorText() + ")");
  }
  return UnexpectedReply(reply, "the session login of " + who);
}

Status DcSessionAuth::TakeSession(const http::Response& response, bool totp) {
  SecretBytes cookie;
  bool session = false;
  for (const SecretBytes& set : response.set_cookies) {
    std::string_view raw = set.RevealString(SecretAccess::Grant());
    const std::string_view pair = raw.substr(0, raw.find(';'));
    const std::size_t eq = pair.find('=');
    if (eq == std::string_view::npos || eq == 0) continue;
    if (pair.substr(0, eq) == "JSESSIONID" && eq + 1 < pair.size()) session = true;
    if (!cookie.empty()) cookie.Append("; ");
    cookie.Append(pair);
  }
  if (!session) {
    return AuthFailed("Jira's login answer for " + settings_.username +
                      " carried no session cookie (JSESSIONID)");
  }
  cookie_ = std::move(cookie);
  used_totp_ = totp;
  ++generation_;
  return Status::Ok();
}

Status DcSessionAuth::ConfirmIdentity(std::stop_token stop) {
  FixedCookie fixed(*cookie_);
  RestCall call;
  call.path = {"rest", "api", "2", "myself"};
  CW_ASSIGN_OR_RETURN(RestReply reply, site_.Execute(call, &fixed, stop, "GET myself"));
  if (!reply.ok() || !reply.json.isObject() || !reply.json["name"].isString()) {
    return UnexpectedReply(reply, "GET myself after the login");
  }
  if (Lower(reply.json["name"].asString()) != Lower(settings_.username)) {
    return AuthFailed("Jira reports the new session as belonging to '" +
                      reply.json["name"].asString() + "', not to " + settings_.username);
  }
  return Status::Ok();
}

}  // namespace cakewalk::jira
