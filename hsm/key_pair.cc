#include "hsm/key_pair.h"

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstring>

#include "base/c_free.h"
#include "hsm/layout.h"
#include "hsm/session.h"

namespace cakewalk::hsm {

using internal::Session;
using internal::Template;

namespace {

// DER of the P-256 curve OID (1.2.840.10045.3.1.7), CKA_EC_PARAMS.
constexpr std::uint8_t kP256Oid[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
constexpr std::uint8_t kRsaExponent[] = {0x01, 0x00, 0x01};
constexpr CK_ULONG kRsaBits = 3072;

using EvpPkey = CPtr<EVP_PKEY, EVP_PKEY_free>;
using EvpPkeyCtx = CPtr<EVP_PKEY_CTX, EVP_PKEY_CTX_free>;
using ParamBld = CPtr<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>;
using Params = CPtr<OSSL_PARAM, OSSL_PARAM_free>;
using Bignum = CPtr<BIGNUM, BN_free>;
using OctetString = CPtr<ASN1_OCTET_STRING, ASN1_OCTET_STRING_free>;

Status ValidateKeyLabel(std::string_view label) {
  if (label.empty() || label.size() > 64) {
    return InvalidArgument("a key label must be 1 to 64 characters long");
  }
  for (std::size_t i = 0; i < label.size(); ++i) {
    const char c = label[i];
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-' || c == ':';
    if (!ok) {
      return InvalidArgument("the key label '" + std::string(label) +
                             "' has a character outside A-Z, a-z, 0-9, '.', '_', '-', ':' at "
                             "position " +
                             std::to_string(i + 1));
    }
  }
  for (std::string_view reserved : {internal::kRecordPrefix, internal::kSeedPrefix,
                                    internal::kSealKeyLabel, internal::kCounterPrefix}) {
    if (label.substr(0, reserved.size()) == reserved) {
      return InvalidArgument("the key label '" + std::string(label) +
                             "' uses the reserved prefix '" + std::string(reserved) + "'");
    }
  }
  return Status::Ok();
}

std::string OpenSslError(std::string_view what) {
  const unsigned long e = ERR_get_error();
  char buf[256] = "unknown error";
  if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return std::string(what) + ": " + buf;
}

Result<std::vector<std::uint8_t>> EncodeSpki(EVP_PKEY* pkey) {
  unsigned char* der = nullptr;
  const int n = i2d_PUBKEY(pkey, &der);
  if (n <= 0) return Internal(OpenSslError("encoding the public key"));
  std::vector<std::uint8_t> out(der, der + n);
  OPENSSL_free(der);
  return out;
}

Result<EvpPkey> FromData(const char* type, OSSL_PARAM_BLD* bld) {
  Params params(OSSL_PARAM_BLD_to_param(bld));
  // Prefer the default provider: our own provider also registers an "EC" key manager.
  EvpPkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, "?provider=default"));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) <= 0 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) <= 0) {
    return Internal(OpenSslError(std::string("building the ") + type + " public key"));
  }
  return EvpPkey(raw);
}

// CKA_EC_POINT is a DER OCTET STRING around the uncompressed point 04||X||Y (some tokens return
// the bare point; accept both, but parse the DER rather than skipping two bytes).
Result<std::vector<std::uint8_t>> EcPoint(std::span<const std::uint8_t> attribute) {
  const unsigned char* p = attribute.data();
  OctetString os(d2i_ASN1_OCTET_STRING(nullptr, &p, static_cast<long>(attribute.size())));
  ERR_clear_error();
  if (os && p == attribute.data() + attribute.size()) {
    const int n = ASN1_STRING_length(os.get());
    const unsigned char* d = ASN1_STRING_get0_data(os.get());
    if (n == 65 && d[0] == 0x04) return std::vector<std::uint8_t>(d, d + n);
  }
  if (attribute.size() == 65 && attribute[0] == 0x04) {
    return std::vector<std::uint8_t>(attribute.begin(), attribute.end());
  }
  return FailedPrecondition("CKA_EC_POINT is not an uncompressed P-256 point");
}

Result<std::vector<std::uint8_t>> EcSpki(std::span<const std::uint8_t> point) {
  ParamBld bld(OSSL_PARAM_BLD_new());
  if (!bld ||
      !OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
      !OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                        point.size())) {
    return Internal(OpenSslError("building EC parameters"));
  }
  CW_ASSIGN_OR_RETURN(EvpPkey pkey, FromData("EC", bld.get()));
  return EncodeSpki(pkey.get());
}

Result<std::vector<std::uint8_t>> RsaSpki(std::span<const std::uint8_t> modulus,
                                          std::span<const std::uint8_t> exponent) {
  Bignum n(BN_bin2bn(modulus.data(), static_cast<int>(modulus.size()), nullptr));
  Bignum e(BN_bin2bn(exponent.data(), static_cast<int>(exponent.size()), nullptr));
  ParamBld bld(OSSL_PARAM_BLD_new());
  if (!n || !e || !bld || !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) ||
      !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get())) {
    return Internal(OpenSslError("building RSA parameters"));
  }
  CW_ASSIGN_OR_RETURN(EvpPkey pkey, FromData("RSA", bld.get()));
  return EncodeSpki(pkey.get());
}

Result<std::vector<CK_OBJECT_HANDLE>> FindByLabel(Session& s, CK_OBJECT_CLASS cls,
                                                  std::string_view label) {
  Template t;
  t.Ulong(CKA_CLASS, cls).Bool(CKA_TOKEN, true).String(CKA_LABEL, label);
  return s.Find(t, 16);
}

Result<std::vector<CK_OBJECT_HANDLE>> FindById(Session& s, CK_OBJECT_CLASS cls,
                                               std::span<const std::uint8_t> id) {
  Template t;
  t.Ulong(CKA_CLASS, cls).Bool(CKA_TOKEN, true).Bytes(CKA_ID, id);
  return s.Find(t, 16);
}

CK_ULONG GetUlong(Session& s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type, Status& error) {
  auto bytes = s.GetBytes(h, type);
  if (!bytes.ok()) {
    error = bytes.status();
    return 0;
  }
  if (bytes->size() != sizeof(CK_ULONG)) {
    error = FailedPrecondition("unexpected attribute size");
    return 0;
  }
  CK_ULONG v;
  std::memcpy(&v, bytes->data(), sizeof v);
  return v;
}

struct Loaded {
  KeyType type;
  std::vector<std::uint8_t> id;
  std::vector<std::uint8_t> spki;
  CK_OBJECT_HANDLE private_key;
};

// Reads the public half of the pair whose private key is `private_key`.
Result<Loaded> Load(Session& s, CK_OBJECT_HANDLE private_key, std::string_view label) {
  const std::string what = "key pair '" + std::string(label) + "'";
  Loaded out;
  out.private_key = private_key;
  CW_ASSIGN_OR_RETURN(out.id, s.GetBytes(private_key, CKA_ID));
  if (out.id.empty()) return FailedPrecondition(what + ": the private key has no CKA_ID");
  Status error;
  const CK_ULONG key_type = GetUlong(s, private_key, CKA_KEY_TYPE, error);
  CW_RETURN_IF_ERROR(error);
  CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> publics, FindById(s, CKO_PUBLIC_KEY, out.id));
  if (publics.size() != 1) {
    return FailedPrecondition(what + (publics.empty() ? ": no public key with the same CKA_ID"
                                                      : ": several public keys share its CKA_ID"));
  }
  if (key_type == CKK_EC) {
    CW_ASSIGN_OR_RETURN(std::vector<std::uint8_t> params, s.GetBytes(publics[0], CKA_EC_PARAMS));
    if (!std::equal(params.begin(), params.end(), std::begin(kP256Oid), std::end(kP256Oid))) {
      return FailedPrecondition(what + " is an EC key on a curve other than P-256");
    }
    CW_ASSIGN_OR_RETURN(std::vector<std::uint8_t> attribute, s.GetBytes(publics[0], CKA_EC_POINT));
    Result<std::vector<std::uint8_t>> point = EcPoint(attribute);
    if (!point.ok()) return point.status().WithContext(what);
    CW_ASSIGN_OR_RETURN(out.spki, EcSpki(*point));
    out.type = KeyType::kEcP256;
  } else if (key_type == CKK_RSA) {
    CW_ASSIGN_OR_RETURN(std::vector<std::uint8_t> modulus, s.GetBytes(publics[0], CKA_MODULUS));
    CW_ASSIGN_OR_RETURN(std::vector<std::uint8_t> exponent,
                        s.GetBytes(publics[0], CKA_PUBLIC_EXPONENT));
    std::size_t skip = 0;
    while (skip < modulus.size() && modulus[skip] == 0) ++skip;
    if ((modulus.size() - skip) * 8 != kRsaBits) {
      return FailedPrecondition(what + " is an RSA key of " +
                                std::to_string((modulus.size() - skip) * 8) +
                                " bits; the agent uses RSA-3072");
    }
    CW_ASSIGN_OR_RETURN(out.spki, RsaSpki(modulus, exponent));
    out.type = KeyType::kRsa3072;
  } else {
    return FailedPrecondition(what + " is neither an EC nor an RSA key");
  }
  return out;
}

Result<CK_OBJECT_HANDLE> FindUniquePrivate(Session& s, std::string_view label) {
  CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> found, FindByLabel(s, CKO_PRIVATE_KEY, label));
  if (found.empty())
    return NotFound("no private key labelled '" + std::string(label) + "' in the token");
  if (found.size() > 1) {
    return FailedPrecondition(std::to_string(found.size()) + " private keys are labelled '" +
                              std::string(label) + "'; relabel or destroy the extra ones");
  }
  return found[0];
}

}  // namespace

struct KeyPair::State {
  std::shared_ptr<internal::TokenCore> token;
  // Guarded by the token's session mutex.
  CK_OBJECT_HANDLE private_key = CK_INVALID_HANDLE;
  std::uint64_t generation = 0;
};

KeyPair::KeyPair(std::unique_ptr<State> state, KeyType type, std::string label,
                 std::vector<std::uint8_t> id, std::vector<std::uint8_t> spki)
    : state_(std::move(state)),
      type_(type),
      label_(std::move(label)),
      id_(std::move(id)),
      spki_(std::move(spki)) {}

KeyPair::~KeyPair() = default;

Result<std::unique_ptr<KeyPair>> KeyPair::Generate(Token& token, KeyType type,
                                                   std::string_view label) {
  CW_RETURN_IF_ERROR(ValidateKeyLabel(label));
  const auto& core = internal::TokenAccess::core(token);
  const Capabilities& caps = token.capabilities();
  if (type == KeyType::kEcP256) {
    CW_RETURN_IF_ERROR(caps.Require(Mechanism::kEcKeyPairGen, "generating the P-256 key"));
    CW_RETURN_IF_ERROR(caps.Require(Mechanism::kEcdsa, "signing with the P-256 key"));
  } else {
    CW_RETURN_IF_ERROR(caps.Require(Mechanism::kRsaKeyPairGen, "generating the RSA-3072 key"));
    CW_RETURN_IF_ERROR(caps.Require(Mechanism::kRsaPkcs, "signing with the RSA key"));
  }
  CW_RETURN_IF_ERROR(caps.Require(Mechanism::kRandom, "key ids"));
  auto state = std::make_unique<State>();
  state->token = core;
  Loaded loaded;
  if (const Status done = core->WithSession([&](Session& s) -> Status {
        for (CK_OBJECT_CLASS cls : {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY}) {
          CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> existing, FindByLabel(s, cls, label));
          if (!existing.empty()) {
            return AlreadyExists("the token already holds a key labelled '" + std::string(label) +
                                 "'");
          }
        }
        std::uint8_t id[internal::kObjectIdBytes];
        CW_RETURN_IF_ERROR(s.Random(id));
        const CK_KEY_TYPE key_type = type == KeyType::kEcP256 ? CKK_EC : CKK_RSA;
        CK_MECHANISM mechanism{
            type == KeyType::kEcP256 ? CKM_EC_KEY_PAIR_GEN : CKM_RSA_PKCS_KEY_PAIR_GEN, nullptr, 0};
        // `public_usages`: the public key's usage flags are part of the template. tpm2-pkcs11
        // derives them from the TPM object instead (its CKA_VERIFY follows the private key's
        // decrypt permission) and fails with CKR_GENERAL_ERROR when the template says otherwise;
        // the public half's flags do not matter to the agent (it verifies nothing in the token).
        auto generate = [&](bool public_usages, CK_OBJECT_HANDLE& pub_handle,
                            CK_OBJECT_HANDLE& priv_handle) -> CK_RV {
          Template pub;
          Template priv;
          pub.Ulong(CKA_CLASS, CKO_PUBLIC_KEY)
              .Ulong(CKA_KEY_TYPE, key_type)
              .Bool(CKA_TOKEN, true)
              .Bool(CKA_PRIVATE, false)
              .Bool(CKA_MODIFIABLE, true)
              .String(CKA_LABEL, label)
              .Bytes(CKA_ID, id);
          if (public_usages) {
            pub.Bool(CKA_VERIFY, true)
                .Bool(CKA_VERIFY_RECOVER, false)
                .Bool(CKA_ENCRYPT, false)
                .Bool(CKA_WRAP, false)
                .Bool(CKA_DERIVE, false);
          }
          priv.Ulong(CKA_CLASS, CKO_PRIVATE_KEY)
              .Ulong(CKA_KEY_TYPE, key_type)
              .Bool(CKA_TOKEN, true)
              .Bool(CKA_PRIVATE, true)
              .Bool(CKA_SENSITIVE, true)
              .Bool(CKA_EXTRACTABLE, false)
              .Bool(CKA_MODIFIABLE, true)
              .Bool(CKA_SIGN, true)
              .Bool(CKA_SIGN_RECOVER, false)
              .Bool(CKA_DECRYPT, false)
              .Bool(CKA_UNWRAP, false)
              .Bool(CKA_DERIVE, false)
              .String(CKA_LABEL, label)
              .Bytes(CKA_ID, id);
          if (type == KeyType::kEcP256) {
            static constexpr CK_MECHANISM_TYPE kAllowed[] = {CKM_ECDSA};
            pub.Bytes(CKA_EC_PARAMS, kP256Oid);
            priv.Mechanisms(kAllowed);
          } else {
            static constexpr CK_MECHANISM_TYPE kAllowed[] = {CKM_RSA_PKCS, CKM_RSA_PKCS_PSS};
            pub.Ulong(CKA_MODULUS_BITS, kRsaBits).Bytes(CKA_PUBLIC_EXPONENT, kRsaExponent);
            priv.Mechanisms(kAllowed);
          }
          return CW_SESSION_INVOKE(s, C_GenerateKeyPair, &mechanism, pub.data(), pub.size(),
                                   priv.data(), priv.size(), &pub_handle, &priv_handle);
        };
        CK_OBJECT_HANDLE pub_handle = CK_INVALID_HANDLE;
        CK_OBJECT_HANDLE priv_handle = CK_INVALID_HANDLE;
        const bool learned = core->public_usages_refused();
        CK_RV rv = generate(/*public_usages=*/!learned, pub_handle, priv_handle);
        if (!learned && (rv == CKR_GENERAL_ERROR || rv == CKR_TEMPLATE_INCONSISTENT ||
                         rv == CKR_ATTRIBUTE_VALUE_INVALID)) {
          rv = generate(/*public_usages=*/false, pub_handle, priv_handle);
          if (rv == CKR_OK) core->set_public_usages_refused();
        }
        CW_RETURN_IF_ERROR(internal::CkrStatus(rv, "C_GenerateKeyPair")
                               .WithContext("generating key pair '" + std::string(label) + "'"));
        s.MarkMutated();
        CW_ASSIGN_OR_RETURN(loaded, Load(s, priv_handle, label));
        state->private_key = priv_handle;
        state->generation = s.generation();
        return Status::Ok();
      });
      !done.ok()) {
    return done;
  }
  return std::unique_ptr<KeyPair>(new KeyPair(std::move(state), loaded.type, std::string(label),
                                              std::move(loaded.id), std::move(loaded.spki)));
}

Result<std::unique_ptr<KeyPair>> KeyPair::Find(Token& token, std::string_view label) {
  CW_RETURN_IF_ERROR(ValidateKeyLabel(label));
  auto state = std::make_unique<State>();
  state->token = internal::TokenAccess::core(token);
  Loaded loaded;
  if (const Status done = state->token->WithSession([&](Session& s) -> Status {
        CW_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE priv, FindUniquePrivate(s, label));
        CW_ASSIGN_OR_RETURN(loaded, Load(s, priv, label));
        state->private_key = priv;
        state->generation = s.generation();
        return Status::Ok();
      });
      !done.ok()) {
    return done;
  }
  return std::unique_ptr<KeyPair>(new KeyPair(std::move(state), loaded.type, std::string(label),
                                              std::move(loaded.id), std::move(loaded.spki)));
}

Status KeyPair::Destroy(Token& token, std::string_view label) {
  CW_RETURN_IF_ERROR(ValidateKeyLabel(label));
  return internal::TokenAccess::core(token)->WithSession([&](Session& s) -> Status {
    CW_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE priv, FindUniquePrivate(s, label));
    CW_ASSIGN_OR_RETURN(std::vector<std::uint8_t> id, s.GetBytes(priv, CKA_ID));
    std::vector<CK_OBJECT_HANDLE> publics;
    if (!id.empty()) {
      CW_ASSIGN_OR_RETURN(publics, FindById(s, CKO_PUBLIC_KEY, id));
    }
    CW_RETURN_IF_ERROR(s.Destroy(priv));
    for (CK_OBJECT_HANDLE h : publics) CW_RETURN_IF_ERROR(s.Destroy(h));
    return Status::Ok();
  });
}

Status KeyPair::Relabel(Token& token, std::string_view label, std::string_view new_label) {
  CW_RETURN_IF_ERROR(ValidateKeyLabel(label));
  CW_RETURN_IF_ERROR(ValidateKeyLabel(new_label));
  return internal::TokenAccess::core(token)->WithSession([&](Session& s) -> Status {
    for (CK_OBJECT_CLASS cls : {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY}) {
      CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> existing, FindByLabel(s, cls, new_label));
      if (!existing.empty()) {
        return AlreadyExists("the token already holds a key labelled '" + std::string(new_label) +
                             "'");
      }
    }
    CW_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE priv, FindUniquePrivate(s, label));
    CW_ASSIGN_OR_RETURN(std::vector<std::uint8_t> id, s.GetBytes(priv, CKA_ID));
    CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> publics, FindById(s, CKO_PUBLIC_KEY, id));
    CW_RETURN_IF_ERROR(s.SetString(priv, CKA_LABEL, new_label));
    for (CK_OBJECT_HANDLE h : publics) CW_RETURN_IF_ERROR(s.SetString(h, CKA_LABEL, new_label));
    return Status::Ok();
  });
}

Result<std::vector<std::uint8_t>> KeyPair::Sign(SignScheme scheme,
                                                std::span<const std::uint8_t> input) {
  CK_RSA_PKCS_PSS_PARAMS pss{};
  CK_MECHANISM mechanism{CKM_ECDSA, nullptr, 0};
  std::size_t max_out = 0;
  const std::string what = "signing with key '" + label_ + "'";
  auto pss_for = [&](CK_MECHANISM_TYPE hash, CK_RSA_PKCS_MGF_TYPE mgf, std::size_t len) -> Status {
    if (input.size() != len) {
      return InvalidArgument(what + ": RSA-PSS input must be a " + std::to_string(len) +
                             "-byte digest, not " + std::to_string(input.size()) + " bytes");
    }
    pss = {hash, mgf, static_cast<CK_ULONG>(len)};
    mechanism = {CKM_RSA_PKCS_PSS, &pss, sizeof pss};
    return Status::Ok();
  };
  switch (scheme) {
    case SignScheme::kEcdsa:
      if (type_ != KeyType::kEcP256) return InvalidArgument(what + ": ECDSA needs an EC key");
      if (input.size() < 20 || input.size() > 64) {
        return InvalidArgument(what + ": ECDSA input must be a digest of 20 to 64 bytes");
      }
      max_out = 64;
      break;
    case SignScheme::kRsaPkcs1:
      if (type_ != KeyType::kRsa3072) return InvalidArgument(what + ": PKCS#1 needs an RSA key");
      if (input.empty() || input.size() > kRsaBits / 8 - 11) {
        return InvalidArgument(what + ": PKCS#1 v1.5 input must be a DigestInfo of 1 to " +
                               std::to_string(kRsaBits / 8 - 11) + " bytes");
      }
      mechanism.mechanism = CKM_RSA_PKCS;
      max_out = kRsaBits / 8;
      break;
    case SignScheme::kRsaPssSha256:
    case SignScheme::kRsaPssSha384:
    case SignScheme::kRsaPssSha512:
      if (type_ != KeyType::kRsa3072) return InvalidArgument(what + ": RSA-PSS needs an RSA key");
      if (scheme == SignScheme::kRsaPssSha256) {
        CW_RETURN_IF_ERROR(pss_for(CKM_SHA256, CKG_MGF1_SHA256, 32));
      } else if (scheme == SignScheme::kRsaPssSha384) {
        CW_RETURN_IF_ERROR(pss_for(CKM_SHA384, CKG_MGF1_SHA384, 48));
      } else {
        CW_RETURN_IF_ERROR(pss_for(CKM_SHA512, CKG_MGF1_SHA512, 64));
      }
      max_out = kRsaBits / 8;
      break;
    default:
      return InvalidArgument(what + ": unknown signature scheme");
  }
  std::vector<std::uint8_t> out(max_out);
  if (const Status done = state_->token->WithSession([&](Session& s) -> Status {
        for (int attempt = 0;; ++attempt) {
          if (state_->generation != s.generation() || state_->private_key == CK_INVALID_HANDLE) {
            CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> found,
                                FindById(s, CKO_PRIVATE_KEY, id_));
            if (found.size() != 1) {
              return FailedPrecondition(what + ": the private key is no longer in the token");
            }
            state_->private_key = found[0];
            state_->generation = s.generation();
          }
          CK_RV rv = CW_SESSION_INVOKE(s, C_SignInit, &mechanism, state_->private_key);
          if ((rv == CKR_KEY_HANDLE_INVALID || rv == CKR_OBJECT_HANDLE_INVALID) && attempt == 0) {
            state_->private_key = CK_INVALID_HANDLE;
            continue;
          }
          CW_RETURN_IF_ERROR(internal::CkrStatus(rv, "C_SignInit").WithContext(what));
          CK_ULONG len = static_cast<CK_ULONG>(out.size());
          CW_RETURN_IF_ERROR(CW_SESSION_CALL(s, C_Sign, const_cast<std::uint8_t*>(input.data()),
                                             static_cast<CK_ULONG>(input.size()), out.data(), &len)
                                 .WithContext(what));
          if (len > out.size()) return Internal(what + ": C_Sign reported an impossible length");
          out.resize(len);
          return Status::Ok();
        }
      });
      !done.ok()) {
    return done;
  }
  return out;
}

}  // namespace cakewalk::hsm
