// TOTP (RFC 6238) pieces that run on the host: time steps and RFC 4226 dynamic truncation. The
// HMAC itself is computed inside the token (SecretStore::Totp).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <span>
#include <string_view>

#include "base/secret.h"
#include "base/status.h"
#include "base/time.h"

namespace cakewalk::hsm {

enum class TotpAlgorithm { kSha1, kSha256, kSha512 };

// "SHA1", "SHA256", "SHA512" (the otpauth spelling).
std::string_view TotpAlgorithmName(TotpAlgorithm a) noexcept;
// Digest length in bytes: 20, 32, 64.
std::size_t TotpDigestSize(TotpAlgorithm a) noexcept;

struct TotpParams {
  TotpAlgorithm algorithm = TotpAlgorithm::kSha1;
  int digits = 6;                   // 6 or 8
  std::chrono::seconds period{30};  // kMinTotpPeriod..kMaxTotpPeriod
};

inline constexpr std::chrono::seconds kMinTotpPeriod{15};
inline constexpr std::chrono::seconds kMaxTotpPeriod{300};

// OK when digits is 6 or 8 and the period is within range.
Status ValidateTotpParams(const TotpParams& params);

// The moment a code is computed for: a SysTime (what clocks give, nanoseconds, good until 2262)
// or whole Unix seconds (sys_seconds, which also reach RFC 6238's year-2603 test vector).
class TotpTime {
 public:
  TotpTime(SysTime t)  // NOLINT(google-explicit-constructor)
      : seconds_(std::chrono::floor<std::chrono::seconds>(t)), fraction_(t - seconds_) {}
  TotpTime(std::chrono::sys_seconds t)  // NOLINT(google-explicit-constructor)
      : seconds_(t) {}
  std::chrono::sys_seconds seconds() const noexcept { return seconds_; }
  // The part of a second after seconds() (zero for sys_seconds).
  std::chrono::nanoseconds fraction() const noexcept { return fraction_; }

 private:
  std::chrono::sys_seconds seconds_;
  std::chrono::nanoseconds fraction_{0};
};

// The time step containing `at`: T = floor(unix(at) / period), with its boundaries.
struct TotpWindow {
  std::uint64_t counter = 0;
  std::chrono::sys_seconds valid_from;
  std::chrono::sys_seconds valid_until;  // exclusive: the next code starts here
};
// kInvalidArgument before 1970 or with a non-positive period.
Result<TotpWindow> TotpWindowAt(TotpTime at, std::chrono::seconds period);

// The 8-byte big-endian counter the MAC is computed over.
std::array<std::uint8_t, 8> TotpCounterBytes(std::uint64_t counter) noexcept;

// RFC 4226 §5.3 dynamic truncation of a MAC (>= 20 bytes) to `digits` decimal digits.
std::uint32_t DynamicTruncate(std::span<const std::uint8_t> mac, int digits) noexcept;

// A one-time code: a short-lived secret. Fixed-size storage, wiped on destruction and move; read
// through Reveal(SecretAccess) like SecretBytes (a SecretBytes would cost an mmap per code).
class OneTimeCode {
 public:
  OneTimeCode() noexcept = default;
  OneTimeCode(std::uint32_t value, int digits) noexcept;
  ~OneTimeCode();
  OneTimeCode(OneTimeCode&& other) noexcept;
  OneTimeCode& operator=(OneTimeCode&& other) noexcept;
  OneTimeCode(const OneTimeCode&) = delete;
  OneTimeCode& operator=(const OneTimeCode&) = delete;

  // The zero-padded decimal digits ("004215").
  std::string_view Reveal(SecretAccess) const noexcept { return {digits_.data(), size_}; }
  std::size_t size() const noexcept { return size_; }

 private:
  std::array<char, 8> digits_{};
  std::size_t size_ = 0;
};

// One TOTP result: the code, which secret version made it, and its validity window, so that a
// caller can avoid sending a code that is about to expire.
struct TotpCode {
  OneTimeCode code;
  std::uint32_t version = 0;
  TotpWindow window;
  // Whole seconds from the requested time to window.valid_until, rounded up (1..period).
  std::chrono::seconds remaining{0};
};

}  // namespace cakewalk::hsm
