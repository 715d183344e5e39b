#include "tests/fakes/jira/totp.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace cakewalk::testing {

namespace {

const EVP_MD* Digest(TotpAlgorithm algorithm) {
  switch (algorithm) {
    case TotpAlgorithm::kSha1:
      return EVP_sha1();
    case TotpAlgorithm::kSha256:
      return EVP_sha256();
    case TotpAlgorithm::kSha512:
      return EVP_sha512();
  }
  return EVP_sha1();
}

constexpr char kBase32Alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

}  // namespace

std::string HotpCode(std::span<const std::uint8_t> seed, std::uint64_t counter,
                     TotpAlgorithm algorithm, int digits) {
  std::uint8_t message[8];
  for (int i = 7; i >= 0; --i) {
    message[i] = static_cast<std::uint8_t>(counter & 0xff);
    counter >>= 8;
  }
  std::uint8_t mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(Digest(algorithm), seed.data(), static_cast<int>(seed.size()), message, sizeof message, mac,
       &mac_len);
  const unsigned offset = mac[mac_len - 1] & 0x0fu;
  const std::uint32_t binary = (static_cast<std::uint32_t>(mac[offset] & 0x7fu) << 24) |
                               (static_cast<std::uint32_t>(mac[offset + 1]) << 16) |
                               (static_cast<std::uint32_t>(mac[offset + 2]) << 8) |
                               static_cast<std::uint32_t>(mac[offset + 3]);
  std::uint64_t modulus = 1;
  for (int i = 0; i < digits; ++i) modulus *= 10;
  std::string code = std::to_string(binary % modulus);
  while (code.size() < static_cast<std::size_t>(digits)) code.insert(code.begin(), '0');
  return code;
}

std::uint64_t TotpStep(std::int64_t unix_seconds, int period_seconds) {
  if (unix_seconds < 0 || period_seconds <= 0) return 0;
  return static_cast<std::uint64_t>(unix_seconds / period_seconds);
}

std::string Base32Encode(std::span<const std::uint8_t> bytes) {
  std::string out;
  std::uint32_t buffer = 0;
  int bits = 0;
  for (std::uint8_t b : bytes) {
    buffer = (buffer << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += kBase32Alphabet[(buffer >> (bits - 5)) & 0x1fu];
      bits -= 5;
    }
  }
  if (bits > 0) out += kBase32Alphabet[(buffer << (5 - bits)) & 0x1fu];
  return out;
}

Result<std::vector<std::uint8_t>> Base32Decode(std::string_view text) {
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  std::vector<std::uint8_t> out;
  std::uint32_t buffer = 0;
  int bits = 0;
  for (char c : text) {
    if (c == ' ' || c == '-') continue;
    int v = -1;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    if (c >= 'a' && c <= 'z') v = c - 'a';
    if (c >= '2' && c <= '7') v = c - '2' + 26;
    if (v < 0) return InvalidArgument("base32 text contains a character outside the alphabet");
    buffer = (buffer << 5) | static_cast<std::uint32_t>(v);
    bits += 5;
    if (bits >= 8) {
      out.push_back(static_cast<std::uint8_t>((buffer >> (bits - 8)) & 0xffu));
      bits -= 8;
    }
  }
  return out;
}

}  // namespace cakewalk::testing
