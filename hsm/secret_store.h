// The agent's secrets, kept in the token: sealed strings (passwords, API tokens, OAuth refresh
// tokens, ...) and TOTP seeds. docs/token-layout.md and hsm/layout.h describe the objects.
//
// A secret is named (connection, name) and versioned. Each version is pending, current or
// retired, so that rotation is: PutPending (stage) -> use it with UnsealVersion to change and
// verify the password in Jira -> Promote (the old current becomes retired) -> Destroy the
// retired version after a grace period. Put is PutPending + Promote in one step. A version number
// is never handed out twice, not even after the highest version was destroyed (a counter per
// secret in the token, hsm/layout.h), because the version is bound into the sealed value's AAD.
//
//   CW_ASSIGN_OR_RETURN(auto store, hsm::SecretStore::Open(*token, audit_sink));
//   CW_ASSIGN_OR_RETURN(SecretBytes password, store->Unseal("jira-prod", "password", "login"));
//   CW_ASSIGN_OR_RETURN(hsm::TotpCode otp, store->Totp("jira-prod", clock.Now(), "login"));
//
// Values leave the token only as SecretBytes (Unseal) or a OneTimeCode (Totp), for the moment of
// use. Every use writes one audit event (event::kSecretUsed: CONNECTION, SECRET_NAME,
// SECRET_VERSION, PURPOSE) to the LogSink; every change writes event::kSecretStored (ACTION
// stored / promoted / destroyed, SECRET_STATE). Neither ever carries a value.
//
// Thread-safe: all token work runs under the Token's session mutex.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/clock.h"
#include "base/log.h"
#include "base/secret.h"
#include "base/status.h"
#include "base/time.h"
#include "hsm/otpauth.h"
#include "hsm/token.h"
#include "hsm/totp.h"

namespace cakewalk::hsm {

// The secret name under which a connection's TOTP seed lives (reserved: Put refuses it).
inline constexpr std::string_view kTotpSecretName = "totp";
// Sealed values are 1 byte to 64 KiB.
inline constexpr std::size_t kMaxSecretBytes = 64 * 1024;

enum class SecretState { kPending, kCurrent, kRetired };
enum class SecretKind { kSealed, kTotp };
std::string_view SecretStateName(SecretState s) noexcept;  // "pending", "current", "retired"
std::string_view SecretKindName(SecretKind k) noexcept;    // "sealed", "totp"

// Metadata only: never a value.
struct SecretInfo {
  std::string connection;
  std::string name;
  std::uint32_t version = 0;
  SecretState state = SecretState::kPending;
  SysTime created;
  SecretKind kind = SecretKind::kSealed;
  // "aes-256-gcm" for sealed values; "SHA1/6/30s" for TOTP seeds.
  std::string scheme;
};

enum class Activation { kCurrent, kPending };
enum class DestroyPolicy { kRefuseCurrent, kAllowCurrent };

class SecretStore {
 public:
  // `audit` and `clock` (which stamps creation times) must outlive the store. The store shares
  // the token's internal state: after the Token is closed or destroyed it returns errors.
  [[nodiscard]] static Result<std::unique_ptr<SecretStore>> Open(
      Token& token, LogSink& audit, const Clock& clock = SystemClock());
  ~SecretStore();
  SecretStore(const SecretStore&) = delete;
  SecretStore& operator=(const SecretStore&) = delete;

  // Seals `value` as a new version; Put makes it current (the previous current one becomes
  // retired), PutPending stages it.
  [[nodiscard]] Result<SecretInfo> Put(std::string_view connection, std::string_view name,
                                       const SecretBytes& value);
  [[nodiscard]] Result<SecretInfo> PutPending(std::string_view connection, std::string_view name,
                                              const SecretBytes& value);

  // Stores a TOTP seed as a non-extractable HMAC key (name kTotpSecretName).
  [[nodiscard]] Result<SecretInfo> EnrollTotp(std::string_view connection, const TotpSeed& seed,
                                              Activation activation);

  // Makes `version` current; the version that was current becomes retired.
  [[nodiscard]] Status Promote(std::string_view connection, std::string_view name,
                               std::uint32_t version);
  // Destroys one version (its record and, for TOTP, its key). Refuses the current version
  // unless told otherwise.
  [[nodiscard]] Status Destroy(std::string_view connection, std::string_view name,
                               std::uint32_t version,
                               DestroyPolicy policy = DestroyPolicy::kRefuseCurrent);

  // Every version of every secret, sorted by connection, name, version. Metadata only.
  [[nodiscard]] Result<std::vector<SecretInfo>> List();

  // The current version's value. `purpose` (1-200 printable characters) says why, for the
  // audit log. kNotFound when the secret has no current version.
  [[nodiscard]] Result<SecretBytes> Unseal(std::string_view connection, std::string_view name,
                                           std::string_view purpose);
  [[nodiscard]] Result<SecretBytes> UnsealVersion(std::string_view connection,
                                                  std::string_view name, std::uint32_t version,
                                                  std::string_view purpose);

  // The TOTP code of the current seed at time `at` (a SysTime or sys_seconds; callers pass a
  // skew-corrected time), computed in the token. The result carries the time window and the
  // seconds left, so that a caller can wait for the next window instead of sending a code that
  // is about to expire.
  [[nodiscard]] Result<TotpCode> Totp(std::string_view connection, TotpTime at,
                                      std::string_view purpose);
  [[nodiscard]] Result<TotpCode> TotpVersion(std::string_view connection, std::uint32_t version,
                                             TotpTime at, std::string_view purpose);

  // `size` random bytes from the token's generator (1..64 KiB), e.g. for a new password.
  [[nodiscard]] Result<SecretBytes> Random(std::size_t size);

 private:
  struct Impl;
  explicit SecretStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cakewalk::hsm
