// The provider with a real token key: an EC P-256 key pair generated in a private SoftHSM token
// (hsm::KeyPair), a CSR and mutual TLS through libssl, and a clean process exit — including a
// process that exits without tearing anything down (OpenSSL unloads providers from its exit
// handler, after SoftHSM's own destructors could have run).
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

// GCC says __SANITIZE_ADDRESS__; clang (the sanitizer tree) says __has_feature(address_sanitizer).
#if defined(__SANITIZE_ADDRESS__)
#define CAKEWALK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CAKEWALK_ASAN 1
#endif
#endif
#if defined(CAKEWALK_ASAN)
#include <sanitizer/lsan_interface.h>
#endif

#include "base/secret.h"
#include "hsm/csr.h"
#include "hsm/key_pair.h"
#include "hsm/module.h"
#include "hsm/provider.h"
#include "hsm/token.h"
#include "tests/provider/tls_peer.h"
#include "tests/support/pki.h"
#include "tests/support/softhsm.h"

namespace cakewalk::hsm {
namespace {

using testing::SoftHsm;
using testing::TestCa;

// TEST CODE: forwards to the token key and counts the signatures.
class CountingKey final : public TokenKey {
 public:
  explicit CountingKey(std::shared_ptr<TokenKey> inner) : inner_(std::move(inner)) {}
  KeyType type() const override { return inner_->type(); }
  const std::vector<std::uint8_t>& public_key_der() const override {
    return inner_->public_key_der();
  }
  const std::string& label() const override { return inner_->label(); }
  Result<std::vector<std::uint8_t>> Sign(SignScheme scheme,
                                         std::span<const std::uint8_t> input) override {
    ++calls;
    return inner_->Sign(scheme, input);
  }
  std::atomic<int> calls{0};

 private:
  std::shared_ptr<TokenKey> inner_;
};

// Everything one scenario builds, in construction order.
struct Scenario {
  std::unique_ptr<SoftHsm> softhsm;
  std::unique_ptr<Module> module;
  std::unique_ptr<Token> token;
  std::shared_ptr<CountingKey> key;
  std::unique_ptr<TestCa> ca;
  std::string chain_pem;
  EvpPkey pkey;
  testing::SslCtx client;
};

enum class Order { kModuleFirst, kProviderFirst };

// Token, key pair in the token, CSR, certificate, provider key, client context; then one TLS
// handshake per version in `versions`, each checked on the server's answer.
void RunScenario(Scenario& s, Order order, std::initializer_list<int> versions) {
  if (order == Order::kProviderFirst) {
    ASSERT_TRUE(InstallTokenProvider().ok());
  }
  auto softhsm = SoftHsm::Create("provider-test");
  ASSERT_TRUE(softhsm.ok()) << softhsm.status().ToString();
  s.softhsm = std::move(softhsm).value();
  std::printf("token folder: %s\n", s.softhsm->dir().c_str());
  auto module = Module::Load(std::string(SoftHsm::kModulePath));
  ASSERT_TRUE(module.ok()) << module.status().ToString();
  s.module = std::move(module).value();
  auto token = Token::Open(*s.module, s.softhsm->token().uri,
                           SecretBytes::CopyOf(s.softhsm->token().user_pin));
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  s.token = std::move(token).value();
  if (order == Order::kModuleFirst) {
    ASSERT_TRUE(InstallTokenProvider().ok());
  }

  auto pair = KeyPair::Generate(*s.token, KeyType::kEcP256, "cakewalk-tls-1");
  ASSERT_TRUE(pair.ok()) << pair.status().ToString();
  s.key = std::make_shared<CountingKey>(std::shared_ptr<KeyPair>(std::move(pair).value()));

  auto csr = MakeCsrPem(s.key, "agt_softhsm");
  ASSERT_TRUE(csr.ok()) << csr.status().ToString();
  EXPECT_EQ(s.key->calls.load(), 1);
  s.ca = TestCa::Create("SoftHSM Provider Test CA");
  auto cert = s.ca->IssueFromCsr(*csr, "agt_softhsm", std::chrono::hours(24));
  ASSERT_TRUE(cert.ok()) << cert.status().ToString();  // IssueFromCsr verifies the CSR
  s.chain_pem = *cert + s.ca->cert_pem();

  auto pkey = ProviderKey(s.key);
  ASSERT_TRUE(pkey.ok()) << pkey.status().ToString();
  s.pkey = std::move(pkey).value();
  EXPECT_EQ(EVP_PKEY_get_size(s.pkey.get()), 72);

  TestCa::LeafOptions server_leaf;
  auto server = s.ca->Issue(server_leaf);
  ASSERT_TRUE(server.ok());
  int expected_calls = 1;
  for (int version : versions) {
    SCOPED_TRACE(version == TLS1_3_VERSION ? "TLS 1.3" : "TLS 1.2");
    auto client = testing::MakeClientCtx(s.ca->cert_pem(), TLS1_2_VERSION, version);
    ASSERT_TRUE(client.ok());
    s.client = std::move(client).value();
    Status st = UseClientIdentity(s.client.get(), s.chain_pem, s.pkey.get());
    ASSERT_TRUE(st.ok()) << st.ToString();
    testing::TlsServerOptions options;
    options.chain_pem = server->chain_pem;
    options.key_pem = server->key_pem;
    options.client_ca_pem = s.ca->cert_pem();
    options.max_version = version;
    auto server_ctx = testing::MakeServerCtx(options);
    ASSERT_TRUE(server_ctx.ok());
    auto exchange = testing::TlsExchange::Start(server_ctx->get());
    ASSERT_TRUE(exchange.ok());
    testing::ClientOutcome out = (*exchange)->RunClient(s.client.get());
    EXPECT_EQ(out.response, "hello /CN=agt_softhsm\n")
        << "client: " << out.error << "\nserver: " << (*exchange)->server().error;
    ++expected_calls;
    EXPECT_EQ(s.key->calls.load(), expected_calls) << "one token signature per handshake";
    EXPECT_EQ(ERR_peek_error(), 0u) << "error queue not clean (SoftHSM leaves errors behind)";
  }
}

TEST(SoftHsmProvider, CsrAndMutualTlsWithATokenKeyThenOrderlyTeardown) {
  Scenario s;
  RunScenario(s, Order::kModuleFirst, {TLS1_3_VERSION, TLS1_2_VERSION});
  // The teardown main() does: connections and keys, then the registry, then the token.
  s.client.reset();
  s.pkey.reset();
  EXPECT_EQ(ReleaseProviderKeys(), 0u);  // nothing left: the key objects are gone
  s.key.reset();
  EXPECT_TRUE(s.token->Close().ok());
  EXPECT_TRUE(s.module->Close().ok());
}

TEST(SoftHsmProvider, ProviderInstalledBeforeTheModuleWorksToo) {
  Scenario s;
  RunScenario(s, Order::kProviderFirst, {TLS1_3_VERSION});
  // Releasing while key objects still exist: they stop signing, the token is not called.
  EXPECT_EQ(ReleaseProviderKeys(), 1u);
  const int calls = s.key->calls.load();
  CPtr<EVP_MD_CTX, EVP_MD_CTX_free> md(EVP_MD_CTX_new());
  ASSERT_EQ(
      EVP_DigestSignInit_ex(md.get(), nullptr, "SHA256", nullptr, nullptr, s.pkey.get(), nullptr),
      1);
  unsigned char sig[72];
  std::size_t len = sizeof sig;
  EXPECT_NE(EVP_DigestSign(md.get(), sig, &len, reinterpret_cast<const unsigned char*>("x"), 1), 1);
  EXPECT_EQ(s.key->calls.load(), calls);
  ERR_clear_error();
}

// Exits with everything still alive (module, session, key objects, an SSL_CTX holding the
// key): what a process that returns from main() or calls exit() without teardown does. Run on
// its own by ChildProcessesExitCleanly, which checks the exit status.
TEST(SoftHsmProvider, ExitWithoutTeardown) {
#if defined(CAKEWALK_ASAN)
  __lsan_disable();  // what follows leaks on purpose; sanitizer builds must not report it
#endif
  auto* s = new Scenario;  // deliberately leaked
  RunScenario(*s, Order::kModuleFirst, {TLS1_3_VERSION});
  // The token's folder (its PIN file, its objects) still goes when the process ends.
  ASSERT_TRUE(s->softhsm);
  static std::filesystem::path token_folder;
  token_folder = s->softhsm->dir();
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(token_folder, ec);
  });
}

TEST(SoftHsmProviderExit, ChildProcessesExitCleanly) {
  for (const char* test : {"SoftHsmProvider.CsrAndMutualTlsWithATokenKeyThenOrderlyTeardown",
                           "SoftHsmProvider.ExitWithoutTeardown"}) {
    SCOPED_TRACE(test);
    testing::ProgramResult r =
        testing::RunProgram({"/proc/self/exe", std::string("--gtest_filter=") + test});
    EXPECT_EQ(r.exit_code, 0) << "the child crashed or failed (-1: killed by a signal)\n"
                              << r.out << r.err;
    EXPECT_NE(r.out.find("[  PASSED  ] 1 test."), std::string::npos) << r.out << r.err;
    // The child leaves no token folder behind, however it ended.
    const std::string marker = "token folder: ";
    if (const auto at = r.out.find(marker); at != std::string::npos) {
      const std::string folder =
          r.out.substr(at + marker.size(), r.out.find('\n', at) - at - marker.size());
      EXPECT_FALSE(std::filesystem::exists(folder)) << folder;
    } else {
      ADD_FAILURE() << "the child did not say where its token was\n" << r.out;
    }
  }
}

}  // namespace
}  // namespace cakewalk::hsm
