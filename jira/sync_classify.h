// How access sync judges a user: human or not (and which rule said so), and the access level.
// Pure functions over what Jira showed; docs/access-sync.md lists the rules with their reasons.
//
// Jira Cloud says what an account is (accountType), so its rules only read that:
//   accountType "app" with an e-mail at @serviceaccount.atlassian.com -> service_account
//                                                     (nhi_reason "cloud_service_account")
//   any other accountType "app"                         -> app      ("cloud_account_type:app")
//   accountType "customer" (Jira Service Management)    -> customer ("cloud_account_type:customer")
//   an e-mail at @serviceaccount.atlassian.com otherwise -> service_account
//                                                     ("service_account_email")
// Jira Data Center has no such flag; the agent combines signals, first match wins:
//   1. the user name, or the local part of the e-mail address, matches a configured pattern
//      (connection nhi_patterns, '*' wildcards, case-insensitive) -> the type the pattern names
//      with a prefix ("system:sys-*", "bot:*-ci", "service_account:int-*", "app:*"), else "bot"
//      when the pattern says "bot", else service_account  ("name_pattern:<pattern>")
//   2. owns a personal access token and has no application access -> system
//                                                          ("token_without_application_access")
//   3. owns a personal access token and has never logged in -> service_account
//                                                          ("token_without_login")
// A personal access token alone does not make an account non-human: people use them for
// scripts. Rule 3 needs the last login, which the 10.0-10.2 enumeration cannot see; it is then
// skipped (the output says so).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cakewalk::jira {

struct NhiVerdict {
  bool human = true;
  std::string type;    // "app", "service_account", "bot", "system", "customer"; "" for humans
  std::string reason;  // the rule, as above; "" for humans
};

// A configured non-human pattern: its type (from a "type:" prefix, else "bot" when it mentions
// bot, else service_account) and the wildcard pattern.
std::pair<std::string_view, std::string_view> SplitPattern(std::string_view entry);

// '*' matches any run of characters (also none); everything else matches itself, ASCII letters
// without regard to case.
bool GlobMatch(std::string_view pattern, std::string_view text);

NhiVerdict ClassifyCloudUser(const std::optional<std::string>& account_type,
                             const std::optional<std::string>& email);

struct DcUserSignals {
  std::string_view username;
  std::optional<std::string_view> email;
  bool owns_token = false;
  bool has_product = false;
  // The last login is known (nullopt: this enumeration cannot see it), and whether there was one.
  std::optional<bool> ever_logged_in;
};
NhiVerdict ClassifyDataCenterUser(const DcUserSignals& user,
                                  const std::vector<std::string>& patterns);

// system_admin (SYSTEM_ADMIN) > admin (ADMINISTER) > user (some application access) >
// no_access. Jira lets administrators in without application access, so an administrator's level
// does not depend on products.
std::string_view AccessLevel(bool system_admin, bool admin, bool has_product);

}  // namespace cakewalk::jira
