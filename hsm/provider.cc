// The "cakewalk-token" provider. See provider.h for what it offers and its contracts.
//
// Layout: a key registry (ids -> TokenKey), the provider context and error reporting, the
// keymgmt functions (EC and RSA, one template), the signature functions (ECDSA and RSA), the
// provider entry points, then the public API.
//
// Every dispatch function is noexcept and wraps its body in Guarded(), which catches exceptions,
// sets an error mark on entry and pops it again, so that noise from callees (PKCS#11 modules
// that use OpenSSL in-process leave errors behind) never reaches the caller; on failure the
// function pushes one error of its own afterwards.
#include "hsm/provider.h"

#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstdarg>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "hsm/x509.h"

namespace cakewalk::hsm {
namespace {

using EvpPkeyCtx = CPtr<EVP_PKEY_CTX, EVP_PKEY_CTX_free>;
using EvpMd = CPtr<EVP_MD, EVP_MD_free>;
using EvpMdCtx = CPtr<EVP_MD_CTX, EVP_MD_CTX_free>;
using EcdsaSig = CPtr<ECDSA_SIG, ECDSA_SIG_free>;
using X509Algor = CPtr<X509_ALGOR, X509_ALGOR_free>;
using X509Sig = CPtr<X509_SIG, X509_SIG_free>;
using Bignum = CPtr<BIGNUM, BN_free>;
using DecoderCtx = CPtr<OSSL_DECODER_CTX, OSSL_DECODER_CTX_free>;

constexpr char kName[] = "cakewalk-token";
constexpr char kProperty[] = "provider=cakewalk-token";
constexpr char kIdParam[] = "cakewalk-key-id";
constexpr char kLabelParam[] = "cakewalk-key-label";
constexpr char kEcNames[] = "EC:id-ecPublicKey:1.2.840.10045.2.1";
constexpr char kRsaNames[] = "RSA:rsaEncryption:1.2.840.113549.1.1.1";
static_assert(std::string_view(kName) == kTokenProviderName);
static_assert(std::string_view(kProperty) == kTokenProviderProperty);
static_assert(std::string_view(kIdParam) == kKeyIdParam);
static_assert(std::string_view(kLabelParam) == kKeyLabelParam);

// ------------------------------------------------------------------------------------------
// Key registry

class KeyRegistry {
 public:
  // Registers `key` with one reference (the caller's); returns its id.
  std::uint64_t Add(std::shared_ptr<TokenKey> key) {
    std::lock_guard lock(mu_);
    const std::uint64_t id = next_id_++;
    entries_.emplace(id, Entry{std::move(key), 1});
    return id;
  }
  // Takes one more reference for a provider key object; null when the id is not registered.
  std::shared_ptr<TokenKey> Acquire(std::uint64_t id) {
    std::lock_guard lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return nullptr;
    ++it->second.refs;
    return it->second.key;
  }
  // The key without taking a reference; null when released.
  std::shared_ptr<TokenKey> Get(std::uint64_t id) {
    std::lock_guard lock(mu_);
    auto it = entries_.find(id);
    return it == entries_.end() ? nullptr : it->second.key;
  }
  // Drops one reference; the entry goes when none is left. The TokenKey may be destroyed here,
  // outside the lock.
  void Release(std::uint64_t id) {
    std::shared_ptr<TokenKey> last;
    {
      std::lock_guard lock(mu_);
      auto it = entries_.find(id);
      if (it == entries_.end()) return;
      if (--it->second.refs == 0) {
        last = std::move(it->second.key);
        entries_.erase(it);
      }
    }
  }
  std::size_t Clear() {
    std::map<std::uint64_t, Entry> dropped;
    {
      std::lock_guard lock(mu_);
      dropped.swap(entries_);
    }
    return dropped.size();
  }
  std::size_t Size() {
    std::lock_guard lock(mu_);
    return entries_.size();
  }

 private:
  struct Entry {
    std::shared_ptr<TokenKey> key;
    std::size_t refs = 0;
  };
  std::mutex mu_;
  std::uint64_t next_id_ = 1;
  std::map<std::uint64_t, Entry> entries_;
};

// Deliberately never destroyed: a static destructor at exit would destroy TokenKeys, and with
// them PKCS#11 sessions, after the module's own statics are gone.
KeyRegistry& Registry() {
  static KeyRegistry* registry = new KeyRegistry;
  return *registry;
}

// ------------------------------------------------------------------------------------------
// Provider context and errors

enum Reason : int {
  kReasonSignFailed = 1,
  kReasonKeyReleased,
  kReasonBadKey,
  kReasonUnsupportedDigest,
  kReasonBadParameter,
  kReasonBufferTooSmall,
  kReasonNoPrivateKey,
  kReasonInternal,
};

const OSSL_ITEM kReasonStrings[] = {
    {kReasonSignFailed, const_cast<char*>("token signing failed")},
    {kReasonKeyReleased, const_cast<char*>("token key was released")},
    {kReasonBadKey, const_cast<char*>("unusable token key")},
    {kReasonUnsupportedDigest, const_cast<char*>("unsupported digest")},
    {kReasonBadParameter, const_cast<char*>("unsupported parameter value")},
    {kReasonBufferTooSmall, const_cast<char*>("signature buffer too small")},
    {kReasonNoPrivateKey, const_cast<char*>("key has no private part in the token")},
    {kReasonInternal, const_cast<char*>("internal error")},
    {0, nullptr},
};

struct ProvCtx {
  const OSSL_CORE_HANDLE* handle = nullptr;
  OSSL_FUNC_core_new_error_fn* new_error = nullptr;
  OSSL_FUNC_core_set_error_debug_fn* set_error_debug = nullptr;
  OSSL_FUNC_core_vset_error_fn* vset_error = nullptr;
};

void CallVsetError(const ProvCtx* prov, int reason, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  prov->vset_error(prov->handle, static_cast<std::uint32_t>(reason), fmt, ap);
  va_end(ap);
}

// Pushes one error with `reason` and a detail message.
void RaiseError(const ProvCtx* prov, int reason, const std::string& detail) noexcept {
  if (prov != nullptr && prov->new_error != nullptr && prov->vset_error != nullptr) {
    prov->new_error(prov->handle);
    if (prov->set_error_debug != nullptr) prov->set_error_debug(prov->handle, __FILE__, 0, kName);
    CallVsetError(prov, reason, "%s", detail.c_str());
  } else {
    ERR_raise_data(ERR_LIB_PROV, ERR_R_INTERNAL_ERROR, "%s: %s", kName, detail.c_str());
  }
}

// A failure inside a dispatch function: reason + detail, raised after the error mark is popped.
struct Failure {
  int reason = kReasonInternal;
  std::string detail;
};

// Runs `body` (returning std::optional<Failure>: nullopt on success) with an error mark around
// it and exceptions caught. Returns 1 on success, 0 on failure (with one error raised).
template <class F>
int Guarded(const ProvCtx* prov, F&& body) noexcept {
  ERR_set_mark();
  std::optional<Failure> failure;
  try {
    failure = body();
  } catch (const std::exception& e) {
    failure = Failure{kReasonInternal, std::string("exception: ") + e.what()};
  } catch (...) {
    failure = Failure{kReasonInternal, "unknown exception"};
  }
  ERR_pop_to_mark();
  if (!failure) return 1;
  try {
    RaiseError(prov, failure->reason, failure->detail);
  } catch (...) {
  }
  return 0;
}

Failure Fail(int reason, std::string detail) { return Failure{reason, std::move(detail)}; }

std::string_view KeyTypeName(KeyType type) {
  switch (type) {
    case KeyType::kEcP256:
      return "EC P-256";
    case KeyType::kRsa3072:
      return "RSA-3072";
  }
  return "unknown";
}

const char* KeymgmtName(KeyType type) { return type == KeyType::kEcP256 ? "EC" : "RSA"; }

// A public key on the default provider from DER SubjectPublicKeyInfo, checked to be of `type`.
Result<EvpPkey> DecodePublicKey(std::span<const std::uint8_t> der, KeyType type) {
  // A decoder (not d2i_PUBKEY, which makes a legacy key) so that the result is a provider key
  // whose parameters EVP_PKEY_get_params can answer in full.
  EVP_PKEY* raw = nullptr;
  DecoderCtx dctx(OSSL_DECODER_CTX_new_for_pkey(&raw, "DER", "SubjectPublicKeyInfo", nullptr,
                                                EVP_PKEY_PUBLIC_KEY, nullptr, "provider=default"));
  const unsigned char* p = der.data();
  std::size_t left = der.size();
  const bool decoded = dctx != nullptr && OSSL_DECODER_from_data(dctx.get(), &p, &left) == 1;
  EvpPkey pub(raw);
  if (!decoded || pub == nullptr || left != 0) {
    return InvalidArgument("public key is not a valid SubjectPublicKeyInfo");
  }
  if (type == KeyType::kEcP256) {
    char group[64] = {0};
    std::size_t len = 0;
    if (!EVP_PKEY_is_a(pub.get(), "EC") ||
        EVP_PKEY_get_group_name(pub.get(), group, sizeof group, &len) != 1 ||
        std::string_view(group, len) != "prime256v1") {
      return InvalidArgument("public key is not an EC P-256 key");
    }
  } else {
    if (!EVP_PKEY_is_a(pub.get(), "RSA") || EVP_PKEY_get_bits(pub.get()) != 3072) {
      return InvalidArgument("public key is not a 3072-bit RSA key");
    }
  }
  return pub;
}

// ------------------------------------------------------------------------------------------
// Keymgmt

struct KeyData {
  const ProvCtx* prov = nullptr;
  KeyType type = KeyType::kEcP256;
  std::uint64_t id = 0;  // registry id; 0: no private part (a public key imported for match)
  std::string label;
  EvpPkey pub;              // the public key (or only parameters) on the default provider
  bool has_public = false;  // `pub` holds a public key, not only domain parameters

  ~KeyData() {
    if (id != 0) Registry().Release(id);
  }
};

// Public parameters the keymgmt imports (for a key OpenSSL wants to compare with ours) and
// exports (public key and parameters only, never anything private).
const OSSL_PARAM kEcPublicTypes[] = {
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, nullptr, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0),
    OSSL_PARAM_END,
};
const OSSL_PARAM kEcImportTypes[] = {
    OSSL_PARAM_uint64(kIdParam, nullptr),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, nullptr, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0),
    OSSL_PARAM_END,
};
const OSSL_PARAM kRsaPublicTypes[] = {
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, nullptr, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, nullptr, 0),
    OSSL_PARAM_END,
};
const OSSL_PARAM kRsaImportTypes[] = {
    OSSL_PARAM_uint64(kIdParam, nullptr),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, nullptr, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, nullptr, 0),
    OSSL_PARAM_END,
};
const OSSL_PARAM kEcGettable[] = {
    OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, nullptr),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, nullptr),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, nullptr),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, nullptr, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, nullptr, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0),
    OSSL_PARAM_utf8_string(kLabelParam, nullptr, 0),
    OSSL_PARAM_END,
};
const OSSL_PARAM kRsaGettable[] = {
    OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, nullptr),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, nullptr),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, nullptr),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, nullptr, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, nullptr, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, nullptr, 0),
    OSSL_PARAM_utf8_string(kLabelParam, nullptr, 0),
    OSSL_PARAM_END,
};

// Private components that must never be imported into this provider.
bool HasPrivateComponent(const OSSL_PARAM params[]) {
  for (const char* name : {OSSL_PKEY_PARAM_PRIV_KEY, OSSL_PKEY_PARAM_RSA_D,
                           OSSL_PKEY_PARAM_RSA_FACTOR1, OSSL_PKEY_PARAM_RSA_EXPONENT1}) {
    if (OSSL_PARAM_locate_const(params, name) != nullptr) return true;
  }
  return false;
}

template <KeyType kType>
void* KmNew(void* provctx) noexcept {
  try {
    auto* kd = new KeyData;
    kd->prov = static_cast<const ProvCtx*>(provctx);
    kd->type = kType;
    return kd;
  } catch (...) {
    return nullptr;
  }
}

void KmFree(void* keydata) noexcept {
  // Releasing the registry reference may destroy the TokenKey (and close its session).
  ERR_set_mark();
  try {
    delete static_cast<KeyData*>(keydata);
  } catch (...) {
  }
  ERR_pop_to_mark();
}

int KmHas(const void* keydata, int selection) noexcept {
  const auto* kd = static_cast<const KeyData*>(keydata);
  if (kd == nullptr) return 0;
  if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 && kd->id == 0) return 0;
  if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0 && !kd->has_public) return 0;
  if ((selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) != 0 && kd->pub == nullptr) return 0;
  return 1;
}

template <KeyType kType>
int KmImport(void* keydata, int selection, const OSSL_PARAM params[]) noexcept {
  auto* kd = static_cast<KeyData*>(keydata);
  if (kd == nullptr) return 0;
  return Guarded(kd->prov, [&]() -> std::optional<Failure> {
    if (kd->pub != nullptr) return Fail(kReasonBadKey, "key object already holds a key");
    if (const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, kIdParam); p != nullptr) {
      std::uint64_t id = 0;
      if (OSSL_PARAM_get_uint64(p, &id) != 1 || id == 0) {
        return Fail(kReasonBadParameter, std::string(kIdParam) + " is not a key id");
      }
      std::shared_ptr<TokenKey> key = Registry().Acquire(id);
      if (key == nullptr) {
        return Fail(kReasonKeyReleased,
                    "no token key is registered under id " + std::to_string(id));
      }
      kd->id = id;  // from here on the destructor releases the reference
      kd->label = key->label();
      if (key->type() != kType) {
        return Fail(kReasonBadKey, "token key '" + kd->label + "' is " +
                                       std::string(KeyTypeName(key->type())) + ", not " +
                                       std::string(KeyTypeName(kType)));
      }
      auto pub = DecodePublicKey(key->public_key_der(), kType);
      if (!pub.ok()) {
        return Fail(kReasonBadKey, "token key '" + kd->label + "': " + pub.status().message());
      }
      kd->pub = std::move(pub).value();
      kd->has_public = true;
      return std::nullopt;
    }
    // No id: a public key (or parameters) OpenSSL imports to compare it with one of ours.
    if (HasPrivateComponent(params)) {
      return Fail(kReasonNoPrivateKey,
                  "this provider never holds private key material outside the token");
    }
    const bool want_public = (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0;
    if (!want_public && (selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS) == 0) {
      return Fail(kReasonBadParameter, "nothing to import");
    }
    EvpPkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, KeymgmtName(kType), "provider=default"));
    EVP_PKEY* raw = nullptr;
    const int sel = want_public ? EVP_PKEY_PUBLIC_KEY : EVP_PKEY_KEY_PARAMETERS;
    if (ctx == nullptr || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
        EVP_PKEY_fromdata(ctx.get(), &raw, sel, const_cast<OSSL_PARAM*>(params)) != 1) {
      return Fail(kReasonBadKey, "cannot import the public key into the default provider");
    }
    kd->pub.reset(raw);
    kd->has_public = want_public;
    return std::nullopt;
  });
}

template <KeyType kType>
const OSSL_PARAM* KmImportTypes(int selection) noexcept {
  if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) == 0 &&
      (selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS) == 0) {
    return nullptr;
  }
  return kType == KeyType::kEcP256 ? kEcImportTypes : kRsaImportTypes;
}

int KmExport(void* keydata, int selection, OSSL_CALLBACK* cb, void* cbarg) noexcept {
  auto* kd = static_cast<KeyData*>(keydata);
  if (kd == nullptr || kd->pub == nullptr) return 0;
  // The private key never leaves the token. OpenSSL tries to export a key to the default
  // provider (with every selection) before signing; refusing makes it sign here instead. This
  // refusal is expected, so it raises no error.
  if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) return 0;
  return Guarded(kd->prov, [&]() -> std::optional<Failure> {
    int sel = 0;
    if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0 && kd->has_public) {
      sel = EVP_PKEY_PUBLIC_KEY;
    } else if ((selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS) != 0) {
      sel = EVP_PKEY_KEY_PARAMETERS;
    } else {
      return Fail(kReasonBadParameter, "nothing to export");
    }
    OSSL_PARAM* out = nullptr;
    if (EVP_PKEY_todata(kd->pub.get(), sel, &out) != 1) {
      return Fail(kReasonInternal, "cannot export the public key from the default provider");
    }
    const int ok = cb(out, cbarg);
    OSSL_PARAM_free(out);
    if (ok != 1) return Fail(kReasonInternal, "the export callback failed");
    return std::nullopt;
  });
}

template <KeyType kType>
const OSSL_PARAM* KmExportTypes(int selection) noexcept {
  if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) return nullptr;
  return kType == KeyType::kEcP256 ? kEcPublicTypes : kRsaPublicTypes;
}

int KmGetParams(void* keydata, OSSL_PARAM params[]) noexcept {
  auto* kd = static_cast<KeyData*>(keydata);
  if (kd == nullptr || kd->pub == nullptr) return 0;
  return Guarded(kd->prov, [&]() -> std::optional<Failure> {
    // Everything asked for is public: the default provider answers from the public key.
    if (EVP_PKEY_get_params(kd->pub.get(), params) != 1) {
      return Fail(kReasonInternal, "cannot read key parameters");
    }
    if (OSSL_PARAM* p = OSSL_PARAM_locate(params, kLabelParam); p != nullptr) {
      if (OSSL_PARAM_set_utf8_string(p, kd->label.c_str()) != 1) {
        return Fail(kReasonBadParameter, "cannot return the key label");
      }
    }
    return std::nullopt;
  });
}

template <KeyType kType>
const OSSL_PARAM* KmGettableParams(void*) noexcept {
  return kType == KeyType::kEcP256 ? kEcGettable : kRsaGettable;
}

template <KeyType kType>
const char* KmQueryOperationName(int operation_id) noexcept {
  if (operation_id != OSSL_OP_SIGNATURE) return nullptr;
  return kType == KeyType::kEcP256 ? "ECDSA" : "RSA";
}

template <KeyType kType>
int KmMatch(const void* keydata1, const void* keydata2, int selection) noexcept {
  const auto* a = static_cast<const KeyData*>(keydata1);
  const auto* b = static_cast<const KeyData*>(keydata2);
  if (a == nullptr || b == nullptr || a->pub == nullptr || b->pub == nullptr) return 0;
  ERR_set_mark();
  int ok = 1;
  if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0) {
    // Private keys cannot be compared; equal public keys mean the same key pair.
    ok = (a->id != 0 && a->id == b->id) ||
         (a->has_public && b->has_public && EVP_PKEY_eq(a->pub.get(), b->pub.get()) == 1);
  } else if ((selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) != 0 &&
             kType == KeyType::kEcP256) {
    ok = EVP_PKEY_parameters_eq(a->pub.get(), b->pub.get()) == 1;
  }
  ERR_pop_to_mark();
  return ok ? 1 : 0;
}

void* KmDup(const void* keydata_from, int selection) noexcept {
  const auto* from = static_cast<const KeyData*>(keydata_from);
  if (from == nullptr) return nullptr;
  try {
    auto kd = std::make_unique<KeyData>();
    kd->prov = from->prov;
    kd->type = from->type;
    kd->label = from->label;
    if (from->pub != nullptr) {
      // The public key object is never modified after import, so it is shared.
      if (EVP_PKEY_up_ref(from->pub.get()) != 1) return nullptr;
      kd->pub.reset(from->pub.get());
      kd->has_public = from->has_public && (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0;
    }
    if (from->id != 0 && (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) {
      if (Registry().Acquire(from->id) == nullptr) {
        RaiseError(from->prov, kReasonKeyReleased, "token key '" + from->label + "' was released");
        return nullptr;
      }
      kd->id = from->id;
    }
    return kd.release();
  } catch (...) {
    return nullptr;
  }
}

template <KeyType kType>
const OSSL_DISPATCH kKeymgmtFunctions[] = {
    {OSSL_FUNC_KEYMGMT_NEW, reinterpret_cast<void (*)()>(&KmNew<kType>)},
    {OSSL_FUNC_KEYMGMT_FREE, reinterpret_cast<void (*)()>(&KmFree)},
    {OSSL_FUNC_KEYMGMT_HAS, reinterpret_cast<void (*)()>(&KmHas)},
    {OSSL_FUNC_KEYMGMT_IMPORT, reinterpret_cast<void (*)()>(&KmImport<kType>)},
    {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, reinterpret_cast<void (*)()>(&KmImportTypes<kType>)},
    {OSSL_FUNC_KEYMGMT_EXPORT, reinterpret_cast<void (*)()>(&KmExport)},
    {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, reinterpret_cast<void (*)()>(&KmExportTypes<kType>)},
    {OSSL_FUNC_KEYMGMT_GET_PARAMS, reinterpret_cast<void (*)()>(&KmGetParams)},
    {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, reinterpret_cast<void (*)()>(&KmGettableParams<kType>)},
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME,
     reinterpret_cast<void (*)()>(&KmQueryOperationName<kType>)},
    {OSSL_FUNC_KEYMGMT_MATCH, reinterpret_cast<void (*)()>(&KmMatch<kType>)},
    {OSSL_FUNC_KEYMGMT_DUP, reinterpret_cast<void (*)()>(&KmDup)},
    {0, nullptr},
};

// ------------------------------------------------------------------------------------------
// Signature

enum class Padding { kPkcs1, kPss };

struct SigCtx {
  const ProvCtx* prov = nullptr;
  KeyType type = KeyType::kEcP256;
  std::uint64_t key_id = 0;
  std::string label;
  EvpPkey pub;  // shared with the key object, for sizes
  EvpMd md;     // null until a digest is chosen
  EvpMdCtx mdctx;
  Padding padding = Padding::kPkcs1;
  std::string mgf1;  // empty: same as md
  int saltlen = RSA_PSS_SALTLEN_DIGEST;
};

const OSSL_PARAM kGettableCtxParams[] = {
    OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, nullptr, 0),
    OSSL_PARAM_END,
};
const OSSL_PARAM kEcSettableCtxParams[] = {
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, nullptr, 0),
    OSSL_PARAM_END,
};
const OSSL_PARAM kRsaSettableCtxParams[] = {
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_PROPERTIES, nullptr, 0),
    OSSL_PARAM_END,
};

// The digests a token key signs with. SHA-1 and SHA-224 are refused, so libssl does not offer
// signature schemes with them.
int DigestNid(const EVP_MD* md) {
  if (EVP_MD_is_a(md, "SHA2-256")) return NID_sha256;
  if (EVP_MD_is_a(md, "SHA2-384")) return NID_sha384;
  if (EVP_MD_is_a(md, "SHA2-512")) return NID_sha512;
  return NID_undef;
}

std::optional<Failure> SetDigest(SigCtx& ctx, const char* name) {
  EvpMd md(EVP_MD_fetch(nullptr, name, nullptr));
  if (md == nullptr || DigestNid(md.get()) == NID_undef) {
    return Fail(kReasonUnsupportedDigest,
                std::string("digest '") + name + "' is not supported (SHA-256, SHA-384, SHA-512)");
  }
  ctx.md = std::move(md);
  if (ctx.mdctx == nullptr) ctx.mdctx.reset(EVP_MD_CTX_new());
  if (ctx.mdctx == nullptr || EVP_DigestInit_ex2(ctx.mdctx.get(), ctx.md.get(), nullptr) != 1) {
    return Fail(kReasonInternal, "cannot start the digest");
  }
  return std::nullopt;
}

std::optional<Failure> SetCtxParams(SigCtx& ctx, const OSSL_PARAM params[]) {
  if (params == nullptr) return std::nullopt;
  if (const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST)) {
    const char* name = nullptr;
    if (OSSL_PARAM_get_utf8_string_ptr(p, &name) != 1) {
      return Fail(kReasonBadParameter, "digest parameter is not a string");
    }
    if (auto f = SetDigest(ctx, name)) return f;
  }
  if (ctx.type != KeyType::kRsa3072) return std::nullopt;
  if (const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) {
    int mode = 0;
    if (p->data_type == OSSL_PARAM_UTF8_STRING) {
      const char* s = nullptr;
      if (OSSL_PARAM_get_utf8_string_ptr(p, &s) != 1) {
        return Fail(kReasonBadParameter, "pad-mode is not a string");
      }
      const std::string_view v(s);
      mode = v == OSSL_PKEY_RSA_PAD_MODE_PKCSV15 ? RSA_PKCS1_PADDING
             : v == OSSL_PKEY_RSA_PAD_MODE_PSS   ? RSA_PKCS1_PSS_PADDING
                                                 : -1;
    } else if (OSSL_PARAM_get_int(p, &mode) != 1) {
      return Fail(kReasonBadParameter, "pad-mode is neither a string nor an integer");
    }
    if (mode == RSA_PKCS1_PADDING) {
      ctx.padding = Padding::kPkcs1;
    } else if (mode == RSA_PKCS1_PSS_PADDING) {
      ctx.padding = Padding::kPss;
    } else {
      return Fail(kReasonBadParameter, "RSA padding mode not supported (pkcs1 and pss are)");
    }
  }
  if (const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) {
    int saltlen = 0;
    if (p->data_type == OSSL_PARAM_UTF8_STRING) {
      const char* s = nullptr;
      if (OSSL_PARAM_get_utf8_string_ptr(p, &s) != 1) {
        return Fail(kReasonBadParameter, "saltlen is not a string");
      }
      const std::string_view v(s);
      if (v == OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST) {
        saltlen = RSA_PSS_SALTLEN_DIGEST;
      } else if (!v.empty() && v.find_first_not_of("0123456789") == std::string_view::npos &&
                 v.size() < 5) {
        saltlen = std::stoi(std::string(v));
      } else {
        return Fail(kReasonBadParameter, "PSS salt length '" + std::string(v) +
                                             "' not supported (the digest length is)");
      }
    } else if (OSSL_PARAM_get_int(p, &saltlen) != 1) {
      return Fail(kReasonBadParameter, "saltlen is neither a string nor an integer");
    }
    if (saltlen < 0 && saltlen != RSA_PSS_SALTLEN_DIGEST) {
      return Fail(kReasonBadParameter,
                  "PSS salt length " + std::to_string(saltlen) +
                      " not supported: the token signs with salt length = digest length");
    }
    ctx.saltlen = saltlen;
  }
  if (const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) {
    const char* s = nullptr;
    if (OSSL_PARAM_get_utf8_string_ptr(p, &s) != 1) {
      return Fail(kReasonBadParameter, "mgf1-digest is not a string");
    }
    ctx.mgf1 = s;
  }
  return std::nullopt;
}

template <KeyType kType>
void* SigNewCtxT(void* provctx, const char*) noexcept {
  try {
    auto* ctx = new SigCtx;
    ctx->prov = static_cast<const ProvCtx*>(provctx);
    ctx->type = kType;
    return ctx;
  } catch (...) {
    return nullptr;
  }
}

void SigFreeCtx(void* vctx) noexcept { delete static_cast<SigCtx*>(vctx); }

void* SigDupCtx(void* vctx) noexcept {
  const auto* from = static_cast<const SigCtx*>(vctx);
  if (from == nullptr) return nullptr;
  ERR_set_mark();
  try {
    auto ctx = std::make_unique<SigCtx>();
    ctx->prov = from->prov;
    ctx->type = from->type;
    ctx->key_id = from->key_id;
    ctx->label = from->label;
    ctx->padding = from->padding;
    ctx->mgf1 = from->mgf1;
    ctx->saltlen = from->saltlen;
    bool ok = true;
    if (from->pub != nullptr) {
      ok = EVP_PKEY_up_ref(from->pub.get()) == 1;
      if (ok) ctx->pub.reset(from->pub.get());
    }
    if (ok && from->md != nullptr) {
      ok = EVP_MD_up_ref(from->md.get()) == 1;
      if (ok) ctx->md.reset(from->md.get());
    }
    if (ok && from->mdctx != nullptr) {
      ctx->mdctx.reset(EVP_MD_CTX_new());
      ok = ctx->mdctx != nullptr && EVP_MD_CTX_copy_ex(ctx->mdctx.get(), from->mdctx.get()) == 1;
    }
    ERR_pop_to_mark();
    if (!ok) {
      RaiseError(from->prov, kReasonInternal, "cannot duplicate the signing context");
      return nullptr;
    }
    return ctx.release();
  } catch (...) {
    ERR_pop_to_mark();
    return nullptr;
  }
}

std::optional<Failure> AttachKey(SigCtx& ctx, void* provkey) {
  const auto* kd = static_cast<const KeyData*>(provkey);
  if (kd == nullptr || kd->pub == nullptr) return Fail(kReasonBadKey, "no key");
  if (kd->type != ctx.type) return Fail(kReasonBadKey, "key type does not match the algorithm");
  if (kd->id == 0) {
    return Fail(kReasonNoPrivateKey, "this key object holds only a public key");
  }
  if (EVP_PKEY_up_ref(kd->pub.get()) != 1) return Fail(kReasonInternal, "EVP_PKEY_up_ref");
  ctx.pub.reset(kd->pub.get());
  ctx.key_id = kd->id;
  ctx.label = kd->label;
  return std::nullopt;
}

template <KeyType kType>
int SigSignInit(void* vctx, void* provkey, const OSSL_PARAM params[]) noexcept {
  auto* ctx = static_cast<SigCtx*>(vctx);
  if (ctx == nullptr) return 0;
  return Guarded(ctx->prov, [&]() -> std::optional<Failure> {
    if (auto f = AttachKey(*ctx, provkey)) return f;
    return SetCtxParams(*ctx, params);
  });
}

int SigDigestSignInit(void* vctx, const char* mdname, void* provkey,
                      const OSSL_PARAM params[]) noexcept {
  auto* ctx = static_cast<SigCtx*>(vctx);
  if (ctx == nullptr) return 0;
  return Guarded(ctx->prov, [&]() -> std::optional<Failure> {
    if (auto f = AttachKey(*ctx, provkey)) return f;
    const char* name = (mdname != nullptr && mdname[0] != '\0') ? mdname : "SHA2-256";
    if (auto f = SetDigest(*ctx, name)) return f;
    return SetCtxParams(*ctx, params);
  });
}

std::size_t MaxSignatureSize(const SigCtx& ctx) {
  const int n = ctx.pub == nullptr ? 0 : EVP_PKEY_get_size(ctx.pub.get());
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

// DER DigestInfo { AlgorithmIdentifier(digest, NULL), OCTET STRING digest } for PKCS#1 v1.5.
Result<std::vector<std::uint8_t>> DigestInfo(int nid, std::span<const std::uint8_t> digest) {
  X509Sig sig(X509_SIG_new());
  if (sig == nullptr) return Internal("X509_SIG_new");
  X509_ALGOR* alg = nullptr;
  ASN1_OCTET_STRING* octets = nullptr;
  X509_SIG_getm(sig.get(), &alg, &octets);
  if (X509_ALGOR_set0(alg, OBJ_nid2obj(nid), V_ASN1_NULL, nullptr) != 1 ||
      ASN1_OCTET_STRING_set(octets, digest.data(), static_cast<int>(digest.size())) != 1) {
    return Internal("cannot build DigestInfo");
  }
  unsigned char* der = nullptr;
  const int n = i2d_X509_SIG(sig.get(), &der);
  if (n <= 0) return Internal("cannot encode DigestInfo");
  std::vector<std::uint8_t> out(der, der + n);
  OPENSSL_free(der);
  return out;
}

// Raw r||s (each half the length) to a DER ECDSA-Sig-Value.
Result<std::vector<std::uint8_t>> EcdsaRawToDer(std::span<const std::uint8_t> raw) {
  if (raw.size() != 64) {
    return Internal("token returned a " + std::to_string(raw.size()) +
                    "-byte ECDSA signature (expected 64 bytes r||s)");
  }
  Bignum r(BN_bin2bn(raw.data(), 32, nullptr));
  Bignum s(BN_bin2bn(raw.data() + 32, 32, nullptr));
  EcdsaSig sig(ECDSA_SIG_new());
  if (r == nullptr || s == nullptr || sig == nullptr ||
      ECDSA_SIG_set0(sig.get(), r.get(), s.get()) != 1) {
    return Internal("cannot build ECDSA-Sig-Value");
  }
  (void)r.release();
  (void)s.release();
  unsigned char* der = nullptr;
  const int n = i2d_ECDSA_SIG(sig.get(), &der);
  if (n <= 0) return Internal("cannot encode ECDSA-Sig-Value");
  std::vector<std::uint8_t> out(der, der + n);
  OPENSSL_free(der);
  return out;
}

// Signs `digest` (made with ctx.md) in the token; returns the signature as OpenSSL wants it.
Result<std::vector<std::uint8_t>> SignDigest(const SigCtx& ctx,
                                             std::span<const std::uint8_t> digest) {
  std::shared_ptr<TokenKey> key = Registry().Get(ctx.key_id);
  if (key == nullptr) {
    return FailedPrecondition("token key '" + ctx.label +
                              "' was released (ReleaseProviderKeys) and can no longer sign");
  }
  if (ctx.type == KeyType::kEcP256) {
    CW_ASSIGN_OR_RETURN(auto raw, key->Sign(SignScheme::kEcdsa, digest));
    return EcdsaRawToDer(raw);
  }
  const int nid = ctx.md == nullptr ? NID_undef : DigestNid(ctx.md.get());
  if (nid == NID_undef) return InvalidArgument("no digest chosen for the RSA signature");
  std::vector<std::uint8_t> sig;
  if (ctx.padding == Padding::kPkcs1) {
    CW_ASSIGN_OR_RETURN(auto info, DigestInfo(nid, digest));
    CW_ASSIGN_OR_RETURN(sig, key->Sign(SignScheme::kRsaPkcs1, info));
  } else {
    if (!ctx.mgf1.empty()) {
      EvpMd mgf1(EVP_MD_fetch(nullptr, ctx.mgf1.c_str(), nullptr));
      if (mgf1 == nullptr || DigestNid(mgf1.get()) != nid) {
        return InvalidArgument("PSS with MGF1 digest '" + ctx.mgf1 +
                               "' not supported: the token uses MGF1 with the message digest");
      }
    }
    if (ctx.saltlen != RSA_PSS_SALTLEN_DIGEST && ctx.saltlen != EVP_MD_get_size(ctx.md.get())) {
      return InvalidArgument("PSS salt length " + std::to_string(ctx.saltlen) +
                             " not supported: the token uses salt length = digest length");
    }
    const SignScheme scheme = nid == NID_sha256   ? SignScheme::kRsaPssSha256
                              : nid == NID_sha384 ? SignScheme::kRsaPssSha384
                                                  : SignScheme::kRsaPssSha512;
    CW_ASSIGN_OR_RETURN(sig, key->Sign(scheme, digest));
  }
  if (sig.size() != MaxSignatureSize(ctx)) {
    return Internal("token returned a " + std::to_string(sig.size()) +
                    "-byte RSA signature (expected " + std::to_string(MaxSignatureSize(ctx)) + ")");
  }
  return sig;
}

// Signs and copies into OpenSSL's buffer.
std::optional<Failure> SignInto(const SigCtx& ctx, std::span<const std::uint8_t> digest,
                                unsigned char* sig, std::size_t* siglen, std::size_t sigsize) {
  if (Registry().Get(ctx.key_id) == nullptr) {
    return Fail(kReasonKeyReleased,
                "token key '" + ctx.label + "' was released (ReleaseProviderKeys) and cannot sign");
  }
  auto signature = SignDigest(ctx, digest);
  if (!signature.ok()) {
    return Fail(kReasonSignFailed,
                "token key '" + ctx.label + "': " + signature.status().message());
  }
  if (signature->size() > sigsize) {
    return Fail(kReasonBufferTooSmall, "signature needs " + std::to_string(signature->size()) +
                                           " bytes, buffer has " + std::to_string(sigsize));
  }
  std::memcpy(sig, signature->data(), signature->size());
  *siglen = signature->size();
  return std::nullopt;
}

int SigDigestSign(void* vctx, unsigned char* sig, std::size_t* siglen, std::size_t sigsize,
                  const unsigned char* tbs, std::size_t tbslen) noexcept {
  auto* ctx = static_cast<SigCtx*>(vctx);
  if (ctx == nullptr || siglen == nullptr) return 0;
  return Guarded(ctx->prov, [&]() -> std::optional<Failure> {
    if (ctx->md == nullptr) return Fail(kReasonInternal, "signing context not initialised");
    if (sig == nullptr) {
      *siglen = MaxSignatureSize(*ctx);
      return std::nullopt;
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(tbs, tbslen, digest, &n, ctx->md.get(), nullptr) != 1) {
      return Fail(kReasonInternal, "cannot hash the data to sign");
    }
    return SignInto(*ctx, std::span(digest, n), sig, siglen, sigsize);
  });
}

int SigDigestSignUpdate(void* vctx, const unsigned char* data, std::size_t datalen) noexcept {
  auto* ctx = static_cast<SigCtx*>(vctx);
  if (ctx == nullptr) return 0;
  return Guarded(ctx->prov, [&]() -> std::optional<Failure> {
    if (ctx->mdctx == nullptr) return Fail(kReasonInternal, "signing context not initialised");
    if (EVP_DigestUpdate(ctx->mdctx.get(), data, datalen) != 1) {
      return Fail(kReasonInternal, "cannot hash the data to sign");
    }
    return std::nullopt;
  });
}

int SigDigestSignFinal(void* vctx, unsigned char* sig, std::size_t* siglen,
                       std::size_t sigsize) noexcept {
  auto* ctx = static_cast<SigCtx*>(vctx);
  if (ctx == nullptr || siglen == nullptr) return 0;
  return Guarded(ctx->prov, [&]() -> std::optional<Failure> {
    if (ctx->mdctx == nullptr) return Fail(kReasonInternal, "signing context not initialised");
    if (sig == nullptr) {
      *siglen = MaxSignatureSize(*ctx);
      return std::nullopt;
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(ctx->mdctx.get(), digest, &n) != 1) {
      return Fail(kReasonInternal, "cannot finish the hash");
    }
    return SignInto(*ctx, std::span(digest, n), sig, siglen, sigsize);
  });
}

// Prehashed input (EVP_PKEY_sign): `tbs` is the digest.
int SigSign(void* vctx, unsigned char* sig, std::size_t* siglen, std::size_t sigsize,
            const unsigned char* tbs, std::size_t tbslen) noexcept {
  auto* ctx = static_cast<SigCtx*>(vctx);
  if (ctx == nullptr || siglen == nullptr) return 0;
  return Guarded(ctx->prov, [&]() -> std::optional<Failure> {
    if (ctx->pub == nullptr) return Fail(kReasonInternal, "signing context not initialised");
    if (sig == nullptr) {
      *siglen = MaxSignatureSize(*ctx);
      return std::nullopt;
    }
    if (ctx->md == nullptr) {
      // No digest set: infer it from the length of the prehashed input.
      const char* name = tbslen == 32   ? "SHA2-256"
                         : tbslen == 48 ? "SHA2-384"
                         : tbslen == 64 ? "SHA2-512"
                                        : nullptr;
      if (name == nullptr) {
        return Fail(kReasonBadParameter,
                    "a " + std::to_string(tbslen) + "-byte input is not a SHA-256/384/512 digest");
      }
      if (auto f = SetDigest(*ctx, name)) return f;
    }
    if (tbslen != static_cast<std::size_t>(EVP_MD_get_size(ctx->md.get()))) {
      return Fail(kReasonBadParameter, "input length " + std::to_string(tbslen) +
                                           " does not match the digest " +
                                           EVP_MD_get0_name(ctx->md.get()));
    }
    return SignInto(*ctx, std::span(tbs, tbslen), sig, siglen, sigsize);
  });
}

// DER AlgorithmIdentifier of the signature this context makes (X509_sign, X509_REQ_sign).
Result<std::vector<std::uint8_t>> AlgorithmId(const SigCtx& ctx) {
  const int md_nid = ctx.md == nullptr ? NID_undef : DigestNid(ctx.md.get());
  if (md_nid == NID_undef) return InvalidArgument("no digest chosen");
  int sig_nid = NID_undef;
  int param_type = V_ASN1_UNDEF;
  if (ctx.type == KeyType::kEcP256) {
    sig_nid = md_nid == NID_sha256   ? NID_ecdsa_with_SHA256
              : md_nid == NID_sha384 ? NID_ecdsa_with_SHA384
                                     : NID_ecdsa_with_SHA512;
  } else if (ctx.padding == Padding::kPkcs1) {
    sig_nid = md_nid == NID_sha256   ? NID_sha256WithRSAEncryption
              : md_nid == NID_sha384 ? NID_sha384WithRSAEncryption
                                     : NID_sha512WithRSAEncryption;
    param_type = V_ASN1_NULL;
  } else {
    return InvalidArgument("no algorithm identifier for RSA-PSS (use PKCS#1 v1.5 for X.509)");
  }
  X509Algor alg(X509_ALGOR_new());
  if (alg == nullptr ||
      X509_ALGOR_set0(alg.get(), OBJ_nid2obj(sig_nid), param_type, nullptr) != 1) {
    return Internal("cannot build the algorithm identifier");
  }
  unsigned char* der = nullptr;
  const int n = i2d_X509_ALGOR(alg.get(), &der);
  if (n <= 0) return Internal("cannot encode the algorithm identifier");
  std::vector<std::uint8_t> out(der, der + n);
  OPENSSL_free(der);
  return out;
}

int SigGetCtxParams(void* vctx, OSSL_PARAM params[]) noexcept {
  auto* ctx = static_cast<SigCtx*>(vctx);
  if (ctx == nullptr) return 0;
  return Guarded(ctx->prov, [&]() -> std::optional<Failure> {
    if (OSSL_PARAM* p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID)) {
      auto der = AlgorithmId(*ctx);
      if (!der.ok()) return Fail(kReasonBadParameter, der.status().message());
      if (OSSL_PARAM_set_octet_string(p, der->data(), der->size()) != 1) {
        return Fail(kReasonBadParameter, "cannot return the algorithm identifier");
      }
    }
    if (OSSL_PARAM* p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST)) {
      if (ctx->md == nullptr) return Fail(kReasonBadParameter, "no digest chosen");
      if (OSSL_PARAM_set_utf8_string(p, EVP_MD_get0_name(ctx->md.get())) != 1) {
        return Fail(kReasonBadParameter, "cannot return the digest name");
      }
    }
    return std::nullopt;
  });
}

const OSSL_PARAM* SigGettableCtxParams(void*, void*) noexcept { return kGettableCtxParams; }

int SigSetCtxParams(void* vctx, const OSSL_PARAM params[]) noexcept {
  auto* ctx = static_cast<SigCtx*>(vctx);
  if (ctx == nullptr) return 0;
  return Guarded(ctx->prov, [&]() { return SetCtxParams(*ctx, params); });
}

template <KeyType kType>
const OSSL_PARAM* SigSettableCtxParams(void*, void*) noexcept {
  return kType == KeyType::kEcP256 ? kEcSettableCtxParams : kRsaSettableCtxParams;
}

template <KeyType kType>
const OSSL_DISPATCH kSignatureFunctions[] = {
    {OSSL_FUNC_SIGNATURE_NEWCTX, reinterpret_cast<void (*)()>(&SigNewCtxT<kType>)},
    {OSSL_FUNC_SIGNATURE_FREECTX, reinterpret_cast<void (*)()>(&SigFreeCtx)},
    {OSSL_FUNC_SIGNATURE_DUPCTX, reinterpret_cast<void (*)()>(&SigDupCtx)},
    {OSSL_FUNC_SIGNATURE_SIGN_INIT, reinterpret_cast<void (*)()>(&SigSignInit<kType>)},
    {OSSL_FUNC_SIGNATURE_SIGN, reinterpret_cast<void (*)()>(&SigSign)},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, reinterpret_cast<void (*)()>(&SigDigestSignInit)},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN, reinterpret_cast<void (*)()>(&SigDigestSign)},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, reinterpret_cast<void (*)()>(&SigDigestSignUpdate)},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, reinterpret_cast<void (*)()>(&SigDigestSignFinal)},
    {OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, reinterpret_cast<void (*)()>(&SigGetCtxParams)},
    {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, reinterpret_cast<void (*)()>(&SigGettableCtxParams)},
    {OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, reinterpret_cast<void (*)()>(&SigSetCtxParams)},
    {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS,
     reinterpret_cast<void (*)()>(&SigSettableCtxParams<kType>)},
    {0, nullptr},
};

// ------------------------------------------------------------------------------------------
// Provider entry points

const OSSL_ALGORITHM kKeymgmtAlgorithms[] = {
    {kEcNames, kProperty, kKeymgmtFunctions<KeyType::kEcP256>, "cakewalk-token EC keys"},
    {kRsaNames, kProperty, kKeymgmtFunctions<KeyType::kRsa3072>, "cakewalk-token RSA keys"},
    {nullptr, nullptr, nullptr, nullptr},
};
const OSSL_ALGORITHM kSignatureAlgorithms[] = {
    {"ECDSA", kProperty, kSignatureFunctions<KeyType::kEcP256>, "ECDSA in the token"},
    {kRsaNames, kProperty, kSignatureFunctions<KeyType::kRsa3072>, "RSA signing in the token"},
    {nullptr, nullptr, nullptr, nullptr},
};

const OSSL_ALGORITHM* ProvQueryOperation(void*, int operation_id, int* no_cache) noexcept {
  if (no_cache != nullptr) *no_cache = 0;
  switch (operation_id) {
    case OSSL_OP_KEYMGMT:
      return kKeymgmtAlgorithms;
    case OSSL_OP_SIGNATURE:
      return kSignatureAlgorithms;
    default:
      return nullptr;
  }
}

const OSSL_PARAM kProviderGettable[] = {
    OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_NAME, nullptr, 0),
    OSSL_PARAM_int(OSSL_PROV_PARAM_STATUS, nullptr),
    OSSL_PARAM_END,
};

const OSSL_PARAM* ProvGettableParams(void*) noexcept { return kProviderGettable; }

int ProvGetParams(void*, OSSL_PARAM params[]) noexcept {
  if (OSSL_PARAM* p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME)) {
    if (OSSL_PARAM_set_utf8_ptr(p, "Cakewalk token provider") != 1) return 0;
  }
  if (OSSL_PARAM* p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS)) {
    if (OSSL_PARAM_set_int(p, 1) != 1) return 0;
  }
  return 1;
}

const OSSL_ITEM* ProvReasonStrings(void*) noexcept { return kReasonStrings; }

// Frees the context only; keys are not touched here (see the teardown contract in provider.h).
// Runs from OpenSSL's exit-time cleanup (ReleaseProvidersAtCleanup), unless key objects are
// still alive then.
void ProvTeardown(void* provctx) noexcept { delete static_cast<ProvCtx*>(provctx); }

const OSSL_DISPATCH kProviderFunctions[] = {
    {OSSL_FUNC_PROVIDER_TEARDOWN, reinterpret_cast<void (*)()>(&ProvTeardown)},
    {OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, reinterpret_cast<void (*)()>(&ProvGettableParams)},
    {OSSL_FUNC_PROVIDER_GET_PARAMS, reinterpret_cast<void (*)()>(&ProvGetParams)},
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, reinterpret_cast<void (*)()>(&ProvQueryOperation)},
    {OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, reinterpret_cast<void (*)()>(&ProvReasonStrings)},
    {0, nullptr},
};

int ProvInit(const OSSL_CORE_HANDLE* handle, const OSSL_DISPATCH* in, const OSSL_DISPATCH** out,
             void** provctx) noexcept {
  try {
    auto ctx = std::make_unique<ProvCtx>();
    ctx->handle = handle;
    for (; in != nullptr && in->function_id != 0; ++in) {
      switch (in->function_id) {
        case OSSL_FUNC_CORE_NEW_ERROR:
          ctx->new_error = OSSL_FUNC_core_new_error(in);
          break;
        case OSSL_FUNC_CORE_SET_ERROR_DEBUG:
          ctx->set_error_debug = OSSL_FUNC_core_set_error_debug(in);
          break;
        case OSSL_FUNC_CORE_VSET_ERROR:
          ctx->vset_error = OSSL_FUNC_core_vset_error(in);
          break;
        default:
          break;
      }
    }
    *out = kProviderFunctions;
    *provctx = ctx.release();
    return 1;
  } catch (...) {
    return 0;
  }
}

// ------------------------------------------------------------------------------------------
// Installation

// The handles of the two providers InstallTokenProvider loads, released when OpenSSL cleans up.
OSSL_PROVIDER* g_default_provider = nullptr;
OSSL_PROVIDER* g_token_provider = nullptr;

// Runs inside OPENSSL_cleanup (OpenSSL's own exit handler, the last one to run: after the
// PKCS#11 module was finalised by its own exit handler and its static destructors ran), just
// before OpenSSL frees its providers, so that they are freed rather than leaked. Our teardown
// makes no module call; while key objects are still alive, OpenSSL keeps the provider anyway.
void ReleaseProvidersAtCleanup() {
  if (g_token_provider != nullptr) OSSL_PROVIDER_unload(g_token_provider);
  if (g_default_provider != nullptr) OSSL_PROVIDER_unload(g_default_provider);
  g_token_provider = nullptr;
  g_default_provider = nullptr;
}

Status DoInstall() {
  ERR_set_mark();
  // The default provider first (see provider.h).
  g_default_provider = OSSL_PROVIDER_load(nullptr, "default");
  if (g_default_provider == nullptr) {
    return Internal("cannot load OpenSSL's default provider: " + DrainOpensslErrors());
  }
  if (OSSL_PROVIDER_add_builtin(nullptr, kName, &ProvInit) != 1) {
    return Internal(std::string("cannot register the ") + kName +
                    " provider: " + DrainOpensslErrors());
  }
  g_token_provider = OSSL_PROVIDER_load(nullptr, kName);
  if (g_token_provider == nullptr) {
    return Internal(std::string("cannot load the ") + kName + " provider: " + DrainOpensslErrors());
  }
  if (EVP_set_default_properties(nullptr, "?provider=default") != 1) {
    return Internal("cannot set OpenSSL's default properties: " + DrainOpensslErrors());
  }
  if (OPENSSL_atexit(&ReleaseProvidersAtCleanup) != 1) {
    return Internal("cannot register the provider cleanup: " + DrainOpensslErrors());
  }
  ERR_pop_to_mark();
  return Status::Ok();
}

}  // namespace

Status InstallTokenProvider() {
  static std::once_flag once;
  static Status* result = nullptr;  // never destroyed; written once
  std::call_once(once, [] { result = new Status(DoInstall()); });
  return *result;
}

Result<EvpPkey> ProviderKey(std::shared_ptr<TokenKey> key) {
  if (key == nullptr) return InvalidArgument("ProviderKey: no key");
  CW_RETURN_IF_ERROR(InstallTokenProvider());
  const std::string label = key->label();
  const KeyType type = key->type();
  if (type != KeyType::kEcP256 && type != KeyType::kRsa3072) {
    return InvalidArgument("token key '" + label + "' has an unsupported key type");
  }
  const std::uint64_t id = Registry().Add(std::move(key));
  ERR_set_mark();
  EvpPkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, KeymgmtName(type), kProperty));
  std::uint64_t id_value = id;
  OSSL_PARAM params[] = {OSSL_PARAM_construct_uint64(kIdParam, &id_value), OSSL_PARAM_END};
  EVP_PKEY* raw = nullptr;
  const bool ok = ctx != nullptr && EVP_PKEY_fromdata_init(ctx.get()) == 1 &&
                  EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_KEYPAIR, params) == 1;
  EvpPkey pkey(raw);
  std::string detail;
  if (!ok) {
    detail = DrainOpensslErrors();
  } else {
    ERR_pop_to_mark();
  }
  Registry().Release(id);  // ProviderKey's own reference; the key object holds the other
  if (!ok) {
    return FailedPrecondition("cannot make an OpenSSL key for token key '" + label +
                              "': " + detail);
  }
  return pkey;
}

std::size_t ReleaseProviderKeys() { return Registry().Clear(); }

std::size_t RegisteredProviderKeyCount() { return Registry().Size(); }

std::string ProviderKeyLabel(const EVP_PKEY* key) {
  if (key == nullptr) return "";
  const OSSL_PROVIDER* prov = EVP_PKEY_get0_provider(key);
  if (prov == nullptr || std::string_view(OSSL_PROVIDER_get0_name(prov)) != kName) return "";
  ERR_set_mark();
  char buf[256] = {0};
  std::size_t len = 0;
  const bool ok = EVP_PKEY_get_utf8_string_param(key, kLabelParam, buf, sizeof buf, &len) == 1;
  ERR_pop_to_mark();
  return ok ? std::string(buf, len) : "";
}

namespace {

// "token key 'label'" for keys of this provider, "the private key" for others.
std::string KeyName(const EVP_PKEY* key) {
  const std::string label = ProviderKeyLabel(key);
  return label.empty() ? "the private key" : "token key '" + label + "'";
}

Status CheckBelongs(const X509* leaf, const EVP_PKEY* key) {
  ERR_set_mark();
  const int eq = EVP_PKEY_eq(X509_get0_pubkey(leaf), key);
  ERR_pop_to_mark();
  if (eq != 1) {
    return FailedPrecondition("client certificate " + CertificateSubject(leaf) +
                              " does not belong to " + KeyName(key) + " (the public keys differ)");
  }
  return Status::Ok();
}

}  // namespace

Status UseClientIdentity(SSL_CTX* ctx, const std::string& chain_pem, EVP_PKEY* key) {
  if (ctx == nullptr || key == nullptr) return InvalidArgument("UseClientIdentity: null argument");
  CW_ASSIGN_OR_RETURN(auto chain, ParsePemChain(chain_pem));
  X509* leaf = chain.front().get();
  // Compare first, so a mismatch gets a plain message rather than OpenSSL's.
  CW_RETURN_IF_ERROR(CheckBelongs(leaf, key));
  ERR_set_mark();
  auto fail = [&](const std::string& step) {
    const std::string detail = DrainOpensslErrors();
    return FailedPrecondition("cannot use client certificate " + CertificateSubject(leaf) +
                              " with " + KeyName(key) + ": " + step + " failed: " + detail);
  };
  // Certificate first: set after the key, a non-matching certificate would silently drop it.
  if (SSL_CTX_use_certificate(ctx, leaf) != 1) return fail("SSL_CTX_use_certificate");
  if (SSL_CTX_clear_chain_certs(ctx) != 1) return fail("SSL_CTX_clear_chain_certs");
  for (std::size_t i = 1; i < chain.size(); ++i) {
    if (SSL_CTX_add1_chain_cert(ctx, chain[i].get()) != 1) {
      return fail("adding chain certificate " + CertificateSubject(chain[i].get()));
    }
  }
  if (SSL_CTX_use_PrivateKey(ctx, key) != 1) return fail("SSL_CTX_use_PrivateKey");
  if (SSL_CTX_check_private_key(ctx) != 1) return fail("SSL_CTX_check_private_key");
  ERR_pop_to_mark();
  return Status::Ok();
}

Result<std::function<Status(SSL_CTX*)>> MakeClientIdentityHook(std::string chain_pem, EvpPkey key) {
  if (key == nullptr) return InvalidArgument("MakeClientIdentityHook: no key");
  CW_ASSIGN_OR_RETURN(auto chain, ParsePemChain(chain_pem));
  CW_RETURN_IF_ERROR(CheckBelongs(chain.front().get(), key.get()));
  std::shared_ptr<EVP_PKEY> shared(key.release(), EVP_PKEY_free);
  return std::function<Status(SSL_CTX*)>([chain_pem = std::move(chain_pem), shared](SSL_CTX* ctx) {
    return UseClientIdentity(ctx, chain_pem, shared.get());
  });
}

}  // namespace cakewalk::hsm
