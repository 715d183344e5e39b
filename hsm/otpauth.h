// Parsing what an operator pastes into `mfa enroll`: a base32 key as Jira shows it, or an
// otpauth://totp/ URI (the QR code's content). Pure functions, no token access.
//
// Base32 (RFC 4648 alphabet A-Z, 2-7): any case; spaces, tabs, line breaks and dashes between
// characters are ignored; '=' padding is optional but, when present, must be complete and last.
// Refused, with the 1-based position in the input: characters outside the alphabet (0, 1, 8 and 9
// are named: they never occur in base32). Refused: lengths no encoder produces (1, 3 or 6
// characters in the last group of 8), non-zero unused bits in the last character (a truncated or
// mistyped key), keys shorter than 10 bytes or longer than 512 bytes.
//
// otpauth://totp/LABEL?secret=...&issuer=...&algorithm=SHA1|SHA256|SHA512&digits=6|8&period=N
// Parameter names are case-insensitive, values percent-decoded; refused: hotp, other types,
// missing or empty secret, unknown algorithm, digits other than 6/8, period outside 15..300 s,
// a parameter given twice, bad percent-encoding. Unknown parameters (image, ...) are ignored.
//
// Errors never contain the key or any part of it.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "base/secret.h"
#include "base/status.h"
#include "hsm/totp.h"

namespace cakewalk::hsm {

inline constexpr std::size_t kMinSeedBytes = 10;   // 80 bits, 16 base32 characters
inline constexpr std::size_t kMaxSeedBytes = 512;  // the largest HMAC key SoftHSM accepts

struct TotpSeed {
  SecretBytes key;  // the decoded seed
  TotpParams params;
  std::string issuer;   // informational, from the URI
  std::string account;  // informational, the URI's label
};

// Decodes a base32 key (rules above) straight into SecretBytes.
[[nodiscard]] Result<SecretBytes> DecodeBase32Seed(std::string_view text);

// Parses an otpauth://totp/ URI (rules above).
[[nodiscard]] Result<TotpSeed> ParseOtpauthUri(std::string_view uri);

// What `mfa enroll` accepts: surrounding whitespace is dropped; an otpauth: URI is parsed as
// such, anything else as a base32 key with SHA1, 6 digits, 30 seconds (Jira's settings).
[[nodiscard]] Result<TotpSeed> ParseTotpSeedInput(std::string_view input);

}  // namespace cakewalk::hsm
