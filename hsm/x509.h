// Certificate utilities for the agent's identity: strict PEM chain parsing, validity dates,
// subjects, and the check that a certificate carries a given public key (a token key's).
//
// Everything that arrives from the control plane goes through ParsePemChain, which accepts
// CERTIFICATE blocks separated by blank lines and nothing else.
#pragma once

#include <openssl/x509.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/c_free.h"
#include "base/status.h"
#include "base/time.h"

namespace cakewalk::hsm {

using X509Ptr = CPtr<X509, X509_free>;

// At most this many certificates in one chain, and this many bytes of PEM.
inline constexpr std::size_t kMaxChainCertificates = 10;
inline constexpr std::size_t kMaxChainPemBytes = 256 * 1024;

// Parses a PEM certificate chain, leaf first. Strict: only "CERTIFICATE" blocks without
// headers, base64 bodies that decode to exactly one DER certificate each, and nothing but blank
// lines between blocks. At least one certificate.
Result<std::vector<X509Ptr>> ParsePemChain(std::string_view pem);

// The certificate as PEM ("-----BEGIN CERTIFICATE-----" ...).
Result<std::string> CertificateToPem(const X509* cert);

// One-line subject in RFC 2253 form ("CN=agt_123,O=Example"), for messages.
std::string CertificateSubject(const X509* cert);

// notBefore / notAfter as UTC time points.
Result<SysTime> CertificateNotBefore(const X509* cert);
Result<SysTime> CertificateNotAfter(const X509* cert);
// The same for the first (leaf) certificate of a PEM chain.
Result<SysTime> CertificateNotAfter(std::string_view chain_pem);

// DER SubjectPublicKeyInfo of the certificate's key.
Result<std::vector<std::uint8_t>> CertificateSpkiDer(const X509* cert);

// OK when the certificate's public key equals the key in `spki_der` (DER SubjectPublicKeyInfo,
// as TokenKey::public_key_der() returns it); compared as keys, not as bytes. FailedPrecondition
// naming the certificate's subject otherwise.
Status CheckCertificateKey(const X509* cert, std::span<const std::uint8_t> spki_der);

// Drains OpenSSL's error queue of this thread into one line ("error:...; error:...") and
// clears it; "no OpenSSL error detail" when it is empty.
std::string DrainOpensslErrors();

}  // namespace cakewalk::hsm
