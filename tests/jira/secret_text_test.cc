// Bodies that carry secrets: JSON and form encoding into SecretBytes, the flat JSON reader for
// token responses, and what `oauth authorize` accepts as pasted input.
#include "jira/secret_text.h"

#include <gtest/gtest.h>

#include "base/json.h"
#include "jira/oauth.h"

namespace cakewalk::jira {
namespace {

std::string Text(const SecretBytes& s) {
  return std::string(s.RevealString(SecretAccess::Grant()));
}

TEST(SecretTextTest, JsonBodyEscapesEverythingJsonRequires) {
  const std::string tricky = std::string("pa\"ss\\word\n\t\x01 \xc3\xa9") + "/end";
  SecretBytes body = SecretBodyBuilder(SecretBodyBuilder::Format::kJson)
                         .Add("username", "alice")
                         .Add("password", tricky)
                         .AddBool("rememberMe", false)
                         .Finish();
  auto parsed = ParseJson(Text(body), "body");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString() << " " << Text(body);
  EXPECT_EQ((*parsed)["username"].asString(), "alice");
  EXPECT_EQ((*parsed)["password"].asString(), tricky);
  EXPECT_FALSE((*parsed)["rememberMe"].asBool());
  EXPECT_EQ(Text(SecretBodyBuilder(SecretBodyBuilder::Format::kJson).Finish()), "{}");
}

TEST(SecretTextTest, FormBodyPercentEncodesAllButUnreserved) {
  SecretBytes body = SecretBodyBuilder(SecretBodyBuilder::Format::kForm)
                         .Add("grant_type", "refresh_token")
                         .Add("refresh_token", "a+b/c=d&e f~._-")
                         .Finish();
  EXPECT_EQ(Text(body), "grant_type=refresh_token&refresh_token=a%2Bb%2Fc%3Dd%26e%20f~._-");
}

TEST(SecretTextTest, FlatJsonObjectReadsTokenResponses) {
  auto fields = ParseFlatJsonObject(
      R"( {"access_token":"eyJ\u0041\"x\\","expires_in":3600,"scope":"read:jira-user offline_access",)"
      R"("token_type":"Bearer","refresh_token":null,"ok":true} )");
  ASSERT_TRUE(fields.ok()) << fields.status().ToString();
  EXPECT_EQ(Text(fields->at("access_token")), "eyJA\"x\\");
  EXPECT_EQ(Text(fields->at("expires_in")), "3600");
  EXPECT_EQ(Text(fields->at("ok")), "true");
  EXPECT_EQ(fields->count("refresh_token"), 0u);  // null is absent
  auto emoji = ParseFlatJsonObject(R"({"k":"\ud83d\ude00"})");
  ASSERT_TRUE(emoji.ok());
  EXPECT_EQ(Text(emoji->at("k")), "\xF0\x9F\x98\x80");
}

TEST(SecretTextTest, FlatJsonObjectRefusesWhatItDoesNotKnow) {
  for (const char* bad : {"", "[]", "{", R"({"a":1,})", R"({"a":{"b":1}})", R"({"a":[1]})",
                          R"({"a":1,"a":2})", R"({"a":"x"} trailing)", R"({"a":"\ud800"})",
                          R"({"a":"\q"})", "{\"a\":\"\x01\"}", R"({"a":1}{"b":2})"}) {
    auto r = ParseFlatJsonObject(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().message().find("\"a\""), std::string::npos);
    }
  }
}

// Found by fuzzing (tests/fuzz/oauth_text_fuzz.cc): numbers follow JSON's grammar, not "any run
// of digits, dots, signs and e".
TEST(SecretTextTest, FlatJsonObjectNumbersAreJsonNumbers) {
  for (const char* bad :
       {R"({"n":3+00})", R"({"n":1-2})", R"({"n":01})", R"({"n":3600.e})", R"({"n":-})",
        R"({"n":.5})", R"({"n":5.})", R"({"n":1e})", R"({"n":--1})", R"({"n":1.2.3})"}) {
    EXPECT_FALSE(ParseFlatJsonObject(bad).ok()) << bad;
  }
  for (const char* good : {"0", "-0", "3600", "-0.5e+10", "1E5", "12.25e-3"}) {
    auto r = ParseFlatJsonObject(std::string(R"({"n":)") + good + "}");
    ASSERT_TRUE(r.ok()) << good;
    EXPECT_EQ(Text(r->at("n")), good);
  }
}

TEST(PastedAuthorizationTest, RedirectUrlCodeAndState) {
  const std::string redirect = "https://localhost/cakewalk-agent/oauth-callback";
  auto got =
      ParsePastedAuthorization("  " + redirect + "?code=abc%2Bdef&state=xyz-1&extra=1\n", redirect);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(Text(got->code), "abc+def");
  ASSERT_TRUE(got->state.has_value());
  EXPECT_EQ(*got->state, "xyz-1");
  auto bare = ParsePastedAuthorization("Zq3-bare_code", redirect);
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(Text(bare->code), "Zq3-bare_code");
  EXPECT_FALSE(bare->state.has_value());
  auto query_only = ParsePastedAuthorization("code=c1&state=s1", redirect);
  ASSERT_TRUE(query_only.ok());
  EXPECT_EQ(Text(query_only->code), "c1");
}

TEST(PastedAuthorizationTest, RefusesOtherRedirectsErrorsAndGarbage) {
  const std::string redirect = "https://localhost/cakewalk-agent/oauth-callback";
  EXPECT_EQ(ParsePastedAuthorization("https://evil.example/cb?code=x&state=y", redirect)
                .status()
                .reason(),
            "invalid_params");
  auto denied = ParsePastedAuthorization(redirect + "?error=access_denied&state=y", redirect);
  EXPECT_EQ(denied.status().reason(), "auth_failed");
  EXPECT_NE(denied.status().message().find("access_denied"), std::string::npos);
  EXPECT_FALSE(ParsePastedAuthorization("", redirect).ok());
  EXPECT_FALSE(ParsePastedAuthorization("two words", redirect).ok());
  EXPECT_FALSE(ParsePastedAuthorization(redirect + "?state=only", redirect).ok());
  EXPECT_FALSE(ParsePastedAuthorization(redirect + "?code=a&code=b", redirect).ok());
  EXPECT_FALSE(ParsePastedAuthorization(redirect + "?code=%zz", redirect).ok());
  auto quoted = ParsePastedAuthorization("https://evil.example/cb?code=SECRETCODE", redirect);
  EXPECT_EQ(quoted.status().message().find("SECRETCODE"), std::string::npos);
}

}  // namespace
}  // namespace cakewalk::jira
