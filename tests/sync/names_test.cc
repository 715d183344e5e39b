// The group picker's name index (jira/sync_names.h) against a scan of every name.
#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "jira/sync_names.h"

namespace cakewalk::jira {
namespace {

std::int64_t Scan(const std::vector<std::string>& names, const std::string& q) {
  std::int64_t n = 0;
  for (const auto& name : names) n += name.find(q) != std::string::npos;
  return n;
}

// Every view the arena hands out still reads its text after many more were added: across chunks,
// around texts longer than a chunk, and for the empty text.
TEST(TextArenaTest, ViewsStayValidAsTheArenaGrows) {
  TextArena arena;
  std::vector<std::string> texts;
  std::vector<std::string_view> views;
  for (int i = 0; i < 5000; ++i) {
    std::string t =
        "group-" + std::to_string(i) + std::string(static_cast<std::size_t>(i % 40), 'x');
    if (i % 997 == 1) {
      t = std::string(40000 + static_cast<std::size_t>(i), static_cast<char>('a' + i % 26));
    }
    if (i % 1013 == 0) t.clear();
    texts.push_back(t);
    views.push_back(arena.Add(texts.back()));
    ASSERT_NE(views.back().data(), texts.back().data());
  }
  for (std::size_t i = 0; i < texts.size(); ++i) ASSERT_EQ(views[i], texts[i]) << i;
}

struct TestKeys {
  const std::vector<std::string>* keys;
  std::string_view Of(std::uint32_t i) const { return (*keys)[i]; }
  std::string_view Of(std::string_view k) const { return k; }
};
struct FewBuckets : TestKeys {
  template <typename K>
  std::size_t operator()(const K& k) const {
    return Of(k).size() % 4;
  }
};
struct SameKey : TestKeys {
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    return Of(a) == Of(b);
  }
};

// The set finds each index by its key and nothing else, through collisions (a hash that puts every
// key in one of four buckets) and growth; keys never inserted are not found.
TEST(IndexSetTest, FindsEveryIndexByItsKeyThroughCollisionsAndGrowth) {
  std::vector<std::string> keys;
  IndexSet<FewBuckets, SameKey> set(FewBuckets{{&keys}}, SameKey{{&keys}});
  EXPECT_FALSE(set.Find(std::string_view("a")));
  for (std::uint32_t i = 0; i < 700; ++i) {
    keys.push_back("k" + std::to_string(i * 7));
    set.Insert(i);
  }
  EXPECT_EQ(set.size(), 700u);
  for (std::uint32_t i = 0; i < 700; ++i) {
    ASSERT_EQ(set.Find(std::string_view(keys[i])), std::optional<std::uint32_t>(i)) << keys[i];
    ASSERT_FALSE(set.Find(std::string_view("k" + std::to_string(i * 7 + 1)))) << i;
  }
}

// Each string is found by its exact bytes (not a prefix of it, not a longer one), "" included,
// strings longer than a one-byte length included, and inserted once.
TEST(StringSetTest, ContainsExactlyWhatWasInserted) {
  StringSet set;
  std::set<std::string> want;
  std::mt19937 rng(7);
  EXPECT_FALSE(set.Contains(""));
  for (int i = 0; i < 5000; ++i) {
    std::string q;
    const int len = static_cast<int>(rng() % 5);
    for (int k = 0; k < len; ++k) q += static_cast<char>('a' + rng() % 3);
    if (i % 500 == 0) q = std::string(250 + static_cast<std::size_t>(i / 100), 'a');
    ASSERT_EQ(set.Contains(q), want.count(q) == 1) << q;
    ASSERT_EQ(set.Insert(q), want.insert(q).second) << q;
    ASSERT_TRUE(set.Contains(q)) << q;
  }
  EXPECT_EQ(set.size(), want.size());
  for (const std::string& q : want) EXPECT_TRUE(set.Contains(q)) << q;
  EXPECT_FALSE(set.Contains("aaaaa"));
  EXPECT_FALSE(set.Contains(std::string(251, 'a')));
}

// Names sharing prefixes and repeating characters ("aaa" contains "aa" twice: counted once),
// with a two-byte character; queries counted early follow the names added after them, queries
// counted late are computed from the index; both across several merges of the suffixes.
TEST(GroupNameIndexTest, CountsEqualAScanOfEveryName) {
  std::mt19937 rng(42);
  const std::vector<std::string> pieces = {"a", "b", "aa", "team-", "-", "1", "\xc3\xa9"};
  std::vector<std::string> names;
  std::set<std::string> seen;
  GroupNameIndex index;
  std::vector<std::string> queries = {"", "a", "aa", "aaa", "team-", "m-a", "\xc3\xa9", "-1", "zz"};
  for (const auto& q : queries) EXPECT_EQ(index.Count(q), 0) << q;
  std::set<std::string> alphabet;
  for (int round = 0; round < 1500; ++round) {
    std::string name;
    const int parts = 1 + static_cast<int>(rng() % 6);
    for (int k = 0; k < parts; ++k) name += pieces[rng() % pieces.size()];
    if (!seen.insert(name).second) continue;
    index.Add(name, static_cast<std::uint32_t>(names.size()) + 100);
    names.push_back(name);
    if (round % 97 == 0) {
      // A query taken from a name (a substring that exists) joins the counted ones.
      const std::string& from = names[rng() % names.size()];
      const std::size_t at = rng() % from.size();
      queries.push_back(from.substr(at, 1 + rng() % 4));
    }
    if (round % 50 == 0) {
      for (const auto& q : queries) ASSERT_EQ(index.Count(q), Scan(names, q)) << q;
    }
  }
  ASSERT_GT(names.size(), 800u);  // well past the suffixes searched one by one
  for (const auto& q : queries) EXPECT_EQ(index.Count(q), Scan(names, q)) << q;
  for (const std::string q : {"b", "ab", "a-", "1a", "team-team-"}) {
    EXPECT_EQ(index.Count(q), Scan(names, q)) << q;
    std::vector<std::uint32_t> tags;
    index.ForEachMatch(q, [&](std::uint32_t t) { tags.push_back(t); });
    std::vector<std::uint32_t> want;
    for (std::uint32_t i = 0; i < names.size(); ++i) {
      if (names[i].find(q) != std::string::npos) want.push_back(i + 100);
    }
    EXPECT_EQ(tags, want) << q;
  }
  EXPECT_EQ(index.size(), names.size());
  EXPECT_EQ(index.alphabet(),
            (std::set<std::string>{"a", "b", "t", "e", "m", "-", "1", "\xc3\xa9"}));
}

// A name may hold a NUL (the index ends each suffix at one): such names are still found by every
// query they contain, across merges, next to names that share their parts.
TEST(GroupNameIndexTest, NamesWithANulCharacterAreMatchedWhole) {
  using namespace std::string_literals;
  std::vector<std::string> names = {"ab\0cd"s, "cd"s, "\0"s, "abcd"s};
  for (int i = 0; i < 600; ++i) names.push_back("team-" + std::to_string(i));  // merges
  names.push_back("x\0team-1"s);
  GroupNameIndex index;
  const std::vector<std::string> early = {"\0"s, "b\0c"s, "cd"s};
  for (const auto& q : early) EXPECT_EQ(index.Count(q), 0);
  for (std::uint32_t i = 0; i < names.size(); ++i) index.Add(names[i], i);
  for (const std::string& q : {"\0"s, "b\0c"s, "cd"s, "ab"s, "abcd"s, "team-1"s, "x\0"s, ""s}) {
    EXPECT_EQ(index.Count(q), Scan(names, q)) << q.size();
    std::vector<std::uint32_t> tags;
    index.ForEachMatch(q, [&](std::uint32_t t) { tags.push_back(t); });
    std::vector<std::uint32_t> want;
    for (std::uint32_t i = 0; i < names.size(); ++i) {
      if (names[i].find(q) != std::string::npos) want.push_back(i);
    }
    EXPECT_EQ(tags, want) << q.size();
  }
  EXPECT_EQ(index.Count("b\0c"s), 1);
  EXPECT_EQ(index.Count("team-1"s), Scan(names, "team-1"));
  EXPECT_EQ(index.alphabet().count("\0"s), 1u);
}

}  // namespace
}  // namespace cakewalk::jira
