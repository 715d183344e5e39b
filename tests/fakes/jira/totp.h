// The fake's side of two-step verification: RFC 4226 HOTP / RFC 6238 TOTP codes computed with
// OpenSSL HMAC, and RFC 4648 Base32 for the seeds the standalone fake writes for the demo.
//
// This is the *verifier* the fake uses; it is deliberately independent of the agent's TOTP code
// (which runs inside the token), so a test that passes proves two implementations agree.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace cakewalk::testing {

enum class TotpAlgorithm { kSha1, kSha256, kSha512 };

struct TotpParameters {
  TotpAlgorithm algorithm = TotpAlgorithm::kSha1;
  int digits = 6;
  int period_seconds = 30;
};

// HOTP value for `counter`, zero-padded to `digits`.
std::string HotpCode(std::span<const std::uint8_t> seed, std::uint64_t counter,
                     TotpAlgorithm algorithm, int digits);

// The time step containing `unix_seconds`.
std::uint64_t TotpStep(std::int64_t unix_seconds, int period_seconds);

// Base32 (RFC 4648 alphabet, upper case, no padding).
std::string Base32Encode(std::span<const std::uint8_t> bytes);
// Accepts upper or lower case, ignores spaces, dashes and trailing '=' padding.
Result<std::vector<std::uint8_t>> Base32Decode(std::string_view text);

}  // namespace cakewalk::testing
