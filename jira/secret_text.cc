#include "jira/secret_text.h"

#include <array>
#include <cstdint>
#include <set>

namespace cakewalk::jira {
namespace {

constexpr char kHex[] = "0123456789ABCDEF";

bool Unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

void AppendChars(SecretBytes& out, const char* data, std::size_t n) {
  out.Append(std::string_view(data, n));
}

void AppendUtf8(SecretBytes& out, std::uint32_t cp) {
  std::array<char, 4> b{};
  std::size_t n = 0;
  if (cp < 0x80) {
    b[n++] = static_cast<char>(cp);
  } else if (cp < 0x800) {
    b[n++] = static_cast<char>(0xC0 | (cp >> 6));
    b[n++] = static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    b[n++] = static_cast<char>(0xE0 | (cp >> 12));
    b[n++] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    b[n++] = static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    b[n++] = static_cast<char>(0xF0 | (cp >> 18));
    b[n++] = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    b[n++] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    b[n++] = static_cast<char>(0x80 | (cp & 0x3F));
  }
  AppendChars(out, b.data(), n);
  WipeBytes(b.data(), b.size());
}

class FlatParser {
 public:
  explicit FlatParser(std::string_view text) : t_(text) {}

  Result<std::map<std::string, SecretBytes, std::less<>>> Run() {
    std::map<std::string, SecretBytes, std::less<>> out;
    Ws();
    if (!Eat('{')) return Bad("expected an object");
    Ws();
    if (Eat('}')) return Tail(std::move(out));
    while (true) {
      Ws();
      SecretBytes key;
      if (!String(key)) return Bad("expected a member name");
      Ws();
      if (!Eat(':')) return Bad("expected ':'");
      Ws();
      SecretBytes value;
      bool present = true;
      if (Peek() == '"') {
        if (!String(value)) return Bad("malformed string");
      } else if (Word("null")) {
        present = false;
      } else if (Word("true")) {
        value.Append("true");
      } else if (Word("false")) {
        value.Append("false");
      } else if (!Number(value)) {
        return Bad("unsupported value (only strings, numbers, booleans and null)");
      }
      std::string name(key.RevealString(SecretAccess::Grant()));
      if (out.count(name) != 0 || seen_null_.count(name) != 0) return Bad("duplicate member");
      if (present) {
        out.emplace(std::move(name), std::move(value));
      } else {
        seen_null_.insert(std::move(name));
      }
      Ws();
      if (Eat(',')) continue;
      if (Eat('}')) return Tail(std::move(out));
      return Bad("expected ',' or '}'");
    }
  }

 private:
  Result<std::map<std::string, SecretBytes, std::less<>>> Tail(
      std::map<std::string, SecretBytes, std::less<>> out) {
    Ws();
    if (i_ != t_.size()) return Bad("trailing data");
    return out;
  }
  static Status Bad(std::string_view why) {
    return InvalidArgument("malformed JSON object: " + std::string(why));
  }
  char Peek() const { return i_ < t_.size() ? t_[i_] : '\0'; }
  bool Eat(char c) {
    if (Peek() != c) return false;
    ++i_;
    return true;
  }
  void Ws() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\t' || t_[i_] == '\n' || t_[i_] == '\r'))
      ++i_;
  }
  bool Word(std::string_view w) {
    if (t_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  // JSON's number grammar exactly: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
  bool Number(SecretBytes& out) {
    const std::size_t start = i_;
    auto digits = [this] {
      const std::size_t from = i_;
      while (i_ < t_.size() && t_[i_] >= '0' && t_[i_] <= '9') ++i_;
      return i_ > from;
    };
    Eat('-');
    if (!Eat('0') && !(Peek() >= '1' && Peek() <= '9' && digits())) return false;
    if (Eat('.') && !digits()) return false;
    if (Eat('e') || Eat('E')) {
      if (!Eat('+')) Eat('-');
      if (!digits()) return false;
    }
    out.Append(t_.substr(start, i_ - start));
    return true;
  }
  bool Hex4(std::uint32_t& v) {
    if (i_ + 4 > t_.size()) return false;
    v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = t_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= static_cast<std::uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v |= static_cast<std::uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        v |= static_cast<std::uint32_t>(c - 'A' + 10);
      } else {
        return false;
      }
    }
    return true;
  }
  bool String(SecretBytes& out) {
    if (!Eat('"')) return false;
    std::size_t run = i_;
    while (i_ < t_.size()) {
      const char c = t_[i_];
      if (c == '"') {
        out.Append(t_.substr(run, i_ - run));
        ++i_;
        return true;
      }
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c != '\\') {
        ++i_;
        continue;
      }
      out.Append(t_.substr(run, i_ - run));
      ++i_;
      if (i_ >= t_.size()) return false;
      const char e = t_[i_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          AppendChars(out, &e, 1);
          break;
        case 'b':
          out.Append("\b");
          break;
        case 'f':
          out.Append("\f");
          break;
        case 'n':
          out.Append("\n");
          break;
        case 'r':
          out.Append("\r");
          break;
        case 't':
          out.Append("\t");
          break;
        case 'u': {
          std::uint32_t cp = 0;
          if (!Hex4(cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            std::uint32_t lo = 0;
            if (!Word("\\u") || !Hex4(lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return false;
          }
          AppendUtf8(out, cp);
          break;
        }
        default:
          return false;
      }
      run = i_;
    }
    return false;
  }

  std::string_view t_;
  std::size_t i_ = 0;
  std::set<std::string> seen_null_;
};

}  // namespace

void AppendJsonString(SecretBytes& out, std::string_view text) {
  out.Append("\"");
  std::size_t run = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c != '"' && c != '\\' && c >= 0x20) continue;
    out.Append(text.substr(run, i - run));
    run = i + 1;
    if (c == '"') {
      out.Append("\\\"");
    } else if (c == '\\') {
      out.Append("\\\\");
    } else {
      const char esc[7] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF], '\0'};
      out.Append(std::string_view(esc, 6));
    }
  }
  out.Append(text.substr(run));
  out.Append("\"");
}

void AppendFormValue(SecretBytes& out, std::string_view text) {
  std::size_t run = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (Unreserved(c)) continue;
    out.Append(text.substr(run, i - run));
    run = i + 1;
    const char esc[3] = {'%', kHex[c >> 4], kHex[c & 0xF]};
    out.Append(std::string_view(esc, 3));
  }
  out.Append(text.substr(run));
}

SecretBodyBuilder& SecretBodyBuilder::Add(std::string_view key, std::string_view value) {
  Key(key);
  if (format_ == Format::kJson) {
    AppendJsonString(body_, value);
  } else {
    AppendFormValue(body_, value);
  }
  return *this;
}

SecretBodyBuilder& SecretBodyBuilder::AddSecret(std::string_view key, const SecretBytes& value) {
  return Add(key, value.RevealString(SecretAccess::Grant()));
}

SecretBodyBuilder& SecretBodyBuilder::AddBool(std::string_view key, bool value) {
  Key(key);
  body_.Append(value ? "true" : "false");
  return *this;
}

void SecretBodyBuilder::Key(std::string_view key) {
  if (format_ == Format::kJson) {
    body_.Append(first_ ? "{" : ",");
    AppendJsonString(body_, key);
    body_.Append(":");
  } else {
    if (!first_) body_.Append("&");
    AppendFormValue(body_, key);
    body_.Append("=");
  }
  first_ = false;
}

SecretBytes SecretBodyBuilder::Finish() {
  if (format_ == Format::kJson) body_.Append(first_ ? "{}" : "}");
  first_ = true;
  return std::move(body_);
}

std::string_view SecretBodyBuilder::content_type() const {
  return format_ == Format::kJson ? "application/json" : "application/x-www-form-urlencoded";
}

Result<std::map<std::string, SecretBytes, std::less<>>> ParseFlatJsonObject(std::string_view text) {
  return FlatParser(text).Run();
}

}  // namespace cakewalk::jira
