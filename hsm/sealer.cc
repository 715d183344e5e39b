#include "hsm/sealer.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "base/encoding.h"
#include "hsm/key_provisioner.h"
#include "hsm/layout.h"

namespace cakewalk::hsm::internal {
namespace {

constexpr std::size_t kIvBytes = 12;
constexpr std::size_t kTagBytes = 16;

class AesGcmSealer final : public Sealer {
 public:
  std::string_view scheme() const noexcept override { return kAesGcmScheme; }

  Status Prepare(Session& session) override { return EnsureKey(session).status(); }

  Result<SealedRecord> Seal(Session& session, const SecretBytes& plaintext,
                            std::string_view aad) override {
    CW_ASSIGN_OR_RETURN(CurrentKey key, EnsureKey(session));
    SealedRecord out;
    out.key_id = key.id_hex;
    out.bytes.resize(kIvBytes + plaintext.size() + kTagBytes);
    CW_RETURN_IF_ERROR(session.Random(std::span(out.bytes.data(), kIvBytes)));
    CK_GCM_PARAMS params = Params(out.bytes.data(), aad);
    CK_MECHANISM mechanism{CKM_AES_GCM, &params, sizeof params};
    CW_RETURN_IF_ERROR(CW_SESSION_CALL(session, C_EncryptInit, &mechanism, key.handle));
    std::span<const std::uint8_t> pt = plaintext.Reveal(SecretAccess::Grant());
    CK_ULONG out_len = static_cast<CK_ULONG>(plaintext.size() + kTagBytes);
    CW_RETURN_IF_ERROR(CW_SESSION_CALL(session, C_Encrypt, const_cast<std::uint8_t*>(pt.data()),
                                       static_cast<CK_ULONG>(pt.size()),
                                       out.bytes.data() + kIvBytes, &out_len));
    if (out_len != plaintext.size() + kTagBytes) {
      return Internal("C_Encrypt(CKM_AES_GCM) returned " + std::to_string(out_len) +
                      " bytes, expected plaintext + 16");
    }
    return out;
  }

  Result<SecretBytes> Unseal(Session& session, std::string_view key_id,
                             std::span<const std::uint8_t> record, std::string_view aad) override {
    if (record.size() <= kIvBytes + kTagBytes) {
      return FailedPrecondition("authentication failed: the sealed record is truncated");
    }
    CW_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE key, FindKey(session, key_id));
    CK_GCM_PARAMS params = Params(const_cast<std::uint8_t*>(record.data()), aad);
    CK_MECHANISM mechanism{CKM_AES_GCM, &params, sizeof params};
    CW_RETURN_IF_ERROR(CW_SESSION_CALL(session, C_DecryptInit, &mechanism, key));
    const std::size_t ct_len = record.size() - kIvBytes;
    // Upper bound: the plaintext is 16 bytes shorter than ciphertext || tag.
    SecretBytes plaintext = SecretBytes::Allocate(ct_len);
    std::span<std::uint8_t> dst = plaintext.RevealMutable(SecretAccess::Grant());
    CK_ULONG pt_len = static_cast<CK_ULONG>(dst.size());
    const CK_RV rv =
        CW_SESSION_INVOKE(session, C_Decrypt, const_cast<std::uint8_t*>(record.data() + kIvBytes),
                          static_cast<CK_ULONG>(ct_len), dst.data(), &pt_len);
    if (rv != CKR_OK) {
      if (IsSessionLoss(rv)) return CkrStatus(rv, "C_Decrypt");
      return FailedPrecondition(
          "authentication failed: the sealed record does not belong to this secret and version, "
          "or was modified, or the sealing key differs (C_Decrypt: " +
          CkrText(rv) + ")");
    }
    if (pt_len > dst.size()) return Internal("C_Decrypt reported an impossible length");
    plaintext.Truncate(pt_len);
    return plaintext;
  }

 private:
  struct CurrentKey {
    CK_OBJECT_HANDLE handle;
    std::string id_hex;
  };

  static CK_GCM_PARAMS Params(std::uint8_t* iv, std::string_view aad) {
    CK_GCM_PARAMS p{};
    p.pIv = iv;
    p.ulIvLen = kIvBytes;       // SoftHSM reads this one,
    p.ulIvBits = kIvBytes * 8;  // PKCS#11 3.0 modules this one: set both.
    p.pAAD = reinterpret_cast<CK_BYTE*>(const_cast<char*>(aad.data()));
    p.ulAADLen = static_cast<CK_ULONG>(aad.size());
    p.ulTagBits = kTagBytes * 8;
    return p;
  }

  static Template& KeyClass(Template& t) {
    return t.Ulong(CKA_CLASS, CKO_SECRET_KEY).Ulong(CKA_KEY_TYPE, CKK_AES).Bool(CKA_TOKEN, true);
  }

  Result<CurrentKey> EnsureKey(Session& session) {
    if (current_ && current_generation_ == session.generation()) return *current_;
    current_.reset();
    Template find;
    KeyClass(find).String(CKA_LABEL, kSealKeyLabel);
    CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> found, session.Find(find));
    // Two agents racing on an empty token could both create a key: use the lowest id, always.
    std::optional<CurrentKey> best;
    for (CK_OBJECT_HANDLE h : found) {
      CW_ASSIGN_OR_RETURN(std::vector<std::uint8_t> id, session.GetBytes(h, CKA_ID));
      std::string hex = HexEncode(id);
      if (!best || hex < best->id_hex) best = CurrentKey{h, std::move(hex)};
    }
    if (!best) {
      std::uint8_t id[kObjectIdBytes];
      CW_RETURN_IF_ERROR(session.Random(id));
      static constexpr CK_MECHANISM_TYPE kAllowed[] = {CKM_AES_GCM};
      Template t;
      KeyClass(t)
          .Ulong(CKA_VALUE_LEN, 32)
          .Bool(CKA_PRIVATE, true)
          .Bool(CKA_SENSITIVE, true)
          .Bool(CKA_EXTRACTABLE, false)
          .Bool(CKA_ENCRYPT, true)
          .Bool(CKA_DECRYPT, true)
          .Bool(CKA_SIGN, false)
          .Bool(CKA_VERIFY, false)
          .Bool(CKA_WRAP, false)
          .Bool(CKA_UNWRAP, false)
          .Bool(CKA_DERIVE, false)
          .Bool(CKA_MODIFIABLE, false)
          .Mechanisms(kAllowed)
          .String(CKA_LABEL, kSealKeyLabel)
          .Bytes(CKA_ID, id);
      CK_MECHANISM gen{CKM_AES_KEY_GEN, nullptr, 0};
      CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
      CW_RETURN_IF_ERROR(
          CW_SESSION_CALL(session, C_GenerateKey, &gen, t.data(), t.size(), &handle)
              .WithContext("generating the sealing key " + std::string(kSealKeyLabel)));
      session.MarkMutated();
      best = CurrentKey{handle, HexEncode(id)};
    }
    current_ = best;
    current_generation_ = session.generation();
    by_id_[current_->id_hex] = {current_->handle, current_generation_};
    return *current_;
  }

  Result<CK_OBJECT_HANDLE> FindKey(Session& session, std::string_view key_id) {
    auto it = by_id_.find(std::string(key_id));
    if (it != by_id_.end() && it->second.generation == session.generation()) {
      return it->second.handle;
    }
    std::optional<std::vector<std::uint8_t>> id = ParseHex(key_id);
    if (!id || id->empty()) return FailedPrecondition("the record names a malformed key id");
    Template find;
    KeyClass(find).Bytes(CKA_ID, *id);
    CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> found, session.Find(find, 2));
    if (found.empty()) {
      return FailedPrecondition("the sealing key with id " + std::string(key_id) +
                                " is not in the token; the secret cannot be unsealed");
    }
    by_id_[std::string(key_id)] = {found[0], session.generation()};
    return found[0];
  }

  struct CachedHandle {
    CK_OBJECT_HANDLE handle;
    std::uint64_t generation;
  };
  std::optional<CurrentKey> current_;
  std::uint64_t current_generation_ = 0;
  std::map<std::string, CachedHandle, std::less<>> by_id_;
};

constexpr std::size_t kCbcIvBytes = 16;
constexpr std::size_t kAesBlock = 16;
constexpr std::size_t kMacBytes = 32;
constexpr std::string_view kCbcKeyLabel = "cakewalk:seal-key:cbc";
constexpr std::string_view kMacKeyLabel = "cakewalk:seal-key:mac";

class CbcHmacSealer final : public Sealer {
 public:
  std::string_view scheme() const noexcept override { return kCbcHmacScheme; }

  Status Prepare(Session& session) override { return EnsurePair(session).status(); }

  Result<SealedRecord> Seal(Session& session, const SecretBytes& plaintext,
                            std::string_view aad) override {
    CW_ASSIGN_OR_RETURN(Pair pair, EnsurePair(session));
    // PKCS#7 padding on the host, in secret memory: tpm2-pkcs11 1.9's CKM_AES_CBC_PAD fails to
    // decrypt anything longer than two blocks, plain CKM_AES_CBC works at every size.
    const std::size_t pad = kAesBlock - plaintext.size() % kAesBlock;
    const std::size_t ct_len = plaintext.size() + pad;
    SecretBytes padded = SecretBytes::Allocate(ct_len);
    {
      std::span<std::uint8_t> dst = padded.RevealMutable(SecretAccess::Grant());
      std::span<const std::uint8_t> src = plaintext.Reveal(SecretAccess::Grant());
      std::copy(src.begin(), src.end(), dst.begin());
      std::fill(dst.begin() + static_cast<std::ptrdiff_t>(src.size()), dst.end(),
                static_cast<std::uint8_t>(pad));
    }
    SealedRecord out;
    out.key_id = pair.id_hex;
    out.bytes.resize(kCbcIvBytes + ct_len + kMacBytes);
    CW_RETURN_IF_ERROR(session.Random(std::span(out.bytes.data(), kCbcIvBytes)));
    CK_MECHANISM cbc{CKM_AES_CBC, out.bytes.data(), kCbcIvBytes};
    CW_RETURN_IF_ERROR(CW_SESSION_CALL(session, C_EncryptInit, &cbc, pair.enc));
    std::span<std::uint8_t> pt = padded.RevealMutable(SecretAccess::Grant());
    CK_ULONG out_len = static_cast<CK_ULONG>(ct_len);
    const CK_RV rv = CW_SESSION_INVOKE(session, C_Encrypt, pt.data(), static_cast<CK_ULONG>(ct_len),
                                       out.bytes.data() + kCbcIvBytes, &out_len);
    if (rv != CKR_OK) {
      session.DiscardAfterRun();
      return CkrStatus(rv, "C_Encrypt").WithContext("sealing with AES-256-CBC");
    }
    if (out_len != ct_len) {
      return Internal("C_Encrypt(CKM_AES_CBC) returned " + std::to_string(out_len) +
                      " bytes, expected " + std::to_string(ct_len));
    }
    std::span<std::uint8_t> tag(out.bytes.data() + kCbcIvBytes + ct_len, kMacBytes);
    CW_RETURN_IF_ERROR(
        Mac(session, pair.mac, aad, std::span(out.bytes.data(), kCbcIvBytes + ct_len), tag));
    return out;
  }

  Result<SecretBytes> Unseal(Session& session, std::string_view key_id,
                             std::span<const std::uint8_t> record, std::string_view aad) override {
    if (record.size() < kCbcIvBytes + kAesBlock + kMacBytes ||
        (record.size() - kCbcIvBytes - kMacBytes) % kAesBlock != 0) {
      return FailedPrecondition("authentication failed: the sealed record is truncated");
    }
    CW_ASSIGN_OR_RETURN(Pair pair, FindPair(session, key_id));
    const std::size_t ct_len = record.size() - kCbcIvBytes - kMacBytes;
    std::uint8_t tag[kMacBytes];
    CW_RETURN_IF_ERROR(Mac(session, pair.mac, aad, record.first(kCbcIvBytes + ct_len), tag));
    const bool authentic = CRYPTO_memcmp(tag, record.data() + kCbcIvBytes + ct_len, kMacBytes) == 0;
    OPENSSL_cleanse(tag, sizeof tag);
    if (!authentic) {
      return FailedPrecondition(
          "authentication failed: the sealed record does not belong to this secret and version, "
          "or was modified, or the sealing keys differ (HMAC-SHA256 tag mismatch)");
    }
    // Only authenticated ciphertext reaches the decryption: no padding oracle.
    CK_MECHANISM cbc{CKM_AES_CBC, const_cast<std::uint8_t*>(record.data()), kCbcIvBytes};
    CW_RETURN_IF_ERROR(CW_SESSION_CALL(session, C_DecryptInit, &cbc, pair.enc));
    SecretBytes plaintext = SecretBytes::Allocate(ct_len);
    std::span<std::uint8_t> dst = plaintext.RevealMutable(SecretAccess::Grant());
    CK_ULONG pt_len = static_cast<CK_ULONG>(dst.size());
    const CK_RV rv = CW_SESSION_INVOKE(session, C_Decrypt,
                                       const_cast<std::uint8_t*>(record.data() + kCbcIvBytes),
                                       static_cast<CK_ULONG>(ct_len), dst.data(), &pt_len);
    if (rv != CKR_OK) {
      session.DiscardAfterRun();
      return CkrStatus(rv, "C_Decrypt").WithContext("unsealing with AES-256-CBC");
    }
    if (pt_len != ct_len) {
      return Internal("C_Decrypt(CKM_AES_CBC) returned " + std::to_string(pt_len) +
                      " bytes, expected " + std::to_string(ct_len));
    }
    // The record is authentic, so a bad padding means a bug or another key, never an attack.
    const std::uint8_t pad = dst[ct_len - 1];
    bool padding_ok = pad >= 1 && pad <= kAesBlock;
    for (std::size_t i = 0; padding_ok && i < pad; ++i) padding_ok = dst[ct_len - 1 - i] == pad;
    if (!padding_ok) return Internal("the unsealed value has no valid padding");
    plaintext.Truncate(ct_len - pad);
    return plaintext;
  }

 private:
  struct Pair {
    CK_OBJECT_HANDLE enc = CK_INVALID_HANDLE;
    CK_OBJECT_HANDLE mac = CK_INVALID_HANDLE;
    std::string id_hex;
  };

  // T = HMAC-SHA256 over scheme || 0x00 || u32be(|aad|) || aad || IV || SHA-256(C), in the token
  // (sealer.h says why the ciphertext enters through its hash).
  static Status Mac(Session& session, CK_OBJECT_HANDLE key, std::string_view aad,
                    std::span<const std::uint8_t> iv_and_ciphertext, std::span<std::uint8_t> tag) {
    std::vector<std::uint8_t> m;
    m.reserve(kCbcHmacScheme.size() + 5 + aad.size() + kCbcIvBytes + SHA256_DIGEST_LENGTH);
    m.insert(m.end(), kCbcHmacScheme.begin(), kCbcHmacScheme.end());
    m.push_back(0);
    const auto n = static_cast<std::uint32_t>(aad.size());
    for (int shift : {24, 16, 8, 0}) m.push_back(static_cast<std::uint8_t>(n >> shift));
    m.insert(m.end(), aad.begin(), aad.end());
    m.insert(m.end(), iv_and_ciphertext.begin(), iv_and_ciphertext.begin() + kCbcIvBytes);
    std::uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256(iv_and_ciphertext.data() + kCbcIvBytes, iv_and_ciphertext.size() - kCbcIvBytes, digest);
    m.insert(m.end(), std::begin(digest), std::end(digest));
    CK_MECHANISM hmac{CKM_SHA256_HMAC, nullptr, 0};
    CW_RETURN_IF_ERROR(CW_SESSION_CALL(session, C_SignInit, &hmac, key));
    CK_ULONG len = static_cast<CK_ULONG>(tag.size());
    const CK_RV rv = CW_SESSION_INVOKE(session, C_Sign, m.data(), static_cast<CK_ULONG>(m.size()),
                                       tag.data(), &len);
    if (rv != CKR_OK) {
      session.DiscardAfterRun();
      return CkrStatus(rv, "C_Sign").WithContext("HMAC-SHA256 of a sealed record");
    }
    if (len != kMacBytes) {
      return Internal("C_Sign(CKM_SHA256_HMAC) returned " + std::to_string(len) + " bytes");
    }
    return Status::Ok();
  }

  static Result<std::vector<CK_OBJECT_HANDLE>> FindKeys(Session& session, std::string_view label,
                                                        const std::vector<std::uint8_t>* id) {
    Template find;
    find.Ulong(CKA_CLASS, CKO_SECRET_KEY).Bool(CKA_TOKEN, true).String(CKA_LABEL, label);
    if (id != nullptr) find.Bytes(CKA_ID, *id);
    return session.Find(find, 64);
  }

  // The complete pair with the lowest id (two agents racing on an empty token could each create
  // one; all of them keep working, new records use the lowest).
  Result<std::optional<Pair>> FindLowestPair(Session& session) {
    CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> encs,
                        FindKeys(session, kCbcKeyLabel, nullptr));
    CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> macs,
                        FindKeys(session, kMacKeyLabel, nullptr));
    std::map<std::string, CK_OBJECT_HANDLE> mac_by_id;
    for (CK_OBJECT_HANDLE h : macs) {
      CW_ASSIGN_OR_RETURN(std::vector<std::uint8_t> id, session.GetBytes(h, CKA_ID));
      mac_by_id.emplace(HexEncode(id), h);
    }
    std::optional<Pair> best;
    for (CK_OBJECT_HANDLE h : encs) {
      CW_ASSIGN_OR_RETURN(std::vector<std::uint8_t> id, session.GetBytes(h, CKA_ID));
      std::string hex = HexEncode(id);
      auto mac = mac_by_id.find(hex);
      if (hex.empty() || mac == mac_by_id.end()) continue;  // half a pair: never used
      if (!best || hex < best->id_hex) best = Pair{h, mac->second, std::move(hex)};
    }
    return best;
  }

  Result<Pair> EnsurePair(Session& session) {
    if (current_ && current_generation_ == session.generation()) return *current_;
    current_.reset();
    CW_ASSIGN_OR_RETURN(std::optional<Pair> found, FindLowestPair(session));
    if (!found) {
      CW_ASSIGN_OR_RETURN(found, CreatePair(session));
    }
    current_ = found;
    current_generation_ = session.generation();
    by_id_[current_->id_hex] = {*current_, current_generation_};
    return *current_;
  }

  // Generates the pair with C_GenerateKey, or through the token's key provisioner where the
  // token refuses to generate secret keys.
  Result<Pair> CreatePair(Session& session) {
    std::uint8_t id[kObjectIdBytes];
    CW_RETURN_IF_ERROR(session.Random(id));
    static constexpr CK_MECHANISM_TYPE kCbcOnly[] = {CKM_AES_CBC};
    static constexpr CK_MECHANISM_TYPE kHmacOnly[] = {CKM_SHA256_HMAC};
    auto common = [&](Template& t, std::string_view label) -> Template& {
      return t.Ulong(CKA_CLASS, CKO_SECRET_KEY)
          .Bool(CKA_TOKEN, true)
          .Bool(CKA_PRIVATE, true)
          .Bool(CKA_SENSITIVE, true)
          .Bool(CKA_EXTRACTABLE, false)
          .Bool(CKA_WRAP, false)
          .Bool(CKA_UNWRAP, false)
          .Bool(CKA_DERIVE, false)
          .Bool(CKA_MODIFIABLE, false)
          .Ulong(CKA_VALUE_LEN, 32)
          .String(CKA_LABEL, label)
          .Bytes(CKA_ID, id);
    };
    Template enc;
    common(enc, kCbcKeyLabel)
        .Ulong(CKA_KEY_TYPE, CKK_AES)
        .Bool(CKA_ENCRYPT, true)
        .Bool(CKA_DECRYPT, true)
        .Bool(CKA_SIGN, false)
        .Bool(CKA_VERIFY, false)
        .Mechanisms(kCbcOnly);
    Template mac;
    common(mac, kMacKeyLabel)
        .Ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET)
        .Bool(CKA_ENCRYPT, false)
        .Bool(CKA_DECRYPT, false)
        .Bool(CKA_SIGN, true)
        .Bool(CKA_VERIFY, false)
        .Mechanisms(kHmacOnly);
    std::vector<GeneratedKey> out_of_band;
    CK_OBJECT_HANDLE enc_handle = CK_INVALID_HANDLE;
    CK_MECHANISM aes_gen{CKM_AES_KEY_GEN, nullptr, 0};
    CK_RV rv =
        CW_SESSION_INVOKE(session, C_GenerateKey, &aes_gen, enc.data(), enc.size(), &enc_handle);
    if (rv == CKR_OK) {
      session.MarkMutated();
    } else if (RefusesSecretKeyCreation(rv)) {
      out_of_band.push_back(GeneratedKey::kAes256);
    } else {
      return CkrStatus(rv, "C_GenerateKey").WithContext("generating " + std::string(kCbcKeyLabel));
    }
    CK_OBJECT_HANDLE mac_handle = CK_INVALID_HANDLE;
    CK_MECHANISM secret_gen{CKM_GENERIC_SECRET_KEY_GEN, nullptr, 0};
    rv =
        CW_SESSION_INVOKE(session, C_GenerateKey, &secret_gen, mac.data(), mac.size(), &mac_handle);
    if (rv == CKR_OK) {
      session.MarkMutated();
    } else if (RefusesSecretKeyCreation(rv)) {
      out_of_band.push_back(GeneratedKey::kHmacSha256);
    } else {
      if (enc_handle != CK_INVALID_HANDLE) session.Destroy(enc_handle).IgnoreError();
      return CkrStatus(rv, "C_GenerateKey").WithContext("generating " + std::string(kMacKeyLabel));
    }
    const std::string id_hex = HexEncode(id);
    if (out_of_band.empty()) return Pair{enc_handle, mac_handle, id_hex};

    // The token refused: its store's own generator makes the keys (inside the TPM for
    // tpm2-pkcs11), then the module reads its store again and the pair must appear.
    Result<KeyProvisioner*> provisioner = session.Provisioner();
    if (!provisioner.ok()) {
      if (enc_handle != CK_INVALID_HANDLE) session.Destroy(enc_handle).IgnoreError();
      if (mac_handle != CK_INVALID_HANDLE) session.Destroy(mac_handle).IgnoreError();
      return provisioner.status().WithContext(
          "the token refuses to generate the sealing keys through PKCS#11");
    }
    Status changed = session.ChangeOutOfBand([&](const ProvisionTarget& target) -> Status {
      for (GeneratedKey kind : out_of_band) {
        const std::string_view label = kind == GeneratedKey::kAes256 ? kCbcKeyLabel : kMacKeyLabel;
        CW_RETURN_IF_ERROR((*provisioner)->Generate(target, kind, label, id));
      }
      return Status::Ok();
    });
    CW_RETURN_IF_ERROR(changed);
    const std::vector<std::uint8_t> id_bytes(std::begin(id), std::end(id));
    CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> encs,
                        FindKeys(session, kCbcKeyLabel, &id_bytes));
    CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> macs,
                        FindKeys(session, kMacKeyLabel, &id_bytes));
    if (encs.size() != 1 || macs.size() != 1) {
      return FailedPrecondition("the sealing keys generated in " + (*provisioner)->Describe() +
                                " do not show in the token; is that the store of the token the "
                                "agent uses?");
    }
    return Pair{encs[0], macs[0], id_hex};
  }

  Result<Pair> FindPair(Session& session, std::string_view key_id) {
    auto it = by_id_.find(std::string(key_id));
    if (it != by_id_.end() && it->second.generation == session.generation()) {
      return it->second.pair;
    }
    std::optional<std::vector<std::uint8_t>> id = ParseHex(key_id);
    if (!id || id->empty()) return FailedPrecondition("the record names a malformed key id");
    CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> encs, FindKeys(session, kCbcKeyLabel, &*id));
    CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> macs, FindKeys(session, kMacKeyLabel, &*id));
    if (encs.empty() || macs.empty()) {
      return FailedPrecondition("the sealing keys with id " + std::string(key_id) +
                                " are not in the token; the secret cannot be unsealed");
    }
    Pair pair{encs[0], macs[0], std::string(key_id)};
    by_id_[std::string(key_id)] = {pair, session.generation()};
    return pair;
  }

  struct CachedPair {
    Pair pair;
    std::uint64_t generation;
  };
  std::optional<Pair> current_;
  std::uint64_t current_generation_ = 0;
  std::map<std::string, CachedPair, std::less<>> by_id_;
};

Status RequireGcm(const Capabilities& capabilities) {
  CW_RETURN_IF_ERROR(capabilities.Require(Mechanism::kAesGcm, "sealing secrets (AES-256-GCM)"));
  CW_RETURN_IF_ERROR(
      capabilities.Require(Mechanism::kAesKeyGen, "creating the sealing key (AES-256)"));
  return capabilities.Require(Mechanism::kRandom, "sealing IVs");
}

Status RequireCbcHmac(const Capabilities& capabilities) {
  CW_RETURN_IF_ERROR(
      capabilities.Require(Mechanism::kAesCbc, "sealing secrets (AES-256-CBC with HMAC-SHA256)"));
  CW_RETURN_IF_ERROR(
      capabilities.Require(Mechanism::kSha256Hmac, "authenticating sealed secrets (HMAC-SHA256)"));
  return capabilities.Require(Mechanism::kRandom, "sealing IVs");
}

}  // namespace

Result<std::unique_ptr<Sealer>> MakeSealer(const Capabilities& capabilities) {
  const Status gcm = RequireGcm(capabilities);
  if (gcm.ok()) return std::unique_ptr<Sealer>(new AesGcmSealer);
  const Status cbc = RequireCbcHmac(capabilities);
  if (cbc.ok()) return std::unique_ptr<Sealer>(new CbcHmacSealer);
  return FailedPrecondition("the token supports neither sealing construction: " + gcm.message() +
                            "; and " + cbc.message());
}

Result<std::unique_ptr<Sealer>> MakeSealerFor(std::string_view scheme,
                                              const Capabilities& capabilities) {
  if (scheme == kAesGcmScheme) {
    CW_RETURN_IF_ERROR(RequireGcm(capabilities));
    return std::unique_ptr<Sealer>(new AesGcmSealer);
  }
  if (scheme == kCbcHmacScheme) {
    CW_RETURN_IF_ERROR(RequireCbcHmac(capabilities));
    return std::unique_ptr<Sealer>(new CbcHmacSealer);
  }
  return FailedPrecondition("unknown sealing scheme '" + std::string(scheme) + "'");
}

}  // namespace cakewalk::hsm::internal
