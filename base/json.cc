#include "base/json.h"

#include <charconv>
#include <cstring>
#include <memory>

namespace cakewalk {

namespace {

// Parses `text` with jsoncpp's strict reader (the checks before it are ParseJson's).
Result<Json::Value> Parsed(std::string_view text, std::string_view what) {
  // The reader is built once per thread: building it (a settings tree, then the reader) costs
  // more than parsing a small document, and access sync parses one per user. A reader keeps no
  // state from one parse to the next.
  thread_local const std::unique_ptr<Json::CharReader> reader = [] {
    Json::CharReaderBuilder builder;
    Json::CharReaderBuilder::strictMode(&builder.settings_);
    builder.settings_["stackLimit"] = 64;
    builder.settings_["rejectDupKeys"] = true;
    builder.settings_["failIfExtra"] = true;
    builder.settings_["allowSpecialFloats"] = false;
    return std::unique_ptr<Json::CharReader>(builder.newCharReader());
  }();
  Json::Value root;
  std::string errors;
  bool parsed = false;
  try {
    parsed = reader->parse(text.data(), text.data() + text.size(), &root, &errors);
  } catch (const std::exception& e) {  // jsoncpp throws when the stack limit is exceeded
    errors = e.what();
  }
  if (!parsed) {
    while (!errors.empty() && (errors.back() == '\n' || errors.back() == ' ')) errors.pop_back();
    for (char& c : errors) {
      if (c == '\n') c = ' ';
    }
    return InvalidArgument(std::string(what) + " is not valid JSON: " + errors);
  }
  return root;
}

}  // namespace

Result<Json::Value> ParseJson(std::string_view text, std::string_view what, std::size_t max_bytes) {
  if (text.size() > max_bytes) {
    return InvalidArgument(std::string(what) + " is larger than " + std::to_string(max_bytes) +
                           " bytes");
  }
  // jsoncpp skips comments between members even in strict mode; JSON has no '/' outside strings.
  // A string ends at the first '"' after an even number of backslashes (memchr finds each
  // candidate quote: the strings are most of the text).
  const char* p = text.data();
  const char* const end = p + text.size();
  while (p < end) {
    if (*p == '/') {
      return InvalidArgument(std::string(what) + " is not valid JSON: comments are not allowed");
    }
    if (*p++ != '"') continue;
    while (p < end) {
      const char* quote =
          static_cast<const char*>(std::memchr(p, '"', static_cast<std::size_t>(end - p)));
      if (quote == nullptr) return Parsed(text, what);  // unterminated: jsoncpp says so
      const char* escapes = quote;
      while (escapes > p && escapes[-1] == '\\') --escapes;
      p = quote + 1;
      if ((quote - escapes) % 2 == 0) break;
    }
  }
  return Parsed(text, what);
}

namespace {
Json::StreamWriterBuilder Builder(const char* indentation) {
  Json::StreamWriterBuilder builder;
  builder["indentation"] = indentation;
  builder["emitUTF8"] = true;
  builder["commentStyle"] = "None";
  builder["enableYAMLCompatibility"] = false;
  builder["dropNullPlaceholders"] = false;
  builder["useSpecialFloats"] = false;
  builder["precision"] = 17;
  return builder;
}

// A string in quotes: '"' and '\\' escaped, control characters as \b \f \n \r \t or \u00xx, every
// other byte as it is (UTF-8 stays UTF-8; jsoncpp's writer with emitUTF8 does the same).
void AppendQuoted(std::string_view s, std::string& out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  std::size_t copied = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + copied, i - copied);
    copied = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out += "\\u00";
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 0xf]);
        break;
    }
  }
  out.append(s.data() + copied, s.size() - copied);
  out.push_back('"');
}

template <typename Int>
void AppendInteger(Int v, std::string& out) {
  char buffer[24];
  const auto end = std::to_chars(buffer, buffer + sizeof buffer, v).ptr;
  out.append(buffer, end);
}

void AppendJson(const Json::Value& value, std::string& out) {
  switch (value.type()) {
    case Json::nullValue:
      out += "null";
      return;
    case Json::intValue:
      AppendInteger(value.asLargestInt(), out);
      return;
    case Json::uintValue:
      AppendInteger(value.asLargestUInt(), out);
      return;
    case Json::realValue:
      // 17 significant digits, ".0" added to a whole number, NaN as null: jsoncpp's own rules.
      out += Json::valueToString(value.asDouble(), 17);
      return;
    case Json::stringValue: {
      const char* begin = nullptr;
      const char* end = nullptr;
      if (!value.getString(&begin, &end)) begin = end = "";
      AppendQuoted(std::string_view(begin, static_cast<std::size_t>(end - begin)), out);
      return;
    }
    case Json::booleanValue:
      out += value.asBool() ? "true" : "false";
      return;
    case Json::arrayValue: {
      // By index: an index never set (jsoncpp arrays can have holes) is written as null.
      out.push_back('[');
      const Json::ArrayIndex size = value.size();
      for (Json::ArrayIndex i = 0; i < size; ++i) {
        if (i > 0) out.push_back(',');
        AppendJson(value[i], out);
      }
      out.push_back(']');
      return;
    }
    case Json::objectValue: {
      // Members are stored in byte order of their names (a shorter prefix first).
      out.push_back('{');
      bool first = true;
      for (auto it = value.begin(); it != value.end(); ++it) {
        if (!first) out.push_back(',');
        first = false;
        const char* end = nullptr;
        const char* name = it.memberName(&end);
        AppendQuoted(std::string_view(name, static_cast<std::size_t>(end - name)), out);
        out.push_back(':');
        AppendJson(*it, out);
      }
      out.push_back('}');
      return;
    }
  }
}
}  // namespace

void AppendJsonString(std::string_view text, std::string& out) { AppendQuoted(text, out); }

// Written straight into a string rather than by jsoncpp's stream writer, which copies every
// object's member names and writes through an ostream (access sync writes one record per user).
// The output is jsoncpp's, byte for byte, with Builder's settings and no indentation:
// tests/base/json_test.cc and the json fuzzer compare the two.
std::string WriteJson(const Json::Value& value) {
  std::string out;
  AppendJson(value, out);
  return out;
}
std::string WritePrettyJson(const Json::Value& value) {
  return Json::writeString(Builder("  "), value);
}

std::string_view JsonTypeName(const Json::Value& value) {
  switch (value.type()) {
    case Json::nullValue:
      return "null";
    case Json::intValue:
    case Json::uintValue:
      return "an integer";
    case Json::realValue:
      return "a number";
    case Json::stringValue:
      return "a string";
    case Json::booleanValue:
      return "a boolean";
    case Json::arrayValue:
      return "an array";
    case Json::objectValue:
      return "an object";
  }
  return "an unknown value";
}

JsonFields::JsonFields(const Json::Value& value, std::string path)
    : value_(value), path_(std::move(path)) {
  if (!value_.isObject()) {
    error_ =
        InvalidArgument(path_ + ": expected an object, found " + std::string(JsonTypeName(value_)));
  }
}

std::string JsonFields::ChildPath(std::string_view key) const {
  return path_ + "." + std::string(key);
}

void JsonFields::Fail(std::string_view key, std::string_view problem) {
  if (!error_.ok()) return;
  error_ = InvalidArgument(ChildPath(key) + ": " + std::string(problem));
}

void JsonFields::Merge(const Status& nested) {
  if (error_.ok() && !nested.ok()) error_ = nested;
}

bool JsonFields::Has(std::string_view key) const {
  return value_.isObject() && value_.isMember(key.data(), key.data() + key.size());
}

const Json::Value* JsonFields::Lookup(std::string_view key, Presence presence) {
  known_.emplace(key);
  if (!error_.ok() || !value_.isObject()) return nullptr;
  const Json::Value* v = value_.find(key.data(), key.data() + key.size());
  if (v == nullptr && presence == kRequired) Fail(key, "is required but missing");
  return v;
}

std::string JsonFields::String(std::string_view key, Presence presence, std::string fallback) {
  const Json::Value* v = Lookup(key, presence);
  if (v == nullptr) return fallback;
  if (!v->isString()) {
    Fail(key, "expected a string, found " + std::string(JsonTypeName(*v)));
    return fallback;
  }
  return v->asString();
}

std::optional<std::string> JsonFields::OptionalString(std::string_view key) {
  const Json::Value* v = Lookup(key, kOptional);
  if (v == nullptr) return std::nullopt;
  if (!v->isString()) {
    Fail(key, "expected a string, found " + std::string(JsonTypeName(*v)));
    return std::nullopt;
  }
  return v->asString();
}

std::optional<std::string> JsonFields::NullableString(std::string_view key) {
  const Json::Value* v = Lookup(key, kOptional);
  if (v == nullptr || v->isNull()) return std::nullopt;
  if (!v->isString()) {
    Fail(key, "expected a string or null, found " + std::string(JsonTypeName(*v)));
    return std::nullopt;
  }
  return v->asString();
}

std::int64_t JsonFields::Int(std::string_view key, std::int64_t fallback, std::int64_t min,
                             std::int64_t max, Presence presence) {
  const Json::Value* v = Lookup(key, presence);
  if (v == nullptr) return fallback;
  if (!v->isIntegral() || (v->isUInt64() && !v->isInt64())) {
    Fail(key, "expected an integer, found " + std::string(JsonTypeName(*v)));
    return fallback;
  }
  const std::int64_t n = v->asInt64();
  if (n < min || n > max) {
    Fail(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                  ", found " + std::to_string(n));
    return fallback;
  }
  return n;
}

bool JsonFields::Bool(std::string_view key, bool fallback, Presence presence) {
  const Json::Value* v = Lookup(key, presence);
  if (v == nullptr) return fallback;
  if (!v->isBool()) {
    Fail(key, "expected true or false, found " + std::string(JsonTypeName(*v)));
    return fallback;
  }
  return v->asBool();
}

std::vector<std::string> JsonFields::StringArray(std::string_view key, Presence presence) {
  const Json::Value* v = Lookup(key, presence);
  std::vector<std::string> out;
  if (v == nullptr) return out;
  if (!v->isArray()) {
    Fail(key, "expected an array of strings, found " + std::string(JsonTypeName(*v)));
    return out;
  }
  for (Json::ArrayIndex i = 0; i < v->size(); ++i) {
    const Json::Value& item = (*v)[i];
    if (!item.isString()) {
      Fail(std::string(key) + "[" + std::to_string(i) + "]",
           "expected a string, found " + std::string(JsonTypeName(item)));
      return {};
    }
    out.push_back(item.asString());
  }
  return out;
}

const Json::Value* JsonFields::Object(std::string_view key, Presence presence) {
  const Json::Value* v = Lookup(key, presence);
  if (v == nullptr) return nullptr;
  if (!v->isObject()) {
    Fail(key, "expected an object, found " + std::string(JsonTypeName(*v)));
    return nullptr;
  }
  return v;
}

const Json::Value* JsonFields::Array(std::string_view key, Presence presence) {
  const Json::Value* v = Lookup(key, presence);
  if (v == nullptr) return nullptr;
  if (!v->isArray()) {
    Fail(key, "expected an array, found " + std::string(JsonTypeName(*v)));
    return nullptr;
  }
  return v;
}

const Json::Value* JsonFields::Any(std::string_view key, Presence presence) {
  return Lookup(key, presence);
}

Status JsonFields::FinishAllowingUnknown() const { return error_; }

Status JsonFields::Finish() const {
  if (!error_.ok()) return error_;
  for (const auto& name : value_.getMemberNames()) {
    if (known_.find(name) == known_.end()) {
      std::string accepted;
      for (const auto& k : known_) accepted += (accepted.empty() ? "" : ", ") + k;
      return InvalidArgument(ChildPath(name) +
                             ": unknown key; accepted keys here are: " + accepted);
    }
  }
  return Status::Ok();
}

}  // namespace cakewalk
