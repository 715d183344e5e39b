#include "jira/oauth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cctype>
#include <charconv>

#include "base/encoding.h"
#include "base/fault_point.h"
#include "jira/errors.h"
#include "jira/secret_text.h"

namespace cakewalk::jira {
namespace {

constexpr std::size_t kMaxPasted = 8192;
// The longest access-token lifetime taken from a token endpoint's expires_in (a day).
constexpr long long kMaxAccessLifetime = 24 * 3600;

bool PercentDecodeInto(std::string_view in, SecretBytes& out) {
  auto hex = [](char h) -> int {
    if (h >= '0' && h <= '9') return h - '0';
    if (h >= 'a' && h <= 'f') return h - 'a' + 10;
    if (h >= 'A' && h <= 'F') return h - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      const int hi = hex(in[i + 1]);
      const int lo = hex(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+') {
      c = ' ';
    }
    out.Append(std::string_view(&c, 1));
  }
  return true;
}

std::string Joined(const std::vector<std::string>& scopes) {
  std::string out;
  for (const auto& s : scopes) out += (out.empty() ? "" : " ") + s;
  return out;
}

std::vector<std::string> SplitScopes(std::string_view text) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == ',')) ++i;
    std::size_t j = i;
    while (j < text.size() && text[j] != ' ' && text[j] != ',') ++j;
    if (j > i) out.emplace_back(text.substr(i, j - i));
    i = j;
  }
  return out;
}

bool Cloud(const ConnectionSettings& s) { return s.flavor == Flavor::kCloud; }

struct TokenAnswer {
  SecretBytes access_token;
  std::optional<SecretBytes> refresh_token;
  std::chrono::seconds lifetime{3600};
  std::vector<std::string> scopes;
};

// Sends a token request and reads the answer (status mapping shared by both grants).
Result<TokenAnswer> TokenRequest(const ConnectionSettings& settings, RestClient& endpoint,
                                 SecretBodyBuilder& body, std::stop_token stop,
                                 std::string_view what) {
  RestCall call;
  call.method = "POST";
  call.content_type = std::string(body.content_type());
  call.secret_body = body.Finish();
  call.sensitive_response = true;
  CW_ASSIGN_OR_RETURN(RestReply reply, endpoint.Execute(call, nullptr, stop, what));
  std::string& raw = reply.response.body;
  auto fields = ParseFlatJsonObject(raw);
  WipeString(raw);
  const std::string conn = settings.name;
  if (reply.status != 200) {
    std::string error, description;
    if (fields.ok()) {
      if (auto it = fields->find("error"); it != fields->end()) {
        error = std::string(it->second.RevealString(SecretAccess::Grant()));
      }
      if (auto it = fields->find("error_description"); it != fields->end()) {
        description = std::string(it->second.RevealString(SecretAccess::Grant()));
      }
    }
    if (description.size() > 200) description.resize(200);
    const std::string detail = "the OAuth token endpoint answered HTTP " +
                               std::to_string(reply.status) + " to " + std::string(what) +
                               (error.empty() ? "" : " (" + error + ": " + description + ")");
    if (error == "invalid_client") {
      return AuthFailed(detail +
                        "; check client_id and store the client secret again with "
                        "'cakewalk-agent secret set " +
                        conn + " oauth-client-secret'");
    }
    if (error == "invalid_grant" || reply.status == 401 || reply.status == 403 ||
        reply.status == 400) {
      return AuthFailed(detail +
                        "; the grant is no longer valid (revoked, expired or reused): "
                        "authorize again with 'cakewalk-agent oauth authorize " +
                        conn + "'");
    }
    return JiraInternal(detail);
  }
  if (!fields.ok()) return JiraUnavailable("the OAuth token endpoint answered malformed JSON");
  TokenAnswer answer;
  auto access = fields->find("access_token");
  if (access == fields->end() || access->second.empty()) {
    return JiraUnavailable("the OAuth token endpoint's answer has no access_token");
  }
  answer.access_token = std::move(access->second);
  if (auto it = fields->find("refresh_token"); it != fields->end() && !it->second.empty()) {
    answer.refresh_token = std::move(it->second);
  }
  if (auto it = fields->find("expires_in"); it != fields->end()) {
    const std::string_view text = it->second.RevealString(SecretAccess::Grant());
    long long secs = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), secs);
    if (ec == std::errc() && end == text.data() + text.size() && secs > 0) {
      // Access tokens live an hour; a longer claim only makes the agent refresh sooner than
      // asked (and a huge one would overflow the expiry time).
      answer.lifetime = std::chrono::seconds(std::min<long long>(secs, kMaxAccessLifetime));
    }
  }
  if (auto it = fields->find("scope"); it != fields->end()) {
    answer.scopes = SplitScopes(it->second.RevealString(SecretAccess::Grant()));
  }
  return answer;
}

}  // namespace

// ---- Refresh ------------------------------------------------------------------------------------

OAuthTokens::OAuthTokens(const ConnectionSettings& settings, Credentials& credentials,
                         RestClient& token_endpoint, OAuthHooks hooks)
    : settings_(settings),
      credentials_(credentials),
      endpoint_(token_endpoint),
      hooks_(std::move(hooks)) {}

Result<std::pair<SecretBytes, std::uint64_t>> OAuthTokens::AccessToken(std::stop_token stop) {
  std::lock_guard lock(mu_);
  const SysTime now = endpoint_.runtime().clock->Now();
  if (!access_ || now + kAccessTokenMargin >= expires_) CW_RETURN_IF_ERROR(RefreshLocked(stop));
  return std::make_pair(access_->Clone(), generation_);
}

void OAuthTokens::Invalidate(std::uint64_t generation) {
  std::lock_guard lock(mu_);
  if (generation == generation_) access_.reset();
}

void OAuthTokens::Seed(SecretBytes access_token, std::chrono::seconds lifetime) {
  std::lock_guard lock(mu_);
  access_ = std::move(access_token);
  expires_ = endpoint_.runtime().clock->Now() + lifetime;
  ++generation_;
}

int OAuthTokens::refreshes() const {
  std::lock_guard lock(mu_);
  return refreshes_;
}

Status OAuthTokens::RefreshLocked(std::stop_token stop) {
  access_.reset();
  CW_ASSIGN_OR_RETURN(SecretBytes refresh,
                      credentials_.Get(secret::kOAuthRefreshToken, "oauth token refresh"));
  CW_ASSIGN_OR_RETURN(SecretBytes client_secret,
                      credentials_.Get(secret::kOAuthClientSecret, "oauth token refresh"));
  const bool cloud = Cloud(settings_);
  SecretBodyBuilder body(cloud ? SecretBodyBuilder::Format::kJson
                               : SecretBodyBuilder::Format::kForm);
  body.Add("grant_type", "refresh_token")
      .Add("client_id", settings_.oauth.client_id)
      .AddSecret("client_secret", client_secret)
      .AddSecret("refresh_token", refresh);
  if (!cloud) body.Add("redirect_uri", settings_.oauth.redirect_uri);
  refresh.Wipe();
  client_secret.Wipe();
  ++refreshes_;
  FaultPoint("oauth.refresh.before-request");
  CW_ASSIGN_OR_RETURN(TokenAnswer answer,
                      TokenRequest(settings_, endpoint_, body, stop, "the token refresh"));
  FaultPoint("oauth.refresh.answered");
  if (hooks_.after_token_response) CW_RETURN_IF_ERROR(hooks_.after_token_response());
  if (answer.refresh_token) {
    // Sealed before the access token is used: a crash from here on keeps the grant alive.
    Status stored = credentials_.Put(secret::kOAuthRefreshToken, *answer.refresh_token);
    if (!stored.ok()) {
      return Status(stored.code(),
                    "the new OAuth refresh token could not be stored (the previous one stays "
                    "valid for a while): " +
                        stored.message(),
                    stored.reason());
    }
  }
  FaultPoint("oauth.refresh.sealed");
  access_ = std::move(answer.access_token);
  expires_ = endpoint_.runtime().clock->Now() + answer.lifetime;
  ++generation_;
  return Status::Ok();
}

Result<std::uint64_t> OAuthAuthenticator::Apply(http::Request& request, std::stop_token stop) {
  CW_ASSIGN_OR_RETURN(auto token, tokens_.AccessToken(stop));
  SecretBytes header;
  header.Append("Bearer ");
  header.Append(token.first);
  request.authorization = std::move(header);
  return token.second;
}

bool OAuthAuthenticator::Renew(std::uint64_t generation) {
  tokens_.Invalidate(generation);
  return true;
}

Status OAuthAuthenticator::Refused(const http::Response& response, std::string_view what) {
  return AuthFailed("Jira refused a fresh OAuth access token of " + connection_ + " (" +
                    std::string(what) + ": HTTP " + std::to_string(response.status) +
                    "); the grant may lack a scope, or it was revoked: authorize again with "
                    "'cakewalk-agent oauth authorize " +
                    connection_ + "'");
}

// ---- Authorization ------------------------------------------------------------------------------

Result<AuthorizationRequest> BeginAuthorization(const ConnectionSettings& settings,
                                                Credentials& credentials) {
  if (settings.access_sync != AccessSyncAuth::kOAuth2) {
    return InvalidParams("connection " + settings.name +
                         " does not use OAuth 2.0 for access sync (access_sync.auth is not "
                         "\"oauth2\")");
  }
  AuthorizationRequest req;
  CW_ASSIGN_OR_RETURN(SecretBytes verifier_bytes, credentials.Random(32));
  std::string verifier = Base64UrlEncode(verifier_bytes.Reveal(SecretAccess::Grant()));
  req.verifier = SecretBytes::Take(verifier);
  CW_ASSIGN_OR_RETURN(SecretBytes state_bytes, credentials.Random(16));
  req.state = Base64UrlEncode(state_bytes.Reveal(SecretAccess::Grant()));
  unsigned char digest[SHA256_DIGEST_LENGTH];
  const auto v = req.verifier.Reveal(SecretAccess::Grant());
  SHA256(v.data(), v.size(), digest);
  const std::string challenge = Base64UrlEncode(digest);
  OPENSSL_cleanse(digest, sizeof digest);

  std::vector<std::pair<std::string, std::string>> q;
  if (Cloud(settings)) q.emplace_back("audience", "api.atlassian.com");
  q.emplace_back("client_id", settings.oauth.client_id);
  q.emplace_back("scope", Joined(settings.oauth.scopes));
  q.emplace_back("redirect_uri", settings.oauth.redirect_uri);
  q.emplace_back("state", req.state);
  q.emplace_back("response_type", "code");
  if (Cloud(settings)) q.emplace_back("prompt", "consent");
  q.emplace_back("code_challenge", challenge);
  q.emplace_back("code_challenge_method", "S256");
  std::string url = settings.oauth.authorize_url;
  char sep = url.find('?') == std::string::npos ? '?' : '&';
  for (const auto& [k, val] : q) {
    url += sep + UrlEncode(k) + "=" + UrlEncode(val);
    sep = '&';
  }
  req.url = std::move(url);
  return req;
}

Result<PastedAuthorization> ParsePastedAuthorization(std::string_view pasted,
                                                     std::string_view redirect_uri) {
  while (!pasted.empty() && std::isspace(static_cast<unsigned char>(pasted.front()))) {
    pasted.remove_prefix(1);
  }
  while (!pasted.empty() && std::isspace(static_cast<unsigned char>(pasted.back()))) {
    pasted.remove_suffix(1);
  }
  if (pasted.empty()) return InvalidParams("nothing was pasted");
  if (pasted.size() > kMaxPasted) return InvalidParams("the pasted text is too long");
  for (char c : pasted) {
    if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7e) {
      return InvalidParams("the pasted text contains spaces or non-ASCII characters");
    }
  }
  PastedAuthorization out;
  const std::size_t q = pasted.find('?');
  const bool url = pasted.find("://") != std::string_view::npos;
  if (!url && q == std::string_view::npos && pasted.find('=') == std::string_view::npos) {
    out.code.Append(pasted);  // a bare code
    return out;
  }
  if (url) {
    const std::string_view base = pasted.substr(0, q);
    const std::string_view expected = redirect_uri.substr(0, redirect_uri.find('?'));
    if (base != expected) {
      return InvalidParams("the pasted URL does not start with the configured redirect_uri (" +
                           std::string(expected) + ")");
    }
    if (q == std::string_view::npos) return InvalidParams("the pasted URL carries no code");
  }
  std::string_view query = q == std::string_view::npos ? pasted : pasted.substr(q + 1);
  query = query.substr(0, query.find('#'));
  std::optional<std::string> error;
  bool have_code = false;
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    const std::size_t eq = pair.find('=');
    const std::string_view name = pair.substr(0, eq);
    const std::string_view value =
        eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    SecretBytes decoded;
    if (!PercentDecodeInto(value, decoded)) {
      return InvalidParams("the pasted URL has malformed percent-encoding");
    }
    if (name == "code") {
      if (have_code) return InvalidParams("the pasted URL has two codes");
      out.code = std::move(decoded);
      have_code = true;
    } else if (name == "state") {
      out.state = std::string(decoded.RevealString(SecretAccess::Grant()));
    } else if (name == "error") {
      error = std::string(decoded.RevealString(SecretAccess::Grant()));
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  if (error) {
    std::string shown = error->substr(0, 60);
    for (char& c : shown) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') c = '?';
    }
    return AuthFailed("the authorization was not granted (" + shown + ")");
  }
  if (!have_code || out.code.empty()) return InvalidParams("the pasted URL carries no code");
  return out;
}

Result<AuthorizationResult> CompleteAuthorization(const ConnectionSettings& settings,
                                                  Credentials& credentials,
                                                  RestClient& token_endpoint,
                                                  const AuthorizationRequest& request,
                                                  std::string_view pasted, std::stop_token stop) {
  CW_ASSIGN_OR_RETURN(PastedAuthorization got,
                      ParsePastedAuthorization(pasted, settings.oauth.redirect_uri));
  if (got.state) {
    const std::string& want = request.state;
    if (got.state->size() != want.size() ||
        CRYPTO_memcmp(got.state->data(), want.data(), want.size()) != 0) {
      return InvalidParams(
          "the pasted redirect does not belong to this authorization (its state differs): "
          "run the command again and paste the redirect of the URL it prints");
    }
  }
  CW_ASSIGN_OR_RETURN(SecretBytes client_secret,
                      credentials.Get(secret::kOAuthClientSecret, "oauth authorization"));
  SecretBodyBuilder body(Cloud(settings) ? SecretBodyBuilder::Format::kJson
                                         : SecretBodyBuilder::Format::kForm);
  body.Add("grant_type", "authorization_code")
      .Add("client_id", settings.oauth.client_id)
      .AddSecret("client_secret", client_secret)
      .AddSecret("code", got.code)
      .Add("redirect_uri", settings.oauth.redirect_uri)
      .AddSecret("code_verifier", request.verifier);
  client_secret.Wipe();
  got.code.Wipe();
  CW_ASSIGN_OR_RETURN(TokenAnswer answer,
                      TokenRequest(settings, token_endpoint, body, stop, "the code exchange"));
  if (!answer.refresh_token) {
    return AuthFailed(
        "the authorization gave no refresh token" +
        std::string(Cloud(settings) ? ": add the offline_access scope to access_sync.scopes" : ""));
  }
  CW_RETURN_IF_ERROR(credentials.Put(secret::kOAuthRefreshToken, *answer.refresh_token));
  AuthorizationResult result;
  result.scopes = std::move(answer.scopes);
  result.access_lifetime = answer.lifetime;
  result.access_token = std::move(answer.access_token);
  auto version = credentials.CurrentVersion(secret::kOAuthRefreshToken);
  result.refresh_token_version = version.ok() ? *version : 0;
  return result;
}

}  // namespace cakewalk::jira
