// The certificate chain the control plane answers enrollment and renewal with (hsm/x509.h):
// ParsePemChain, then everything the agent reads from each certificate.
//
// Properties: an accepted chain has 1..kMaxChainCertificates certificates; each writes back to
// PEM that parses to the same DER.
#include <openssl/x509.h>

#include <string>

#include "hsm/x509.h"
#include "tests/fuzz/fuzz_support.h"

using cakewalk::fuzz::FuzzCheck;

namespace {

std::string Der(const X509* cert) {
  unsigned char* out = nullptr;
  const int n = i2d_X509(cert, &out);
  FuzzCheck(n > 0, "a parsed certificate encodes to DER");
  std::string der(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
  OPENSSL_free(out);
  return der;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = cakewalk::fuzz::AsText(data, size);
  auto chain = cakewalk::hsm::ParsePemChain(text);
  (void)cakewalk::hsm::CertificateNotAfter(text);
  if (!chain.ok()) {
    FuzzCheck(!chain.status().message().empty(), "a refusal says why");
    return 0;
  }
  FuzzCheck(!chain->empty() && chain->size() <= cakewalk::hsm::kMaxChainCertificates,
            "chain length within bounds");
  for (const auto& cert : *chain) {
    (void)cakewalk::hsm::CertificateSubject(cert.get());
    (void)cakewalk::hsm::CertificateNotBefore(cert.get());
    (void)cakewalk::hsm::CertificateNotAfter(cert.get());
    if (auto spki = cakewalk::hsm::CertificateSpkiDer(cert.get()); spki.ok()) {
      (void)cakewalk::hsm::CheckCertificateKey(cert.get(), *spki);
    }
    auto pem = cakewalk::hsm::CertificateToPem(cert.get());
    FuzzCheck(pem.ok(), "a parsed certificate writes as PEM");
    auto again = cakewalk::hsm::ParsePemChain(*pem);
    FuzzCheck(again.ok() && again->size() == 1, "a certificate's PEM parses back");
    FuzzCheck(Der((*again)[0].get()) == Der(cert.get()), "PEM round trip keeps the DER");
  }
  (void)cakewalk::hsm::DrainOpensslErrors();
  return 0;
}
