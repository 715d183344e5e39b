#include "jira/sync_names.h"

#include <algorithm>
#include <iterator>

namespace cakewalk::jira {
namespace {

// Suffixes of names added since the last merge are searched one by one; past this many they are
// sorted into the index (a merge costs a pass over every suffix).
constexpr std::size_t kRecentLimit = 2048;

std::size_t SequenceLength(unsigned char b) {
  return b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xe ? 3 : 4;
}

}  // namespace

void GroupNameIndex::Add(std::string_view name, std::uint32_t tag) {
  const auto id = static_cast<std::uint32_t>(starts_.size());
  const auto start = static_cast<std::uint32_t>(text_.size());
  for (std::size_t i = 0; i < name.size();) {
    const std::size_t len =
        std::min(SequenceLength(static_cast<unsigned char>(name[i])), name.size() - i);
    alphabet_.insert(std::string(name.substr(i, len)));
    i += len;
  }
  if (name.find('\0') == std::string_view::npos) {
    for (std::size_t i = 0; i < name.size(); ++i) {
      recent_.push_back(start + static_cast<std::uint32_t>(i));
    }
  } else {
    with_nul_.push_back(id);
  }
  // Every counted query this name contains gains one; the name's substrings no longer than the
  // longest counted query are all the candidates.
  const auto bump = [&](std::string_view part) {
    auto it = counted_.find(part);
    if (it == counted_.end() || it->second.last == id) return;
    ++it->second.count;
    it->second.last = id;
  };
  bump("");
  for (std::size_t len = 1; len <= std::min(longest_counted_, name.size()); ++len) {
    for (std::size_t at = 0; at + len <= name.size(); ++at) bump(name.substr(at, len));
  }
  text_.append(name);
  text_.push_back('\0');
  starts_.push_back(start);
  tags_.push_back(tag);
  if (recent_.size() > kRecentLimit) MergeRecent();
}

std::string_view GroupNameIndex::Name(std::uint32_t name) const {
  const std::size_t end = name + 1 < starts_.size() ? starts_[name + 1] : text_.size();
  return std::string_view(text_).substr(starts_[name], end - 1 - starts_[name]);
}

std::uint32_t GroupNameIndex::NameAt(std::uint32_t suffix) const {
  const auto it = std::upper_bound(starts_.begin(), starts_.end(), suffix);
  return static_cast<std::uint32_t>(it - starts_.begin() - 1);
}

void GroupNameIndex::MergeRecent() {
  const auto less = [this](std::uint32_t a, std::uint32_t b) { return Text(a) < Text(b); };
  std::sort(recent_.begin(), recent_.end(), less);
  // Into a vector of the exact size: the old one and the new one are all there is at once.
  std::vector<std::uint32_t> merged;
  merged.reserve(sorted_.size() + recent_.size());
  std::merge(sorted_.begin(), sorted_.end(), recent_.begin(), recent_.end(),
             std::back_inserter(merged), less);
  sorted_.swap(merged);
  recent_.clear();
  recent_.shrink_to_fit();
}

std::vector<std::uint32_t> GroupNameIndex::Matches(std::string_view query) {
  std::vector<std::uint32_t> out;
  if (query.empty()) {
    out.resize(starts_.size());
    for (std::uint32_t i = 0; i < out.size(); ++i) out[i] = i;
    return out;
  }
  auto it = std::lower_bound(sorted_.begin(), sorted_.end(), query,
                             [this](std::uint32_t s, std::string_view q) { return Text(s) < q; });
  for (; it != sorted_.end() && Text(*it).starts_with(query); ++it) out.push_back(NameAt(*it));
  for (std::uint32_t s : recent_) {
    if (Text(s).starts_with(query)) out.push_back(NameAt(s));
  }
  for (std::uint32_t id : with_nul_) {
    if (Name(id).find(query) != std::string_view::npos) out.push_back(id);
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
