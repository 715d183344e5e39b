// Password rotation, Jira's side (Data Center; agent/rotation.h runs the whole rotation):
//
// - Jira's password rules: GET /rest/api/2/password/policy?hasOldPassword=true answers a JSON
//   array of sentences ("The password must contain at least 8 characters.", ...). The agent reads
//   the numbers it recognises (length, per-class minimums) so that the generator can meet them, and
//   keeps the others; Jira checks every rule again when the password changes.
// - The change: a fresh session with the version of the password Jira has (two-step verification
//   as for any login), then PUT /rest/api/2/myself/password {"password", "currentPassword"} with
//   that session (cookie-authenticated writes carry X-Atlassian-Token: no-check). Both values are
//   read from the token for the moment of the call, so Jira receives exactly what is sealed. The
//   PUT is sent at most once: never re-sent after a timeout, a 5xx or a 429/503 (a repeat would
//   find the password already changed and be refused, and a refusal would be mistaken for "not
//   changed").
// - The verification: a fresh login with exactly the new version (TOTP included), confirmed by
//   /myself; nothing else uses that session.
//
// Jira Cloud has no API that changes an account's password: the agent's Cloud credential is the
// API token, created in the Atlassian account settings (CloudPasswordRotationRefusal).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "base/status.h"
#include "jira/connection.h"

namespace cakewalk::jira {

// What Jira's password policy sentences say, as far as the agent understands them.
struct PasswordRules {
  std::size_t min_length = 0;
  std::optional<std::size_t> max_length;
  std::size_t min_lower = 0;
  std::size_t min_upper = 0;
  std::size_t min_letters = 0;  // letters of either case
  std::size_t min_digits = 0;
  std::size_t min_symbols = 0;
  // Sentences a fresh random password satisfies by itself ("must be different from the current
  // password", "must not be similar to the user's name", "not one of the last N passwords").
  std::vector<std::string> met_by_random;
  // Sentences the agent does not understand. Jira still applies them when the password changes;
  // a refusal then carries Jira's words.
  std::vector<std::string> unrecognised;
  // Every sentence, as Jira sent it.
  std::vector<std::string> sentences;
};

PasswordRules ParsePasswordRules(const std::vector<std::string>& sentences);

// Jira's rules, read anonymously. nullopt when this Jira does not tell (404, or 401/403 for
// anonymous callers); other failures are errors.
Result<std::optional<PasswordRules>> FetchPasswordRules(Connection& connection,
                                                        std::stop_token stop);

// The outcome of a password change.
struct PasswordChange {
  enum class Outcome {
    kChanged,  // Jira answered 204: it has the new password
    kNotSent,  // the change was never sent (the login with the old password failed, ...)
    kRefused,  // Jira refused it (its words in `status`): it still has the old password
    kUnknown,  // sent, but no usable answer (timeout, reset, 5xx): Jira may have either
  };
  Outcome outcome = Outcome::kNotSent;
  Status status;  // OK for kChanged; otherwise what happened, with a jobs.md reason
};
std::string_view PasswordChangeOutcomeName(PasswordChange::Outcome outcome) noexcept;

// Changes the connection account's password from version `from` to version `to` of the
// connection's "password" secret (both in the token): a fresh login with `from`, then the PUT.
// `before_send` runs after that login and immediately before the PUT is sent (the rotation
// records there that Jira may now have the new password); a failure from it means kNotSent.
PasswordChange ChangeAccountPassword(Connection& connection, std::uint32_t from, std::uint32_t to,
                                     const std::function<Status()>& before_send,
                                     std::stop_token stop);

// A fresh login with exactly version `version` of the password (the second factor as usual),
// confirmed by /myself, then logged out. A refusal (auth_failed) is persisted as the login stop
// only when `stop_on_refusal`; a CAPTCHA demand always is (captcha_required).
Status VerifyPasswordVersion(Connection& connection, std::uint32_t version, bool stop_on_refusal,
                             std::stop_token stop);

// The refusal for a password rotation on a Jira Cloud connection: what to rotate instead.
Status CloudPasswordRotationRefusal(std::string_view connection);

}  // namespace cakewalk::jira
