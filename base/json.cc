#include "base/json.h"

#include <memory>
#include <sstream>

namespace cakewalk {

Result<Json::Value> ParseJson(std::string_view text, std::string_view what, std::size_t max_bytes) {
  if (text.size() > max_bytes) {
    return InvalidArgument(std::string(what) + " is larger than " + std::to_string(max_bytes) +
                           " bytes");
  }
  // jsoncpp skips comments between members even in strict mode; JSON has no '/' outside strings.
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '/') {
      return InvalidArgument(std::string(what) + " is not valid JSON: comments are not allowed");
    }
  }
  Json::CharReaderBuilder builder;
  Json::CharReaderBuilder::strictMode(&builder.settings_);
  builder.settings_["stackLimit"] = 64;
  builder.settings_["rejectDupKeys"] = true;
  builder.settings_["failIfExtra"] = true;
  builder.settings_["allowSpecialFloats"] = false;
  std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
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
std::string Write(const Json::Value& value, const char* indentation) {
  return Json::writeString(Builder(indentation), value);
}
}  // namespace

// The canonical writer is built once per thread: building it costs more than writing a small
// record (access sync writes one per user).
std::string WriteJson(const Json::Value& value) {
  thread_local const std::unique_ptr<Json::StreamWriter> writer(Builder("").newStreamWriter());
  thread_local std::ostringstream out;
  out.str(std::string());
  out.clear();
  writer->write(value, &out);
  std::string text = out.str();
  out.str(std::string());  // do not keep a large document's buffer alive on this thread
  return text;
}
std::string WritePrettyJson(const Json::Value& value) { return Write(value, "  "); }

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
