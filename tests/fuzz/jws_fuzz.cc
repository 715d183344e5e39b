// Job tokens (agent/jws.h): the compact JWS a job arrives as, and its claims.
//
// Two kinds of input:
//   - anything else: the whole input is a compact token, verified as it stands (form, alg, kid,
//     signature; a forged signature cannot pass, so this explores steps 1-4 and UnverifiedJobId);
//   - "sign\n<header>\n<payload>": the harness signs header and payload (any bytes) with the
//     fuzz key, so that the payload parser and the claim checks (steps 5-6) see fuzzed input.
// Properties: a verified job has a well-formed id, our issuer and audience, an object for
// params, and job_id equal to its jti; an id read from an unverified token is well formed.
#include <openssl/evp.h>

#include <cstdio>
#include <string>
#include <vector>

#include "agent/jws.h"
#include "base/c_free.h"
#include "base/encoding.h"
#include "tests/fuzz/fuzz_support.h"

using cakewalk::fuzz::FuzzCheck;
using namespace cakewalk::agent;

namespace {

constexpr char kAgentId[] = "agt_fuzz01";
constexpr char kKid[] = "jsk_fuzz";

// RFC 8032 §7.1 TEST 1: a published key pair, so seeds can be made with any Ed25519 tool.
const std::uint8_t kPrivate[32] = {0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a,
                                   0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32,
                                   0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60};
const std::vector<std::uint8_t> kPublic = {
    0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a,
    0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a};

std::string Sign(std::string_view input) {
  cakewalk::CPtr<EVP_PKEY, EVP_PKEY_free> key(
      EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, kPrivate, sizeof kPrivate));
  cakewalk::CPtr<EVP_MD_CTX, EVP_MD_CTX_free> ctx(EVP_MD_CTX_new());
  FuzzCheck(key != nullptr && ctx != nullptr, "OpenSSL objects");
  std::vector<std::uint8_t> sig(64);
  std::size_t len = sig.size();
  FuzzCheck(
      EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) == 1 &&
          EVP_DigestSign(ctx.get(), sig.data(), &len,
                         reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1,
      "Ed25519 signing");
  return cakewalk::Base64UrlEncode(sig);
}

struct Keys {
  cakewalk::fuzz::FuzzClock clock;
  SigningKeySet set{{SigningKey{kKid, kPublic}},
                    [] {
                      return cakewalk::Result<std::vector<SigningKey>>(
                          std::vector<SigningKey>{SigningKey{kKid, kPublic}});
                    },
                    clock};
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Keys* keys = new Keys();  // one key set for the whole run, as in the agent
  std::string_view text = cakewalk::fuzz::AsText(data, size);
  std::string token;
  std::string_view rest = text;
  if (cakewalk::fuzz::TakeLine(rest) == "sign") {
    const std::string_view header = cakewalk::fuzz::TakeLine(rest);
    const std::string input = cakewalk::Base64UrlEncode(cakewalk::AsBytes(header)) + "." +
                              cakewalk::Base64UrlEncode(cakewalk::AsBytes(rest));
    token = input + "." + Sign(input);
  } else {
    token = std::string(text);
  }
  VerifyOptions options;
  options.agent_id = kAgentId;
  const cakewalk::SysTime now{std::chrono::seconds(1764850000)};
  const VerifyOutcome outcome = VerifyJobToken(token, keys->set, options, now);
  if (cakewalk::fuzz::FuzzVerbose()) {
    std::fprintf(stderr, "%s\n", outcome.status.ToString().c_str());
  }
  if (outcome.status.ok()) {
    FuzzCheck(outcome.authentic, "a verified job is authentic");
    FuzzCheck(IsValidJobId(outcome.claims.id), "a verified job id is well formed");
    FuzzCheck(outcome.job_id == outcome.claims.id, "job_id is the jti");
    FuzzCheck(outcome.claims.issuer == "cakewalk", "issuer checked");
    FuzzCheck(outcome.claims.audience == kAgentId, "audience checked");
    FuzzCheck(outcome.claims.params.isObject(), "params is an object");
    FuzzCheck(outcome.claims.expires_at > now - kAllowedClockSkew, "not expired");
  } else {
    FuzzCheck(!outcome.status.reason().empty(), "a rejection has a reason");
    FuzzCheck(outcome.job_id.empty() || IsValidJobId(outcome.job_id),
              "a rejection is addressed to a well-formed id or none");
  }
  if (auto id = UnverifiedJobId(token)) {
    FuzzCheck(IsValidJobId(*id), "an unverified jti is well formed");
  }
  return 0;
}
