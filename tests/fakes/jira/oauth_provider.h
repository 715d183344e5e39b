// The OAuth 2.0 token endpoint shared by the Data Center provider (/rest/oauth2/latest/token) and
// Cloud 3LO (auth.atlassian.com/oauth/token): authorization codes with PKCE S256 and exact
// redirect_uri checks, and rotating refresh tokens.
//
// Rotation follows Atlassian's published rules for Cloud 3LO, applied to both flavors:
// every refresh returns a new refresh token; the previous one is still honoured for `leeway` after
// its first use; presenting it after the leeway revokes the whole family (every refresh and access
// token descended from the same consent) and answers invalid_grant. Inactivity and absolute
// lifetimes are checked against the injected clock.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <json/json.h>

#include "base/status.h"
#include "base/time.h"
#include "tests/fakes/jira/directory.h"
#include "tests/fakes/jira/fake_jira.h"

namespace cakewalk::testing::jira_fake {

struct OAuthSettings {
  bool cloud = false;
  std::chrono::seconds access_lifetime{3600};
  std::chrono::seconds code_lifetime{600};
  std::chrono::seconds leeway{600};
  std::chrono::seconds inactivity{90 * 24 * 3600};
  std::chrono::seconds absolute{365 * 24 * 3600};
};

struct AccessToken {
  std::string client_id;
  UserIndex user = 0;
  std::vector<std::string> scopes;
  SysTime expires;
  std::uint64_t family = 0;  // 0: client-credentials token (no family)
  bool revoked = false;
};

struct TokenResult {
  int status = 200;
  Json::Value body;
  std::string principal;                         // client id, for the login-attempt log
  std::string outcome = "ok";                    // for the login-attempt log
  std::optional<UserIndex> revoked_family_user;  // set when a family was revoked
};

class OAuthProvider {
 public:
  explicit OAuthProvider(OAuthSettings settings) : settings_(settings) {}

  Status AddClient(const OAuthClientSpec& spec, std::optional<UserIndex> service_account);
  const OAuthClientSpec* FindClient(std::string_view client_id) const;
  std::vector<const OAuthClientSpec*> Clients() const;

  Result<std::string> IssueCode(const std::string& client_id, UserIndex user,
                                const std::string& redirect_uri,
                                const std::vector<std::string>& scopes,
                                const std::string& code_challenge, SysTime now);
  // The token endpoint, with the request's parameters already decoded (form, query or JSON).
  TokenResult Token(const std::map<std::string, std::string>& params, SysTime now);
  // A live access token, or nullptr (unknown, expired or revoked).
  const AccessToken* FindAccessToken(std::string_view token, SysTime now) const;
  void ExpireAccessTokens();
  void set_access_lifetime(std::chrono::seconds s) { settings_.access_lifetime = s; }

 private:
  struct Code {
    std::string client_id;
    UserIndex user = 0;
    std::string redirect_uri;
    std::vector<std::string> scopes;
    std::string challenge;
    SysTime expires;
    bool used = false;
    std::uint64_t family = 0;  // the family it created, once redeemed
  };
  struct Refresh {
    std::uint64_t family = 0;
    SysTime issued;
    std::optional<SysTime> first_used;
  };
  struct Family {
    std::string client_id;
    UserIndex user = 0;
    std::vector<std::string> scopes;
    SysTime consented;
    bool revoked = false;
  };
  struct Client {
    OAuthClientSpec spec;
    std::optional<UserIndex> service_account;
  };

  TokenResult Error(int status, std::string_view error, std::string_view description) const;
  TokenResult IssuePair(std::uint64_t family, SysTime now, bool with_refresh);
  void RevokeFamily(std::uint64_t family);
  int InvalidGrantStatus() const { return settings_.cloud ? 403 : 400; }

  OAuthSettings settings_;
  std::map<std::string, Client, std::less<>> clients_;
  std::unordered_map<std::string, Code> codes_;
  std::unordered_map<std::string, Refresh> refresh_;
  std::unordered_map<std::string, AccessToken> access_;
  std::map<std::uint64_t, Family> families_;
  std::uint64_t next_family_ = 1;
};

// 32 random bytes, base64url: tokens, codes, session ids.
std::string RandomToken(std::size_t bytes = 32);
// BASE64URL(SHA-256(verifier)), the PKCE S256 challenge.
std::string PkceChallenge(std::string_view verifier);

}  // namespace cakewalk::testing::jira_fake
