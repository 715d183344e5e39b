// Job signing for the fake control plane: Ed25519 keys published as JWKs (RFC 8037), compact JWS
// (RFC 7515), and the deliberately broken tokens the agent's rejection tests need.
//
// Test code. The forgeries here are exactly what their names say; tests/fakes/control_plane/
// jws_test.cc checks each one with an independent verifier.
#pragma once

#include <json/json.h>
#include <openssl/evp.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/c_free.h"
#include "base/status.h"

namespace cakewalk::testing {

// An Ed25519 job-signing key as the control plane holds it: private key, raw public key, kid.
class JobSigningKey {
 public:
  static Result<JobSigningKey> Generate(std::string kid);

  JobSigningKey(JobSigningKey&&) noexcept = default;
  JobSigningKey& operator=(JobSigningKey&&) noexcept = default;

  const std::string& kid() const { return kid_; }
  // The 32 raw public-key bytes (the JWK's "x").
  const std::vector<std::uint8_t>& public_key() const { return public_key_; }
  // {"kty": "OKP", "crv": "Ed25519", "kid": ..., "x": base64url(public key)}
  Json::Value Jwk() const;
  // A 64-byte Ed25519 signature over `data`.
  Result<std::vector<std::uint8_t>> Sign(std::string_view data) const;

 private:
  JobSigningKey(std::string kid, CPtr<EVP_PKEY, EVP_PKEY_free> key,
                std::vector<std::uint8_t> public_key)
      : kid_(std::move(kid)), key_(std::move(key)), public_key_(std::move(public_key)) {}

  std::string kid_;
  CPtr<EVP_PKEY, EVP_PKEY_free> key_;
  std::vector<std::uint8_t> public_key_;
};

// What is wrong with a job on purpose. Claim-level forgeries change the payload but sign it
// properly; token-level forgeries change the header or the signature.
enum class Forgery {
  kNone,
  // Token level.
  kBadSignature,        // a valid signature with one bit flipped
  kAlgNone,             // header alg "none", no kid, empty signature ("h.p.")
  kHs256WithPublicKey,  // header alg "HS256", HMAC-SHA256 keyed with the raw Ed25519 public key
  kUnknownKid,          // signed by a key that is not published, under a kid nobody knows
  kMissingKid,          // properly signed, but the header has no kid
  kTamperedPayload,     // the signature of the original payload over a modified payload
  // Claim level (properly signed with a published key).
  kWrongAudience,            // aud names another agent
  kExpired,                  // exp ten minutes ago
  kIssuedInFuture,           // iat one hour ahead
  kReplayedJti,              // the jti (and payload) of an earlier job, delivered again
  kUnknownType,              // a type no agent knows
  kConnectionNotConfigured,  // a connection name the agent has no configuration for
  kMissingClaims,            // some required claims left out (default: exp)
};

std::string_view ForgeryName(Forgery forgery) noexcept;
std::optional<Forgery> ParseForgery(std::string_view name);
std::vector<Forgery> AllForgeries();

// base64url(header) "." base64url(payload) "." base64url(signature), with the JSON written in the
// project's canonical form (WriteJson).
Result<std::string> SignCompactJws(const JobSigningKey& key, const Json::Value& header,
                                   const Json::Value& payload);

// Builds the compact JWS a job is delivered as. `claims` is the (possibly already forged) payload;
// `signer` is the current published key, `stranger` an unpublished key for kUnknownKid.
// Claim-level forgeries are not applied here (the caller built `claims`); they sign normally.
Result<std::string> MakeJobJws(const Json::Value& claims, Forgery forgery,
                               const JobSigningKey& signer, const JobSigningKey& stranger);

// The parts of a compact JWS, base64url-decoded, without any verification (for tests and for the
// fake's own bookkeeping).
struct DecodedJws {
  Json::Value header;
  std::string payload;  // raw payload bytes (JSON text)
  std::vector<std::uint8_t> signature;
  std::string signing_input;  // "<header b64>.<payload b64>"
};
Result<DecodedJws> DecodeCompactJws(std::string_view jws);

}  // namespace cakewalk::testing
