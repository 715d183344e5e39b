#include "hsm/otpauth.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <vector>

namespace cakewalk::hsm {
namespace {

bool IsSeparator(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '-'; }

char Lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return Lower(x) == Lower(y); });
}

bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && EqualsIgnoreCase(s.substr(0, prefix.size()), prefix);
}

int Base32Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a';
  if (c >= '2' && c <= '7') return c - '2' + 26;
  return -1;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes into `out` (anything with push_back(uint8_t)); `what` names the part in errors.
template <class Out>
Status PercentDecode(std::string_view text, std::string_view what, Out& out) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(static_cast<std::uint8_t>(text[i]));
      continue;
    }
    if (i + 2 >= text.size()) {
      return InvalidArgument(std::string(what) + ": incomplete percent-escape");
    }
    const int hi = HexValue(text[i + 1]);
    const int lo = HexValue(text[i + 2]);
    if (hi < 0 || lo < 0) return InvalidArgument(std::string(what) + ": malformed percent-escape");
    out.push_back(static_cast<std::uint8_t>(hi * 16 + lo));
    i += 2;
  }
  return Status::Ok();
}

// Collects percent-decoded bytes in secret memory.
struct SecretSink {
  SecretBytes bytes;
  void push_back(std::uint8_t b) { bytes.Append(std::span<const std::uint8_t>(&b, 1)); }
};

struct StringSink {
  std::string s;
  void push_back(std::uint8_t b) { s.push_back(static_cast<char>(b)); }
};

Result<int> ParseSmallInt(std::string_view text, std::string_view what) {
  if (text.empty() || text.size() > 6) {
    return InvalidArgument("otpauth URI: " + std::string(what) + " must be a number");
  }
  int v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      return InvalidArgument("otpauth URI: " + std::string(what) + " must be a number");
    }
    v = v * 10 + (c - '0');
  }
  return v;
}

}  // namespace

Result<SecretBytes> DecodeBase32Seed(std::string_view text) {
  // First pass: validate and count, without keeping anything.
  std::size_t data_chars = 0;
  std::size_t padding = 0;
  std::size_t last_data_position = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const std::string position = std::to_string(i + 1);
    if (IsSeparator(c)) continue;
    if (c == '=') {
      ++padding;
      continue;
    }
    if (Base32Value(c) < 0) {
      if (c == '0' || c == '1' || c == '8' || c == '9') {
        return InvalidArgument("the key has a digit 0, 1, 8 or 9 at position " + position +
                               "; base32 uses only the letters A-Z and the digits 2-7 (O, I and "
                               "B are letters)");
      }
      return InvalidArgument("the key has a character outside base32 (A-Z, 2-7) at position " +
                             position);
    }
    if (padding > 0) {
      return InvalidArgument("the key has a character after '=' padding at position " + position +
                             "; padding may only end the key");
    }
    ++data_chars;
    last_data_position = i + 1;
  }
  if (data_chars == 0) return InvalidArgument("the key is empty");
  const std::size_t tail = data_chars % 8;
  if (tail == 1 || tail == 3 || tail == 6) {
    return InvalidArgument("the key has " + std::to_string(data_chars) +
                           " base32 characters, a length no base32 encoder produces; a "
                           "character is probably missing or extra");
  }
  if (padding > 0) {
    static constexpr std::size_t kExpectedPadding[8] = {0, 0, 6, 0, 4, 3, 0, 1};
    if (padding != kExpectedPadding[tail]) {
      return InvalidArgument("the key's '=' padding does not match its length (" +
                             std::to_string(padding) + " instead of " +
                             std::to_string(kExpectedPadding[tail]) + ")");
    }
  }
  const std::size_t bytes = data_chars * 5 / 8;
  if (bytes < kMinSeedBytes) {
    return InvalidArgument(
        "the key is too short: " + std::to_string(bytes) + " bytes (" + std::to_string(data_chars) +
        " base32 characters); TOTP keys have at least " + std::to_string(kMinSeedBytes) +
        " bytes (16 characters). Was it "
        "copied completely?");
  }
  if (bytes > kMaxSeedBytes) {
    return InvalidArgument("the key is too long: " + std::to_string(bytes) + " bytes (at most " +
                           std::to_string(kMaxSeedBytes) + ")");
  }
  // Second pass: decode straight into secret memory.
  SecretBytes out = SecretBytes::Allocate(bytes);
  std::span<std::uint8_t> dst = out.RevealMutable(SecretAccess::Grant());
  std::uint32_t buffer = 0;
  int bits = 0;
  std::size_t written = 0;
  for (char c : text) {
    const int v = Base32Value(c);
    if (v < 0) continue;
    buffer = (buffer << 5) | static_cast<std::uint32_t>(v);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      dst[written++] = static_cast<std::uint8_t>((buffer >> bits) & 0xffu);
    }
  }
  const std::uint32_t leftover = buffer & ((1u << bits) - 1u);
  buffer = 0;
  if (leftover != 0) {
    return InvalidArgument("the key's last character (position " +
                           std::to_string(last_data_position) +
                           ") has bits set beyond the end of the key; the key is probably "
                           "truncated or mistyped");
  }
  return out;
}

Result<TotpSeed> ParseOtpauthUri(std::string_view uri) {
  static constexpr std::string_view kScheme = "otpauth://";
  if (!StartsWithIgnoreCase(uri, kScheme)) {
    return InvalidArgument("not an otpauth:// URI");
  }
  if (uri.find('#') != std::string_view::npos) {
    return InvalidArgument("otpauth URI: a '#' fragment is not allowed");
  }
  std::string_view rest = uri.substr(kScheme.size());
  const std::size_t slash = rest.find('/');
  const std::string_view type = rest.substr(0, slash);
  if (EqualsIgnoreCase(type, "hotp")) {
    return InvalidArgument(
        "otpauth URI: HOTP (counter-based) keys are not supported; Jira uses TOTP "
        "(otpauth://totp/...)");
  }
  if (!EqualsIgnoreCase(type, "totp")) {
    return InvalidArgument("otpauth URI: the type must be totp (otpauth://totp/...)");
  }
  if (slash == std::string_view::npos) {
    return InvalidArgument("otpauth URI: missing '/' and parameters after otpauth://totp");
  }
  rest = rest.substr(slash + 1);
  const std::size_t question = rest.find('?');
  if (question == std::string_view::npos) {
    return InvalidArgument("otpauth URI: no parameters; the secret parameter is required");
  }
  TotpSeed seed;
  {
    StringSink label;
    CW_RETURN_IF_ERROR(PercentDecode(rest.substr(0, question), "otpauth URI label", label));
    seed.account = std::move(label.s);
  }
  std::string_view query = rest.substr(question + 1);
  std::vector<std::string> seen;
  std::optional<SecretBytes> key;
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const std::size_t eq = pair.find('=');
    std::string name(pair.substr(0, eq));
    std::transform(name.begin(), name.end(), name.begin(), Lower);
    const std::string_view value =
        eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    const bool known = name == "secret" || name == "issuer" || name == "algorithm" ||
                       name == "digits" || name == "period";
    if (!known) continue;
    if (std::find(seen.begin(), seen.end(), name) != seen.end()) {
      return InvalidArgument("otpauth URI: the parameter '" + name + "' appears more than once");
    }
    seen.push_back(name);
    if (name == "secret") {
      SecretSink raw;
      CW_RETURN_IF_ERROR(PercentDecode(value, "otpauth URI secret parameter", raw));
      if (raw.bytes.empty()) return InvalidArgument("otpauth URI: the secret parameter is empty");
      Result<SecretBytes> decoded = DecodeBase32Seed(raw.bytes.RevealString(SecretAccess::Grant()));
      if (!decoded.ok()) {
        return decoded.status().WithContext("otpauth URI secret parameter");
      }
      key = std::move(*decoded);
    } else if (name == "issuer") {
      StringSink issuer;
      CW_RETURN_IF_ERROR(PercentDecode(value, "otpauth URI issuer", issuer));
      seed.issuer = std::move(issuer.s);
    } else if (name == "algorithm") {
      StringSink algorithm;
      CW_RETURN_IF_ERROR(PercentDecode(value, "otpauth URI algorithm", algorithm));
      if (EqualsIgnoreCase(algorithm.s, "SHA1")) {
        seed.params.algorithm = TotpAlgorithm::kSha1;
      } else if (EqualsIgnoreCase(algorithm.s, "SHA256")) {
        seed.params.algorithm = TotpAlgorithm::kSha256;
      } else if (EqualsIgnoreCase(algorithm.s, "SHA512")) {
        seed.params.algorithm = TotpAlgorithm::kSha512;
      } else {
        const std::string shown =
            algorithm.s.size() <= 16 ? algorithm.s : algorithm.s.substr(0, 16) + "...";
        return InvalidArgument("otpauth URI: unsupported algorithm '" + shown +
                               "' (use SHA1, SHA256 or SHA512)");
      }
    } else if (name == "digits") {
      CW_ASSIGN_OR_RETURN(int digits, ParseSmallInt(value, "digits"));
      if (digits != 6 && digits != 8) {
        return InvalidArgument("otpauth URI: digits must be 6 or 8, not " + std::to_string(digits));
      }
      seed.params.digits = digits;
    } else if (name == "period") {
      CW_ASSIGN_OR_RETURN(int period, ParseSmallInt(value, "period"));
      if (period < kMinTotpPeriod.count() || period > kMaxTotpPeriod.count()) {
        return InvalidArgument("otpauth URI: period must be between " +
                               std::to_string(kMinTotpPeriod.count()) + " and " +
                               std::to_string(kMaxTotpPeriod.count()) + " seconds, not " +
                               std::to_string(period));
      }
      seed.params.period = std::chrono::seconds(period);
    }
  }
  if (!key.has_value()) {
    return InvalidArgument("otpauth URI: the secret parameter is missing");
  }
  seed.key = std::move(*key);
  return seed;
}

Result<TotpSeed> ParseTotpSeedInput(std::string_view input) {
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!input.empty() && is_space(input.front())) input.remove_prefix(1);
  while (!input.empty() && is_space(input.back())) input.remove_suffix(1);
  if (input.empty()) {
    return InvalidArgument("no MFA key given; paste the base32 key or the otpauth:// URI");
  }
  if (StartsWithIgnoreCase(input, "otpauth:")) return ParseOtpauthUri(input);
  TotpSeed seed;
  CW_ASSIGN_OR_RETURN(seed.key, DecodeBase32Seed(input));
  return seed;
}

}  // namespace cakewalk::hsm
