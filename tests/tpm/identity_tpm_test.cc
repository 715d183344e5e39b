// The agent's identity on a TPM: an EC P-256 key generated in the TPM, ECDSA signatures, a CSR
// and mutual TLS 1.3/1.2 through the cakewalk-token provider, `enroll` against the fake control
// plane with an authenticated call afterwards; the resource manager under many keys; and objects
// stored by another process, made visible by Token::Refresh.
#include <gtest/gtest.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <atomic>
#include <sstream>

#include "agent/config.h"
#include "agent/cp_transport.h"
#include "agent/enroll.h"
#include "agent/identity.h"
#include "agent/token_context.h"
#include "base/encoding.h"
#include "base/json.h"
#include "hsm/csr.h"
#include "hsm/key_pair.h"
#include "hsm/provider.h"
#include "tests/fakes/control_plane/running_control_plane.h"
#include "tests/provider/tls_peer.h"
#include "tests/support/pki.h"
#include "tests/tpm/fixture.h"

namespace cakewalk::testing {
namespace {

using hsm::KeyPair;
using hsm::KeyType;

// TEST CODE: forwards to the token key and counts the signatures.
class CountingKey final : public hsm::TokenKey {
 public:
  explicit CountingKey(std::shared_ptr<hsm::TokenKey> inner) : inner_(std::move(inner)) {}
  KeyType type() const override { return inner_->type(); }
  const std::vector<std::uint8_t>& public_key_der() const override {
    return inner_->public_key_der();
  }
  const std::string& label() const override { return inner_->label(); }
  Result<std::vector<std::uint8_t>> Sign(hsm::SignScheme scheme,
                                         std::span<const std::uint8_t> input) override {
    ++calls;
    return inner_->Sign(scheme, input);
  }
  std::atomic<int> calls{0};

 private:
  std::shared_ptr<hsm::TokenKey> inner_;
};

bool VerifyEcdsa(const std::vector<std::uint8_t>& spki, const std::uint8_t digest[32],
                 const std::vector<std::uint8_t>& raw_rs) {
  if (raw_rs.size() != 64) return false;
  const unsigned char* p = spki.data();
  CPtr<EVP_PKEY, EVP_PKEY_free> pub(d2i_PUBKEY(nullptr, &p, static_cast<long>(spki.size())));
  CPtr<ECDSA_SIG, ECDSA_SIG_free> sig(ECDSA_SIG_new());
  if (!pub || !sig) return false;
  ECDSA_SIG_set0(sig.get(), BN_bin2bn(raw_rs.data(), 32, nullptr),
                 BN_bin2bn(raw_rs.data() + 32, 32, nullptr));
  unsigned char* der = nullptr;
  const int der_len = i2d_ECDSA_SIG(sig.get(), &der);
  CPtr<EVP_PKEY_CTX, EVP_PKEY_CTX_free> ctx(EVP_PKEY_CTX_new(pub.get(), nullptr));
  const bool ok =
      der_len > 0 && ctx && EVP_PKEY_verify_init(ctx.get()) == 1 &&
      EVP_PKEY_verify(ctx.get(), der, static_cast<std::size_t>(der_len), digest, 32) == 1;
  OPENSSL_free(der);
  ERR_clear_error();
  return ok;
}

class IdentityTpmTest : public TpmFixture {};

TEST_F(IdentityTpmTest, P256KeyGeneratedInTheTpmSignsAndStaysInside) {
  const hsm::Capabilities& caps = token_->capabilities();
  ASSERT_TRUE(caps.Has(hsm::Mechanism::kEcKeyPairGen)) << caps.Summary();
  ASSERT_TRUE(caps.Has(hsm::Mechanism::kEcdsa)) << caps.Summary();
  auto key = KeyPair::Generate(*token_, KeyType::kEcP256, "cakewalk-tls-1");
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  std::uint8_t digest[32];
  SHA256(reinterpret_cast<const unsigned char*>("to be signed"), 12, digest);
  auto sig = (*key)->Sign(hsm::SignScheme::kEcdsa, digest);
  ASSERT_TRUE(sig.ok()) << sig.status().ToString();
  EXPECT_EQ(sig->size(), 64u) << "raw r||s";
  EXPECT_TRUE(VerifyEcdsa((*key)->public_key_der(), digest, *sig));
  // Found again by label in a fresh process view, with the same public key.
  const std::vector<std::uint8_t> spki = (*key)->public_key_der();
  key->reset();
  ASSERT_NO_FATAL_FAILURE(ReopenToken());
  auto found = KeyPair::Find(*token_, "cakewalk-tls-1");
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ((*found)->public_key_der(), spki);

  // What the token holds: CKA_EC_POINT as a DER OCTET STRING (67 bytes), a private key that is
  // sensitive, never extractable and local, whose value nothing returns.
  ASSERT_NO_FATAL_FAILURE(OpenRaw());
  CK_FUNCTION_LIST* f = raw_->f();
  auto pubs = raw_->FindByLabel(raw_session_, "cakewalk-tls-1", CKO_PUBLIC_KEY);
  auto privs = raw_->FindByLabel(raw_session_, "cakewalk-tls-1", CKO_PRIVATE_KEY);
  ASSERT_TRUE(pubs.ok() && privs.ok());
  ASSERT_EQ(pubs->size(), 1u);
  ASSERT_EQ(privs->size(), 1u);
  std::uint8_t point[128];
  CK_ATTRIBUTE ec_point{CKA_EC_POINT, point, sizeof point};
  ASSERT_EQ(f->C_GetAttributeValue(raw_session_, (*pubs)[0], &ec_point, 1), CKR_OK);
  ASSERT_EQ(ec_point.ulValueLen, 67u);
  EXPECT_EQ(point[0], 0x04);  // OCTET STRING
  EXPECT_EQ(point[1], 0x41);  // of 65 bytes
  EXPECT_EQ(point[2], 0x04);  // uncompressed point
  CK_BBOOL b[3] = {};
  CK_ATTRIBUTE flags[] = {
      {CKA_ALWAYS_SENSITIVE, &b[0], 1}, {CKA_NEVER_EXTRACTABLE, &b[1], 1}, {CKA_LOCAL, &b[2], 1}};
  ASSERT_EQ(f->C_GetAttributeValue(raw_session_, (*privs)[0], flags, 3), CKR_OK);
  EXPECT_TRUE(b[0] && b[1] && b[2]);
  std::vector<std::string> notes;
  Status st = CheckSecretKeyNotExportable(f, raw_session_, (*privs)[0], &notes);
  EXPECT_TRUE(st.ok()) << st.ToString();

  // The agent's key is pinned to CKM_ECDSA (hash on the host), and tpm2-pkcs11 honours
  // CKA_ALLOWED_MECHANISMS: hashing in the token is refused for it...
  CK_MECHANISM ecdsa_sha256{CKM_ECDSA_SHA256, nullptr, 0};
  EXPECT_EQ(f->C_SignInit(raw_session_, &ecdsa_sha256, (*privs)[0]), CKR_MECHANISM_INVALID);
  // ...while a P-256 key without that restriction signs with CKM_ECDSA_SHA256 in the TPM too.
  std::uint8_t oid[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
  CK_BBOOL yes = CK_TRUE;
  CK_ATTRIBUTE pub_tmpl[] = {{CKA_EC_PARAMS, oid, sizeof oid}, {CKA_TOKEN, &yes, sizeof yes}};
  CK_ATTRIBUTE priv_tmpl[] = {{CKA_TOKEN, &yes, sizeof yes}, {CKA_SIGN, &yes, sizeof yes}};
  CK_MECHANISM gen{CKM_EC_KEY_PAIR_GEN, nullptr, 0};
  CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE;
  ASSERT_EQ(f->C_GenerateKeyPair(raw_session_, &gen, pub_tmpl, 2, priv_tmpl, 2, &pub, &priv),
            CKR_OK);
  std::uint8_t raw_point[128];
  CK_ATTRIBUTE raw_ec_point{CKA_EC_POINT, raw_point, sizeof raw_point};
  ASSERT_EQ(f->C_GetAttributeValue(raw_session_, pub, &raw_ec_point, 1), CKR_OK);
  ASSERT_EQ(raw_ec_point.ulValueLen, 67u);
  // SubjectPublicKeyInfo of that point: the fixed P-256 prefix, then the 65-byte point.
  std::vector<std::uint8_t> raw_spki = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48,
                                        0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                        0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00};
  raw_spki.insert(raw_spki.end(), raw_point + 2, raw_point + 67);
  const std::string message = "to be signed";
  ASSERT_EQ(f->C_SignInit(raw_session_, &ecdsa_sha256, priv), CKR_OK);
  std::uint8_t raw_sig[128];
  CK_ULONG raw_len = sizeof raw_sig;
  ASSERT_EQ(f->C_Sign(raw_session_, reinterpret_cast<CK_BYTE*>(const_cast<char*>(message.data())),
                      static_cast<CK_ULONG>(message.size()), raw_sig, &raw_len),
            CKR_OK);
  EXPECT_TRUE(VerifyEcdsa(raw_spki, digest, std::vector<std::uint8_t>(raw_sig, raw_sig + raw_len)));
}

TEST_F(IdentityTpmTest, CsrAndMutualTlsThroughTheProviderWithTheTpmKey) {
  ASSERT_TRUE(hsm::InstallTokenProvider().ok());
  auto pair = KeyPair::Generate(*token_, KeyType::kEcP256, "cakewalk-tls-1");
  ASSERT_TRUE(pair.ok()) << pair.status().ToString();
  auto key = std::make_shared<CountingKey>(std::shared_ptr<KeyPair>(std::move(pair).value()));
  auto csr = hsm::MakeCsrPem(key, "agt_tpm");
  ASSERT_TRUE(csr.ok()) << csr.status().ToString();
  EXPECT_EQ(key->calls.load(), 1);
  auto ca = TestCa::Create("TPM Provider Test CA");
  auto cert = ca->IssueFromCsr(*csr, "agt_tpm", std::chrono::hours(24));  // verifies the CSR
  ASSERT_TRUE(cert.ok()) << cert.status().ToString();
  const std::string chain = *cert + ca->cert_pem();
  auto pkey = hsm::ProviderKey(key);
  ASSERT_TRUE(pkey.ok()) << pkey.status().ToString();
  EXPECT_EQ(EVP_PKEY_get_bits(pkey->get()), 256);

  auto server = ca->Issue(TestCa::LeafOptions{});
  ASSERT_TRUE(server.ok());
  int expected_calls = 1;
  for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
    SCOPED_TRACE(version == TLS1_3_VERSION ? "TLS 1.3" : "TLS 1.2");
    auto client = MakeClientCtx(ca->cert_pem(), TLS1_2_VERSION, version);
    ASSERT_TRUE(client.ok());
    Status st = hsm::UseClientIdentity(client->get(), chain, pkey->get());
    ASSERT_TRUE(st.ok()) << st.ToString();
    TlsServerOptions options;
    options.chain_pem = server->chain_pem;
    options.key_pem = server->key_pem;
    options.client_ca_pem = ca->cert_pem();
    options.max_version = version;
    options.min_version = version;
    auto server_ctx = MakeServerCtx(options);
    ASSERT_TRUE(server_ctx.ok());
    auto exchange = TlsExchange::Start(server_ctx->get());
    ASSERT_TRUE(exchange.ok());
    ClientOutcome out = (*exchange)->RunClient(client->get());
    // The application answer, not the handshake result, proves the server accepted the key.
    EXPECT_EQ(out.response, "hello /CN=agt_tpm\n")
        << "client: " << out.error << "\nserver: " << (*exchange)->server().error;
    EXPECT_EQ((*exchange)->server().peer_signature_type, EVP_PKEY_EC);
    EXPECT_EQ(out.protocol, version == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2");
    ++expected_calls;
    EXPECT_EQ(key->calls.load(), expected_calls) << "one TPM signature per handshake";
  }
  pkey->reset();
  EXPECT_EQ(hsm::ReleaseProviderKeys(), 0u);
}

TEST_F(IdentityTpmTest, EnrollWithTheTpmTokenThenCallTheControlPlane) {
  // The agent's own code path: configuration, TokenContext (module by path), enroll.
  TempDir dir("cakewalk-tpm-enroll");
  auto cp = RunningControlPlane::Start();
  ASSERT_TRUE(cp.ok()) << cp.status().ToString();
  WriteFile(dir / "cp-ca.pem", (*cp)->server_ca_pem());
  Json::Value c(Json::objectValue);
  c["state_dir"] = (dir / "state").string();
  c["control_plane"]["url"] = (*cp)->base_url();
  c["control_plane"]["ca_file"] = (dir / "cp-ca.pem").string();
  c["token"]["module"] = Swtpm::kModulePath;
  c["token"]["uri"] = tpm_->token().uri;
  c["token"]["pin_file"] = tpm_->token().pin_file.string();
  c["connections"] = Json::Value(Json::arrayValue);
  auto config = agent::ParseConfig(WriteJson(c), dir / "agent.json", {});
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  // The fixture's own token objects go first: one process, one login, one module.
  store_.reset();
  token_.reset();
  ASSERT_TRUE(module_->Close().ok());
  module_.reset();

  CapturingLogSink log;
  auto token = agent::TokenContext::Open(*config, log);
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  agent::EnrollOptions options;
  options.token_file = "unused";
  options.hostname = "tpm-host";
  std::ostringstream out;
  auto outcome = agent::Enroll(
      *config, **token, SecretBytes::CopyOf((*cp)->fake().NewEnrollmentToken()), options, out, log);
  ASSERT_TRUE(outcome.ok()) << outcome.status().ToString();
  EXPECT_EQ(outcome->key_label, "cakewalk-tls-1");
  EXPECT_NE(out.str().find("EC P-256 key cakewalk-tls-1"), std::string::npos) << out.str();
  auto agent_record = (*cp)->fake().Agent(outcome->agent_id);
  ASSERT_TRUE(agent_record.has_value());
  EXPECT_EQ(agent_record->token["label"].asString(), tpm_->token().label);

  // A call authenticated by the TPM key: the fake names the agent from the client certificate.
  auto identity = agent::Identity::Open(config->state_dir, (*token)->token(), log);
  ASSERT_TRUE(identity.ok()) << identity.status().ToString();
  const agent::ClientIdentity ci = (*identity)->client_identity();
  auto client = agent::MakeControlPlaneClient(*config, &(*token)->secrets(), &ci);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto keys = (*client)->SigningKeys();
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  auto requests = (*cp)->fake().Requests();
  ASSERT_FALSE(requests.empty());
  EXPECT_EQ(requests.back().agent_id, outcome->agent_id);
  std::uint8_t spki_hash[SHA256_DIGEST_LENGTH];
  const auto& spki = (*identity)->key()->public_key_der();
  SHA256(spki.data(), spki.size(), spki_hash);
  EXPECT_EQ(requests.back().client_key_sha256, HexEncode(spki_hash));
  client->reset();
  identity->reset();
}

TEST_F(IdentityTpmTest, ManyKeysInOneProcessNeedAndGetTheResourceManager) {
  // swtpm holds 3 transient objects; tpm2-pkcs11 without a resource manager fails after two keys.
  std::vector<std::unique_ptr<KeyPair>> keys;
  for (int i = 1; i <= 6; ++i) {
    auto k = KeyPair::Generate(*token_, KeyType::kEcP256, "key-" + std::to_string(i));
    ASSERT_TRUE(k.ok()) << i << ": " << k.status().ToString();
    keys.push_back(std::move(*k));
  }
  hsm::TotpSeed seed;
  seed.key = SecretBytes::CopyOf(std::string_view("12345678901234567890"));
  seed.params.digits = 8;
  ASSERT_TRUE(store_->EnrollTotp("a", seed, hsm::Activation::kCurrent).ok());
  ASSERT_TRUE(store_->EnrollTotp("b", seed, hsm::Activation::kCurrent).ok());
  ASSERT_TRUE(store_->Put("a", "password", SecretBytes::CopyOf(std::string_view("pw-a"))).ok());
  std::uint8_t digest[32] = {1, 2, 3};
  for (int round = 0; round < 3; ++round) {
    for (auto& k : keys) {
      auto sig = k->Sign(hsm::SignScheme::kEcdsa, digest);
      ASSERT_TRUE(sig.ok()) << k->label() << ": " << sig.status().ToString();
      EXPECT_TRUE(VerifyEcdsa(k->public_key_der(), digest, *sig));
    }
    for (const char* c : {"a", "b"}) {
      auto code = store_->Totp(c, UnixSeconds(59), "round");
      ASSERT_TRUE(code.ok()) << code.status().ToString();
      EXPECT_EQ(code->code.Reveal(SecretAccess::Grant()), "94287082");
    }
    auto pw = store_->Unseal("a", "password", "round");
    ASSERT_TRUE(pw.ok()) << pw.status().ToString();
  }
}

TEST_F(IdentityTpmTest, RefreshShowsWhatAnotherProcessStored) {
  ASSERT_TRUE(store_->Put("mine", "password", SecretBytes::CopyOf(std::string_view("a"))).ok());
  // Another process (an operator's `secret set`) stores a secret in the same token.
  ProgramResult r =
      RunProgram({CAKEWALK_TPM_STORE_HELPER, "put", Swtpm::kModulePath, tpm_->token().uri,
                  tpm_->token().pin_file.string(), "theirs", "password"},
                 "their value");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // tpm2-pkcs11 read its store in C_Initialize: this process does not see it yet...
  auto before = store_->Unseal("theirs", "password", "t");
  EXPECT_EQ(before.status().code(), Code::kNotFound) << before.status().ToString();
  // ...until the token is refreshed. Everything opened before keeps working.
  auto key = KeyPair::Generate(*token_, KeyType::kEcP256, "survives-refresh");
  ASSERT_TRUE(key.ok());
  ASSERT_TRUE(token_->Refresh().ok());
  auto after = store_->Unseal("theirs", "password", "t");
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(after->RevealString(SecretAccess::Grant()), "their value");
  EXPECT_TRUE(store_->Unseal("mine", "password", "t").ok());
  std::uint8_t digest[32] = {9};
  auto sig = (*key)->Sign(hsm::SignScheme::kEcdsa, digest);
  ASSERT_TRUE(sig.ok()) << sig.status().ToString();
  EXPECT_TRUE(VerifyEcdsa((*key)->public_key_der(), digest, *sig));
}

TEST_F(IdentityTpmTest, WithoutAStoreToImportIntoTheSeedIsRefusedClearly) {
  const std::string store = tpm_->store().string();
  unsetenv("TPM2_PKCS11_STORE");
  hsm::TotpSeed seed;
  seed.key = SecretBytes::CopyOf(std::string_view("12345678901234567890"));
  auto refused = store_->EnrollTotp("c", seed, hsm::Activation::kCurrent);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("TPM2_PKCS11_STORE"), std::string::npos)
      << refused.status().message();
  EXPECT_NE(refused.status().message().find("C_CreateObject"), std::string::npos)
      << refused.status().message();
  auto listed = store_->List();
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->empty());
  // Configured again, it works (nothing was cached from the failure).
  setenv("TPM2_PKCS11_STORE", store.c_str(), 1);
  EXPECT_TRUE(store_->EnrollTotp("c", seed, hsm::Activation::kCurrent).ok());
}

}  // namespace
}  // namespace cakewalk::testing
