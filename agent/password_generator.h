// New Jira passwords for rotation (agent/rotation.h), from the token's random generator.
//
// The alphabet is the union of the classes the connection's password_policy enables: lower case
// a-z, upper case A-Z, digits 0-9, and the 32 ASCII punctuation characters
// !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~ (no space). Every character is drawn uniformly from the
// alphabet by rejection sampling of random bytes (a byte b is used only when
// b < 256 - 256 mod n, then b mod n: no modulo bias). A password that lacks a required class (each
// enabled class at least once, or as often as Jira's policy asks) is thrown away whole and
// drawn again, so the result is uniform over all passwords that meet the rules. Only when rules
// are so tight that 1000 draws fail (never with the defaults) does the generator place the
// required characters first and shuffle (Fisher-Yates with unbiased indices).
//
// Jira's own rules (jira/password_change.h) are checked first: a policy that cannot meet them —
// too short, too long, a class Jira requires but the policy disables, more required characters
// than the length — is refused with a message naming the setting to change.
#pragma once

#include <array>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "agent/config.h"
#include "base/secret.h"
#include "base/status.h"
#include "jira/password_change.h"

namespace cakewalk::agent {

enum class CharClass { kLower, kUpper, kDigit, kSymbol };
inline constexpr std::size_t kCharClasses = 4;
// The characters of one class, in a fixed order.
std::string_view CharClassAlphabet(CharClass c) noexcept;

// What a new password must be: its length and the minimum count per class (0 for a disabled
// class; enabled classes at least 1).
struct PasswordPlan {
  std::size_t length = 0;
  std::array<bool, kCharClasses> enabled{};
  std::array<std::size_t, kCharClasses> minimum{};
};

// The plan for `policy` under Jira's `rules` (null when Jira does not tell). `where` names the
// configuration setting in messages ("connections[jira-prod].password_policy").
Result<PasswordPlan> PlanPassword(const PasswordPolicy& policy, const jira::PasswordRules* rules,
                                  const std::string& where);

// `size` random bytes (SecretStore::Random: the token's generator).
using RandomBytes = std::function<Result<SecretBytes>(std::size_t size)>;

// Draws uniform indices in [0, n) for n in 1..256 from a stream of random bytes, by rejection.
class UniformIndex {
 public:
  explicit UniformIndex(RandomBytes random) : random_(std::move(random)) {}
  Result<std::size_t> Next(std::size_t n);
  // Random bytes consumed so far (tests).
  std::size_t bytes_used() const { return used_; }

 private:
  RandomBytes random_;
  SecretBytes buffer_;
  std::size_t pos_ = 0;
  std::size_t used_ = 0;
};

// A password for `plan`, its characters drawn through `random`.
Result<SecretBytes> GeneratePassword(const PasswordPlan& plan, const RandomBytes& random);

}  // namespace cakewalk::agent
