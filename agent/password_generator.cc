#include "agent/password_generator.h"

#include <algorithm>

namespace cakewalk::agent {
namespace {

constexpr std::string_view kLower = "abcdefghijklmnopqrstuvwxyz";
constexpr std::string_view kUpper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
constexpr std::string_view kDigits = "0123456789";
constexpr std::string_view kSymbols = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
constexpr std::array<std::string_view, kCharClasses> kClassNames = {"lower", "upper", "digits",
                                                                    "symbols"};
constexpr std::array<std::string_view, kCharClasses> kClassWords = {
    "lower-case letter", "upper-case letter", "digit", "special character"};
constexpr int kWholeDraws = 1000;
constexpr std::size_t kRefill = 256;

std::size_t ClassOf(char ch) {
  if (ch >= 'a' && ch <= 'z') return 0;
  if (ch >= 'A' && ch <= 'Z') return 1;
  if (ch >= '0' && ch <= '9') return 2;
  return 3;
}

}  // namespace

std::string_view CharClassAlphabet(CharClass c) noexcept {
  switch (c) {
    case CharClass::kLower:
      return kLower;
    case CharClass::kUpper:
      return kUpper;
    case CharClass::kDigit:
      return kDigits;
    case CharClass::kSymbol:
      return kSymbols;
  }
  return kLower;
}

Result<PasswordPlan> PlanPassword(const PasswordPolicy& policy, const jira::PasswordRules* rules,
                                  const std::string& where) {
  PasswordPlan plan;
  plan.length = static_cast<std::size_t>(policy.length);
  plan.enabled = {policy.lower, policy.upper, policy.digits, policy.symbols};
  for (std::size_t c = 0; c < kCharClasses; ++c) plan.minimum[c] = plan.enabled[c] ? 1 : 0;
  if (std::none_of(plan.enabled.begin(), plan.enabled.end(), [](bool b) { return b; })) {
    return InvalidArgument(where + " enables no character class");
  }
  if (rules != nullptr) {
    const std::string jira = "Jira's password policy";
    if (plan.length < rules->min_length) {
      return FailedPrecondition(jira + " asks for at least " + std::to_string(rules->min_length) +
                                " characters, but " + where + ".length is " +
                                std::to_string(plan.length) + ": raise it");
    }
    if (rules->max_length && plan.length > *rules->max_length) {
      return FailedPrecondition(jira + " allows at most " + std::to_string(*rules->max_length) +
                                " characters, but " + where + ".length is " +
                                std::to_string(plan.length) + ": lower it");
    }
    const std::array<std::size_t, kCharClasses> jira_min = {rules->min_lower, rules->min_upper,
                                                            rules->min_digits, rules->min_symbols};
    for (std::size_t c = 0; c < kCharClasses; ++c) {
      if (jira_min[c] == 0) continue;
      if (!plan.enabled[c]) {
        return FailedPrecondition(jira + " requires at least " + std::to_string(jira_min[c]) + " " +
                                  std::string(kClassWords[c]) + "(s), but " + where + "." +
                                  std::string(kClassNames[c]) + " is false: enable it");
      }
      plan.minimum[c] = std::max(plan.minimum[c], jira_min[c]);
    }
    if (rules->min_letters > 0) {
      if (!plan.enabled[0] && !plan.enabled[1]) {
        return FailedPrecondition(jira + " requires letters, but " + where +
                                  " enables neither lower nor upper: enable one");
      }
      const std::size_t letters = plan.minimum[0] + plan.minimum[1];
      if (letters < rules->min_letters) {
        // Ask the extra letters from the first enabled case.
        plan.minimum[plan.enabled[0] ? 0 : 1] += rules->min_letters - letters;
      }
    }
  }
  std::size_t required = 0;
  for (std::size_t m : plan.minimum) required += m;
  if (required > plan.length) {
    return FailedPrecondition("the characters required of each class add up to " +
                              std::to_string(required) + ", more than " + where + ".length (" +
                              std::to_string(plan.length) + "): raise the length");
  }
  return plan;
}

Result<std::size_t> UniformIndex::Next(std::size_t n) {
  if (n == 0 || n > 256) return InvalidArgument("an index range must be 1 to 256");
  const std::size_t limit = 256 - (256 % n);  // bytes >= limit would favour the first values
  while (true) {
    if (pos_ >= buffer_.size()) {
      CW_ASSIGN_OR_RETURN(buffer_, random_(kRefill));
      if (buffer_.size() != kRefill) return Internal("the random source returned a short read");
      pos_ = 0;
    }
    const std::size_t b = buffer_.Reveal(SecretAccess::Grant())[pos_++];
    ++used_;
    if (b < limit) return b % n;
  }
}

Result<SecretBytes> GeneratePassword(const PasswordPlan& plan, const RandomBytes& random) {
  if (plan.length == 0 || plan.length > 4096) {
    return InvalidArgument("a password must be 1 to 4096 characters");
  }
  std::string alphabet_text;
  for (std::size_t c = 0; c < kCharClasses; ++c) {
    if (plan.enabled[c]) alphabet_text += CharClassAlphabet(static_cast<CharClass>(c));
  }
  if (alphabet_text.empty() || alphabet_text.size() > 256) {
    return InvalidArgument("the password plan enables no character class");
  }
  const std::string_view alphabet = alphabet_text;
  UniformIndex pick(random);
  SecretBytes out = SecretBytes::Allocate(plan.length);
  auto meets = [&](std::span<const std::uint8_t> p) {
    std::array<std::size_t, kCharClasses> counts{};
    for (std::uint8_t ch : p) ++counts[ClassOf(static_cast<char>(ch))];
    for (std::size_t c = 0; c < kCharClasses; ++c) {
      if (counts[c] < plan.minimum[c]) return false;
    }
    return true;
  };
  // Whole draws, rejected until every class has its minimum: uniform over the valid passwords.
  for (int draw = 0; draw < kWholeDraws; ++draw) {
    std::span<std::uint8_t> p = out.RevealMutable(SecretAccess::Grant());
    for (std::uint8_t& ch : p) {
      CW_ASSIGN_OR_RETURN(std::size_t i, pick.Next(alphabet.size()));
      ch = static_cast<std::uint8_t>(alphabet[i]);
    }
    if (meets(out.Reveal(SecretAccess::Grant()))) return out;
  }
  // Tight rules: the required characters first, the rest from the whole alphabet, shuffled.
  std::span<std::uint8_t> p = out.RevealMutable(SecretAccess::Grant());
  std::size_t at = 0;
  for (std::size_t c = 0; c < kCharClasses; ++c) {
    const std::string_view cls = CharClassAlphabet(static_cast<CharClass>(c));
    for (std::size_t k = 0; k < plan.minimum[c]; ++k) {
      CW_ASSIGN_OR_RETURN(std::size_t i, pick.Next(cls.size()));
      p[at++] = static_cast<std::uint8_t>(cls[i]);
    }
  }
  for (; at < p.size(); ++at) {
    CW_ASSIGN_OR_RETURN(std::size_t i, pick.Next(alphabet.size()));
    p[at] = static_cast<std::uint8_t>(alphabet[i]);
  }
  for (std::size_t i = p.size() - 1; i > 0; --i) {
    // An unbiased j in [0, i] (i + 1 <= 4096 values): two bytes when one is not enough.
    std::size_t j = 0;
    if (i + 1 <= 256) {
      CW_ASSIGN_OR_RETURN(j, pick.Next(i + 1));
    } else {
      while (true) {
        CW_ASSIGN_OR_RETURN(std::size_t hi, pick.Next(256));
        CW_ASSIGN_OR_RETURN(std::size_t lo, pick.Next(256));
        const std::size_t v = hi * 256 + lo;
        const std::size_t limit = 65536 - (65536 % (i + 1));
        if (v < limit) {
          j = v % (i + 1);
          break;
        }
      }
    }
    std::swap(p[i], p[j]);
  }
  return out;
}

}  // namespace cakewalk::agent
