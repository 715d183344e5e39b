#include "jira/http.h"

#include <cctype>

namespace cakewalk::http {

std::optional<std::string> Response::Header(std::string_view name) const {
  for (const auto& h : headers) {
    if (h.name.size() != name.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < name.size() && same; ++i) {
      same = std::tolower(static_cast<unsigned char>(h.name[i])) ==
             std::tolower(static_cast<unsigned char>(name[i]));
    }
    if (same) return h.value;
  }
  return std::nullopt;
}

}  // namespace cakewalk::http
