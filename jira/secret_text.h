// Building and reading request/response bodies that carry secrets without leaving copies in
// ordinary strings: JSON and form encoding straight into SecretBytes, and a flat JSON object
// reader (OAuth token responses) whose string values land in SecretBytes.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "base/secret.h"
#include "base/status.h"

namespace cakewalk::jira {

// Appends `text` as a JSON string literal (with quotes and escapes).
void AppendJsonString(SecretBytes& out, std::string_view text);
// Appends `text` percent-encoded for application/x-www-form-urlencoded (RFC 3986 unreserved
// characters stay, everything else is %XX).
void AppendFormValue(SecretBytes& out, std::string_view text);

// Builds {"k1": "v1", ...} / k1=v1&... with secret values, in the order given.
class SecretBodyBuilder {
 public:
  enum class Format { kJson, kForm };
  explicit SecretBodyBuilder(Format format) : format_(format) {}
  SecretBodyBuilder& Add(std::string_view key, std::string_view value);
  SecretBodyBuilder& AddSecret(std::string_view key, const SecretBytes& value);
  SecretBodyBuilder& AddBool(std::string_view key, bool value);
  SecretBytes Finish();
  std::string_view content_type() const;

 private:
  void Key(std::string_view key);
  Format format_;
  SecretBytes body_;
  bool first_ = true;
};

// A flat JSON object (string, number, boolean and null members; no nesting) read into
// SecretBytes values: strings unescaped, numbers and booleans as their text, null as absent.
// Duplicate keys and anything else are refused. Errors never quote the input.
Result<std::map<std::string, SecretBytes, std::less<>>> ParseFlatJsonObject(std::string_view text);

}  // namespace cakewalk::jira
