// What an operator pastes into `mfa enroll` (hsm/otpauth.h): base32 keys and otpauth:// URIs.
//
// Properties: an accepted seed is 10..512 bytes with valid TOTP parameters; a refusal never
// quotes the key — checked by wrapping a key that decodes into a URI refused for another reason.
#include <string>

#include "hsm/otpauth.h"
#include "tests/fuzz/fuzz_support.h"

using cakewalk::fuzz::FuzzCheck;

namespace {

void CheckSeed(const cakewalk::hsm::TotpSeed& seed) {
  FuzzCheck(seed.key.size() >= cakewalk::hsm::kMinSeedBytes &&
                seed.key.size() <= cakewalk::hsm::kMaxSeedBytes,
            "seed length within bounds");
  FuzzCheck(cakewalk::hsm::ValidateTotpParams(seed.params).ok(), "TOTP parameters are valid");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = cakewalk::fuzz::AsText(data, size);
  if (auto seed = cakewalk::hsm::ParseTotpSeedInput(text); seed.ok()) CheckSeed(*seed);
  if (auto seed = cakewalk::hsm::ParseOtpauthUri(text); seed.ok()) CheckSeed(*seed);
  auto key = cakewalk::hsm::DecodeBase32Seed(text);
  if (key.ok()) {
    FuzzCheck(
        key->size() >= cakewalk::hsm::kMinSeedBytes && key->size() <= cakewalk::hsm::kMaxSeedBytes,
        "base32 seed length within bounds");
    if (text.size() >= 16 && text.find_first_of("&#%\r\n") == std::string_view::npos) {
      // A valid key inside a URI that is refused for its digits: the error must not quote it.
      const std::string uri = "otpauth://totp/Jira:svc?secret=" + std::string(text) + "&digits=7";
      auto refused = cakewalk::hsm::ParseOtpauthUri(uri);
      FuzzCheck(!refused.ok(), "digits=7 is refused");
      FuzzCheck(refused.status().message().find(text) == std::string::npos,
                "a refusal never quotes the key");
    }
  }
  return 0;
}
