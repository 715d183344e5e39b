#include "jira/pagination.h"

#include "jira/errors.h"

namespace cakewalk::jira {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The call again, with its query extended by the caller (pages never carry secret bodies).
RestCall PageCall(const RestCall& call) {
  RestCall c;
  c.method = call.method;
  c.path = call.path;
  c.query = call.query;
  c.headers = call.headers;
  c.retry_conflict = call.retry_conflict;
  return c;
}

Result<Json::Value> Page(RestClient& client, const RestCall& call, Authenticator* auth,
                         std::stop_token stop, std::string_view what) {
  CW_ASSIGN_OR_RETURN(RestReply reply, client.Execute(call, auth, stop, what));
  if (!reply.ok()) return UnexpectedReply(reply, what);
  return std::move(reply.json);
}

}  // namespace

Status ForEachStartAtItem(RestClient& client, const RestCall& call, Authenticator* auth,
                          const PageLimits& limits, std::stop_token stop, std::string_view what,
                          const ItemVisitor& visit) {
  std::int64_t start = 0;
  for (int page = 0; page < limits.max_pages; ++page) {
    if (limits.limit >= 0 && start >= limits.limit) return Status::Ok();
    RestCall c = PageCall(call);
    c.query.emplace_back("startAt", std::to_string(start));
    c.query.emplace_back("maxResults", std::to_string(limits.page_size));
    CW_ASSIGN_OR_RETURN(Json::Value items, Page(client, c, auth, stop, what));
    if (!items.isArray())
      return JiraInternal("Jira answered " + std::string(what) + " with no list");
    if (items.empty()) return Status::Ok();
    for (const Json::Value& item : items) {
      CW_ASSIGN_OR_RETURN(bool more, visit(item));
      if (!more) return Status::Ok();
    }
    start += limits.page_size;
  }
  return JiraInternal(std::string(what) + " did not end after " + std::to_string(limits.max_pages) +
                      " pages");
}

Status ForEachPageBeanItem(RestClient& client, const RestCall& call, Authenticator* auth,
                           const PageLimits& limits, std::stop_token stop, std::string_view what,
                           const ItemVisitor& visit) {
  std::int64_t start = 0;
  for (int page = 0; page < limits.max_pages; ++page) {
    RestCall c = PageCall(call);
    c.query.emplace_back("startAt", std::to_string(start));
    c.query.emplace_back("maxResults", std::to_string(limits.page_size));
    CW_ASSIGN_OR_RETURN(Json::Value bean, Page(client, c, auth, stop, what));
    if (!bean.isObject() || !bean["values"].isArray()) {
      return JiraInternal("Jira answered " + std::string(what) + " with no page of values");
    }
    for (const Json::Value& item : bean["values"]) {
      CW_ASSIGN_OR_RETURN(bool more, visit(item));
      if (!more) return Status::Ok();
    }
    const bool last = !bean["isLast"].isBool() || bean["isLast"].asBool();
    if (last || bean["values"].empty()) return Status::Ok();
    start += static_cast<std::int64_t>(bean["values"].size());
  }
  return JiraInternal(std::string(what) + " did not end after " + std::to_string(limits.max_pages) +
                      " pages");
}

Status ForEachCursorItem(
    RestClient& client, const RestCall& call, Authenticator* auth, std::string_view items_key,
    std::string_view cursor_param,
    const std::function<std::optional<std::string>(const Json::Value& page)>& next_cursor,
    int max_pages, std::stop_token stop, std::string_view what, const ItemVisitor& visit) {
  std::optional<std::string> cursor;
  for (int page = 0; page < max_pages; ++page) {
    RestCall c = PageCall(call);
    if (cursor) c.query.emplace_back(std::string(cursor_param), *cursor);
    CW_ASSIGN_OR_RETURN(Json::Value answer, Page(client, c, auth, stop, what));
    // Checked before the member is read: jsoncpp throws for a member of an array or a string.
    if (!answer.isObject() || !answer[std::string(items_key)].isArray()) {
      return JiraInternal("Jira answered " + std::string(what) + " with no list");
    }
    const Json::Value& items = answer[std::string(items_key)];
    for (const Json::Value& item : items) {
      CW_ASSIGN_OR_RETURN(bool more, visit(item));
      if (!more) return Status::Ok();
    }
    std::optional<std::string> next = next_cursor(answer);
    if (!next || next->empty() || (cursor && *next == *cursor)) return Status::Ok();
    cursor = std::move(next);
  }
  return JiraInternal(std::string(what) + " did not end after " + std::to_string(max_pages) +
                      " pages");
}

std::optional<std::string> QueryParameter(std::string_view url, std::string_view name) {
  const std::size_t q = url.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view query = url.substr(q + 1);
  query = query.substr(0, query.find('#'));
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    const std::size_t eq = pair.find('=');
    if (pair.substr(0, eq) == name && eq != std::string_view::npos) {
      std::string out;
      const std::string_view v = pair.substr(eq + 1);
      for (std::size_t i = 0; i < v.size(); ++i) {
        if (v[i] == '%') {
          if (i + 2 >= v.size()) return std::nullopt;
          const int hi = HexDigit(v[i + 1]);
          const int lo = HexDigit(v[i + 2]);
          if (hi < 0 || lo < 0) return std::nullopt;
          out += static_cast<char>(hi * 16 + lo);
          i += 2;
        } else {
          out += v[i] == '+' ? ' ' : v[i];
        }
      }
      return out;
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

}  // namespace cakewalk::jira
