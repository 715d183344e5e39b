// OAuth 2.0 for Access Sync: Jira Cloud 3LO (auth.atlassian.com, calls through the
// api.atlassian.com/ex/jira/{cloudId} gateway) and Data Center incoming application links
// (/rest/oauth2/latest/...). Authorization code grant with PKCE (S256), no inbound port: the
// operator opens the URL in a browser and pastes the redirect (or the code) back.
//
// Refresh tokens rotate on every refresh, and reusing an old one after Atlassian's leeway revokes
// the whole grant. So: one refresh at a time (a mutex), and the new refresh token is sealed in the
// token (Credentials::Put) BEFORE the new access token is used: a crash between the token
// endpoint's answer and the Put leaves the old refresh token, which the server still honours
// within its leeway. Access tokens live only in memory (SecretBytes).
//
// Request formats: Cloud's token endpoint takes JSON; the Data Center provider takes a form body
// and wants redirect_uri on the refresh grant as well.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "base/secret.h"
#include "base/status.h"
#include "jira/credentials.h"
#include "jira/rest.h"
#include "jira/settings.h"

namespace cakewalk::jira {

// Refresh when the access token expires within this.
inline constexpr std::chrono::seconds kAccessTokenMargin{120};

struct OAuthHooks {
  // Test seam: runs right after the token endpoint answered a refresh and before the new refresh
  // token is stored. A failure returned here aborts the refresh as a crash at that point would.
  std::function<Status()> after_token_response;
};

class OAuthTokens {
 public:
  // `token_endpoint` is a RestClient whose base is settings.oauth.token_url.
  OAuthTokens(const ConnectionSettings& settings, Credentials& credentials,
              RestClient& token_endpoint, OAuthHooks hooks = {});

  // A live access token: refreshes first when there is none or it is about to expire. Returns
  // it with its generation (for Invalidate).
  Result<std::pair<SecretBytes, std::uint64_t>> AccessToken(std::stop_token stop);
  // The access token of `generation` was refused: the next AccessToken() refreshes.
  void Invalidate(std::uint64_t generation);
  // Uses a token obtained elsewhere (the authorization code exchange) until it expires.
  void Seed(SecretBytes access_token, std::chrono::seconds lifetime);
  int refreshes() const;

 private:
  Status RefreshLocked(std::stop_token stop);

  const ConnectionSettings& settings_;
  Credentials& credentials_;
  RestClient& endpoint_;
  OAuthHooks hooks_;
  mutable std::mutex mu_;
  std::optional<SecretBytes> access_;
  SysTime expires_;
  std::uint64_t generation_ = 0;
  int refreshes_ = 0;
};

class OAuthAuthenticator final : public Authenticator {
 public:
  explicit OAuthAuthenticator(OAuthTokens& tokens, std::string connection)
      : tokens_(tokens), connection_(std::move(connection)) {}
  Result<std::uint64_t> Apply(http::Request& request, std::stop_token stop) override;
  bool Renew(std::uint64_t generation) override;
  Status Refused(const http::Response& response, std::string_view what) override;

 private:
  OAuthTokens& tokens_;
  const std::string connection_;
};

// ---- The authorization code flow (`cakewalk-agent oauth authorize`) ----------------------------

struct AuthorizationRequest {
  std::string url;       // for the operator's browser
  std::string state;     // base64url of 16 random bytes from the token
  SecretBytes verifier;  // PKCE code verifier: base64url of 32 random bytes from the token
};

// Builds the authorization URL (Cloud: audience=api.atlassian.com, prompt=consent) with a PKCE
// S256 challenge and a state, both from the token's random generator.
Result<AuthorizationRequest> BeginAuthorization(const ConnectionSettings& settings,
                                                Credentials& credentials);

struct AuthorizationResult {
  std::vector<std::string> scopes;  // as granted
  std::chrono::seconds access_lifetime{0};
  SecretBytes access_token;
  std::uint32_t refresh_token_version = 0;
};

// Reads what the operator pasted — the whole redirect URL (whose state must match) or the bare
// code — exchanges the code (with the client secret from the token and the PKCE verifier) and
// seals the refresh token in the token. Errors never quote the pasted text.
Result<AuthorizationResult> CompleteAuthorization(const ConnectionSettings& settings,
                                                  Credentials& credentials,
                                                  RestClient& token_endpoint,
                                                  const AuthorizationRequest& request,
                                                  std::string_view pasted, std::stop_token stop);

// The code (and state, when present) from a pasted redirect URL or bare code.
struct PastedAuthorization {
  SecretBytes code;
  std::optional<std::string> state;
};
Result<PastedAuthorization> ParsePastedAuthorization(std::string_view pasted,
                                                     std::string_view redirect_uri);

}  // namespace cakewalk::jira
