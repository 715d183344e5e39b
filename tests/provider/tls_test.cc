// Real TLS with libssl: a client authenticates with a token key (software stand-in) through the
// cakewalk-token provider, against an in-process server that requires and verifies its
// certificate. Assertions are on the application answer the server sends after it accepted the
// certificate, and on the number of token signatures — never on SSL_connect alone.
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <atomic>
#include <thread>
#include <vector>

#include "hsm/csr.h"
#include "hsm/provider.h"
#include "tests/provider/soft_token_key.h"
#include "tests/provider/tls_peer.h"
#include "tests/support/pki.h"

namespace cakewalk::hsm {
namespace {

using testing::ClientOutcome;
using testing::SoftTokenKey;
using testing::SslCtx;
using testing::TestCa;
using testing::TlsExchange;
using testing::TlsServerOptions;

struct Identity {
  std::shared_ptr<SoftTokenKey> soft;
  EvpPkey pkey;
  std::string chain_pem;
  std::string subject;  // as the server reports it
  int base_calls = 0;   // Sign calls before any handshake (the CSR's)
  int handshake_signs() const { return soft->sign_calls() - base_calls; }
};

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(InstallTokenProvider().ok());
    ca_ = TestCa::Create("Provider TLS Test CA");
    auto server = ca_->Issue(TestCa::LeafOptions{});
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = *server;
    ERR_clear_error();
  }

  // A token key (software stand-in), a CSR signed through the provider, and the certificate
  // the test CA issues for it.
  Identity MakeIdentity(KeyType type, const std::string& cn) {
    Identity id;
    id.soft = SoftTokenKey::Generate(type, "label-" + cn);
    auto csr = MakeCsrPem(id.soft, cn);
    EXPECT_TRUE(csr.ok()) << csr.status().ToString();
    auto cert = ca_->IssueFromCsr(csr.ok() ? *csr : "", cn, std::chrono::hours(24));
    EXPECT_TRUE(cert.ok()) << cert.status().ToString();
    id.chain_pem = (cert.ok() ? *cert : "") + ca_->cert_pem();
    auto pkey = ProviderKey(id.soft);
    EXPECT_TRUE(pkey.ok()) << pkey.status().ToString();
    if (pkey.ok()) id.pkey = std::move(pkey).value();
    id.subject = "/CN=" + cn;
    id.base_calls = id.soft->sign_calls();
    return id;
  }

  TlsServerOptions ServerOptions(int max_version, std::string client_sigalgs = "") const {
    TlsServerOptions o;
    o.chain_pem = server_.chain_pem;
    o.key_pem = server_.key_pem;
    o.client_ca_pem = ca_->cert_pem();
    o.max_version = max_version;
    o.client_sigalgs = std::move(client_sigalgs);
    return o;
  }

  SslCtx ClientCtx(const Identity& id, int max_version, const std::string& ciphers = "") {
    auto ctx = testing::MakeClientCtx(ca_->cert_pem(), TLS1_2_VERSION, max_version, ciphers);
    EXPECT_TRUE(ctx.ok()) << ctx.status().ToString();
    if (!ctx.ok()) return nullptr;
    Status st = UseClientIdentity(ctx->get(), id.chain_pem, id.pkey.get());
    EXPECT_TRUE(st.ok()) << st.ToString();
    return std::move(ctx).value();
  }

  struct Run {
    ClientOutcome client;
    testing::ServerOutcome server;
  };
  Run Exchange(const TlsServerOptions& server_options, SSL_CTX* client_ctx) {
    auto server_ctx = testing::MakeServerCtx(server_options);
    EXPECT_TRUE(server_ctx.ok()) << server_ctx.status().ToString();
    if (!server_ctx.ok()) return {};
    auto ex = TlsExchange::Start(server_ctx->get());
    EXPECT_TRUE(ex.ok());
    if (!ex.ok()) return {};
    Run run;
    run.client = (*ex)->RunClient(client_ctx);
    run.server = (*ex)->server();
    return run;
  }

  std::unique_ptr<TestCa> ca_;
  testing::KeyAndCert server_;
};

TEST_F(TlsTest, Tls13MutualAuthWithEcTokenKey) {
  Identity id = MakeIdentity(KeyType::kEcP256, "agt_ec13");
  SslCtx client = ClientCtx(id, TLS1_3_VERSION);
  ASSERT_NE(client, nullptr);
  Run run = Exchange(ServerOptions(TLS1_3_VERSION), client.get());
  EXPECT_EQ(run.client.response, "hello " + id.subject + "\n")
      << "client: " << run.client.error << "\nserver: " << run.server.error;
  EXPECT_EQ(run.client.protocol, "TLSv1.3");
  EXPECT_EQ(run.server.client_subject, id.subject);
  EXPECT_EQ(run.server.peer_signature_type, EVP_PKEY_EC);
  EXPECT_EQ(id.handshake_signs(), 1);
  EXPECT_EQ(ERR_peek_error(), 0u) << "error queue not clean after a good handshake";
}

TEST_F(TlsTest, Tls12EcdheEcdsaWithEcTokenKey) {
  Identity id = MakeIdentity(KeyType::kEcP256, "agt_ec12");
  SslCtx client = ClientCtx(id, TLS1_2_VERSION, "ECDHE-ECDSA-AES256-GCM-SHA384");
  ASSERT_NE(client, nullptr);
  Run run = Exchange(ServerOptions(TLS1_2_VERSION), client.get());
  EXPECT_EQ(run.client.response, "hello " + id.subject + "\n")
      << "client: " << run.client.error << "\nserver: " << run.server.error;
  EXPECT_EQ(run.client.protocol, "TLSv1.2");
  EXPECT_EQ(run.client.cipher, "ECDHE-ECDSA-AES256-GCM-SHA384");
  EXPECT_EQ(run.server.peer_signature_type, EVP_PKEY_EC);
  EXPECT_EQ(id.handshake_signs(), 1);
  EXPECT_EQ(ERR_peek_error(), 0u);
}

TEST_F(TlsTest, Tls13WithRsaTokenKeySignsPss) {
  Identity id = MakeIdentity(KeyType::kRsa3072, "agt_rsa13");
  SslCtx client = ClientCtx(id, TLS1_3_VERSION);
  ASSERT_NE(client, nullptr);
  Run run = Exchange(ServerOptions(TLS1_3_VERSION), client.get());
  EXPECT_EQ(run.client.response, "hello " + id.subject + "\n")
      << "client: " << run.client.error << "\nserver: " << run.server.error;
  EXPECT_EQ(run.server.peer_signature_type, EVP_PKEY_RSA_PSS);
  EXPECT_EQ(id.handshake_signs(), 1);
  ASSERT_FALSE(id.soft->schemes().empty());
  EXPECT_EQ(id.soft->schemes().back(), SignScheme::kRsaPssSha256);
  EXPECT_EQ(ERR_peek_error(), 0u);
}

TEST_F(TlsTest, Tls12WithRsaTokenKeySignsPkcs1WhenTheServerAsksForIt) {
  Identity id = MakeIdentity(KeyType::kRsa3072, "agt_rsa12");
  SslCtx client = ClientCtx(id, TLS1_2_VERSION);
  ASSERT_NE(client, nullptr);
  Run run = Exchange(ServerOptions(TLS1_2_VERSION, "RSA+SHA384"), client.get());
  EXPECT_EQ(run.client.response, "hello " + id.subject + "\n")
      << "client: " << run.client.error << "\nserver: " << run.server.error;
  EXPECT_EQ(run.client.protocol, "TLSv1.2");
  EXPECT_EQ(run.server.peer_signature_type, EVP_PKEY_RSA);
  EXPECT_EQ(run.server.peer_signature_digest, NID_sha384);
  EXPECT_EQ(id.handshake_signs(), 1);
  ASSERT_FALSE(id.soft->schemes().empty());
  EXPECT_EQ(id.soft->schemes().back(), SignScheme::kRsaPkcs1);
  EXPECT_EQ(ERR_peek_error(), 0u);
}

TEST_F(TlsTest, Tls12WithRsaTokenKeySignsPssByDefault) {
  Identity id = MakeIdentity(KeyType::kRsa3072, "agt_rsa12pss");
  SslCtx client = ClientCtx(id, TLS1_2_VERSION);
  ASSERT_NE(client, nullptr);
  Run run = Exchange(ServerOptions(TLS1_2_VERSION), client.get());
  EXPECT_EQ(run.client.response, "hello " + id.subject + "\n")
      << "client: " << run.client.error << "\nserver: " << run.server.error;
  EXPECT_EQ(run.server.peer_signature_type, EVP_PKEY_RSA_PSS);
  EXPECT_EQ(id.handshake_signs(), 1);
  EXPECT_EQ(ERR_peek_error(), 0u);
}

TEST_F(TlsTest, Tls13RejectionShowsOnlyAfterTheHandshake) {
  // Why the other tests read an answer: the server does not trust the client's CA, yet the
  // client's SSL_connect succeeds in TLS 1.3; the refusal arrives with the first read.
  Identity id = MakeIdentity(KeyType::kEcP256, "agt_untrusted");
  SslCtx client = ClientCtx(id, TLS1_3_VERSION);
  ASSERT_NE(client, nullptr);
  auto other_ca = TestCa::Create("Some Other CA");
  TlsServerOptions options = ServerOptions(TLS1_3_VERSION);
  options.client_ca_pem = other_ca->cert_pem();
  Run run = Exchange(options, client.get());
  EXPECT_TRUE(run.client.connected);
  EXPECT_EQ(run.client.response, "");
  EXPECT_NE(run.client.error.find("SSL_read"), std::string::npos) << run.client.error;
  EXPECT_NE(run.client.error.find("alert"), std::string::npos) << run.client.error;
  EXPECT_FALSE(run.server.handshake_ok);
  EXPECT_EQ(id.handshake_signs(), 1);  // the client did sign; the server refused the chain
  ERR_clear_error();
}

TEST_F(TlsTest, MismatchedCertificateIsRefusedByUseClientIdentity) {
  Identity a = MakeIdentity(KeyType::kEcP256, "agt_a");
  Identity b = MakeIdentity(KeyType::kEcP256, "agt_b");
  auto ctx = testing::MakeClientCtx(ca_->cert_pem(), TLS1_2_VERSION, TLS1_3_VERSION);
  ASSERT_TRUE(ctx.ok());
  Status st = UseClientIdentity(ctx->get(), a.chain_pem, b.pkey.get());
  EXPECT_EQ(st.code(), Code::kFailedPrecondition);
  EXPECT_NE(st.message().find("CN=agt_a"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("label-agt_b"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("does not belong"), std::string::npos) << st.message();
  // An RSA key with an EC certificate, and a broken chain, are refused too.
  Identity rsa = MakeIdentity(KeyType::kRsa3072, "agt_rsa");
  EXPECT_FALSE(UseClientIdentity(ctx->get(), a.chain_pem, rsa.pkey.get()).ok());
  EXPECT_EQ(UseClientIdentity(ctx->get(), "not a chain", a.pkey.get()).code(),
            Code::kInvalidArgument);
  EXPECT_EQ(a.handshake_signs() + b.handshake_signs() + rsa.handshake_signs(), 0);
  EXPECT_EQ(ERR_peek_error(), 0u);
  // The right pair still works on the same context.
  EXPECT_TRUE(UseClientIdentity(ctx->get(), a.chain_pem, a.pkey.get()).ok());
  EXPECT_EQ(ERR_peek_error(), 0u);
}

TEST_F(TlsTest, IdentityHookInstallsTheIdentityOnEveryNewContext) {
  Identity id = MakeIdentity(KeyType::kEcP256, "agt_hook");
  // The hook shares the key; the test's own reference can go.
  auto hook = MakeClientIdentityHook(id.chain_pem, std::move(id.pkey));
  ASSERT_TRUE(hook.ok()) << hook.status().ToString();
  for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
    auto ctx = testing::MakeClientCtx(ca_->cert_pem(), TLS1_2_VERSION, version);
    ASSERT_TRUE(ctx.ok());
    Status st = (*hook)(ctx->get());
    ASSERT_TRUE(st.ok()) << st.ToString();
    Run run = Exchange(ServerOptions(version), ctx->get());
    EXPECT_EQ(run.client.response, "hello " + id.subject + "\n") << run.client.error;
  }
  EXPECT_EQ(id.handshake_signs(), 2);
  // A chain for another key is refused when the hook is made, before any connection.
  Identity other = MakeIdentity(KeyType::kEcP256, "agt_other");
  auto bad = MakeClientIdentityHook(id.chain_pem, std::move(other.pkey));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("does not belong to token key 'label-agt_other'"),
            std::string::npos)
      << bad.status().message();
  EXPECT_EQ(ERR_peek_error(), 0u);
}

class TlsFailureTest : public TlsTest, public ::testing::WithParamInterface<int> {};

TEST_P(TlsFailureTest, TokenSigningFailureFailsTheHandshakeCleanly) {
  Identity id = MakeIdentity(KeyType::kEcP256, "agt_failing");
  SslCtx client = ClientCtx(id, GetParam());
  ASSERT_NE(client, nullptr);
  id.soft->set_failing(true);
  Run run = Exchange(ServerOptions(GetParam()), client.get());
  EXPECT_FALSE(run.client.connected);
  EXPECT_EQ(run.client.response, "");
  EXPECT_NE(run.client.error.find("token signing failed"), std::string::npos) << run.client.error;
  EXPECT_NE(run.client.error.find("simulated token failure"), std::string::npos)
      << run.client.error;
  EXPECT_NE(run.client.error.find("label-agt_failing"), std::string::npos) << run.client.error;
  EXPECT_FALSE(run.server.answered);
  EXPECT_EQ(id.handshake_signs(), 1);
  // The same context works again once the token recovers.
  id.soft->set_failing(false);
  Run again = Exchange(ServerOptions(GetParam()), client.get());
  EXPECT_EQ(again.client.response, "hello " + id.subject + "\n") << again.client.error;
  EXPECT_EQ(id.handshake_signs(), 2);
  EXPECT_EQ(ERR_peek_error(), 0u);
}

TEST_P(TlsFailureTest, ReleasedKeyFailsTheHandshakeWithoutCallingTheToken) {
  Identity id = MakeIdentity(KeyType::kEcP256, "agt_released");
  SslCtx client = ClientCtx(id, GetParam());
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(ReleaseProviderKeys(), 1u);
  Run run = Exchange(ServerOptions(GetParam()), client.get());
  EXPECT_EQ(run.client.response, "");
  EXPECT_NE(run.client.error.find("was released"), std::string::npos) << run.client.error;
  EXPECT_EQ(id.handshake_signs(), 0);
  ERR_clear_error();
}

std::string VersionName(const ::testing::TestParamInfo<int>& p) {
  return p.param == TLS1_3_VERSION ? "Tls13" : "Tls12";
}

INSTANTIATE_TEST_SUITE_P(Versions, TlsFailureTest,
                         ::testing::Values(TLS1_3_VERSION, TLS1_2_VERSION), VersionName);

TEST_F(TlsTest, ConcurrentHandshakesShareOneProviderKey) {
  Identity id = MakeIdentity(KeyType::kEcP256, "agt_threads");
  // One client context (and so one EVP_PKEY) shared by every thread, as connections of one
  // transport would.
  SslCtx client = ClientCtx(id, TLS1_3_VERSION);
  ASSERT_NE(client, nullptr);
  auto server_ctx = testing::MakeServerCtx(ServerOptions(TLS1_3_VERSION));
  ASSERT_TRUE(server_ctx.ok());
  constexpr int kThreads = 4;
  constexpr int kPerThread = 5;
  std::atomic<int> good{0};
  std::atomic<int> dirty_queues{0};
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto ex = TlsExchange::Start(server_ctx->get());
        if (!ex.ok()) continue;
        ClientOutcome out = (*ex)->RunClient(client.get());
        if (out.response == "hello " + id.subject + "\n") {
          ++good;
        } else {
          errors[static_cast<std::size_t>(t)] = out.error + " / " + (*ex)->server().error;
        }
        if (ERR_peek_error() != 0) ++dirty_queues;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(good.load(), kThreads * kPerThread) << errors[0] << errors[1] << errors[2] << errors[3];
  EXPECT_EQ(id.handshake_signs(), kThreads * kPerThread);
  EXPECT_EQ(dirty_queues.load(), 0);
}

}  // namespace
}  // namespace cakewalk::hsm
