// base64, base64url and hex (base/encoding.h): decoders on anything; what they accept encodes back
// to the same text (they are strict: one spelling per value), and encoded bytes decode back.
#include <string>
#include <vector>

#include "base/encoding.h"
#include "tests/fuzz/fuzz_support.h"

using cakewalk::fuzz::FuzzCheck;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = cakewalk::fuzz::AsText(data, size);
  const std::span<const std::uint8_t> bytes(data, size);

  if (auto decoded = cakewalk::Base64Decode(text); decoded.ok()) {
    FuzzCheck(cakewalk::Base64Encode(*decoded) == text, "accepted base64 is canonical");
  }
  if (auto decoded = cakewalk::Base64UrlDecode(text); decoded.ok()) {
    FuzzCheck(cakewalk::Base64UrlEncode(*decoded) == text, "accepted base64url is canonical");
  }
  auto b64 = cakewalk::Base64Decode(cakewalk::Base64Encode(bytes));
  FuzzCheck(b64.ok() && std::equal(b64->begin(), b64->end(), bytes.begin(), bytes.end()),
            "base64 round trip");
  auto b64url = cakewalk::Base64UrlDecode(cakewalk::Base64UrlEncode(bytes));
  FuzzCheck(b64url.ok() && std::equal(b64url->begin(), b64url->end(), bytes.begin(), bytes.end()),
            "base64url round trip");
  const std::string hex = cakewalk::HexEncode(bytes);
  FuzzCheck(hex.size() == 2 * size, "hex doubles the length");
  const std::string encoded = cakewalk::UrlEncode(text);
  for (char c : encoded) {
    const bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
                            c == '~' || c == '%';
    FuzzCheck(unreserved, "UrlEncode leaves only unreserved characters and escapes");
  }
  return 0;
}
