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
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace cakewalk::jira {

// Names kept for the whole of a sync, copied into chunks that never move: the view Add returns
// stays valid for the arena's life, and a name costs its bytes without an allocation of its own.
class TextArena {
 public:
  std::string_view Add(std::string_view text);

 private:
  static constexpr std::size_t kChunk = 16 * 1024;  // a longer text gets a chunk of its own
  std::vector<std::unique_ptr<char[]>> chunks_;
  std::size_t room_ = 0;  // unused bytes at the end of the last chunk
  char* next_ = nullptr;
};

// Indexes into a table the caller keeps, found again by the key each stands for: open addressing
// with linear probing, 4 bytes a slot and at most half of them used, where a node-based set costs
// some 40 bytes an entry. `hash` and `equal` take an index or a key, like the transparent functors
// of the standard containers, and must agree on both. Indexes are never removed.
template <typename Hash, typename Equal>
class IndexSet {
 public:
  IndexSet(Hash hash, Equal equal) : hash_(std::move(hash)), equal_(std::move(equal)) {}

  // The index standing for `key`, when one was inserted.
  template <typename Key>
  std::optional<std::uint32_t> Find(const Key& key) const {
    if (slots_.empty()) return std::nullopt;
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = hash_(key) & mask;; i = (i + 1) & mask) {
      if (slots_[i] == kEmpty) return std::nullopt;
      if (equal_(slots_[i], key)) return slots_[i];
    }
  }

  // Adds an index (below UINT32_MAX, which marks an empty slot) whose key is not in the set yet.
  void Insert(std::uint32_t index) {
    if (2 * (size_ + 1) > slots_.size()) Grow();
    Place(index);
    ++size_;
  }

  std::size_t size() const { return size_; }

 private:
  static constexpr std::uint32_t kEmpty = UINT32_MAX;
  void Place(std::uint32_t index) {
    const std::size_t mask = slots_.size() - 1;
    std::size_t i = hash_(index) & mask;
    while (slots_[i] != kEmpty) i = (i + 1) & mask;
    slots_[i] = index;
  }
  void Grow() {
    std::vector<std::uint32_t> old = std::move(slots_);
    slots_.assign(old.empty() ? 16 : 2 * old.size(), kEmpty);
    for (std::uint32_t index : old) {
      if (index != kEmpty) Place(index);
    }
  }

  Hash hash_;
  Equal equal_;
  std::vector<std::uint32_t> slots_;  // a power of two of them, or none
  std::size_t size_ = 0;
};

// A set of strings in one buffer, each found through an IndexSet by its position there: about its
// length plus 9 bytes a string, where a hash set of std::string takes some 60. The group picker's
// discovery keeps every query it took up in one (about 20k for 10k groups).
class StringSet {
 public:
  StringSet() = default;
  StringSet(const StringSet&) = delete;  // its index's functors point at it
  StringSet& operator=(const StringSet&) = delete;

  bool Contains(std::string_view s) const { return index_.Find(s).has_value(); }
  // Adds `s`; false when it was there already.
  bool Insert(std::string_view s);
  std::size_t size() const { return index_.size(); }

 private:
  // Each string is its length (one byte, or 0xff and four more) and then its bytes.
  std::string_view At(std::uint32_t position) const;
  struct Keys {
    const StringSet* self;
    std::string_view Of(std::uint32_t position) const { return self->At(position); }
    std::string_view Of(std::string_view s) const { return s; }
  };
  struct Hash : Keys {
    template <typename Key>
    std::size_t operator()(const Key& key) const {
      return std::hash<std::string_view>{}(Of(key));
    }
  };
  struct Equal : Keys {
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      return Of(a) == Of(b);
    }
  };

  std::string text_;
  IndexSet<Hash, Equal> index_{Hash{{this}}, Equal{{this}}};
};

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
  // Every suffix of every name, by text. Held in malloc's memory and grown with realloc, which
  // moves a large block's pages (mremap) rather than copying them: a merge needs room for the
  // recent suffixes only, not a second copy of them all.
  struct Suffixes {
    struct Free {
      void operator()(std::uint32_t* p) const { std::free(p); }
    };
    std::unique_ptr<std::uint32_t[], Free> data;
    std::size_t size = 0;
    Suffixes() = default;
    Suffixes(Suffixes&& o) noexcept : data(std::move(o.data)), size(std::exchange(o.size, 0)) {}
    Suffixes& operator=(Suffixes&& o) noexcept {
      data = std::move(o.data);
      size = std::exchange(o.size, 0);
      return *this;
    }
  };
  Suffixes sorted_;
  std::vector<std::uint32_t> recent_;    // suffixes of names added since the last merge, unsorted
  std::vector<std::uint32_t> with_nul_;  // names containing a NUL
  std::unordered_map<std::string, Counted, Hash, std::equal_to<>> counted_;
  std::size_t longest_counted_ = 0;
  std::set<std::string> alphabet_;
};

}  // namespace cakewalk::jira
