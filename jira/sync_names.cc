#include "jira/sync_names.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <new>
#include <stdexcept>

namespace cakewalk::jira {
namespace {

// Suffixes of names added since the last merge are searched one by one; past this many they are
// sorted into the index (a merge costs a pass over every suffix).
constexpr std::size_t kRecentLimit = 2048;

std::size_t SequenceLength(unsigned char b) {
  return b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xe ? 3 : 4;
}

}  // namespace

std::string_view TextArena::Add(std::string_view text) {
  if (text.empty()) return {};
  if (text.size() > kChunk) {
    // Its own chunk; the chunk being filled (next_, room_) goes on.
    chunks_.push_back(std::make_unique_for_overwrite<char[]>(text.size()));
    std::memcpy(chunks_.back().get(), text.data(), text.size());
    return {chunks_.back().get(), text.size()};
  }
  if (text.size() > room_) {
    chunks_.push_back(std::make_unique_for_overwrite<char[]>(kChunk));
    next_ = chunks_.back().get();
    room_ = kChunk;
  }
  char* at = next_;
  std::memcpy(at, text.data(), text.size());
  next_ += text.size();
  room_ -= text.size();
  return {at, text.size()};
}

std::string_view StringSet::At(std::uint32_t position) const {
  std::size_t length = static_cast<unsigned char>(text_[position]);
  std::size_t at = position + 1;
  if (length == 0xff) {
    std::uint32_t long_length = 0;
    std::memcpy(&long_length, text_.data() + at, sizeof long_length);
    length = long_length;
    at += sizeof long_length;
  }
  return std::string_view(text_).substr(at, length);
}

bool StringSet::Insert(std::string_view s) {
  if (Contains(s)) return false;
  // Positions are 4 bytes; a string takes at most 5 bytes of length before its own.
  if (s.size() > UINT32_MAX - 5 || text_.size() > UINT32_MAX - 5 - s.size()) {
    throw std::length_error("StringSet holds at most 4 GiB");
  }
  const auto position = static_cast<std::uint32_t>(text_.size());
  if (s.size() < 0xff) {
    text_.push_back(static_cast<char>(s.size()));
  } else {
    const auto long_length = static_cast<std::uint32_t>(s.size());
    text_.push_back(static_cast<char>(0xff));
    text_.append(reinterpret_cast<const char*>(&long_length), sizeof long_length);
  }
  text_.append(s);
  index_.Insert(position);
  return true;
}

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
  const std::size_t old_size = sorted_.size;
  const std::size_t size = old_size + recent_.size();
  void* grown = std::realloc(sorted_.data.get(), size * sizeof(std::uint32_t));
  if (grown == nullptr) throw std::bad_alloc();
  (void)sorted_.data.release();
  sorted_.data.reset(static_cast<std::uint32_t*>(grown));
  // Merged from the back into the room realloc added: the largest of both goes last.
  std::uint32_t* const sorted = sorted_.data.get();
  std::size_t i = old_size, j = recent_.size(), out = size;
  while (j > 0) {
    if (i > 0 && less(recent_[j - 1], sorted[i - 1])) {
      sorted[--out] = sorted[--i];
    } else {
      sorted[--out] = recent_[--j];
    }
  }
  sorted_.size = size;
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
  const std::uint32_t* const end = sorted_.data.get() + sorted_.size;
  const std::uint32_t* it =
      std::lower_bound(static_cast<const std::uint32_t*>(sorted_.data.get()), end, query,
                       [this](std::uint32_t s, std::string_view q) { return Text(s) < q; });
  for (; it != end && Text(*it).starts_with(query); ++it) out.push_back(NameAt(*it));
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
