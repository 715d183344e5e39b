// Secret-bearing text the Jira connector reads and writes without ordinary strings
// (jira/secret_text.h, jira/oauth.h, jira/pagination.h):
//   - ParseFlatJsonObject, the hand-written reader of OAuth token responses, checked against the
//     strict JSON parser: whatever it accepts is valid JSON with the same members and values;
//   - SecretBodyBuilder's JSON and form bodies built from the input's lines: the JSON parses back
//     to the same strings, the form value has only unreserved characters and escapes;
//   - ParsePastedAuthorization (what an operator pastes into `oauth authorize`): a refusal never
//     quotes the code;
//   - QueryParameter (the cursor of a links.next URL from an answer).
#include <algorithm>
#include <string>
#include <vector>

#include "base/json.h"
#include "jira/oauth.h"
#include "jira/pagination.h"
#include "jira/secret_text.h"
#include "tests/fuzz/fuzz_support.h"

using cakewalk::SecretAccess;
using cakewalk::fuzz::FuzzCheck;

namespace {

// A value no message can hold by coincidence: the input itself may be a piece of a refusal's own
// wording ("med JSON object: expected an objec" is), so whether a refusal quotes its input is
// checked with this planted in it.
constexpr std::string_view kCanary = "cwcanary5e1f0a93c7d2";

bool Quotes(const cakewalk::Status& refusal) {
  return refusal.message().find(kCanary) != std::string::npos;
}

void CheckFlatParser(std::string_view text) {
  auto flat = cakewalk::jira::ParseFlatJsonObject(text);
  if (!flat.ok()) {
    // A refusal never quotes the token response: neither a token before the point where the
    // input goes wrong nor the input as a whole.
    for (const std::string& probe :
         {"{\"access_token\":\"" + std::string(kCanary) + "\"," + std::string(text),
          std::string(text) + std::string(kCanary)}) {
      auto refused = cakewalk::jira::ParseFlatJsonObject(probe);
      if (!refused.ok())
        FuzzCheck(!Quotes(refused.status()), "a refusal never quotes the response");
    }
    return;
  }
  auto strict = cakewalk::ParseJson(text, "token response");
  FuzzCheck(strict.ok(), "what the flat reader accepts is valid JSON");
  FuzzCheck(strict->isObject(), "what the flat reader accepts is an object");
  std::size_t non_null = 0;
  for (const auto& name : strict->getMemberNames()) {
    const Json::Value& v = (*strict)[name];
    FuzzCheck(!v.isObject() && !v.isArray(), "the flat reader accepts no nesting");
    if (v.isNull()) {
      FuzzCheck(flat->count(name) == 0, "null members are absent");
      continue;
    }
    ++non_null;
    auto it = flat->find(name);
    FuzzCheck(it != flat->end(), "every non-null member is read");
    if (v.isString()) {
      FuzzCheck(it->second.RevealString(SecretAccess::Grant()) == v.asString(),
                "string members are unescaped as JSON says");
    }
  }
  FuzzCheck(flat->size() == non_null, "nothing but the document's members is read");
}

void CheckBodies(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty() && lines.size() < 8) lines.push_back(cakewalk::fuzz::TakeLine(text));
  cakewalk::jira::SecretBodyBuilder json(cakewalk::jira::SecretBodyBuilder::Format::kJson);
  cakewalk::jira::SecretBodyBuilder form(cakewalk::jira::SecretBodyBuilder::Format::kForm);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string key = "k" + std::to_string(i);
    json.AddSecret(key, cakewalk::SecretBytes::CopyOf(lines[i]));
    form.Add(key, lines[i]);
  }
  const cakewalk::SecretBytes json_body = json.Finish();
  auto parsed = cakewalk::ParseJson(json_body.RevealString(SecretAccess::Grant()), "body");
  FuzzCheck(parsed.ok() && parsed->isObject(), "a built JSON body parses");
  for (std::size_t i = 0; i < lines.size(); ++i) {
    FuzzCheck((*parsed)["k" + std::to_string(i)].asString() == lines[i],
              "a built JSON body keeps every value");
  }
  if (auto flat =
          cakewalk::jira::ParseFlatJsonObject(json_body.RevealString(SecretAccess::Grant()));
      flat.ok()) {
    FuzzCheck(flat->size() == lines.size(), "the flat reader reads a built body back");
  } else {
    FuzzCheck(false, "the flat reader reads a built body");
  }
  const cakewalk::SecretBytes form_body = form.Finish();
  for (char c : form_body.RevealString(SecretAccess::Grant())) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_' || c == '~' || c == '%' || c == '=' ||
                    c == '&';
    FuzzCheck(ok, "a form body has only unreserved characters, escapes, '=' and '&'");
  }
}

void CheckPasted(std::string_view text) {
  constexpr std::string_view kRedirect = "https://localhost/cakewalk-agent/oauth-callback";
  auto pasted = cakewalk::jira::ParsePastedAuthorization(text, kRedirect);
  if (pasted.ok()) {
    FuzzCheck(pasted->code.size() > 0, "an accepted paste has a code");
    return;
  }
  const std::size_t at = text.find("code=");
  if (at == std::string_view::npos || text.find("error") != std::string_view::npos) return;
  // The same paste with the canary as its code.
  const std::size_t begin = at + 5;
  const std::size_t end = std::min(text.find_first_of("&#", begin), text.size());
  const std::string probe =
      std::string(text.substr(0, begin)) + std::string(kCanary) + std::string(text.substr(end));
  auto refused = cakewalk::jira::ParsePastedAuthorization(probe, kRedirect);
  if (!refused.ok()) FuzzCheck(!Quotes(refused.status()), "a refusal never quotes the pasted code");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = cakewalk::fuzz::AsText(data, size);
  CheckFlatParser(text);
  CheckBodies(text);
  CheckPasted(text);
  std::string_view rest = text;
  const std::string_view url = cakewalk::fuzz::TakeLine(rest);
  (void)cakewalk::jira::QueryParameter(url, "cursor");
  (void)cakewalk::jira::QueryParameter(url, cakewalk::fuzz::TakeLine(rest));
  return 0;
}
