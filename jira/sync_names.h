// The group names the Data Center group picker has shown so far, indexed for the picker's
// discovery (jira/access_sync.cc): how many names contain a query, which ones, and the characters
// they use, each at about the cost of the query's own matches instead of a scan of every name.
//
// Names and queries are compared as given (the caller folds ASCII case first). A name is counted
// once per query however often it contains it. Memory: the names' text, one 4-byte position per
// character of them, and one entry per counted query.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace cakewalk::jira {

class GroupNameIndex {
 public:
  // Adds a name not added before; `tag` is what ForEachMatch hands back for it.
  void Add(std::string_view name, std::uint32_t tag);

  // How many names contain `query` ("" counts every name). A query counted once is kept and its
  // count follows every later Add, so asking again costs one lookup.
  std::int64_t Count(const std::string& query);

  // Calls fn(tag) once for each name containing `query`, in the names' order of addition.
  void ForEachMatch(std::string_view query, const std::function<void(std::uint32_t)>& fn);

  // The characters (UTF-8 sequences) of every name.
  const std::set<std::string>& alphabet() const { return alphabet_; }
  std::size_t size() const { return starts_.size(); }

 private:
  // A suffix is its position in text_, which holds every name followed by a NUL: its text runs to
  // that NUL. Names that contain a NUL themselves are left out of the suffixes and scanned.
  std::string_view Text(std::uint32_t suffix) const { return text_.data() + suffix; }
  std::string_view Name(std::uint32_t name) const;
  std::uint32_t NameAt(std::uint32_t suffix) const;  // the name a suffix belongs to
  // The names containing `query`, each once, ascending.
  std::vector<std::uint32_t> Matches(std::string_view query);
  void MergeRecent();

  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Counted {
    std::int64_t count = 0;
    std::uint32_t last = UINT32_MAX;  // the last name counted (a name counts once per query)
  };

  std::string text_;
  std::vector<std::uint32_t> starts_;  // each name's position in text_
  std::vector<std::uint32_t> tags_;
  std::vector<std::uint32_t> sorted_;    // every suffix of every name, by text
  std::vector<std::uint32_t> recent_;    // suffixes of names added since the last merge, unsorted
  std::vector<std::uint32_t> with_nul_;  // names containing a NUL
  std::unordered_map<std::string, Counted, Hash, std::equal_to<>> counted_;
  std::size_t longest_counted_ = 0;
  std::set<std::string> alphabet_;
};

}  // namespace cakewalk::jira
