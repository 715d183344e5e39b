// Latencies on the TPM backend (swtpm + tpm2-abrmd + tpm2-pkcs11), printed, never asserted:
// scripts/bench tpm runs it.
//
//   tpm_bench [--ops N]
//
// TOTP: SecretStore::Totp (C_SignInit + C_Sign with the imported seed, then truncation).
// TLS sign: EVP_DigestSign with SHA-256 through the cakewalk-token provider, i.e. what libssl does
// for a TLS 1.3 CertificateVerify with the agent's P-256 key (C_Sign(CKM_ECDSA) in the TPM).
// Unseal: SecretStore::Unseal of a short password (HMAC check + AES-CBC decryption in the TPM).
// One-off costs (seed import, sealing-key generation, module re-initialisation) are printed once.
#include <openssl/evp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "hsm/key_pair.h"
#include "hsm/module.h"
#include "hsm/pin.h"
#include "hsm/provider.h"
#include "hsm/secret_store.h"
#include "hsm/token.h"
#include "tests/support/capture_log.h"
#include "tests/support/swtpm.h"

namespace {

using namespace cakewalk;
using Steady = std::chrono::steady_clock;

double Ms(Steady::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

void Report(const char* name, std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) {
    return ms[std::min(ms.size() - 1,
                       static_cast<std::size_t>(q * static_cast<double>(ms.size())))];
  };
  double sum = 0;
  for (double v : ms) sum += v;
  std::printf(
      "%-10s n=%-5zu p50 %7.2f ms   p90 %7.2f ms   p99 %7.2f ms   max %7.2f ms   mean %7.2f ms"
      "   (%.0f/s)\n",
      name, ms.size(), at(0.5), at(0.9), at(0.99), ms.back(), sum / static_cast<double>(ms.size()),
      1000.0 * static_cast<double>(ms.size()) / sum);
}

bool Measure(const char* name, int ops, const std::function<bool()>& op) {
  std::vector<double> ms;
  ms.reserve(static_cast<std::size_t>(ops));
  for (int i = 0; i < ops; ++i) {
    const auto start = Steady::now();
    if (!op()) {
      std::fprintf(stderr, "%s failed\n", name);
      return false;
    }
    ms.push_back(Ms(Steady::now() - start));
  }
  Report(name, std::move(ms));
  return true;
}

int Fail(const Status& s) {
  std::fprintf(stderr, "tpm_bench: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  int ops = 200;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--ops") == 0 && i + 1 < argc) {
      ops = std::max(10, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: tpm_bench [--ops N]\n");
      return 2;
    }
  }
  auto tpm = testing::Swtpm::Start("bench");
  if (!tpm.ok()) return Fail(tpm.status());
  int rc = 0;
  {
    auto module = hsm::Module::Load(std::string(testing::Swtpm::kModulePath));
    if (!module.ok()) return Fail(module.status());
    auto pin = hsm::ResolvePin((*tpm)->token().pin_file);
    if (!pin.ok()) return Fail(pin.status());
    auto token = hsm::Token::Open(**module, (*tpm)->token().uri, std::move(*pin));
    if (!token.ok()) return Fail(token.status());
    testing::CapturingLogSink audit;
    auto store = hsm::SecretStore::Open(**token, audit);
    if (!store.ok()) return Fail(store.status());

    std::printf("swtpm via tpm2-abrmd (TCTI %s), tpm2-pkcs11; %d operations each\n",
                testing::Swtpm::kTcti, ops);
    hsm::TotpSeed seed;
    seed.key = SecretBytes::CopyOf(std::string_view("12345678901234567890"));
    auto t0 = Steady::now();
    auto enrolled = (*store)->EnrollTotp("bench", seed, hsm::Activation::kCurrent);
    if (!enrolled.ok()) return Fail(enrolled.status());
    std::printf("one-off    seed import (helper + module re-initialisation): %.0f ms\n",
                Ms(Steady::now() - t0));
    t0 = Steady::now();
    auto put = (*store)->Put("bench", "password", SecretBytes::CopyOf(std::string_view("pw")));
    if (!put.ok()) return Fail(put.status());
    std::printf("one-off    first Put (sealing keys generated in the TPM): %.0f ms\n",
                Ms(Steady::now() - t0));
    t0 = Steady::now();
    auto pair = hsm::KeyPair::Generate(**token, hsm::KeyType::kEcP256, "bench-tls");
    if (!pair.ok()) return Fail(pair.status());
    std::printf("one-off    P-256 key pair generation: %.0f ms\n", Ms(Steady::now() - t0));
    if (Status st = hsm::InstallTokenProvider(); !st.ok()) return Fail(st);
    auto pkey = hsm::ProviderKey(std::shared_ptr<hsm::KeyPair>(std::move(*pair)));
    if (!pkey.ok()) return Fail(pkey.status());

    const auto now = std::chrono::system_clock::now();
    bool ok = Measure("TOTP", ops, [&] {
      auto code = (*store)->Totp("bench", now, "benchmark");
      return code.ok();
    });
    const std::string transcript(130, 'x');  // what a CertificateVerify signs is about this long
    ok = ok && Measure("TLS sign", ops, [&] {
           CPtr<EVP_MD_CTX, EVP_MD_CTX_free> md(EVP_MD_CTX_new());
           unsigned char sig[80];
           std::size_t len = sizeof sig;
           return md &&
                  EVP_DigestSignInit_ex(md.get(), nullptr, "SHA2-256", nullptr, nullptr,
                                        pkey->get(), nullptr) == 1 &&
                  EVP_DigestSign(md.get(), sig, &len,
                                 reinterpret_cast<const unsigned char*>(transcript.data()),
                                 transcript.size()) == 1;
         });
    ok = ok && Measure("Unseal", ops, [&] {
           auto pw = (*store)->Unseal("bench", "password", "benchmark");
           return pw.ok();
         });
    if (!ok) rc = 1;
    pkey->reset();
    hsm::ReleaseProviderKeys();
    store->reset();
    token->reset();
    (*module)->Close().IgnoreError();
  }
  return rc;
}
