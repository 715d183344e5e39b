#include "jira/sync_classify.h"

namespace cakewalk::jira {
namespace {

constexpr std::string_view kServiceAccountDomain = "@serviceaccount.atlassian.com";

char Fold(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool EndsWithFolded(std::string_view text, std::string_view suffix) {
  if (text.size() < suffix.size()) return false;
  const std::string_view tail = text.substr(text.size() - suffix.size());
  for (std::size_t i = 0; i < suffix.size(); ++i) {
    if (Fold(tail[i]) != Fold(suffix[i])) return false;
  }
  return true;
}

bool ContainsFolded(std::string_view text, std::string_view needle) {
  for (std::size_t i = 0; i + needle.size() <= text.size(); ++i) {
    if (EndsWithFolded(text.substr(i, needle.size()), needle)) return true;
  }
  return false;
}

NhiVerdict Nhi(std::string type, std::string reason) {
  return {false, std::move(type), std::move(reason)};
}

}  // namespace

std::pair<std::string_view, std::string_view> SplitPattern(std::string_view entry) {
  for (std::string_view type : {"service_account", "bot", "system", "app"}) {
    if (entry.size() > type.size() && entry.substr(0, type.size()) == type &&
        entry[type.size()] == ':') {
      return {type, entry.substr(type.size() + 1)};
    }
  }
  return {ContainsFolded(entry, "bot") ? "bot" : "service_account", entry};
}

bool GlobMatch(std::string_view pattern, std::string_view text) {
  // Iterative wildcard matching with backtracking to the last '*'.
  std::size_t p = 0, t = 0;
  std::size_t star = std::string_view::npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (p < pattern.size() && Fold(pattern[p]) == Fold(text[t])) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

NhiVerdict ClassifyCloudUser(const std::optional<std::string>& account_type,
                             const std::optional<std::string>& email) {
  const bool service_email = email && EndsWithFolded(*email, kServiceAccountDomain);
  if (account_type == "app") {
    if (service_email) return Nhi("service_account", "cloud_service_account");
    return Nhi("app", "cloud_account_type:app");
  }
  if (account_type == "customer") return Nhi("customer", "cloud_account_type:customer");
  if (service_email) return Nhi("service_account", "service_account_email");
  return {};
}

NhiVerdict ClassifyDataCenterUser(const DcUserSignals& user,
                                  const std::vector<std::string>& patterns) {
  std::string_view local;
  if (user.email) local = user.email->substr(0, user.email->find('@'));
  for (const std::string& entry : patterns) {
    auto [type, pattern] = SplitPattern(entry);
    if (pattern.empty()) continue;
    if (GlobMatch(pattern, user.username) || (!local.empty() && GlobMatch(pattern, local))) {
      return Nhi(std::string(type), "name_pattern:" + std::string(pattern));
    }
  }
  if (user.owns_token && !user.has_product) {
    return Nhi("system", "token_without_application_access");
  }
  if (user.owns_token && user.ever_logged_in.has_value() && !*user.ever_logged_in) {
    return Nhi("service_account", "token_without_login");
  }
  return {};
}

std::string_view AccessLevel(bool system_admin, bool admin, bool has_product) {
  if (system_admin) return "system_admin";
  if (admin) return "admin";
  if (has_product) return "user";
  return "no_access";
}

}  // namespace cakewalk::jira
