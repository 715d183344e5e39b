// Where the Jira connector gets its credentials: one connection's secrets in the token.
//
// The connector never sees a secret except as SecretBytes (or a one-time code) for the moment of
// use, and every use names its purpose (the token writes it to the audit log). Tests implement
// this interface to count uses; production code uses TokenCredentials over hsm::SecretStore.
//
// Errors carry jobs.md reasons: a secret that has no current version is `credentials_missing`
// (kFailedPrecondition, with the command that stores it); any other token failure is
// `token_unavailable` (retryable when the token said so).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/secret.h"
#include "base/status.h"
#include "hsm/secret_store.h"
#include "hsm/totp.h"

namespace cakewalk::jira {

// Secret names per connection (the operator interface's `secret set CONNECTION NAME`).
namespace secret {
inline constexpr std::string_view kPassword = "password";
inline constexpr std::string_view kTotp = "totp";  // the MFA seed, stored by `mfa enroll`
inline constexpr std::string_view kApiToken = "api-token";
inline constexpr std::string_view kPat = "pat";
inline constexpr std::string_view kOrgApiKey = "org-api-key";
inline constexpr std::string_view kOAuthClientSecret = "oauth-client-secret";
inline constexpr std::string_view kOAuthRefreshToken = "oauth-refresh-token";
}  // namespace secret

// One version of a secret, metadata only.
struct SecretVersion {
  std::uint32_t version = 0;
  bool current = false;
  bool pending = false;
};

class Credentials {
 public:
  virtual ~Credentials() = default;
  virtual const std::string& connection() const = 0;

  // The current value of a sealed secret.
  virtual Result<SecretBytes> Get(std::string_view name, std::string_view purpose) = 0;
  // The value of one version of a sealed secret (a rotation's staged password, or the version it
  // replaces). The default serves only the current version.
  virtual Result<SecretBytes> GetVersion(std::string_view name, std::uint32_t version,
                                         std::string_view purpose);
  // The TOTP code of seed version `version` (0: the current one) at `at`, computed in the token.
  virtual Result<hsm::TotpCode> Totp(std::uint32_t version, hsm::TotpTime at,
                                     std::string_view purpose) = 0;
  // Every version of a secret (empty when none), oldest first.
  virtual Result<std::vector<SecretVersion>> Versions(std::string_view name) = 0;
  // Stores `value` as the new current version. Older retired versions beyond the one just
  // replaced are destroyed, so that a secret rotated on every use (OAuth refresh tokens) does
  // not fill the token.
  virtual Status Put(std::string_view name, const SecretBytes& value) = 0;
  // Makes a pending version current (a TOTP seed staged by `mfa enroll`, once Jira accepted it).
  virtual Status Promote(std::string_view name, std::uint32_t version) = 0;
  // Bytes from the token's random generator.
  virtual Result<SecretBytes> Random(std::size_t size) = 0;

  // The current version number, or 0 when the secret has none.
  Result<std::uint32_t> CurrentVersion(std::string_view name);
};

// Credentials of `connection` in `store` (which must outlive the result).
std::unique_ptr<Credentials> TokenCredentials(hsm::SecretStore& store, std::string connection);

// The credentials_missing status for `name` of `connection`, telling the operator what to run.
Status MissingSecret(std::string_view connection, std::string_view name);

}  // namespace cakewalk::jira
