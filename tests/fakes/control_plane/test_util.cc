#include "tests/fakes/control_plane/test_util.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <ctime>
#include <vector>

#include "base/encoding.h"
#include "base/json.h"
#include "base/time.h"

namespace cakewalk::testing {
namespace {

using BioPtr = CPtr<BIO, BIO_free>;
using X509Ptr = CPtr<X509, X509_free>;
using X509ReqPtr = CPtr<X509_REQ, X509_REQ_free>;
using MdCtxPtr = CPtr<EVP_MD_CTX, EVP_MD_CTX_free>;

std::string BioText(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(len));
}

X509Ptr ReadCert(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

X509ReqPtr NewSignedReq(EVP_PKEY* key, const std::string& cn) {
  X509ReqPtr req(X509_REQ_new());
  X509_REQ_set_version(req.get(), 0);
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_REQ_set_pubkey(req.get(), key);
  X509_REQ_sign(req.get(), key, EVP_sha256());
  return req;
}

std::string ReqPem(X509_REQ* req) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(bio.get(), req);
  return BioText(bio.get());
}

std::vector<std::string> Parts(std::string_view jws) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = jws.find('.', start);
    parts.emplace_back(jws.substr(start, dot == std::string_view::npos ? jws.npos : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return parts;
}

Json::Value DecodeJsonSegment(const std::string& segment) {
  auto bytes = Base64UrlDecode(segment);
  if (!bytes.ok()) return Json::Value();
  auto json = ParseJson(AsChars(*bytes), "JWS segment");
  return json.ok() ? *json : Json::Value();
}

}  // namespace

EvpPkeyPtr NewEcP256Key() { return EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")); }

EvpPkeyPtr NewRsaKey(unsigned bits) {
  return EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<std::size_t>(bits)));
}

std::string MakeCsrPem(EVP_PKEY* key, const std::string& common_name) {
  return ReqPem(NewSignedReq(key, common_name).get());
}

std::string MakeCsrWithBadSignature(EVP_PKEY* key) {
  X509ReqPtr req = NewSignedReq(key, "agent");
  unsigned char* der = nullptr;
  const int len = i2d_X509_REQ(req.get(), &der);
  std::string bytes(reinterpret_cast<const char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  bytes.back() = static_cast<char>(bytes.back() ^ 0x01);  // last byte of the signature value
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  X509ReqPtr broken(d2i_X509_REQ(nullptr, &p, static_cast<long>(bytes.size())));
  return broken == nullptr ? std::string() : ReqPem(broken.get());
}

std::string PrivateKeyPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  return BioText(bio.get());
}

std::string FirstCertDer(const std::string& pem) {
  X509Ptr cert = ReadCert(pem);
  if (cert == nullptr) return {};
  unsigned char* der = nullptr;
  const int len = i2d_X509(cert.get(), &der);
  std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return out;
}

std::string CommonName(const std::string& cert_pem) {
  X509Ptr cert = ReadCert(cert_pem);
  if (cert == nullptr) return {};
  char buf[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, buf, sizeof buf);
  return buf;
}

int CountCerts(const std::string& pem) {
  int n = 0;
  for (std::size_t pos = pem.find("-----BEGIN CERTIFICATE-----"); pos != std::string::npos;
       pos = pem.find("-----BEGIN CERTIFICATE-----", pos + 1)) {
    ++n;
  }
  return n;
}

bool SignedBy(const std::string& cert_pem, const std::string& ca_pem) {
  X509Ptr cert = ReadCert(cert_pem);
  X509Ptr ca = ReadCert(ca_pem);
  if (cert == nullptr || ca == nullptr) return false;
  return X509_verify(cert.get(), X509_get0_pubkey(ca.get())) == 1;
}

Result<Json::Value> VerifyJobJws(std::string_view jws, const Json::Value& jwks) {
  const std::vector<std::string> parts = Parts(jws);
  if (parts.size() != 3) return InvalidArgument("not three segments");
  const Json::Value header = DecodeJsonSegment(parts[0]);
  if (!header.isObject()) return InvalidArgument("header is not a JSON object");
  if (!header["alg"].isString() || header["alg"].asString() != "EdDSA") {
    return InvalidArgument("alg is not EdDSA");
  }
  if (!header["kid"].isString()) return InvalidArgument("no kid");
  const Json::Value* jwk = nullptr;
  for (const auto& k : jwks) {
    if (k["kid"] == header["kid"]) jwk = &k;
  }
  if (jwk == nullptr) return NotFound("unknown kid");
  if ((*jwk)["kty"] != "OKP" || (*jwk)["crv"] != "Ed25519") return InvalidArgument("bad JWK");
  auto x = Base64UrlDecode((*jwk)["x"].asString());
  if (!x.ok() || x->size() != 32) return InvalidArgument("bad JWK x");
  auto sig = Base64UrlDecode(parts[2]);
  if (!sig.ok() || sig->size() != 64) return InvalidArgument("signature is not 64 bytes");
  EvpPkeyPtr pub(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, x->data(), x->size()));
  MdCtxPtr ctx(EVP_MD_CTX_new());
  const std::string input = parts[0] + "." + parts[1];
  if (pub == nullptr ||
      EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pub.get()) != 1 ||
      EVP_DigestVerify(ctx.get(), sig->data(), sig->size(),
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1) {
    return PermissionDenied("signature does not verify");
  }
  Json::Value claims = DecodeJsonSegment(parts[1]);
  if (!claims.isObject()) return InvalidArgument("payload is not a JSON object");
  return claims;
}

Json::Value JwsHeader(std::string_view jws) { return DecodeJsonSegment(Parts(jws)[0]); }

Json::Value JwsPayload(std::string_view jws) {
  auto parts = Parts(jws);
  return parts.size() < 2 ? Json::Value() : DecodeJsonSegment(parts[1]);
}

std::string JwsSignatureSegment(std::string_view jws) {
  auto parts = Parts(jws);
  return parts.size() < 3 ? std::string() : parts[2];
}

Json::Value BodyOf(const HttpResponse& response) {
  auto json = ParseJson(response.body, "response");
  return json.ok() ? *json : Json::Value();
}

::testing::AssertionResult IsError(const HttpResponse& response, int status,
                                   std::string_view code) {
  if (response.status != status) {
    return ::testing::AssertionFailure() << "status " << response.status << " (expected " << status
                                         << "), body " << response.body;
  }
  const Json::Value body = BodyOf(response);
  const bool shape = body.isObject() && body.size() == 1 && body["error"].isObject() &&
                     body["error"].size() == 2 && body["error"]["code"].isString() &&
                     body["error"]["message"].isString() &&
                     !body["error"]["message"].asString().empty();
  if (!shape) return ::testing::AssertionFailure() << "not the error shape: " << response.body;
  if (body["error"]["code"].asString() != code) {
    return ::testing::AssertionFailure() << "code " << body["error"]["code"].asString()
                                         << " (expected " << code << "): " << response.body;
  }
  return ::testing::AssertionSuccess();
}

HttpRequest MakeRequest(std::string method, std::string path, std::string body,
                        std::string content_type) {
  HttpRequest r;
  r.method = std::move(method);
  r.target = path;
  r.raw_path = path;
  r.path = std::move(path);
  if (!content_type.empty() && r.method == "POST") {
    r.headers.emplace_back("content-type", std::move(content_type));
  }
  r.body = std::move(body);
  r.received_at = std::chrono::system_clock::now();
  return r;
}

Json::Value EnrollBody(const std::string& csr_pem) {
  Json::Value b(Json::objectValue);
  b["csr"] = csr_pem;
  b["hostname"] = "agent-host-1";
  b["agent_version"] = "0.1.0";
  b["token"]["manufacturer"] = "SoftHSM project";
  b["token"]["model"] = "SoftHSM v2";
  b["token"]["serial"] = "1234abcd";
  b["token"]["label"] = "cakewalk";
  return b;
}

std::string NotAfter(const std::string& cert_pem) {
  X509Ptr cert = ReadCert(cert_pem);
  std::tm tm{};
  if (cert == nullptr || ASN1_TIME_to_tm(X509_get0_notAfter(cert.get()), &tm) != 1) return {};
  return FormatRfc3339(std::chrono::system_clock::from_time_t(timegm(&tm)));
}

Json::Value HeartbeatBody(const std::string& chain_pem) {
  Json::Value b(Json::objectValue);
  b["agent_version"] = "0.1.0";
  b["uptime_seconds"] = 12;
  b["certificate_expires_at"] = NotAfter(chain_pem);
  b["token"]["manufacturer"] = "SoftHSM project";
  b["token"]["model"] = "SoftHSM v2";
  b["token"]["serial"] = "1234abcd";
  b["token"]["label"] = "cakewalk";
  Json::Value c(Json::objectValue);
  c["name"] = "jira-prod";
  c["type"] = "jira-datacenter";
  c["status"] = "ok";
  b["connections"].append(c);
  Json::Value s(Json::objectValue);
  s["connection"] = "jira-prod";
  s["name"] = "password";
  s["version"] = 3;
  s["created_at"] = "2026-11-01T09:00:00Z";
  b["secrets"].append(s);
  b["jobs"]["running"] = 0;
  b["jobs"]["results_pending"] = 0;
  return b;
}

Json::Value ResultBody(const std::string& lease_id, const std::string& status,
                       const Json::Value& output_or_error) {
  Json::Value b(Json::objectValue);
  b["lease_id"] = lease_id;
  b["status"] = status;
  b["started_at"] = "2026-12-04T17:00:00Z";
  b["finished_at"] = "2026-12-04T17:00:02Z";
  b[status == "succeeded" ? "output" : "error"] = output_or_error;
  return b;
}

Json::Value UserRecord(const std::string& id, bool human) {
  Json::Value r(Json::objectValue);
  r["kind"] = "user";
  r["id"] = id;
  r["username"] = id;
  r["email"] = id + "@example.com";
  r["display_name"] = "User " + id;
  r["active"] = true;
  r["human"] = human;
  r["nhi_type"] = human ? Json::Value() : Json::Value("bot");
  r["groups"] = Json::Value(Json::arrayValue);
  r["groups"].append("jira-users");
  r["products"] = Json::Value(Json::arrayValue);
  r["permissions"] = Json::Value(Json::arrayValue);
  r["level"] = "user";
  r["last_login"] = Json::Value();
  return r;
}

DirectAgent DirectAgent::Enroll(FakeControlPlane& fake) {
  EvpPkeyPtr key = NewEcP256Key();
  const std::string token = fake.NewEnrollmentToken();
  HttpRequest req = MakeRequest("POST", std::string(kBase) + "/enroll",
                                WriteJson(EnrollBody(MakeCsrPem(key.get()))));
  req.headers.emplace_back("authorization", "Bearer " + token);
  HttpResponse resp = fake.Handle(req);
  EXPECT_EQ(resp.status, 201) << resp.body;
  const Json::Value body = BodyOf(resp);
  return DirectAgent(fake, std::move(key), body["agent_id"].asString(),
                     body["certificate_chain"].asString());
}

DirectAgent::DirectAgent(FakeControlPlane& fake, EvpPkeyPtr key, std::string agent_id,
                         std::string chain)
    : fake_(&fake),
      key_(std::move(key)),
      agent_id_(std::move(agent_id)),
      chain_(std::move(chain)) {}

void DirectAgent::UseCertificate(EvpPkeyPtr key, std::string chain) {
  key_ = std::move(key);
  chain_ = std::move(chain);
}

HttpResponse DirectAgent::Call(std::string method, std::string_view path,
                               const Json::Value& body) const {
  HttpRequest req = MakeRequest(std::move(method), std::string(kBase) + std::string(path),
                                body.isNull() ? std::string() : WriteJson(body));
  req.client_cert_der = FirstCertDer(chain_);
  req.client_cert_subject = "CN=" + agent_id_;
  return fake_->Handle(req);
}

Json::Value DirectAgent::Claim(int max_jobs, int wait_seconds) const {
  Json::Value b(Json::objectValue);
  b["max_jobs"] = max_jobs;
  b["wait_seconds"] = wait_seconds;
  HttpResponse resp = Post("/jobs/claim", b);
  EXPECT_EQ(resp.status, 200) << resp.body;
  return BodyOf(resp)["jobs"];
}

}  // namespace cakewalk::testing
