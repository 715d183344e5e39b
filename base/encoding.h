// Byte encodings used on the wire. Base64 comes from OpenSSL; base64url is the same alphabet with
// '-' and '_' and no padding (RFC 4648 §5, as JWS and JWK use it).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace cakewalk {

std::string Base64Encode(std::span<const std::uint8_t> bytes);
Result<std::vector<std::uint8_t>> Base64Decode(std::string_view text);
std::string Base64UrlEncode(std::span<const std::uint8_t> bytes);
// Strict: rejects padding, whitespace and characters outside the URL-safe alphabet.
Result<std::vector<std::uint8_t>> Base64UrlDecode(std::string_view text);
std::string HexEncode(std::span<const std::uint8_t> bytes);

inline std::span<const std::uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}
inline std::string_view AsChars(std::span<const std::uint8_t> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// Percent-encodes everything outside RFC 3986's unreserved set, for path segments and query
// values: "a&b/../x" becomes "a%26b%2F..%2Fx".
std::string UrlEncode(std::string_view text);

}  // namespace cakewalk
