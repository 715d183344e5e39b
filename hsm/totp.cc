#include "hsm/totp.h"

#include <openssl/crypto.h>

#include <utility>

namespace cakewalk::hsm {

std::string_view TotpAlgorithmName(TotpAlgorithm a) noexcept {
  switch (a) {
    case TotpAlgorithm::kSha1:
      return "SHA1";
    case TotpAlgorithm::kSha256:
      return "SHA256";
    case TotpAlgorithm::kSha512:
      return "SHA512";
  }
  return "unknown";
}

std::size_t TotpDigestSize(TotpAlgorithm a) noexcept {
  switch (a) {
    case TotpAlgorithm::kSha1:
      return 20;
    case TotpAlgorithm::kSha256:
      return 32;
    case TotpAlgorithm::kSha512:
      return 64;
  }
  return 0;
}

Status ValidateTotpParams(const TotpParams& params) {
  if (params.digits != 6 && params.digits != 8) {
    return InvalidArgument("TOTP digits must be 6 or 8, not " + std::to_string(params.digits));
  }
  if (params.period < kMinTotpPeriod || params.period > kMaxTotpPeriod) {
    return InvalidArgument("TOTP period must be between " + std::to_string(kMinTotpPeriod.count()) +
                           " and " + std::to_string(kMaxTotpPeriod.count()) + " seconds, not " +
                           std::to_string(params.period.count()));
  }
  if (TotpDigestSize(params.algorithm) == 0) return InvalidArgument("unknown TOTP algorithm");
  return Status::Ok();
}

Result<TotpWindow> TotpWindowAt(TotpTime at, std::chrono::seconds period) {
  if (period.count() <= 0) return InvalidArgument("TOTP period must be positive");
  const std::int64_t unix_seconds = at.seconds().time_since_epoch().count();
  if (unix_seconds < 0) return InvalidArgument("TOTP time is before 1970");
  TotpWindow w;
  w.counter = static_cast<std::uint64_t>(unix_seconds / period.count());
  w.valid_from = std::chrono::sys_seconds(
      std::chrono::seconds(static_cast<std::int64_t>(w.counter) * period.count()));
  w.valid_until = w.valid_from + period;
  return w;
}

std::array<std::uint8_t, 8> TotpCounterBytes(std::uint64_t counter) noexcept {
  std::array<std::uint8_t, 8> out{};
  for (int i = 7; i >= 0; --i) {
    out[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(counter & 0xffu);
    counter >>= 8;
  }
  return out;
}

std::uint32_t DynamicTruncate(std::span<const std::uint8_t> mac, int digits) noexcept {
  if (mac.size() < 20) return 0;
  const std::size_t offset = mac[mac.size() - 1] & 0x0fu;
  const std::uint32_t binary = (static_cast<std::uint32_t>(mac[offset] & 0x7fu) << 24) |
                               (static_cast<std::uint32_t>(mac[offset + 1]) << 16) |
                               (static_cast<std::uint32_t>(mac[offset + 2]) << 8) |
                               static_cast<std::uint32_t>(mac[offset + 3]);
  std::uint32_t modulus = 1;
  for (int i = 0; i < digits; ++i) modulus *= 10;
  return binary % modulus;
}

OneTimeCode::OneTimeCode(std::uint32_t value, int digits) noexcept {
  size_ = digits == 8 ? 8 : 6;
  for (std::size_t i = size_; i > 0; --i) {
    digits_[i - 1] = static_cast<char>('0' + value % 10);
    value /= 10;
  }
}

OneTimeCode::~OneTimeCode() { OPENSSL_cleanse(digits_.data(), digits_.size()); }

OneTimeCode::OneTimeCode(OneTimeCode&& other) noexcept
    : digits_(other.digits_), size_(other.size_) {
  OPENSSL_cleanse(other.digits_.data(), other.digits_.size());
  other.size_ = 0;
}

OneTimeCode& OneTimeCode::operator=(OneTimeCode&& other) noexcept {
  if (this != &other) {
    digits_ = other.digits_;
    size_ = other.size_;
    OPENSSL_cleanse(other.digits_.data(), other.digits_.size());
    other.size_ = 0;
  }
  return *this;
}

}  // namespace cakewalk::hsm
