#include "hsm/sealer.h"

#include <openssl/crypto.h>

#include "base/encoding.h"
#include "hsm/layout.h"

namespace cakewalk::hsm::internal {
namespace {

constexpr std::size_t kIvBytes = 12;
constexpr std::size_t kTagBytes = 16;

class AesGcmSealer final : public Sealer {
 public:
  std::string_view scheme() const noexcept override { return "aes-256-gcm"; }

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

}  // namespace

Result<std::unique_ptr<Sealer>> MakeSealer(const Capabilities& capabilities) {
  CW_RETURN_IF_ERROR(capabilities.Require(Mechanism::kAesGcm, "sealing secrets (AES-256-GCM)"));
  CW_RETURN_IF_ERROR(
      capabilities.Require(Mechanism::kAesKeyGen, "creating the sealing key (AES-256)"));
  CW_RETURN_IF_ERROR(capabilities.Require(Mechanism::kRandom, "sealing IVs"));
  return std::unique_ptr<Sealer>(new AesGcmSealer);
}

}  // namespace cakewalk::hsm::internal
