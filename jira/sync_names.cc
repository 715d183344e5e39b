#include "jira/sync_names.h"

#include <algorithm>

namespace cakewalk::jira {
namespace {

// Suffixes of names added since the last merge are searched one by one; past this many they are
// sorted into the index (a merge costs a pass over every suffix).
constexpr std::size_t kRecentLimit = 2048;

std::size_t SequenceLength(unsigned char b) {
  return b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xe ? 3 : 4;
}

}  // namespace

void GroupNameIndex::Add(std::string name, std::uint32_t tag) {
  const auto id = static_cast<std::uint32_t>(names_.size());
  for (std::size_t i = 0; i < name.size();) {
    const std::size_t len =
        std::min(SequenceLength(static_cast<unsigned char>(name[i])), name.size() - i);
    alphabet_.insert(name.substr(i, len));
    i += len;
  }
  for (std::size_t i = 0; i < name.size(); ++i) {
    recent_.push_back({id, static_cast<std::uint32_t>(i)});
  }
  // Every counted query this name contains gains one; the name's substrings no longer than the
  // longest counted query are all the candidates.
  const std::string_view text(name);
  const auto bump = [&](std::string_view part) {
    auto it = counted_.find(part);
    if (it == counted_.end() || it->second.last == id) return;
    ++it->second.count;
    it->second.last = id;
  };
  bump("");
  for (std::size_t len = 1; len <= std::min(longest_counted_, text.size()); ++len) {
    for (std::size_t at = 0; at + len <= text.size(); ++at) bump(text.substr(at, len));
  }
  names_.push_back(std::move(name));
  tags_.push_back(tag);
  if (recent_.size() > kRecentLimit) MergeRecent();
}

void GroupNameIndex::MergeRecent() {
  const auto less = [this](Suffix a, Suffix b) { return Text(a) < Text(b); };
  std::sort(recent_.begin(), recent_.end(), less);
  const std::size_t middle = sorted_.size();
  sorted_.insert(sorted_.end(), recent_.begin(), recent_.end());
  std::inplace_merge(sorted_.begin(), sorted_.begin() + static_cast<std::ptrdiff_t>(middle),
                     sorted_.end(), less);
  recent_.clear();
  recent_.shrink_to_fit();
}

std::vector<std::uint32_t> GroupNameIndex::Matches(std::string_view query) {
  std::vector<std::uint32_t> out;
  if (query.empty()) {
    out.resize(names_.size());
    for (std::uint32_t i = 0; i < out.size(); ++i) out[i] = i;
    return out;
  }
  auto it = std::lower_bound(sorted_.begin(), sorted_.end(), query,
                             [this](Suffix s, std::string_view q) { return Text(s) < q; });
  for (; it != sorted_.end() && Text(*it).starts_with(query); ++it) out.push_back(it->name);
  for (Suffix s : recent_) {
    if (Text(s).starts_with(query)) out.push_back(s.name);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::int64_t GroupNameIndex::Count(const std::string& query) {
  if (auto it = counted_.find(query); it != counted_.end()) return it->second.count;
  const std::vector<std::uint32_t> matches = Matches(query);
  Counted c;
  c.count = static_cast<std::int64_t>(matches.size());
  counted_.emplace(query, c);
  longest_counted_ = std::max(longest_counted_, query.size());
  return c.count;
}

void GroupNameIndex::ForEachMatch(std::string_view query,
                                  const std::function<void(std::uint32_t)>& fn) {
  for (std::uint32_t id : Matches(query)) fn(tags_[id]);
}

}  // namespace cakewalk::jira
