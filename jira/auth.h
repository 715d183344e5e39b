// The ways the connector authenticates to Jira, each an Authenticator for RestClient:
//
// - SecretHeaderAuth: a fixed Authorization header built from one token secret — Data Center
//   PAT (Bearer), the organization API key (Bearer), Cloud e-mail + API token (Basic). The value
//   is unsealed on first use and kept (in secret memory) for a few minutes, then read again so a
//   rotated secret is picked up; a refusal re-reads it once.
// - DcSessionAuth: Data Center user name + password, with two-step verification (TOTP computed
//   in the token) when Jira asks for it. Logs in through the 2SV REST login
//   (/rest/tsv/1.0/authenticate), which also serves accounts without 2SV and works on Jira 11;
//   servers without it get /rest/auth/1/session. The session cookies (JSESSIONID,
//   atlassian.xsrf.token, ...) are kept as SecretBytes and reused until Jira stops accepting them
//   (401, X-AUSERNAME: anonymous), then one new login is made. Every login is confirmed with
//   /myself. Login refusals stop further automatic logins (ConnectionState's login stop).
//
// Passwords during a rotation (agent/rotation.h): a login uses the current password; when Jira
// refuses it and a newer version is staged (pending) in the token, that version is tried once, and
// promoted when Jira accepts it. This is the window between Jira's password change and the
// rotation's promotion (or a rotation interrupted there): jobs that log in then still succeed, at
// the cost of one refused attempt, which the successful one resets in Jira's failed-login count.
// Rotation itself logs in with one exact version (DcLoginOptions).
//
// TOTP rules (reference: RFC 6238 with Jira's SHA-1 / 6 digits / 30 s): the code is computed for
// our time corrected by the skew measured from Jira's Date headers; a skew larger than one time
// step is refused (mfa_failed, with the clock named); a step already submitted is never
// submitted again (we wait for the next one); a code with less than kTotpMinRemaining left is
// not sent (we wait for the next one).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "jira/connection_state.h"
#include "jira/credentials.h"
#include "jira/rest.h"
#include "jira/settings.h"

namespace cakewalk::jira {

inline constexpr std::chrono::seconds kTotpMinRemaining{3};
// Jira's TOTP step (30 s): a larger clock skew is refused before the password is even sent.
inline constexpr std::chrono::seconds kMaxTotpSkew{30};
inline constexpr std::chrono::minutes kSecretCacheLifetime{5};

class SecretHeaderAuth final : public Authenticator {
 public:
  enum class Scheme { kBearer, kBasic };
  // Basic: "user:secret"; Bearer: the secret. `describe` names the credential in messages ("the
  // personal access token of jira-prod").
  SecretHeaderAuth(Credentials& credentials, std::string secret_name, Scheme scheme,
                   std::string user, std::string describe, const Clock& clock);

  Result<std::uint64_t> Apply(http::Request& request, std::stop_token stop) override;
  bool Renew(std::uint64_t generation) override;
  Status Refused(const http::Response& response, std::string_view what) override;

 private:
  Credentials& credentials_;
  const std::string secret_name_;
  const Scheme scheme_;
  const std::string user_;
  const std::string describe_;
  const Clock& clock_;
  std::mutex mu_;
  SecretBytes header_;
  SysTime read_at_;
  std::uint64_t generation_ = 0;
};

// How a DcSessionAuth logs in; the defaults are the connector's own logins.
struct DcLoginOptions {
  // 0: the current password, then (only when Jira refuses it) a newer pending version once.
  // Otherwise exactly this version of the password and nothing else (rotation: change and verify).
  std::uint32_t password_version = 0;
  // Whether Jira refusing the password is persisted as the login stop. Rotation's probes of one
  // version report the refusal and decide themselves. A CAPTCHA demand is always persisted.
  bool stop_on_refusal = true;
};

class DcSessionAuth final : public Authenticator {
 public:
  // `site` is the Data Center base URL's client; `state` persists the login stop and the last
  // TOTP step. All must outlive this object.
  DcSessionAuth(const ConnectionSettings& settings, RestClient& site, Credentials& credentials,
                ConnectionState& state, DcLoginOptions options = {});

  Result<std::uint64_t> Apply(http::Request& request, std::stop_token stop) override;
  bool Renew(std::uint64_t generation) override;
  Status Refused(const http::Response& response, std::string_view what) override;
  bool cookies() const override { return true; }

  // Logs in now unless a session is live (for `verify` and doctor).
  Status EnsureSession(std::stop_token stop);
  // Ends the session at Jira (DELETE /rest/auth/1/session, best effort) and forgets it.
  void Logout(std::stop_token stop);
  // True when the last login submitted a one-time code.
  bool used_totp() const;
  // Logins made by this object (tests and diagnostics).
  int logins() const;
  // The password version of the session in use (0 before the first login).
  std::uint32_t password_version() const;

 private:
  enum class Attempt { kAccepted, kRefused };
  Status LoginLocked(std::stop_token stop);
  // One password sent: kAccepted (the session is taken, second factor included) or kRefused (Jira
  // refused the user name or password; `refusal` says how; nothing persisted). Other outcomes
  // are errors; a CAPTCHA demand is persisted as the login stop.
  Result<Attempt> TryPassword(const SecretBytes& password, std::string& refusal,
                              std::stop_token stop);
  Status CheckLoginStop();
  Status Stop(std::string_view reason, std::string message);
  Status TwoStep(const RestReply& first, std::stop_token stop);
  Result<hsm::TotpCode> NextCode(std::uint32_t version, std::stop_token stop);
  Result<Attempt> LegacySessionLogin(const SecretBytes& password, std::string& refusal,
                                     std::stop_token stop);
  Status TakeSession(const http::Response& response, bool totp);
  Status ConfirmIdentity(std::stop_token stop);

  const ConnectionSettings& settings_;
  RestClient& site_;
  Credentials& credentials_;
  ConnectionState& state_;
  const DcLoginOptions options_;
  mutable std::mutex mu_;
  std::optional<SecretBytes> cookie_;
  std::uint64_t generation_ = 0;
  bool used_totp_ = false;
  int logins_ = 0;
  std::uint32_t password_version_ = 0;
};

}  // namespace cakewalk::jira
