// Helpers for the fake control plane's own tests: agent-side key pairs and CSRs, an independent
// JWS verifier (so a forged token is judged by code other than the code that forged it), and an
// agent that talks to FakeControlPlane::Handle() directly.
#pragma once

#include <json/json.h>
#include <openssl/evp.h>

#include <string>
#include <string_view>

#include "base/c_free.h"
#include "base/status.h"
#include "tests/fakes/control_plane/fake_control_plane.h"
#include "tests/fakes/https_server.h"

namespace cakewalk::testing {

using EvpPkeyPtr = CPtr<EVP_PKEY, EVP_PKEY_free>;

EvpPkeyPtr NewEcP256Key();
EvpPkeyPtr NewRsaKey(unsigned bits);
// A PKCS#10 request for `key`, signed with it (SHA-256).
std::string MakeCsrPem(EVP_PKEY* key, const std::string& common_name = "agent");
// The same request with one bit of its signature flipped.
std::string MakeCsrWithBadSignature(EVP_PKEY* key);
std::string PrivateKeyPem(EVP_PKEY* key);
// DER of the first certificate in a PEM chain ("" when none).
std::string FirstCertDer(const std::string& pem);
// The CN of a PEM certificate's subject.
std::string CommonName(const std::string& cert_pem);
// The number of certificates in a PEM chain.
int CountCerts(const std::string& pem);
// True when `cert_pem` (first certificate) was signed by the key of `ca_pem`.
bool SignedBy(const std::string& cert_pem, const std::string& ca_pem);

// Verifies a compact JWS the way the protocol demands (alg EdDSA only, kid in `jwks`, Ed25519
// signature over "<header>.<payload>") and returns the payload's claims.
Result<Json::Value> VerifyJobJws(std::string_view jws, const Json::Value& jwks);
// Decodes without verifying.
Json::Value JwsHeader(std::string_view jws);
Json::Value JwsPayload(std::string_view jws);
std::string JwsSignatureSegment(std::string_view jws);

// {"error": {"code": code, "message": <non-empty>}} and nothing else, with `status`.
::testing::AssertionResult IsError(const HttpResponse& response, int status, std::string_view code);
Json::Value BodyOf(const HttpResponse& response);

HttpRequest MakeRequest(std::string method, std::string path, std::string body = {},
                        std::string content_type = "application/json");

inline constexpr std::string_view kBase = "/agent/v1";

// A valid enrollment body for `csr_pem`.
Json::Value EnrollBody(const std::string& csr_pem);
// A valid heartbeat body for an agent presenting the first certificate of `chain_pem`.
Json::Value HeartbeatBody(const std::string& chain_pem);
// The certificate's notAfter as RFC 3339.
std::string NotAfter(const std::string& cert_pem);
// A valid result body.
Json::Value ResultBody(const std::string& lease_id, const std::string& status,
                       const Json::Value& output_or_error);
Json::Value UserRecord(const std::string& id, bool human = true);

// An enrolled agent that calls Handle() with its client certificate.
class DirectAgent {
 public:
  // Enrolls with a new token (and a fresh EC P-256 key).
  static DirectAgent Enroll(FakeControlPlane& fake);
  DirectAgent(FakeControlPlane& fake, EvpPkeyPtr key, std::string agent_id, std::string chain);

  const std::string& id() const { return agent_id_; }
  const std::string& chain() const { return chain_; }
  EVP_PKEY* key() const { return key_.get(); }
  // Presents a different certificate from now on (after renewal).
  void UseCertificate(EvpPkeyPtr key, std::string chain);

  HttpResponse Call(std::string method, std::string_view path, const Json::Value& body) const;
  HttpResponse Post(std::string_view path, const Json::Value& body) const {
    return Call("POST", path, body);
  }
  HttpResponse Get(std::string_view path) const { return Call("GET", path, Json::Value()); }
  // POST /jobs/claim.
  Json::Value Claim(int max_jobs, int wait_seconds) const;

 private:
  FakeControlPlane* fake_;
  EvpPkeyPtr key_;
  std::string agent_id_;
  std::string chain_;
};

}  // namespace cakewalk::testing
