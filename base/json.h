// Strict JSON for everything that arrives from outside: configuration, control-plane responses,
// job payloads and Jira responses. jsoncpp throws on type mismatches, so nothing outside this file
// reads a Json::Value without checking its type first; JsonFields does the checking and names the
// JSON path of the first problem.
#pragma once

#include <json/json.h>

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace cakewalk {

inline constexpr std::size_t kMaxJsonBytes = 16u * 1024u * 1024u;

// Parses one JSON document: no comments, no duplicate keys, no trailing data, nesting at most
// 64 deep, at most `max_bytes`. `what` names the document in errors ("configuration file ...").
Result<Json::Value> ParseJson(std::string_view text, std::string_view what,
                              std::size_t max_bytes = kMaxJsonBytes);

// Compact JSON with object keys in byte order and UTF-8 emitted as is: the canonical form used for
// hashing records and for request bodies.
std::string WriteJson(const Json::Value& value);
// Appends `text` as a JSON string exactly as WriteJson writes strings (for writers of canonical
// JSON that build no Json::Value).
void AppendJsonString(std::string_view text, std::string& out);
// Indented JSON for people.
std::string WritePrettyJson(const Json::Value& value);

std::string_view JsonTypeName(const Json::Value& value);

// Reads the members of one JSON object with type checks and defaults. The first problem is
// remembered with its JSON path ("$.connections[1].base_url: expected a string, found a number");
// later calls return defaults, and Finish() reports it — or any key that was never asked for.
//
//   JsonFields f(root, "$");
//   std::string url = f.String("url", JsonFields::kRequired);
//   int64_t n = f.Int("max_concurrent", 4, 1, 100);
//   CW_RETURN_IF_ERROR(f.Finish());
class JsonFields {
 public:
  enum Presence { kOptional, kRequired };

  // `value` must outlive this object.
  JsonFields(const Json::Value& value, std::string path);

  const std::string& path() const noexcept { return path_; }
  bool Has(std::string_view key) const;
  bool ok() const noexcept { return error_.ok(); }

  std::string String(std::string_view key, Presence presence, std::string fallback = {});
  std::optional<std::string> OptionalString(std::string_view key);
  // A string or null; null and absent give nullopt.
  std::optional<std::string> NullableString(std::string_view key);
  std::int64_t Int(std::string_view key, std::int64_t fallback, std::int64_t min, std::int64_t max,
                   Presence presence = kOptional);
  bool Bool(std::string_view key, bool fallback, Presence presence = kOptional);
  std::vector<std::string> StringArray(std::string_view key, Presence presence = kOptional);
  // The member as an object (or null when absent and optional); records an error otherwise.
  const Json::Value* Object(std::string_view key, Presence presence = kOptional);
  const Json::Value* Array(std::string_view key, Presence presence = kOptional);
  // Any JSON value; marks the key as known.
  const Json::Value* Any(std::string_view key, Presence presence = kOptional);

  std::string ChildPath(std::string_view key) const;
  // Records a caller-side validation error for `key` (first error wins).
  void Fail(std::string_view key, std::string_view problem);
  // Records the result of a nested JsonFields (whose messages already carry their full path).
  void Merge(const Status& nested);

  // Reports the first error, else an unknown key (with the accepted keys listed).
  Status Finish() const;
  // As Finish(), but tolerates keys that were not asked for (for responses from servers that add
  // fields over time).
  Status FinishAllowingUnknown() const;

 private:
  const Json::Value* Lookup(std::string_view key, Presence presence);

  const Json::Value& value_;
  std::string path_;
  std::set<std::string, std::less<>> known_;
  Status error_;
};

}  // namespace cakewalk
