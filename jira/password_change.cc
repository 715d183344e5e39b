#include "jira/password_change.h"

#include <cctype>
#include <charconv>

#include "jira/client_util.h"
#include "jira/errors.h"
#include "jira/secret_text.h"

namespace cakewalk::jira {
namespace {

using internal::Contains;
using internal::Lower;

bool HasAny(std::string_view text, std::initializer_list<std::string_view> words) {
  for (std::string_view w : words) {
    if (text.find(w) != std::string_view::npos) return true;
  }
  return false;
}

// The number after one of `markers` ("at least 8" -> 8), if any.
std::optional<std::size_t> NumberAfter(std::string_view text,
                                       std::initializer_list<std::string_view> markers) {
  for (std::string_view marker : markers) {
    const std::size_t at = text.find(marker);
    if (at == std::string_view::npos) continue;
    std::size_t i = at + marker.size();
    while (i < text.size() && text[i] == ' ') ++i;
    std::size_t n = 0;
    const auto [end, ec] = std::from_chars(text.data() + i, text.data() + text.size(), n);
    if (ec == std::errc() && end != text.data() + i) return n;
  }
  return std::nullopt;
}

// A RestClient for writes that must go out exactly once: no retry after 429/503 (the client's
// other rule — writes are never re-sent after transport failures or 5xx — applies as always).
// It shares the connection's transport, which outlives it.
RestClient OneShotClient(Connection& c) {
  Runtime runtime = c.site().runtime();
  runtime.retry.max_attempts = 1;
  std::shared_ptr<http::Transport> transport(std::shared_ptr<void>(), &c.transport());
  return RestClient(std::move(transport), c.site().base(), std::move(runtime),
                    std::make_shared<SkewTracker>());
}

Status RequireDataCenterPassword(const Connection& c) {
  const ConnectionSettings& s = c.settings();
  if (s.flavor == Flavor::kCloud) return CloudPasswordRotationRefusal(s.name);
  if (s.provisioning != ProvisioningAuth::kPassword) {
    return JiraError(Code::kFailedPrecondition,
                     "connection " + s.name +
                         " does not log in with a password (its provisioning section is not "
                         "\"auth\": \"password\"), so it has no Jira password to rotate",
                     reason::kInvalidParams);
  }
  return Status::Ok();
}

}  // namespace

PasswordRules ParsePasswordRules(const std::vector<std::string>& sentences) {
  PasswordRules rules;
  rules.sentences = sentences;
  for (const std::string& sentence : sentences) {
    const std::string t = Lower(sentence);
    const std::optional<std::size_t> at_least =
        NumberAfter(t, {"at least ", "minimum of ", "a minimum of "});
    const std::optional<std::size_t> at_most = NumberAfter(
        t, {"longer than ", "at most ", "more than ", "maximum of ", "exceed ", "up to "});
    const bool upper = HasAny(t, {"uppercase", "upper case", "upper-case", "capital"});
    const bool lower = HasAny(t, {"lowercase", "lower case", "lower-case"});
    const bool digit = HasAny(t, {"digit", "numeric", "number", "numeral"});
    const bool symbol =
        HasAny(t, {"special", "symbol", "non-alphanumeric", "non alphanumeric", "punctuation"});
    const bool letter = HasAny(t, {"letter", "alphabetic"}) && !upper && !lower;
    const bool characters = HasAny(t, {"character", "long", "length"});
    const bool repeats = HasAny(t, {"consecutive", "repeat", "in a row", "sequen"});
    if (at_least && !repeats) {
      if (upper) {
        rules.min_upper = std::max(rules.min_upper, *at_least);
      } else if (lower) {
        rules.min_lower = std::max(rules.min_lower, *at_least);
      } else if (digit) {
        rules.min_digits = std::max(rules.min_digits, *at_least);
      } else if (symbol) {
        rules.min_symbols = std::max(rules.min_symbols, *at_least);
      } else if (letter) {
        rules.min_letters = std::max(rules.min_letters, *at_least);
      } else if (characters) {
        rules.min_length = std::max(rules.min_length, *at_least);
      } else {
        rules.unrecognised.push_back(sentence);
      }
      continue;
    }
    if (at_most && characters && !upper && !lower && !digit && !symbol && !repeats) {
      rules.max_length = std::min(rules.max_length.value_or(*at_most), *at_most);
      continue;
    }
    if (!repeats && HasAny(t, {"different from", "not be the same", "similar", "user's name",
                               "username", "user name", "email", "e-mail", "previous", "last ",
                               "reuse", "re-use", "history"})) {
      rules.met_by_random.push_back(sentence);
      continue;
    }
    rules.unrecognised.push_back(sentence);
  }
  return rules;
}

Result<std::optional<PasswordRules>> FetchPasswordRules(Connection& connection,
                                                        std::stop_token stop) {
  CW_RETURN_IF_ERROR(RequireDataCenterPassword(connection));
  RestCall call;
  call.path = {"rest", "api", "2", "password", "policy"};
  call.query = {{"hasOldPassword", "true"}};
  CW_ASSIGN_OR_RETURN(RestReply reply,
                      connection.site().Execute(call, nullptr, stop, "GET password/policy"));
  if (reply.status == 404 || reply.status == 401 || reply.status == 403) {
    return std::optional<PasswordRules>();
  }
  if (!reply.ok()) return UnexpectedReply(reply, "GET password/policy");
  if (!reply.json.isArray()) {
    return JiraInternal("Jira's password policy is not a list of sentences");
  }
  std::vector<std::string> sentences;
  for (const Json::Value& s : reply.json) {
    if (s.isString()) sentences.push_back(s.asString());
  }
  return std::optional<PasswordRules>(ParsePasswordRules(sentences));
}

std::string_view PasswordChangeOutcomeName(PasswordChange::Outcome outcome) noexcept {
  switch (outcome) {
    case PasswordChange::Outcome::kChanged:
      return "changed";
    case PasswordChange::Outcome::kNotSent:
      return "not-sent";
    case PasswordChange::Outcome::kRefused:
      return "refused";
    case PasswordChange::Outcome::kUnknown:
      return "unknown";
  }
  return "unknown";
}

PasswordChange ChangeAccountPassword(Connection& connection, std::uint32_t from, std::uint32_t to,
                                     const std::function<Status()>& before_send,
                                     std::stop_token stop) {
  using Outcome = PasswordChange::Outcome;
  if (Status s = RequireDataCenterPassword(connection); !s.ok()) return {Outcome::kNotSent, s};
  const ConnectionSettings& settings = connection.settings();
  const std::string who = settings.username;
  DcLoginOptions options;
  options.password_version = from;
  options.stop_on_refusal = true;  // the password Jira has was refused: that is a real stop
  DcSessionAuth session(settings, connection.site(), connection.credentials(), connection.state(),
                        options);
  if (Status s = session.EnsureSession(stop); !s.ok()) {
    return {Outcome::kNotSent, s.WithContext("logging in with the password in use (version " +
                                             std::to_string(from) + ")")};
  }
  const std::string purpose = "password rotation of " + who;
  SecretBytes body;
  {
    auto current = connection.credentials().GetVersion(secret::kPassword, from, purpose);
    if (!current.ok()) {
      session.Logout(stop);
      return {Outcome::kNotSent, current.status()};
    }
    auto next = connection.credentials().GetVersion(
        secret::kPassword, to, purpose + " (new password, version " + std::to_string(to) + ")");
    if (!next.ok()) {
      session.Logout(stop);
      return {Outcome::kNotSent, next.status()};
    }
    body = SecretBodyBuilder(SecretBodyBuilder::Format::kJson)
               .AddSecret("password", *next)
               .AddSecret("currentPassword", *current)
               .Finish();
  }
  if (before_send) {
    if (Status s = before_send(); !s.ok()) {
      session.Logout(stop);
      return {Outcome::kNotSent, s};
    }
  }
  RestClient once = OneShotClient(connection);
  RestCall call;
  call.method = "PUT";
  call.path = {"rest", "api", "2", "myself", "password"};
  call.secret_body = std::move(body);
  // From here on the change is under way: a stop request no longer interrupts it.
  auto reply = once.Execute(call, &session, std::stop_token(), "PUT myself/password");
  PasswordChange out;
  if (!reply.ok()) {
    // Sent, perhaps processed: a timeout, a reset, a 5xx, an exhausted 429/503.
    const bool throttled = reply.status().reason() == reason::kRateLimited;
    out = {throttled ? Outcome::kRefused : Outcome::kUnknown, reply.status()};
  } else if (reply->status == 204 || reply->status == 200) {
    out = {Outcome::kChanged, Status::Ok()};
  } else if (reply->status == 400 || reply->status == 403 || reply->status == 404) {
    // Sent once and answered: Jira kept the old password. Its words say why.
    const std::string words = reply->ErrorText();
    std::string message = "Jira refused to change the password of " + who + " (HTTP " +
                          std::to_string(reply->status) + (words.empty() ? "" : ": " + words) + ")";
    std::string why(reason::kInvalidParams);
    if (reply->status == 400 && reply->json.isObject() && reply->json["errors"].isObject() &&
        reply->json["errors"].isMember("currentPassword")) {
      message += "; the password in the token (version " + std::to_string(from) +
                 ") is not the one Jira has: store the right one with 'cakewalk-agent secret set " +
                 settings.name + " password'";
      why = std::string(reason::kAuthFailed);
    } else if (reply->status == 400) {
      message += "; adjust connections[" + settings.name + "].password_policy to Jira's rules";
    } else if (reply->status == 403) {
      message += "; a user in a read-only directory (LDAP, Crowd) changes the password there";
      why = std::string(reason::kUnsupported);
    }
    out = {Outcome::kRefused, Status(Code::kFailedPrecondition, message, why)};
  } else {
    out = {Outcome::kUnknown, UnexpectedReply(*reply, "PUT myself/password")};
  }
  session.Logout(std::stop_token());
  return out;
}

Status VerifyPasswordVersion(Connection& connection, std::uint32_t version, bool stop_on_refusal,
                             std::stop_token stop) {
  CW_RETURN_IF_ERROR(RequireDataCenterPassword(connection));
  DcLoginOptions options;
  options.password_version = version;
  options.stop_on_refusal = stop_on_refusal;
  DcSessionAuth session(connection.settings(), connection.site(), connection.credentials(),
                        connection.state(), options);
  Status logged_in = session.EnsureSession(stop);
  session.Logout(std::stop_token());
  return logged_in;
}

Status CloudPasswordRotationRefusal(std::string_view connection) {
  const std::string c(connection);
  return JiraError(
      Code::kFailedPrecondition,
      "connection " + c +
          " is Jira Cloud, which has no API to change an account's password; the agent signs "
          "in to Cloud with an API token, so rotate that instead: create a new API token at "
          "https://id.atlassian.com/manage-profile/security/api-tokens (signed in as the "
          "connection's account), store it with 'cakewalk-agent secret set " +
          c + " api-token', then revoke the old token there",
      reason::kUnsupported);
}

}  // namespace cakewalk::jira
