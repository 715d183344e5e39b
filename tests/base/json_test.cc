#include "base/json.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace cakewalk {
namespace {

TEST(JsonTest, StrictParsing) {
  EXPECT_TRUE(ParseJson(R"({"a": [1, 2]})", "doc").ok());
  EXPECT_FALSE(ParseJson(R"({"a": 1, "a": 2})", "doc").ok());   // duplicate key
  EXPECT_FALSE(ParseJson(R"({"a": 1} trailing)", "doc").ok());  // trailing data
  EXPECT_FALSE(ParseJson("{\"a\": 1 // c\n}", "doc").ok());     // comment
  EXPECT_FALSE(ParseJson(std::string(100, '[') + std::string(100, ']'), "doc").ok());  // depth
  auto big = ParseJson(R"({"a": 1})", "doc", 4);
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("larger than 4 bytes"), std::string::npos);
}

TEST(JsonTest, CanonicalWriterSortsKeysWithoutSpaces) {
  auto v = ParseJson(R"({"b": 1, "a": {"d": "é", "c": null}})", "doc");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(WriteJson(*v), R"({"a":{"c":null,"d":"é"},"b":1})");
}

// The writer is reused per thread: consecutive and concurrent writes stay independent and
// identical to a freshly built writer's (floats, escapes, big documents, then small ones).
TEST(JsonTest, CanonicalWriterIsReusedSafely) {
  Json::Value big(Json::arrayValue);
  for (int i = 0; i < 20000; ++i) big.append("item-" + std::to_string(i));
  const std::string big_text = WriteJson(big);
  EXPECT_EQ(big_text.size(), WriteJson(big).size());
  Json::Value small(Json::objectValue);
  small["x"] = 0.1;
  small["q"] = "line\nbreak \"quoted\" \x01";
  small["n"] = Json::Value(Json::nullValue);
  const std::string expected =
      R"({"n":null,"q":"line\nbreak \"quoted\" \u0001","x":0.10000000000000001})";
  EXPECT_EQ(WriteJson(small), expected);
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 500; ++i) {
        if (WriteJson(small) != expected) ++bad;
        if (i % 100 == 0 && WriteJson(big) != big_text) ++bad;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST(JsonFieldsTest, ReportsPathOfFirstProblem) {
  auto v = ParseJson(R"({"url": 5, "n": 3})", "doc");
  JsonFields f(*v, "$.control_plane");
  std::string url = f.String("url", JsonFields::kRequired);
  EXPECT_EQ(f.Int("n", 1, 1, 10), 1);  // after an error, defaults are returned
  Status s = f.Finish();
  EXPECT_EQ(s.message(), "$.control_plane.url: expected a string, found an integer");
}

TEST(JsonFieldsTest, UnknownAndMissingKeys) {
  auto v = ParseJson(R"({"urll": "x"})", "doc");
  {
    JsonFields f(*v, "$");
    f.OptionalString("url");
    Status s = f.Finish();
    EXPECT_NE(s.message().find("$.urll: unknown key"), std::string::npos) << s.message();
  }
  {
    JsonFields f(*v, "$");
    f.String("url", JsonFields::kRequired);
    EXPECT_EQ(f.Finish().message(), "$.url: is required but missing");
  }
}

TEST(JsonFieldsTest, RangesArraysAndNulls) {
  auto v = ParseJson(R"({"n": 500, "list": ["a", 1], "e": null})", "doc");
  {
    JsonFields f(*v, "$");
    f.Int("n", 4, 1, 100);
    EXPECT_EQ(f.Finish().message().substr(0, 35), "$.n: must be between 1 and 100, fou");
  }
  {
    JsonFields f(*v, "$");
    f.StringArray("list");
    EXPECT_EQ(f.FinishAllowingUnknown().message(),
              "$.list[1]: expected a string, found an integer");
  }
  {
    JsonFields f(*v, "$");
    EXPECT_FALSE(f.NullableString("e").has_value());
    EXPECT_TRUE(f.FinishAllowingUnknown().ok());
  }
}

}  // namespace
}  // namespace cakewalk
