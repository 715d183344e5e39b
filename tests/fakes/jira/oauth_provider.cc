#include "tests/fakes/jira/oauth_provider.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>

#include "base/encoding.h"

namespace cakewalk::testing::jira_fake {

std::string RandomToken(std::size_t bytes) {
  std::vector<std::uint8_t> buf(bytes);
  if (RAND_bytes(buf.data(), static_cast<int>(buf.size())) != 1) std::abort();
  return Base64UrlEncode(buf);
}

std::string PkceChallenge(std::string_view verifier) {
  std::uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(verifier.data()), verifier.size(), digest);
  return Base64UrlEncode(digest);
}

namespace {

bool SecretEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string JoinScopes(const std::vector<std::string>& scopes) {
  std::string out;
  for (const auto& s : scopes) out += (out.empty() ? "" : " ") + s;
  return out;
}

}  // namespace

Status OAuthProvider::AddClient(const OAuthClientSpec& spec,
                                std::optional<UserIndex> service_account) {
  if (spec.client_id.empty() || spec.client_secret.empty()) {
    return InvalidArgument("an OAuth client needs an id and a secret");
  }
  if (clients_.count(spec.client_id) != 0) {
    return AlreadyExists("OAuth client '" + spec.client_id + "' exists");
  }
  clients_[spec.client_id] = Client{spec, service_account};
  return Status::Ok();
}

const OAuthClientSpec* OAuthProvider::FindClient(std::string_view client_id) const {
  auto it = clients_.find(client_id);
  return it == clients_.end() ? nullptr : &it->second.spec;
}

std::vector<const OAuthClientSpec*> OAuthProvider::Clients() const {
  std::vector<const OAuthClientSpec*> out;
  for (const auto& [id, c] : clients_) out.push_back(&c.spec);
  return out;
}

Result<std::string> OAuthProvider::IssueCode(const std::string& client_id, UserIndex user,
                                             const std::string& redirect_uri,
                                             const std::vector<std::string>& scopes,
                                             const std::string& code_challenge, SysTime now) {
  const OAuthClientSpec* client = FindClient(client_id);
  if (client == nullptr) return NotFound("unknown OAuth client '" + client_id + "'");
  if (std::find(client->redirect_uris.begin(), client->redirect_uris.end(), redirect_uri) ==
      client->redirect_uris.end()) {
    return InvalidArgument("redirect_uri is not registered for the client");
  }
  for (const auto& s : scopes) {
    if (std::find(client->scopes.begin(), client->scopes.end(), s) == client->scopes.end()) {
      return InvalidArgument("scope '" + s + "' is not allowed for the client");
    }
  }
  std::string code = RandomToken(24);
  codes_[code] =
      Code{client_id, user, redirect_uri, scopes, code_challenge, now + settings_.code_lifetime,
           false,     0};
  return code;
}

TokenResult OAuthProvider::Error(int status, std::string_view error,
                                 std::string_view description) const {
  TokenResult r;
  r.status = status;
  r.body["error"] = std::string(error);
  r.body["error_description"] = std::string(description);
  r.outcome = std::string(error);
  return r;
}

TokenResult OAuthProvider::IssuePair(std::uint64_t family, SysTime now, bool with_refresh) {
  const Family& f = families_.at(family);
  TokenResult r;
  std::string access = RandomToken();
  access_[access] =
      AccessToken{f.client_id, f.user, f.scopes, now + settings_.access_lifetime, family, false};
  r.body["access_token"] = access;
  r.body["token_type"] = settings_.cloud ? "Bearer" : "bearer";
  r.body["expires_in"] = static_cast<Json::Int64>(settings_.access_lifetime.count());
  r.body["scope"] = JoinScopes(f.scopes);
  if (with_refresh) {
    std::string refresh = RandomToken();
    refresh_[refresh] = Refresh{family, now, std::nullopt};
    r.body["refresh_token"] = refresh;
  }
  r.principal = f.client_id;
  return r;
}

void OAuthProvider::RevokeFamily(std::uint64_t family) {
  auto it = families_.find(family);
  if (it == families_.end()) return;
  it->second.revoked = true;
  for (auto& [token, info] : access_) {
    if (info.family == family) info.revoked = true;
  }
}

TokenResult OAuthProvider::Token(const std::map<std::string, std::string>& params, SysTime now) {
  auto get = [&](const char* name) -> std::string {
    auto it = params.find(name);
    return it == params.end() ? std::string() : it->second;
  };
  const std::string grant = get("grant_type");
  const std::string client_id = get("client_id");
  auto client_it = clients_.find(client_id);
  if (client_it == clients_.end() ||
      !SecretEquals(get("client_secret"), client_it->second.spec.client_secret)) {
    TokenResult r = Error(401, "invalid_client", "Client authentication failed.");
    r.principal = client_id;
    return r;
  }
  const Client& client = client_it->second;
  auto with_principal = [&](TokenResult r) {
    r.principal = client_id;
    return r;
  };

  if (grant == "authorization_code") {
    auto it = codes_.find(get("code"));
    if (it == codes_.end()) {
      return with_principal(
          Error(InvalidGrantStatus(), "invalid_grant", "Invalid authorization code."));
    }
    Code& code = it->second;
    if (code.client_id != client_id) {
      return with_principal(
          Error(InvalidGrantStatus(), "invalid_grant", "Invalid authorization code."));
    }
    if (code.used) {
      // A replayed code revokes what it issued (RFC 6749 §4.1.2).
      RevokeFamily(code.family);
      TokenResult r =
          Error(InvalidGrantStatus(), "invalid_grant", "Authorization code already used.");
      r.revoked_family_user = code.user;
      return with_principal(r);
    }
    if (now > code.expires) {
      return with_principal(
          Error(InvalidGrantStatus(), "invalid_grant", "Authorization code expired."));
    }
    if (get("redirect_uri") != code.redirect_uri) {
      return with_principal(
          Error(InvalidGrantStatus(), "invalid_grant", "redirect_uri does not match."));
    }
    const std::string verifier = get("code_verifier");
    if (!code.challenge.empty()) {
      if (verifier.empty()) {
        return with_principal(Error(400, "invalid_request", "code_verifier is required."));
      }
      if (PkceChallenge(verifier) != code.challenge) {
        return with_principal(
            Error(InvalidGrantStatus(), "invalid_grant", "PKCE verification failed."));
      }
    } else if (!verifier.empty()) {
      return with_principal(Error(400, "invalid_request", "code_verifier without code_challenge."));
    }
    code.used = true;
    const std::uint64_t family = next_family_++;
    code.family = family;
    families_[family] = Family{client_id, code.user, code.scopes, now, false};
    // Cloud issues a refresh token only with offline_access; the DC provider always does.
    const bool refresh = !settings_.cloud || std::find(code.scopes.begin(), code.scopes.end(),
                                                       "offline_access") != code.scopes.end();
    return IssuePair(family, now, refresh);
  }

  if (grant == "refresh_token") {
    if (!settings_.cloud) {
      // The DC provider wants redirect_uri on the refresh grant as well.
      const std::string redirect = get("redirect_uri");
      const auto& uris = client.spec.redirect_uris;
      if (redirect.empty()) {
        return with_principal(Error(400, "invalid_request", "redirect_uri is required."));
      }
      if (std::find(uris.begin(), uris.end(), redirect) == uris.end()) {
        return with_principal(Error(400, "invalid_grant", "redirect_uri does not match."));
      }
    }
    auto it = refresh_.find(get("refresh_token"));
    if (it == refresh_.end()) {
      return with_principal(
          Error(InvalidGrantStatus(), "invalid_grant", "Unknown or invalid refresh token."));
    }
    Refresh& rt = it->second;
    Family& family = families_.at(rt.family);
    if (family.client_id != client_id || family.revoked) {
      return with_principal(
          Error(InvalidGrantStatus(), "invalid_grant", "Unknown or invalid refresh token."));
    }
    if (now - family.consented > settings_.absolute) {
      return with_principal(Error(InvalidGrantStatus(), "invalid_grant",
                                  "Refresh token expired (absolute lifetime)."));
    }
    if (now - rt.issued > settings_.inactivity) {
      return with_principal(
          Error(InvalidGrantStatus(), "invalid_grant", "Refresh token expired (inactivity)."));
    }
    if (rt.first_used && now - *rt.first_used > settings_.leeway) {
      const std::uint64_t revoked = rt.family;
      RevokeFamily(revoked);
      TokenResult r = Error(InvalidGrantStatus(), "invalid_grant",
                            "Refresh token reused after rotation; the grant was revoked.");
      r.revoked_family_user = family.user;
      r.outcome = "revoked";
      return with_principal(r);
    }
    if (!rt.first_used) rt.first_used = now;
    return IssuePair(rt.family, now, true);
  }

  if (grant == "client_credentials") {
    if (!client.service_account) {
      return with_principal(
          Error(400, "unauthorized_client", "The client cannot use client_credentials."));
    }
    TokenResult r;
    std::string access = RandomToken();
    access_[access] = AccessToken{
        client_id, *client.service_account, client.spec.scopes, now + settings_.access_lifetime, 0,
        false};
    r.body["access_token"] = access;
    r.body["token_type"] = "Bearer";
    r.body["expires_in"] = static_cast<Json::Int64>(settings_.access_lifetime.count());
    r.body["scope"] = JoinScopes(client.spec.scopes);
    r.principal = client_id;
    return r;
  }
  return with_principal(Error(400, "unsupported_grant_type", "Unsupported grant_type."));
}

const AccessToken* OAuthProvider::FindAccessToken(std::string_view token, SysTime now) const {
  auto it = access_.find(std::string(token));
  if (it == access_.end() || it->second.revoked || now >= it->second.expires) return nullptr;
  return &it->second;
}

void OAuthProvider::ExpireAccessTokens() {
  for (auto& [token, info] : access_) info.revoked = true;
}

}  // namespace cakewalk::testing::jira_fake
