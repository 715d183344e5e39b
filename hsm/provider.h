// The "cakewalk-token" OpenSSL 3 provider: exposes token-resident private keys (TokenKey) to
// OpenSSL so that libssl signs TLS handshakes, and X509_REQ_sign signs CSRs, with the key inside
// the token. Nothing private ever exists in OpenSSL's memory; signing hashes on the host and
// calls TokenKey::Sign.
//
// What it registers (default library context only), every algorithm tagged
// "provider=cakewalk-token":
//   keymgmt   "EC" (P-256 token keys)      signature "ECDSA"  (SHA-256/384/512, DER output)
//   keymgmt   "RSA" (RSA-3072 token keys)  signature "RSA"    (PKCS#1 v1.5, or PSS with salt
//                                                              length = digest length and MGF1
//                                                              with the same digest)
// No key generation, no encoders/decoders, no OSSL_STORE loader, no verification: verification
// and ECDHE stay on OpenSSL's default provider.
//
// Installation (InstallTokenProvider):
//   1. loads the "default" provider explicitly, FIRST: loading any provider disables the
//      implicit default one, and PKCS#11 modules that use OpenSSL in-process (SoftHSM) break
//      without it (C_Login then fails with CKR_PIN_INCORRECT);
//   2. registers and loads "cakewalk-token" as a built-in provider;
//   3. sets the default library context's default properties to "?provider=default", so that
//      every fetch that does not ask for our provider (ECDHE key shares, digests, verification)
//      prefers the default provider. This replaces any default properties set before.
//
// Key registry and teardown contract (the process-exit pitfall: OpenSSL unloads providers from
// an atexit handler that runs after a PKCS#11 module's own static destructors):
//   - ProviderKey(key) registers the shared_ptr<TokenKey> in a process-wide registry under a
//     fresh numeric id, and returns an EVP_PKEY whose provider-side object refers to that id.
//     The registry holds the only provider-side strong reference; the entry is dropped when the
//     last EVP_PKEY object (and its duplicates) referring to it is freed.
//   - ReleaseProviderKeys() drops every registry reference at once. The owner (agent main, or a
//     test) calls it before finalising the PKCS#11 module; any EVP_PKEY still alive afterwards
//     fails to sign with a clear "released" error instead of calling into the module.
//   - The registry is never destroyed by static destructors and provider teardown does not touch
//     it: nothing in this provider calls TokenKey (hence the module) at exit. A TokenKey still
//     registered at exit is simply leaked. Both providers stay loaded for the life of the
//     process; their handles are released from inside OPENSSL_cleanup (OpenSSL's exit handler,
//     which runs after the PKCS#11 module's own exit handler), so that OpenSSL frees them then
//     instead of leaking them. The provider's teardown only frees its context.
//   - The owner must free its EVP_PKEYs, SSL_CTXs and curl handles that use them before it
//     finalises the module (normal RAII order in main does this).
//
// Thread safety: InstallTokenProvider, ProviderKey and ReleaseProviderKeys may be called from
// any thread. One EVP_PKEY may be used by concurrent signing contexts (concurrent handshakes);
// TokenKey::Sign is required to be thread-safe.
//
// Errors: dispatch functions never throw, leave OpenSSL's error queue as they found it on
// success, and push one error from library "cakewalk-token" with the reason (e.g. the TokenKey's
// status message and the key label) on failure.
#pragma once

#include <openssl/evp.h>
#include <openssl/types.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "base/c_free.h"
#include "base/status.h"
#include "hsm/token_key.h"

namespace cakewalk::hsm {

using EvpPkey = CPtr<EVP_PKEY, EVP_PKEY_free>;

inline constexpr std::string_view kTokenProviderName = "cakewalk-token";
// The property query that selects this provider's algorithms.
inline constexpr std::string_view kTokenProviderProperty = "provider=cakewalk-token";
// Key parameter understood by the provider's keymgmt import (unsigned 64-bit registry id). Only
// ProviderKey() uses it; documented for tests.
inline constexpr std::string_view kKeyIdParam = "cakewalk-key-id";
// Gettable key parameter (UTF-8 string): the TokenKey's label, for messages.
inline constexpr std::string_view kKeyLabelParam = "cakewalk-key-label";

// Loads the default provider, then this provider, into the default library context. Idempotent
// and thread-safe; the first call's outcome is returned by every later call.
Status InstallTokenProvider();

// An EVP_PKEY backed by `key` (installs the provider if needed). Its public key is
// key->public_key_der(); every private-key operation calls key->Sign. The key type must be
// EC P-256 or RSA-3072 and must match the public key.
Result<EvpPkey> ProviderKey(std::shared_ptr<TokenKey> key);

// Drops every registry reference to a TokenKey (see the teardown contract above). Returns how
// many keys were still registered.
std::size_t ReleaseProviderKeys();

// Number of TokenKeys currently registered (EVP_PKEYs from ProviderKey not yet freed).
std::size_t RegisteredProviderKeyCount();

// The label of a key made by ProviderKey, or "" for any other key.
std::string ProviderKeyLabel(const EVP_PKEY* key);

// Installs a client identity on `ctx`: the leaf of `chain_pem` (leaf first) as certificate, the
// rest as its chain, then `key`, then checks that they belong together. The certificate is set
// before the key, so a mismatch is reported instead of the key being dropped silently. Errors
// name the certificate's subject and the step that failed; OpenSSL's error queue is left clean.
// Used from the libcurl transport's SSL_CTX hook.
Status UseClientIdentity(SSL_CTX* ctx, const std::string& chain_pem, EVP_PKEY* key);

// A hook for http::TransportOptions::client_identity: UseClientIdentity(ctx, chain_pem, key) on
// every new connection's SSL_CTX. The hook shares ownership of `key` (free the transport before
// releasing provider keys). Checks up front, without signing, that the chain parses and belongs
// to `key`.
Result<std::function<Status(SSL_CTX*)>> MakeClientIdentityHook(std::string chain_pem, EvpPkey key);

}  // namespace cakewalk::hsm
