#include "base/json.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "tests/support/jsoncpp_reference.h"

namespace cakewalk {
namespace {

TEST(JsonTest, StrictParsing) {
  EXPECT_TRUE(ParseJson(R"({"a": [1, 2]})", "doc").ok());
  EXPECT_FALSE(ParseJson(R"({"a": 1, "a": 2})", "doc").ok());   // duplicate key
  EXPECT_FALSE(ParseJson(R"({"a": 1} trailing)", "doc").ok());  // trailing data
  EXPECT_FALSE(ParseJson("{\"a\": 1 // c\n}", "doc").ok());     // comment
  // Whether a '/' is inside a string depends on the backslashes before each quote.
  EXPECT_TRUE(ParseJson(R"({"a": "b\"/c", "d": "/"})", "doc").ok());
  EXPECT_TRUE(ParseJson(R"({"a": "\\\"/", "b": "\\"})", "doc").ok());
  EXPECT_TRUE(ParseJson(R"(["", "/", "\\", "x\"/"])", "doc").ok());
  for (const char* commented : {R"({"a": "b\\" /**/})", R"({"a": "\\\\"/**/})",
                                R"(["x"//
])",
                                R"(/**/{})", R"({}/)"}) {
    auto c = ParseJson(commented, "doc");
    ASSERT_FALSE(c.ok()) << commented;
    EXPECT_NE(c.status().message().find("comments are not allowed"), std::string::npos)
        << commented << ": " << c.status().message();
  }
  EXPECT_FALSE(ParseJson(R"({"a": "unterminated\"/)", "doc").ok());
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

// The reader is reused per thread: a refused document (even one that made jsoncpp throw) leaves
// nothing behind for the next parse, on this thread or another.
TEST(JsonTest, ReaderIsReusedSafely) {
  for (int round = 0; round < 3; ++round) {
    auto deep = ParseJson(std::string(100, '[') + std::string(100, ']'), "deep doc");
    ASSERT_FALSE(deep.ok());
    auto dup = ParseJson(R"({"a": 1, "a": 2})", "dup doc");
    ASSERT_FALSE(dup.ok());
    EXPECT_NE(dup.status().message().find("dup doc"), std::string::npos);
    EXPECT_NE(deep.status().message().find("stackLimit"), std::string::npos);
    EXPECT_EQ(dup.status().message().find("stackLimit"), std::string::npos);
    auto good = ParseJson(R"({"a": [1, {"b": "c"}]})", "good doc");
    ASSERT_TRUE(good.ok()) << good.status().ToString();
    EXPECT_EQ(WriteJson(*good), R"({"a":[1,{"b":"c"}]})");
  }
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&bad, t] {
      for (int i = 0; i < 300; ++i) {
        const std::string text =
            "{\"t\": " + std::to_string(t) + ", \"i\": " + std::to_string(i) + "}";
        auto v = ParseJson(text, "doc");
        if (!v.ok() || (*v)["i"].asInt() != i || (*v)["t"].asInt() != t) ++bad;
        if (ParseJson("{\"x\": }", "broken").ok()) ++bad;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

using testing::JsoncppCanonical;

// A random JSON value: strings and names of any bytes (controls, quotes, invalid UTF-8, NUL),
// integers at their limits, doubles from random bits (NaN, infinities, subnormals), nesting,
// arrays with holes and static strings.
Json::Value RandomValue(std::mt19937_64& rng, int depth) {
  auto bytes = [&rng](std::size_t max) {
    std::string s(rng() % (max + 1), '\0');
    for (char& c : s) {
      const auto r = rng() % 8;
      c = static_cast<char>(r < 3 ? 'a' + rng() % 26 : r < 5 ? rng() % 0x20 : rng() % 256);
    }
    return s;
  };
  switch (rng() % (depth > 3 ? 7 : 9)) {
    case 0:
      return Json::Value();
    case 1:
      return Json::Value(static_cast<Json::Int64>(rng()));
    case 2:
      return Json::Value(static_cast<Json::UInt64>(rng()));
    case 3: {
      const std::uint64_t bits = rng();
      double d = 0;
      std::memcpy(&d, &bits, sizeof d);
      return Json::Value(
          rng() % 2 ? d : static_cast<double>(static_cast<int>(rng() % 2001) - 1000) / 8);
    }
    case 4:
      return Json::Value(rng() % 2 == 0);
    case 5:
      return Json::Value(bytes(24));
    case 6:
      return Json::Value(Json::StaticString(rng() % 2 ? "static" : ""));
    case 7: {
      Json::Value a(Json::arrayValue);
      const auto n = rng() % 6;
      for (std::uint64_t i = 0; i < n; ++i) {
        a[static_cast<Json::ArrayIndex>(rng() % 3 == 0 ? i + rng() % 3 : i)] =
            RandomValue(rng, depth + 1);
      }
      return a;
    }
    default: {
      Json::Value o(Json::objectValue);
      const auto n = rng() % 6;
      for (std::uint64_t i = 0; i < n; ++i) o[bytes(6)] = RandomValue(rng, depth + 1);
      return o;
    }
  }
}

// WriteJson writes its own output: it must stay jsoncpp's, byte for byte, on every kind of value.
TEST(JsonTest, CanonicalWriterMatchesJsoncppsWriter) {
  std::mt19937_64 rng(20261205);
  int compared = 0;
  for (int i = 0; i < 20000; ++i) {
    const Json::Value v = RandomValue(rng, 0);
    const std::string ours = WriteJson(v);
    const std::string theirs = JsoncppCanonical(v);
    ASSERT_EQ(ours, theirs) << "document " << i;
    ++compared;
  }
  EXPECT_EQ(compared, 20000);
  // The edges by name.
  Json::Value edges(Json::objectValue);
  edges["min"] = Json::Value(std::numeric_limits<Json::Int64>::min());
  edges["max"] = Json::Value(std::numeric_limits<Json::UInt64>::max());
  edges["nan"] = std::numeric_limits<double>::quiet_NaN();
  edges["inf"] = -std::numeric_limits<double>::infinity();
  edges["whole"] = 3.0;
  edges[std::string("n\0l", 3)] = std::string("\0\x7f\xff/\\\"", 6);
  EXPECT_EQ(WriteJson(edges), JsoncppCanonical(edges));
  EXPECT_EQ(WriteJson(edges),
            "{\"inf\":-1e+9999,\"max\":18446744073709551615,\"min\":-9223372036854775808,"
            "\"n\\u0000l\":\"\\u0000\x7f\xff/\\\\\\\"\",\"nan\":null,\"whole\":3.0}");
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
