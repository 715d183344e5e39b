// PKCS#10 certificate signing requests signed inside the token, for enrollment and renewal
// (POST /enroll and POST /certificate of the control-plane API).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"
#include "hsm/token_key.h"

namespace cakewalk::hsm {

// Longest common name X.509 allows (ub-common-name).
inline constexpr std::size_t kMaxCommonNameBytes = 64;

// A PEM "CERTIFICATE REQUEST" with subject "CN=<common_name>" and the token key's public key,
// signed through the cakewalk-token provider (ECDSA with SHA-256 for EC keys, PKCS#1 v1.5 with
// SHA-256 for RSA keys): exactly one TokenKey::Sign call. The request's signature is verified
// with the key's public key before it is returned. `common_name` must be 1..64 bytes of UTF-8
// without control characters.
Result<std::string> MakeCsrPem(std::shared_ptr<TokenKey> key, std::string_view common_name);

}  // namespace cakewalk::hsm
