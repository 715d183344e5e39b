// Jira's three ways of paging, as generic loops over a RestClient (used by the provisioning
// look-ups now and by access sync's enumeration):
//
// - StartAt pages of a bare JSON array (Cloud users/search and user/search, DC user/search):
//   pages may come back short because privacy filtering drops entries after the range was taken,
//   so the loop advances startAt by the page size it ASKED for and stops only on an empty page (or
//   at `limit` positions, for endpoints that cap how far one can page).
// - PageBeans {values, isLast, startAt, maxResults} (group/member, group/bulk): advance by the
//   values received, stop when isLast is true.
// - Cursors (DC user/list `nextCursor`, the organization API's `links.next`): the cursor VALUE is
//   taken from the answer and sent to the configured URL again; a URL in an answer is never
//   followed as such.
//
// The callback sees each item and may stop the loop early by returning false.
#pragma once

#include <json/json.h>

#include <functional>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>

#include "jira/rest.h"

namespace cakewalk::jira {

// Returns false to stop paging.
using ItemVisitor = std::function<Result<bool>(const Json::Value& item)>;

struct PageLimits {
  int page_size = 50;       // maxResults asked for
  std::int64_t limit = -1;  // startAt never reaches this (-1: no limit)
  int max_pages = 100000;   // a safety bound against servers that never end
};

// `call` is sent with startAt and maxResults appended to its query.
Status ForEachStartAtItem(RestClient& client, const RestCall& call, Authenticator* auth,
                          const PageLimits& limits, std::stop_token stop, std::string_view what,
                          const ItemVisitor& visit);

Status ForEachPageBeanItem(RestClient& client, const RestCall& call, Authenticator* auth,
                           const PageLimits& limits, std::stop_token stop, std::string_view what,
                           const ItemVisitor& visit);

// `items_key` names the array in each answer ("values", "data"); `next_cursor` reads the next
// cursor from an answer (nullopt: last page); the cursor goes back in `cursor_param`.
Status ForEachCursorItem(
    RestClient& client, const RestCall& call, Authenticator* auth, std::string_view items_key,
    std::string_view cursor_param,
    const std::function<std::optional<std::string>(const Json::Value& page)>& next_cursor,
    int max_pages, std::stop_token stop, std::string_view what, const ItemVisitor& visit);

// The value of query parameter `name` in a URL an answer carried (links.next), percent-decoded;
// nullopt when absent or malformed. Only the value is used, never the URL itself.
std::optional<std::string> QueryParameter(std::string_view url, std::string_view name);

}  // namespace cakewalk::jira
