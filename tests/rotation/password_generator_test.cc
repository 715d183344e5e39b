// The password generator (agent/password_generator.h) and Jira's password sentences
// (jira/password_change.h): exact uniformity of the index draw (no modulo bias), plans and their
// refusals, every class present, and a statistical sanity check over many passwords. The random
// bytes come from a deterministic generator (SHA-256 in counter mode), so the statistics are the
// same on every run: no flakiness, and still a real check of the selection.
#include <openssl/sha.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "agent/password_generator.h"

namespace cakewalk::testing {
namespace {

using agent::CharClass;
using agent::PasswordPlan;
using ::testing::HasSubstr;

// SHA-256(seed || counter) blocks: reproducible, statistically uniform bytes.
class DeterministicBytes {
 public:
  explicit DeterministicBytes(std::uint64_t seed) : seed_(seed) {}
  Result<SecretBytes> operator()(std::size_t n) {
    SecretBytes out = SecretBytes::Allocate(n);
    auto span = out.RevealMutable(SecretAccess::Grant());
    for (std::size_t i = 0; i < n; ++i) {
      if (pos_ == sizeof block_) Refill();
      span[i] = block_[pos_++];
    }
    return out;
  }

 private:
  void Refill() {
    std::uint8_t in[16];
    for (int i = 0; i < 8; ++i) in[i] = static_cast<std::uint8_t>(seed_ >> (8 * i));
    for (int i = 0; i < 8; ++i) in[8 + i] = static_cast<std::uint8_t>(counter_ >> (8 * i));
    ++counter_;
    SHA256(in, sizeof in, block_);
    pos_ = 0;
  }
  std::uint64_t seed_;
  std::uint64_t counter_ = 0;
  std::uint8_t block_[32] = {};
  std::size_t pos_ = sizeof block_;
};

agent::RandomBytes Deterministic(std::uint64_t seed) {
  auto gen = std::make_shared<DeterministicBytes>(seed);
  return [gen](std::size_t n) { return (*gen)(n); };
}

// Every byte value in turn, again and again.
agent::RandomBytes Cycling() {
  auto next = std::make_shared<std::uint32_t>(0);
  return [next](std::size_t n) -> Result<SecretBytes> {
    SecretBytes out = SecretBytes::Allocate(n);
    for (std::uint8_t& b : out.RevealMutable(SecretAccess::Grant())) {
      b = static_cast<std::uint8_t>((*next)++ & 0xff);
    }
    return out;
  };
}

TEST(UniformIndexTest, EveryIndexEquallyOftenOverWholeByteCycles) {
  // Over whole cycles of the 256 byte values, rejection sampling yields every index exactly
  // floor(256 / n) times per cycle. Plain `byte % n` would favour the first 256 mod n indices
  // (for n = 94: indices 0-67 three times, the rest twice).
  for (std::size_t n : {2u, 10u, 26u, 62u, 94u, 255u, 256u}) {
    SCOPED_TRACE(n);
    agent::UniformIndex pick(Cycling());
    std::map<std::size_t, int> counts;
    const std::size_t per_cycle = 256 / n;
    const int cycles = 5;
    for (std::size_t i = 0; i < per_cycle * n * cycles; ++i) {
      auto v = pick.Next(n);
      ASSERT_TRUE(v.ok());
      ASSERT_LT(*v, n);
      ++counts[*v];
    }
    ASSERT_EQ(counts.size(), n);
    for (const auto& [index, count] : counts) {
      EXPECT_EQ(count, static_cast<int>(per_cycle) * cycles) << "index " << index;
    }
    // Rejected bytes were consumed, not folded in.
    // (Each cycle's last 256 mod n bytes are skipped; the draw ends at the last accepted byte.)
    EXPECT_EQ(pick.bytes_used(), 256u * (cycles - 1) + (256 - 256 % n));
  }
  agent::UniformIndex pick(Cycling());
  EXPECT_FALSE(pick.Next(0).ok());
  EXPECT_FALSE(pick.Next(257).ok());
}

TEST(PasswordPlanTest, DefaultsAndJiraRules) {
  agent::PasswordPolicy policy;  // 32 characters, every class
  auto plan = agent::PlanPassword(policy, nullptr, "p");
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->length, 32u);
  EXPECT_EQ(plan->minimum, (std::array<std::size_t, 4>{1, 1, 1, 1}));

  jira::PasswordRules rules = jira::ParsePasswordRules(
      {"The password must contain at least 12 characters.",
       "The password must contain at least 2 uppercase characters.",
       "The password must contain at least 3 digits.",
       "The password must not be longer than 64 characters.",
       "The new password must be different from the current password.",
       "The password must not be similar to the user's name or email address.",
       "The password must not contain more than 2 repeated characters in a row."});
  EXPECT_EQ(rules.min_length, 12u);
  EXPECT_EQ(rules.min_upper, 2u);
  EXPECT_EQ(rules.min_digits, 3u);
  EXPECT_EQ(rules.max_length, 64u);
  EXPECT_EQ(rules.met_by_random.size(), 2u);
  ASSERT_EQ(rules.unrecognised.size(), 1u);
  EXPECT_THAT(rules.unrecognised[0], HasSubstr("repeated"));
  plan = agent::PlanPassword(policy, &rules, "p");
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->minimum, (std::array<std::size_t, 4>{1, 2, 3, 1}));
}

TEST(PasswordPlanTest, RefusalsNameTheSettingToChange) {
  const std::string where = "connections[jira-prod].password_policy";
  agent::PasswordPolicy policy;
  jira::PasswordRules rules;
  rules.min_length = 40;
  auto r = agent::PlanPassword(policy, &rules, where);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr(where + ".length is 32: raise it"));

  rules = {};
  rules.max_length = 16;
  r = agent::PlanPassword(policy, &rules, where);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("lower it"));

  rules = {};
  rules.min_symbols = 1;
  policy.symbols = false;
  r = agent::PlanPassword(policy, &rules, where);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr(where + ".symbols is false: enable it"));

  policy = {};
  policy.length = 12;
  rules = {};
  rules.min_digits = 6;
  rules.min_upper = 6;
  r = agent::PlanPassword(policy, &rules, where);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("add up to 14"));

  policy = {};
  policy.lower = policy.upper = policy.digits = policy.symbols = false;
  EXPECT_FALSE(agent::PlanPassword(policy, nullptr, where).ok());
}

std::size_t ClassIndex(char ch) {
  for (std::size_t c = 0; c < agent::kCharClasses; ++c) {
    if (agent::CharClassAlphabet(static_cast<CharClass>(c)).find(ch) != std::string_view::npos) {
      return c;
    }
  }
  return agent::kCharClasses;
}

TEST(PasswordGeneratorTest, EveryPasswordHasItsLengthAndEveryRequiredClass) {
  for (const auto& [length, lower, upper, digits, symbols] :
       std::vector<std::tuple<int, bool, bool, bool, bool>>{{32, true, true, true, true},
                                                            {12, true, true, true, true},
                                                            {20, true, true, true, false},
                                                            {16, false, false, true, false},
                                                            {128, true, false, false, true}}) {
    agent::PasswordPolicy policy;
    policy.length = length;
    policy.lower = lower;
    policy.upper = upper;
    policy.digits = digits;
    policy.symbols = symbols;
    auto plan = agent::PlanPassword(policy, nullptr, "p");
    ASSERT_TRUE(plan.ok());
    auto random = Deterministic(static_cast<std::uint64_t>(length) * 31 + (symbols ? 1 : 0));
    std::set<std::string> seen;
    for (int i = 0; i < 300; ++i) {
      auto p = agent::GeneratePassword(*plan, random);
      ASSERT_TRUE(p.ok());
      const std::string s(p->RevealString(SecretAccess::Grant()));
      ASSERT_EQ(s.size(), static_cast<std::size_t>(length));
      std::array<int, agent::kCharClasses> counts{};
      for (char ch : s) {
        const std::size_t c = ClassIndex(ch);
        ASSERT_LT(c, agent::kCharClasses) << "character outside every class";
        ASSERT_TRUE(plan->enabled[c]) << "a disabled class appeared: " << s;
        ++counts[c];
      }
      for (std::size_t c = 0; c < agent::kCharClasses; ++c) {
        if (plan->enabled[c]) {
          EXPECT_GE(counts[c], 1) << s;
        }
      }
      seen.insert(s);
    }
    EXPECT_EQ(seen.size(), 300u);  // no repeats
  }
}

TEST(PasswordGeneratorTest, CharactersAreUniformWithinEachClass) {
  // 4000 default passwords = 128000 characters. Within each class every character must be about
  // equally frequent. The chi-square statistic of a fair draw has mean df and standard deviation
  // sqrt(2 df); the bound below is df + 10 standard deviations (generous), yet a modulo-biased
  // draw (bytes folded with % 94) exceeds it many times over.
  agent::PasswordPolicy policy;
  auto plan = agent::PlanPassword(policy, nullptr, "p");
  ASSERT_TRUE(plan.ok());
  auto random = Deterministic(20261204);
  std::map<char, double> counts;
  for (int i = 0; i < 4000; ++i) {
    auto p = agent::GeneratePassword(*plan, random);
    ASSERT_TRUE(p.ok());
    for (char ch : p->RevealString(SecretAccess::Grant())) counts[ch] += 1;
  }
  auto chi_square = [&](std::string_view alphabet) {
    double total = 0;
    for (char ch : alphabet) total += counts[ch];
    const double expected = total / static_cast<double>(alphabet.size());
    double chi = 0;
    for (char ch : alphabet) chi += (counts[ch] - expected) * (counts[ch] - expected) / expected;
    return chi;
  };
  for (std::size_t c = 0; c < agent::kCharClasses; ++c) {
    const std::string_view alphabet = agent::CharClassAlphabet(static_cast<CharClass>(c));
    const double df = static_cast<double>(alphabet.size() - 1);
    EXPECT_LT(chi_square(alphabet), df + 10 * std::sqrt(2 * df)) << alphabet;
  }

  // The same statistic for the biased draw, to show the bound has teeth.
  std::map<char, double> biased;
  auto bytes = Deterministic(7);
  std::string all;
  for (std::size_t c = 0; c < agent::kCharClasses; ++c) {
    all += agent::CharClassAlphabet(static_cast<CharClass>(c));
  }
  auto block = bytes(128000);
  ASSERT_TRUE(block.ok());
  for (std::uint8_t b : block->Reveal(SecretAccess::Grant())) biased[all[b % all.size()]] += 1;
  double total = 0;
  for (char ch : std::string_view(all)) total += biased[ch];
  const double expected = total / static_cast<double>(all.size());
  double chi = 0;
  for (char ch : std::string_view(all)) {
    chi += (biased[ch] - expected) * (biased[ch] - expected) / expected;
  }
  const double df = static_cast<double>(all.size() - 1);
  EXPECT_GT(chi, 10 * (df + 10 * std::sqrt(2 * df)));
}

TEST(PasswordGeneratorTest, TightRulesStillGetEveryRequiredCharacter) {
  // Nine digits out of twelve: whole draws would almost never meet it, so the generator places
  // the required characters and shuffles.
  agent::PasswordPolicy policy;
  policy.length = 12;
  jira::PasswordRules rules;
  rules.min_digits = 9;
  auto plan = agent::PlanPassword(policy, &rules, "p");
  ASSERT_TRUE(plan.ok());
  auto random = Deterministic(99);
  for (int i = 0; i < 20; ++i) {
    auto p = agent::GeneratePassword(*plan, random);
    ASSERT_TRUE(p.ok());
    const std::string s(p->RevealString(SecretAccess::Grant()));
    std::array<int, agent::kCharClasses> counts{};
    for (char ch : s) ++counts[ClassIndex(ch)];
    EXPECT_GE(counts[2], 9) << s;
    EXPECT_GE(counts[0], 1) << s;
    EXPECT_GE(counts[1], 1) << s;
    EXPECT_GE(counts[3], 1) << s;
  }
}

TEST(PasswordGeneratorTest, ARandomSourceFailureIsReported) {
  agent::PasswordPolicy policy;
  auto plan = agent::PlanPassword(policy, nullptr, "p");
  ASSERT_TRUE(plan.ok());
  auto failing = [](std::size_t) -> Result<SecretBytes> { return Unavailable("token gone"); };
  auto p = agent::GeneratePassword(*plan, failing);
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("token gone"));
}

}  // namespace
}  // namespace cakewalk::testing
