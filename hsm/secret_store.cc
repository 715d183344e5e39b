#include "hsm/secret_store.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <algorithm>
#include <map>
#include <optional>

#include "base/encoding.h"
#include "base/json.h"
#include "hsm/key_provisioner.h"
#include "hsm/layout.h"
#include "hsm/sealer.h"
#include "hsm/session.h"

namespace cakewalk::hsm {

using internal::RecordState;
using internal::Session;
using internal::Template;

namespace {

// How long a cached TOTP key handle is used before the token is asked again which version is
// current (another process, e.g. `secret rotate` or `mfa enroll`, may have changed it).
constexpr std::chrono::seconds kTotpCacheTtl{5};

SecretState ToPublic(RecordState s) {
  switch (s) {
    case RecordState::kPending:
      return SecretState::kPending;
    case RecordState::kCurrent:
      return SecretState::kCurrent;
    case RecordState::kRetired:
      return SecretState::kRetired;
  }
  return SecretState::kRetired;
}

CK_MECHANISM_TYPE HmacMechanism(TotpAlgorithm a) {
  switch (a) {
    case TotpAlgorithm::kSha1:
      return CKM_SHA_1_HMAC;
    case TotpAlgorithm::kSha256:
      return CKM_SHA256_HMAC;
    case TotpAlgorithm::kSha512:
      return CKM_SHA512_HMAC;
  }
  return CKM_SHA_1_HMAC;
}

Mechanism HmacCapability(TotpAlgorithm a) {
  switch (a) {
    case TotpAlgorithm::kSha1:
      return Mechanism::kSha1Hmac;
    case TotpAlgorithm::kSha256:
      return Mechanism::kSha256Hmac;
    case TotpAlgorithm::kSha512:
      return Mechanism::kSha512Hmac;
  }
  return Mechanism::kSha1Hmac;
}

// HMAC's block size (RFC 2104 B): 64 bytes for SHA-1 and SHA-256, 128 for SHA-512.
std::size_t HmacBlockSize(TotpAlgorithm a) { return a == TotpAlgorithm::kSha512 ? 128 : 64; }

// `seed` followed by zero bytes up to `size` (same HMAC for size <= block size, RFC 2104 §2).
SecretBytes PadSeed(const SecretBytes& seed, std::size_t size) {
  SecretBytes padded = SecretBytes::Allocate(size);
  std::span<const std::uint8_t> src = seed.Reveal(SecretAccess::Grant());
  std::copy(src.begin(), src.end(), padded.RevealMutable(SecretAccess::Grant()).begin());
  return padded;
}

// H(seed) for a seed longer than the hash block: HMAC itself uses that instead of such a key
// (RFC 2104 §2), so every MAC is the same.
Result<SecretBytes> HashLongSeed(const SecretBytes& seed, TotpAlgorithm a) {
  const EVP_MD* md = a == TotpAlgorithm::kSha1     ? EVP_sha1()
                     : a == TotpAlgorithm::kSha256 ? EVP_sha256()
                                                   : EVP_sha512();
  SecretBytes out = SecretBytes::Allocate(TotpDigestSize(a));
  unsigned int len = 0;
  std::span<const std::uint8_t> in = seed.Reveal(SecretAccess::Grant());
  if (EVP_Digest(in.data(), in.size(), out.RevealMutable(SecretAccess::Grant()).data(), &len, md,
                 nullptr) != 1 ||
      len != out.size()) {
    ERR_clear_error();
    return Internal("hashing a long TOTP seed failed");
  }
  return out;
}

// For tokens that refuse C_CreateObject of secret keys (hsm/key_provisioner.h): imports the seed
// through the token store's own path, then checks that the token shows it under `id` and computes
// with it. What goes in:
//   - a seed longer than the hash block (64 bytes for SHA-1/SHA-256, 128 for SHA-512) is replaced
//     by its hash, exactly as HMAC does (RFC 2104 §2): same codes, and it fits the TPM, which
//     takes HMAC keys of at most 64 bytes (tpm2_import refuses longer ones). A SHA-512 seed of
//     65 to 128 bytes therefore cannot be imported (it is refused with the TPM's reason);
//   - otherwise the seed as it is: tpm2-pkcs11 and the TPM take a 10-byte seed unpadded, which
//     matches oathtool. Padding is decided by behaviour: only if the token refuses the imported
//     key as too short (CKR_KEY_SIZE_RANGE) is it imported again, zero-padded to the digest
//     length (the same MAC, RFC 2104 §2).
// On return the session is a new one (ChangeOutOfBand): earlier handles are invalid.
Result<CK_OBJECT_HANDLE> ImportSeedOutOfBand(Session& s, const TotpSeed& seed,
                                             const std::string& label,
                                             std::span<const std::uint8_t> id, CK_RV refused) {
  const std::string why =
      "the token does not import secret keys through PKCS#11 (C_CreateObject: " +
      internal::CkrText(refused) + ")";
  Result<internal::KeyProvisioner*> provisioner = s.Provisioner();
  if (!provisioner.ok()) return provisioner.status().WithContext(why);
  const TotpAlgorithm algorithm = seed.params.algorithm;
  const std::size_t digest = TotpDigestSize(algorithm);
  SecretBytes hashed;
  const SecretBytes* key = &seed.key;
  if (seed.key.size() > HmacBlockSize(algorithm)) {
    CW_ASSIGN_OR_RETURN(hashed, HashLongSeed(seed.key, algorithm));
    key = &hashed;
  }
  for (int attempt = 0;; ++attempt) {
    SecretBytes padded;
    const SecretBytes* value = key;
    if (attempt > 0) {
      padded = PadSeed(*key, digest);
      value = &padded;
    }
    CW_RETURN_IF_ERROR(s.ChangeOutOfBand([&](const internal::ProvisionTarget& target) {
      return (*provisioner)->ImportHmac(target, algorithm, *value, label, id);
    }));
    Template find;
    find.Ulong(CKA_CLASS, CKO_SECRET_KEY).Bool(CKA_TOKEN, true).Bytes(CKA_ID, id);
    CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> keys, s.Find(find, 2));
    if (keys.size() != 1) {
      for (CK_OBJECT_HANDLE k : keys) s.Destroy(k).IgnoreError();
      return FailedPrecondition("the seed imported into " + (*provisioner)->Describe() +
                                " does not show in the token; is that the store of the token "
                                "the agent uses?");
    }
    // The probe: one MAC over the zero counter, discarded.
    CK_MECHANISM mechanism{HmacMechanism(algorithm), nullptr, 0};
    CK_RV rv = CW_SESSION_INVOKE(s, C_SignInit, &mechanism, keys[0]);
    if (rv == CKR_OK) {
      std::uint8_t zero[8] = {};
      std::uint8_t mac[64];
      CK_ULONG mac_len = sizeof mac;
      rv = CW_SESSION_INVOKE(s, C_Sign, zero, CK_ULONG{8}, mac, &mac_len);
      OPENSSL_cleanse(mac, sizeof mac);
    }
    if (rv == CKR_OK) return keys[0];
    s.Destroy(keys[0]).IgnoreError();
    if (rv == CKR_KEY_SIZE_RANGE && attempt == 0 && key->size() < digest) continue;
    return internal::CkrStatus(rv, "C_Sign")
        .WithContext("the seed imported into " + (*provisioner)->Describe() +
                     " cannot compute TOTP codes");
  }
}

std::string TotpScheme(const TotpParams& p) {
  return std::string(TotpAlgorithmName(p.algorithm)) + "/" + std::to_string(p.digits) + "/" +
         std::to_string(p.period.count()) + "s";
}

std::string Describe(std::string_view connection, std::string_view name, std::uint32_t version) {
  std::string s = std::string(connection) + "/" + std::string(name);
  if (version != 0) s += " v" + std::to_string(version);
  return s;
}

Status ValidatePurpose(std::string_view purpose) {
  if (purpose.empty() || purpose.size() > 200) {
    return InvalidArgument("the purpose of a secret use must be 1 to 200 characters");
  }
  for (char c : purpose) {
    if (c < 0x20 || c > 0x7e) {
      return InvalidArgument("the purpose of a secret use must be printable ASCII");
    }
  }
  return Status::Ok();
}

// One version as found in the token.
struct Record {
  CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
  std::string label;
  std::vector<std::uint8_t> id;  // kind totp: CKA_ID of the seed key
  RecordState state = RecordState::kPending;
  SecretInfo info;
  // kind sealed
  std::string key_id;
  std::vector<std::uint8_t> sealed;
  // kind totp
  TotpParams totp;
};

Result<Record> ParseRecord(const internal::RecordLabelParts& parts, std::string label,
                           std::span<const std::uint8_t> value) {
  const std::string what = "token record '" + label + "'";
  CW_ASSIGN_OR_RETURN(Json::Value json, ParseJson(AsChars(value), what, 256 * 1024));
  if (!json.isObject()) return FailedPrecondition(what + " does not hold a JSON object");
  JsonFields f(json, "$");
  f.Int("format", 1, 1, 1, JsonFields::kRequired);
  const std::string kind = f.String("kind", JsonFields::kRequired);
  const std::string connection = f.String("connection", JsonFields::kRequired);
  const std::string name = f.String("name", JsonFields::kRequired);
  const auto version = f.Int("version", 0, 1, UINT32_MAX, JsonFields::kRequired);
  const std::string created = f.String("created", JsonFields::kRequired);
  Record r;
  r.label = std::move(label);
  r.state = parts.state;
  r.info.connection = parts.connection;
  r.info.name = parts.name;
  r.info.version = parts.version;
  r.info.state = ToPublic(parts.state);
  if (kind == "sealed") {
    r.info.kind = SecretKind::kSealed;
    r.info.scheme = f.String("scheme", JsonFields::kRequired);
    r.key_id = f.String("key", JsonFields::kRequired);
    const std::string sealed = f.String("sealed", JsonFields::kRequired);
    if (f.ok()) {
      auto bytes = Base64Decode(sealed);
      if (!bytes.ok()) return FailedPrecondition(what + ": the sealed value is not base64");
      r.sealed = std::move(*bytes);
    }
  } else if (kind == "totp") {
    r.info.kind = SecretKind::kTotp;
    const std::string algorithm = f.String("algorithm", JsonFields::kRequired);
    r.totp.digits = static_cast<int>(f.Int("digits", 6, 6, 8, JsonFields::kRequired));
    r.totp.period = std::chrono::seconds(
        f.Int("period", 30, kMinTotpPeriod.count(), kMaxTotpPeriod.count(), JsonFields::kRequired));
    if (algorithm == "SHA1") {
      r.totp.algorithm = TotpAlgorithm::kSha1;
    } else if (algorithm == "SHA256") {
      r.totp.algorithm = TotpAlgorithm::kSha256;
    } else if (algorithm == "SHA512") {
      r.totp.algorithm = TotpAlgorithm::kSha512;
    } else {
      f.Fail("algorithm", "unknown algorithm");
    }
    r.info.scheme = TotpScheme(r.totp);
    const std::string seed = f.String("seed", JsonFields::kRequired);
    if (f.ok()) {
      std::optional<std::vector<std::uint8_t>> id = internal::ParseHex(seed);
      if (!id || id->empty()) {
        f.Fail("seed", "expected the seed key's CKA_ID in hex");
      } else {
        r.id = std::move(*id);
      }
    }
  } else {
    f.Fail("kind", "expected \"sealed\" or \"totp\"");
  }
  Status finished = f.Finish();
  if (!finished.ok()) return FailedPrecondition(what + ": " + finished.message());
  if (Status v = ValidateTotpParams(r.totp); r.info.kind == SecretKind::kTotp && !v.ok()) {
    return FailedPrecondition(what + ": " + v.message());
  }
  auto when = ParseRfc3339(created);
  if (!when.ok()) return FailedPrecondition(what + ": bad creation time");
  r.info.created = *when;
  if (connection != parts.connection || name != parts.name ||
      static_cast<std::uint32_t>(version) != parts.version) {
    return FailedPrecondition(
        what + " is inconsistent: its content belongs to " +
        Describe(connection, name, static_cast<std::uint32_t>(version)) +
        " (relabelled or copied by hand?); remove or fix it with pkcs11-tool");
  }
  return r;
}

// Every record (optionally only those of one connection / secret).
Result<std::vector<Record>> LoadRecords(Session& s, std::optional<std::string_view> connection,
                                        std::optional<std::string_view> name) {
  Template find;
  find.Ulong(CKA_CLASS, CKO_DATA)
      .Bool(CKA_TOKEN, true)
      .String(CKA_APPLICATION, internal::kApplication);
  CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> handles, s.Find(find, 100000));
  std::vector<Record> out;
  for (CK_OBJECT_HANDLE h : handles) {
    CW_ASSIGN_OR_RETURN(std::string label, s.GetString(h, CKA_LABEL));
    std::optional<internal::RecordLabelParts> parts = internal::ParseRecordLabel(label);
    if (!parts) continue;
    if (connection && parts->connection != *connection) continue;
    if (name && parts->name != *name) continue;
    CW_ASSIGN_OR_RETURN(std::vector<std::uint8_t> value, s.GetBytes(h, CKA_VALUE));
    CW_ASSIGN_OR_RETURN(Record r, ParseRecord(*parts, std::move(label), value));
    r.handle = h;
    out.push_back(std::move(r));
  }
  std::sort(out.begin(), out.end(), [](const Record& a, const Record& b) {
    return std::tie(a.info.connection, a.info.name, a.info.version) <
           std::tie(b.info.connection, b.info.name, b.info.version);
  });
  return out;
}

// The current version: the highest version labelled current (see layout.h).
const Record* Current(const std::vector<Record>& records) {
  const Record* best = nullptr;
  for (const Record& r : records) {
    if (r.state == RecordState::kCurrent && (!best || r.info.version > best->info.version)) {
      best = &r;
    }
  }
  return best;
}

const Record* FindVersion(const std::vector<Record>& records, std::uint32_t version) {
  for (const Record& r : records) {
    if (r.info.version == version) return &r;
  }
  return nullptr;
}

// The version counter of one secret (layout.h): its objects and the highest "last" they hold.
struct Counter {
  std::vector<CK_OBJECT_HANDLE> handles;
  std::uint32_t last = 0;
};

Result<Counter> LoadCounter(Session& s, std::string_view connection, std::string_view name) {
  const std::string label = internal::CounterLabel(connection, name);
  Template find;
  find.Ulong(CKA_CLASS, CKO_DATA)
      .Bool(CKA_TOKEN, true)
      .String(CKA_APPLICATION, internal::kApplication)
      .String(CKA_LABEL, label);
  CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> handles, s.Find(find, 64));
  Counter c;
  for (CK_OBJECT_HANDLE h : handles) {
    const std::string what = "token object '" + label + "'";
    CW_ASSIGN_OR_RETURN(std::vector<std::uint8_t> value, s.GetBytes(h, CKA_VALUE));
    CW_ASSIGN_OR_RETURN(Json::Value json, ParseJson(AsChars(value), what, 4096));
    if (!json.isObject()) return FailedPrecondition(what + " does not hold a JSON object");
    JsonFields f(json, "$");
    f.Int("format", 1, 1, 1, JsonFields::kRequired);
    const std::string kind = f.String("kind", JsonFields::kRequired);
    const std::string conn = f.String("connection", JsonFields::kRequired);
    const std::string secret = f.String("name", JsonFields::kRequired);
    const auto last = f.Int("last", 0, 1, UINT32_MAX, JsonFields::kRequired);
    Status finished = f.Finish();
    if (!finished.ok()) return FailedPrecondition(what + ": " + finished.message());
    if (kind != "last-version" || conn != connection || secret != name) {
      return FailedPrecondition(what +
                                " is inconsistent (relabelled or copied by hand?); remove or fix "
                                "it with pkcs11-tool");
    }
    c.last = std::max(c.last, static_cast<std::uint32_t>(last));
    c.handles.push_back(h);
  }
  return c;
}

// Hands out the next version number of (connection, name): max(counter, highest record) + 1,
// written to the counter BEFORE the caller creates the record, so that no number is ever handed
// out twice (layout.h). The old counter objects go after the new one exists.
Result<std::uint32_t> AllocateVersion(Session& s, std::string_view connection,
                                      std::string_view name, const std::vector<Record>& records) {
  CW_ASSIGN_OR_RETURN(Counter counter, LoadCounter(s, connection, name));
  std::uint32_t highest = counter.last;
  for (const Record& r : records) highest = std::max(highest, r.info.version);
  if (highest == UINT32_MAX) {
    return FailedPrecondition("secret " + Describe(connection, name, 0) +
                              " has used every version number");
  }
  const std::uint32_t next = highest + 1;
  Json::Value json(Json::objectValue);
  json["format"] = 1;
  json["kind"] = "last-version";
  json["connection"] = std::string(connection);
  json["name"] = std::string(name);
  json["last"] = Json::UInt(next);
  Template t;
  t.Ulong(CKA_CLASS, CKO_DATA)
      .Bool(CKA_TOKEN, true)
      .Bool(CKA_PRIVATE, true)
      .Bool(CKA_MODIFIABLE, true)
      .String(CKA_APPLICATION, internal::kApplication)
      .String(CKA_LABEL, internal::CounterLabel(connection, name))
      .String(CKA_VALUE, WriteJson(json));
  CW_RETURN_IF_ERROR(s.Create(t).status().WithContext("raising the version counter of " +
                                                      Describe(connection, name, 0)));
  // Best effort: a leftover counter holds a lower number and is removed by the next allocation.
  for (CK_OBJECT_HANDLE h : counter.handles) s.Destroy(h).IgnoreError();
  return next;
}

// Labels every current version except `keep` as retired.
Status RetireOthers(Session& s, const std::vector<Record>& records, std::uint32_t keep) {
  for (const Record& r : records) {
    if (r.state != RecordState::kCurrent || r.info.version == keep) continue;
    CW_RETURN_IF_ERROR(s.SetString(r.handle, CKA_LABEL,
                                   internal::RecordLabel(r.info.connection, r.info.name,
                                                         r.info.version, RecordState::kRetired)));
  }
  return Status::Ok();
}

Json::Value RecordHeader(std::string_view connection, std::string_view name, std::uint32_t version,
                         SysTime created, std::string_view kind) {
  Json::Value v(Json::objectValue);
  v["format"] = 1;
  v["kind"] = std::string(kind);
  v["connection"] = std::string(connection);
  v["name"] = std::string(name);
  v["version"] = Json::UInt(version);
  v["created"] = FormatRfc3339(created);
  return v;
}

Template& RecordTemplate(Template& t, const std::string& label, const std::string& json) {
  return t.Ulong(CKA_CLASS, CKO_DATA)
      .Bool(CKA_TOKEN, true)
      .Bool(CKA_PRIVATE, true)
      .Bool(CKA_MODIFIABLE, true)
      .String(CKA_APPLICATION, internal::kApplication)
      .String(CKA_LABEL, label)
      .String(CKA_VALUE, json);
}

}  // namespace

std::string_view SecretStateName(SecretState s) noexcept {
  switch (s) {
    case SecretState::kPending:
      return "pending";
    case SecretState::kCurrent:
      return "current";
    case SecretState::kRetired:
      return "retired";
  }
  return "unknown";
}

std::string_view SecretKindName(SecretKind k) noexcept {
  switch (k) {
    case SecretKind::kSealed:
      return "sealed";
    case SecretKind::kTotp:
      return "totp";
  }
  return "unknown";
}

struct SecretStore::Impl {
  Impl(std::shared_ptr<internal::TokenCore> t, LogSink& a, const Clock& c)
      : token(std::move(t)), audit(a), clock(c) {}

  struct TotpEntry {
    std::uint32_t version = 0;
    CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
    CK_MECHANISM_TYPE mechanism = CKM_SHA_1_HMAC;
    TotpParams params;
    std::uint64_t generation = 0;
    std::chrono::steady_clock::time_point fresh_until;
  };

  std::shared_ptr<internal::TokenCore> token;
  LogSink& audit;
  const Clock& clock;

  // Touched only inside token->WithSession (guarded by the token's session mutex).
  std::unique_ptr<internal::Sealer> sealer;
  std::map<std::string, std::unique_ptr<internal::Sealer>, std::less<>> openers;
  std::map<std::string, TotpEntry, std::less<>> totp_cache;

  // The sealer new records are written with (AES-GCM where the token has it, else CBC + HMAC).
  Result<internal::Sealer*> GetSealer() {
    if (!sealer) {
      Result<std::unique_ptr<internal::Sealer>> made = internal::MakeSealer(token->capabilities());
      if (!made.ok()) return made.status().WithContext("cannot seal secrets in this token");
      sealer = std::move(*made);
    }
    return sealer.get();
  }

  // The sealer that opens records of `scheme` (records keep the scheme they were sealed with).
  Result<internal::Sealer*> GetSealerFor(std::string_view scheme) {
    CW_ASSIGN_OR_RETURN(internal::Sealer * writer, GetSealer());
    if (writer->scheme() == scheme) return writer;
    auto it = openers.find(scheme);
    if (it == openers.end()) {
      CW_ASSIGN_OR_RETURN(std::unique_ptr<internal::Sealer> made,
                          internal::MakeSealerFor(scheme, token->capabilities()));
      it = openers.emplace(std::string(scheme), std::move(made)).first;
    }
    return it->second.get();
  }

  void AuditUsed(std::string_view connection, std::string_view name, std::uint32_t version,
                 std::string_view purpose) {
    audit.Log(Severity::kInfo, event::kSecretUsed,
              "secret " + Describe(connection, name, version) + " used",
              {{"CONNECTION", std::string(connection)},
               {"SECRET_NAME", std::string(name)},
               {"SECRET_VERSION", std::to_string(version)},
               {"PURPOSE", std::string(purpose)}});
  }

  void AuditStored(std::string_view action, const SecretInfo& info) {
    audit.Log(
        Severity::kNotice, event::kSecretStored,
        "secret " + Describe(info.connection, info.name, info.version) + " " + std::string(action),
        {{"CONNECTION", info.connection},
         {"SECRET_NAME", info.name},
         {"SECRET_VERSION", std::to_string(info.version)},
         {"SECRET_STATE", std::string(SecretStateName(info.state))},
         {"ACTION", std::string(action)}});
  }

  Result<SecretInfo> StoreSealed(std::string_view connection, std::string_view name,
                                 const SecretBytes& value, Activation activation) {
    CW_RETURN_IF_ERROR(internal::ValidateName("connection name", connection));
    CW_RETURN_IF_ERROR(internal::ValidateName("secret name", name));
    if (name == kTotpSecretName) {
      return InvalidArgument("the secret name 'totp' is reserved for TOTP seeds (mfa enroll)");
    }
    if (value.empty() || value.size() > kMaxSecretBytes) {
      return InvalidArgument("a secret value must be 1 byte to 64 KiB long, not " +
                             std::to_string(value.size()) + " bytes");
    }
    SecretInfo info;
    const SysTime created = std::chrono::floor<std::chrono::seconds>(clock.Now());
    if (const Status done = token->WithSession([&](Session& s) -> Status {
          CW_ASSIGN_OR_RETURN(internal::Sealer * sealer_ptr, GetSealer());
          // First: creating the sealing keys may need a new session (out of band, see
          // hsm/key_provisioner.h), which would invalidate the records' handles.
          CW_RETURN_IF_ERROR(sealer_ptr->Prepare(s));
          CW_ASSIGN_OR_RETURN(std::vector<Record> records, LoadRecords(s, connection, name));
          for (const Record& r : records) {
            if (r.info.kind != SecretKind::kSealed) {
              return FailedPrecondition(Describe(connection, name, 0) + " holds TOTP seeds");
            }
          }
          CW_ASSIGN_OR_RETURN(const std::uint32_t version,
                              AllocateVersion(s, connection, name, records));
          CW_ASSIGN_OR_RETURN(
              internal::SealedRecord sealed,
              sealer_ptr->Seal(s, value, internal::SealAad(connection, name, version)));
          Json::Value json = RecordHeader(connection, name, version, created, "sealed");
          json["scheme"] = std::string(sealer_ptr->scheme());
          json["key"] = sealed.key_id;
          json["sealed"] = Base64Encode(sealed.bytes);
          const RecordState state =
              activation == Activation::kCurrent ? RecordState::kCurrent : RecordState::kPending;
          Template t;
          RecordTemplate(t, internal::RecordLabel(connection, name, version, state),
                         WriteJson(json));
          CW_RETURN_IF_ERROR(s.Create(t).status());
          if (state == RecordState::kCurrent) CW_RETURN_IF_ERROR(RetireOthers(s, records, version));
          info = {std::string(connection),
                  std::string(name),
                  version,
                  ToPublic(state),
                  created,
                  SecretKind::kSealed,
                  std::string(sealer_ptr->scheme())};
          return Status::Ok();
        });
        !done.ok()) {
      return done;
    }
    AuditStored("stored", info);
    return info;
  }

  Result<TotpEntry> LoadTotpEntry(Session& s, std::string_view connection,
                                  std::optional<std::uint32_t> version) {
    CW_ASSIGN_OR_RETURN(std::vector<Record> records, LoadRecords(s, connection, kTotpSecretName));
    const Record* r = version ? FindVersion(records, *version) : Current(records);
    if (r == nullptr) {
      if (version) {
        return NotFound("connection '" + std::string(connection) + "' has no TOTP seed version " +
                        std::to_string(*version));
      }
      return NotFound("connection '" + std::string(connection) +
                      "' has no current TOTP seed; store one with `cakewalk-agent mfa enroll " +
                      std::string(connection) + "`");
    }
    if (r->info.kind != SecretKind::kTotp) {
      return FailedPrecondition(Describe(connection, kTotpSecretName, r->info.version) +
                                " is not a TOTP seed");
    }
    Template find;
    find.Ulong(CKA_CLASS, CKO_SECRET_KEY).Bool(CKA_TOKEN, true).Bytes(CKA_ID, r->id);
    CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> keys, s.Find(find, 2));
    if (keys.size() != 1) {
      return FailedPrecondition(
          "the seed key of " + Describe(connection, kTotpSecretName, r->info.version) +
          (keys.empty() ? " is missing from the token" : " exists twice in the token") +
          "; enroll the MFA key again");
    }
    TotpEntry e;
    e.version = r->info.version;
    e.key = keys[0];
    e.mechanism = HmacMechanism(r->totp.algorithm);
    e.params = r->totp;
    e.generation = s.generation();
    e.fresh_until = std::chrono::steady_clock::now() + kTotpCacheTtl;
    return e;
  }

  Result<TotpCode> ComputeTotp(std::string_view connection, std::optional<std::uint32_t> version,
                               TotpTime at, std::string_view purpose) {
    CW_RETURN_IF_ERROR(internal::ValidateName("connection name", connection));
    CW_RETURN_IF_ERROR(ValidatePurpose(purpose));
    TotpCode out;
    if (const Status done = token->WithSession([&](Session& s) -> Status {
          for (int attempt = 0;; ++attempt) {
            TotpEntry uncached;
            const TotpEntry* e = nullptr;
            if (version) {
              CW_ASSIGN_OR_RETURN(uncached, LoadTotpEntry(s, connection, version));
              e = &uncached;
            } else {
              auto it = totp_cache.find(connection);
              if (it == totp_cache.end() || it->second.generation != s.generation() ||
                  std::chrono::steady_clock::now() >= it->second.fresh_until) {
                CW_ASSIGN_OR_RETURN(TotpEntry loaded, LoadTotpEntry(s, connection, std::nullopt));
                it = totp_cache.insert_or_assign(std::string(connection), loaded).first;
              }
              e = &it->second;
            }
            CW_ASSIGN_OR_RETURN(TotpWindow window, TotpWindowAt(at, e->params.period));
            std::array<std::uint8_t, 8> counter = TotpCounterBytes(window.counter);
            CK_MECHANISM mechanism{e->mechanism, nullptr, 0};
            CK_RV rv = CW_SESSION_INVOKE(s, C_SignInit, &mechanism, e->key);
            if ((rv == CKR_KEY_HANDLE_INVALID || rv == CKR_OBJECT_HANDLE_INVALID) && attempt == 0) {
              totp_cache.erase(std::string(connection));  // destroyed or replaced meanwhile
              continue;
            }
            CW_RETURN_IF_ERROR(internal::CkrStatus(rv, "C_SignInit").WithContext("TOTP"));
            std::uint8_t mac[64];
            CK_ULONG mac_len = sizeof mac;
            rv = CW_SESSION_INVOKE(s, C_Sign, counter.data(), CK_ULONG{8}, mac, &mac_len);
            if (rv != CKR_OK || mac_len < 20 || mac_len > sizeof mac) {
              OPENSSL_cleanse(mac, sizeof mac);
              if (rv == CKR_OK) return Internal("C_Sign returned a MAC of impossible length");
              return internal::CkrStatus(rv, "C_Sign").WithContext("TOTP");
            }
            const std::uint32_t value = DynamicTruncate(std::span(mac, mac_len), e->params.digits);
            OPENSSL_cleanse(mac, sizeof mac);
            out.code = OneTimeCode(value, e->params.digits);
            out.version = e->version;
            out.window = window;
            out.remaining = std::chrono::ceil<std::chrono::seconds>(
                (window.valid_until - at.seconds()) - at.fraction());
            return Status::Ok();
          }
        });
        !done.ok()) {
      return done;
    }
    AuditUsed(connection, kTotpSecretName, out.version, purpose);
    return out;
  }

  Result<SecretBytes> UnsealImpl(std::string_view connection, std::string_view name,
                                 std::optional<std::uint32_t> version, std::string_view purpose) {
    CW_RETURN_IF_ERROR(internal::ValidateName("connection name", connection));
    CW_RETURN_IF_ERROR(internal::ValidateName("secret name", name));
    CW_RETURN_IF_ERROR(ValidatePurpose(purpose));
    SecretBytes value;
    std::uint32_t used = 0;
    if (const Status done = token->WithSession([&](Session& s) -> Status {
          CW_ASSIGN_OR_RETURN(std::vector<Record> records, LoadRecords(s, connection, name));
          const Record* r = version ? FindVersion(records, *version) : Current(records);
          if (r == nullptr) {
            return NotFound("no " + std::string(version ? "such version of the" : "current") +
                            " secret " + Describe(connection, name, version.value_or(0)) +
                            " in the token; store it with `cakewalk-agent secret set " +
                            std::string(connection) + " " + std::string(name) + "`");
          }
          if (r->info.kind != SecretKind::kSealed) {
            return FailedPrecondition(Describe(connection, name, r->info.version) +
                                      " is a TOTP seed; it cannot be unsealed");
          }
          Result<internal::Sealer*> sealer_for = GetSealerFor(r->info.scheme);
          if (!sealer_for.ok()) {
            return FailedPrecondition(
                Describe(connection, name, r->info.version) + " was sealed with '" +
                r->info.scheme +
                "', which this agent cannot open in this token: " + sealer_for.status().message());
          }
          internal::Sealer* sealer_ptr = *sealer_for;
          Result<SecretBytes> opened = sealer_ptr->Unseal(
              s, r->key_id, r->sealed, internal::SealAad(connection, name, r->info.version));
          if (!opened.ok()) {
            return opened.status().WithContext(Describe(connection, name, r->info.version));
          }
          value = std::move(*opened);
          used = r->info.version;
          return Status::Ok();
        });
        !done.ok()) {
      return done;
    }
    AuditUsed(connection, name, used, purpose);
    return value;
  }
};

SecretStore::SecretStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SecretStore::~SecretStore() = default;

Result<std::unique_ptr<SecretStore>> SecretStore::Open(Token& token, LogSink& audit,
                                                       const Clock& clock) {
  const auto& core = internal::TokenAccess::core(token);
  return std::unique_ptr<SecretStore>(new SecretStore(std::make_unique<Impl>(core, audit, clock)));
}

Result<SecretInfo> SecretStore::Put(std::string_view connection, std::string_view name,
                                    const SecretBytes& value) {
  return impl_->StoreSealed(connection, name, value, Activation::kCurrent);
}

Result<SecretInfo> SecretStore::PutPending(std::string_view connection, std::string_view name,
                                           const SecretBytes& value) {
  return impl_->StoreSealed(connection, name, value, Activation::kPending);
}

Result<SecretInfo> SecretStore::EnrollTotp(std::string_view connection, const TotpSeed& seed,
                                           Activation activation) {
  CW_RETURN_IF_ERROR(internal::ValidateName("connection name", connection));
  CW_RETURN_IF_ERROR(ValidateTotpParams(seed.params));
  if (seed.key.size() < kMinSeedBytes || seed.key.size() > kMaxSeedBytes) {
    return InvalidArgument("a TOTP seed must be " + std::to_string(kMinSeedBytes) + " to " +
                           std::to_string(kMaxSeedBytes) + " bytes, not " +
                           std::to_string(seed.key.size()));
  }
  const Capabilities& caps = impl_->token->capabilities();
  CW_RETURN_IF_ERROR(
      caps.Require(HmacCapability(seed.params.algorithm),
                   "TOTP with " + std::string(TotpAlgorithmName(seed.params.algorithm))));
  CW_RETURN_IF_ERROR(caps.Require(Mechanism::kRandom, "object ids"));

  // Short seeds, where the token needs it. SoftHSM refuses HMAC keys shorter than the digest
  // (CKR_KEY_SIZE_RANGE at C_SignInit) and says so in C_GetMechanismInfo (ulMinKeySize 20 / 32 /
  // 64 bytes). HMAC zero-pads any key shorter than the hash block to the block size before use
  // (RFC 2104 §2), so appending zero bytes up to that declared minimum leaves every MAC
  // unchanged — as long as the minimum is not above the block size. Seeds at least as long as
  // the minimum are stored as they are; in particular a key longer than the block is never
  // padded, because HMAC hashes such keys first. Tokens that declare no minimum get the seed
  // unchanged. (Seeds imported out of band follow ImportSeedOutOfBand's own probe.)
  const CK_MECHANISM_TYPE mechanism = HmacMechanism(seed.params.algorithm);
  const std::size_t block = HmacBlockSize(seed.params.algorithm);
  const std::size_t minimum = impl_->token->MinKeySize(mechanism);
  SecretBytes padded;
  const SecretBytes* value = &seed.key;
  if (seed.key.size() < minimum && minimum <= block) {
    padded = PadSeed(seed.key, minimum);
    value = &padded;
  }

  SecretInfo info;
  const SysTime created = std::chrono::floor<std::chrono::seconds>(impl_->clock.Now());
  if (const Status done = impl_->token->WithSession([&](Session& s) -> Status {
        CW_ASSIGN_OR_RETURN(std::vector<Record> records,
                            LoadRecords(s, connection, kTotpSecretName));
        CW_ASSIGN_OR_RETURN(const std::uint32_t version,
                            AllocateVersion(s, connection, kTotpSecretName, records));
        std::uint8_t id[internal::kObjectIdBytes];
        CW_RETURN_IF_ERROR(s.Random(id));
        const std::string label = internal::SeedLabel(connection, kTotpSecretName, version);
        const CK_MECHANISM_TYPE allowed[] = {mechanism};
        Template key;
        key.Ulong(CKA_CLASS, CKO_SECRET_KEY)
            .Ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET)
            .Bool(CKA_TOKEN, true)
            .Bool(CKA_PRIVATE, true)
            .Bool(CKA_SENSITIVE, true)
            .Bool(CKA_EXTRACTABLE, false)
            .Bool(CKA_SIGN, true)
            .Bool(CKA_VERIFY, false)
            .Bool(CKA_ENCRYPT, false)
            .Bool(CKA_DECRYPT, false)
            .Bool(CKA_WRAP, false)
            .Bool(CKA_UNWRAP, false)
            .Bool(CKA_DERIVE, false)
            .Bool(CKA_MODIFIABLE, false)
            .Mechanisms(allowed)
            .String(CKA_LABEL, label)
            .Bytes(CKA_ID, id)
            .Secret(CKA_VALUE, *value);
        CK_OBJECT_HANDLE key_handle = CK_INVALID_HANDLE;
        const CK_RV rv = CW_SESSION_INVOKE(s, C_CreateObject, key.data(), key.size(), &key_handle);
        if (rv == CKR_OK) {
          s.MarkMutated();
        } else if (internal::RefusesSecretKeyCreation(rv)) {
          // The token does not import secret keys through PKCS#11 (tpm2-pkcs11): its store's
          // own import path, then a new session (key_provisioner.h).
          CW_ASSIGN_OR_RETURN(key_handle, ImportSeedOutOfBand(s, seed, label, id, rv));
          // The records' handles belong to the old session. The counter reserved the version
          // before the import, so no other writer can have taken it; check anyway.
          CW_ASSIGN_OR_RETURN(records, LoadRecords(s, connection, kTotpSecretName));
          if (FindVersion(records, version) != nullptr) {
            s.Destroy(key_handle).IgnoreError();
            return Unavailable("the TOTP seeds of connection '" + std::string(connection) +
                               "' changed while the seed was imported; enroll it again");
          }
        } else {
          return internal::CkrStatus(rv, "C_CreateObject")
              .WithContext("storing the TOTP seed of '" + std::string(connection) + "'");
        }

        Json::Value json = RecordHeader(connection, kTotpSecretName, version, created, "totp");
        json["algorithm"] = std::string(TotpAlgorithmName(seed.params.algorithm));
        json["digits"] = seed.params.digits;
        json["period"] = static_cast<Json::Int64>(seed.params.period.count());
        json["seed"] = HexEncode(id);
        const RecordState state =
            activation == Activation::kCurrent ? RecordState::kCurrent : RecordState::kPending;
        Template record;
        RecordTemplate(record, internal::RecordLabel(connection, kTotpSecretName, version, state),
                       WriteJson(json));
        Result<CK_OBJECT_HANDLE> created_record = s.Create(record);
        if (!created_record.ok()) {
          s.Destroy(key_handle).IgnoreError();  // best effort: no key without its record
          return created_record.status();
        }
        if (state == RecordState::kCurrent) CW_RETURN_IF_ERROR(RetireOthers(s, records, version));
        impl_->totp_cache.erase(std::string(connection));
        info = {std::string(connection),
                std::string(kTotpSecretName),
                version,
                ToPublic(state),
                created,
                SecretKind::kTotp,
                TotpScheme(seed.params)};
        return Status::Ok();
      });
      !done.ok()) {
    return done;
  }
  impl_->AuditStored("stored", info);
  return info;
}

Status SecretStore::Promote(std::string_view connection, std::string_view name,
                            std::uint32_t version) {
  CW_RETURN_IF_ERROR(internal::ValidateName("connection name", connection));
  CW_RETURN_IF_ERROR(internal::ValidateName("secret name", name));
  SecretInfo info;
  if (const Status done = impl_->token->WithSession([&](Session& s) -> Status {
        CW_ASSIGN_OR_RETURN(std::vector<Record> records, LoadRecords(s, connection, name));
        const Record* target = FindVersion(records, version);
        if (target == nullptr) {
          return NotFound("there is no secret " + Describe(connection, name, version));
        }
        const Record* current = Current(records);
        const std::string current_label =
            internal::RecordLabel(connection, name, version, RecordState::kCurrent);
        if (current == nullptr || target->info.version > current->info.version) {
          // Forward (rotation): mark the new version current first. A crash before the old one is
          // retired leaves two current labels, and the highest (the new) one wins.
          if (target != current)
            CW_RETURN_IF_ERROR(s.SetString(target->handle, CKA_LABEL, current_label));
          CW_RETURN_IF_ERROR(RetireOthers(s, records, version));
        } else if (target != current) {
          // Back to an older version: retire the others first, so a crash leaves no current version
          // (fails closed) rather than silently keeping the newer one.
          CW_RETURN_IF_ERROR(RetireOthers(s, records, version));
          CW_RETURN_IF_ERROR(s.SetString(target->handle, CKA_LABEL, current_label));
        } else {
          CW_RETURN_IF_ERROR(RetireOthers(s, records, version));  // tidy up leftovers
        }
        if (name == kTotpSecretName) impl_->totp_cache.erase(std::string(connection));
        info = target->info;
        info.state = SecretState::kCurrent;
        return Status::Ok();
      });
      !done.ok()) {
    return done;
  }
  impl_->AuditStored("promoted", info);
  return Status::Ok();
}

Status SecretStore::Destroy(std::string_view connection, std::string_view name,
                            std::uint32_t version, DestroyPolicy policy) {
  CW_RETURN_IF_ERROR(internal::ValidateName("connection name", connection));
  CW_RETURN_IF_ERROR(internal::ValidateName("secret name", name));
  SecretInfo info;
  if (const Status done = impl_->token->WithSession([&](Session& s) -> Status {
        CW_ASSIGN_OR_RETURN(std::vector<Record> records, LoadRecords(s, connection, name));
        const Record* target = FindVersion(records, version);
        if (target == nullptr) {
          return NotFound("there is no secret " + Describe(connection, name, version));
        }
        if (target == Current(records) && policy == DestroyPolicy::kRefuseCurrent) {
          return FailedPrecondition(Describe(connection, name, version) +
                                    " is the current version; promote another version first");
        }
        // The record first: once it is gone the version no longer exists for anyone.
        CW_RETURN_IF_ERROR(s.Destroy(target->handle));
        if (target->info.kind == SecretKind::kTotp) {
          impl_->totp_cache.erase(std::string(connection));
          Template find;
          find.Ulong(CKA_CLASS, CKO_SECRET_KEY).Bool(CKA_TOKEN, true).Bytes(CKA_ID, target->id);
          CW_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> keys, s.Find(find, 16));
          for (CK_OBJECT_HANDLE k : keys) CW_RETURN_IF_ERROR(s.Destroy(k));
        }
        info = target->info;
        return Status::Ok();
      });
      !done.ok()) {
    return done;
  }
  impl_->AuditStored("destroyed", info);
  return Status::Ok();
}

Result<std::vector<SecretInfo>> SecretStore::List() {
  std::vector<SecretInfo> out;
  if (const Status done = impl_->token->WithSession([&](Session& s) -> Status {
        CW_ASSIGN_OR_RETURN(std::vector<Record> records,
                            LoadRecords(s, std::nullopt, std::nullopt));
        out.clear();
        // Report the effective state: of several versions labelled current, only the highest is.
        std::map<std::pair<std::string, std::string>, std::uint32_t> highest_current;
        for (const Record& r : records) {
          if (r.state != RecordState::kCurrent) continue;
          auto& v = highest_current[{r.info.connection, r.info.name}];
          v = std::max(v, r.info.version);
        }
        for (Record& r : records) {
          SecretInfo info = std::move(r.info);
          if (r.state == RecordState::kCurrent &&
              highest_current[{info.connection, info.name}] != info.version) {
            info.state = SecretState::kRetired;
          }
          out.push_back(std::move(info));
        }
        return Status::Ok();
      });
      !done.ok()) {
    return done;
  }
  return out;
}

Result<SecretBytes> SecretStore::Unseal(std::string_view connection, std::string_view name,
                                        std::string_view purpose) {
  return impl_->UnsealImpl(connection, name, std::nullopt, purpose);
}

Result<SecretBytes> SecretStore::UnsealVersion(std::string_view connection, std::string_view name,
                                               std::uint32_t version, std::string_view purpose) {
  return impl_->UnsealImpl(connection, name, version, purpose);
}

Result<TotpCode> SecretStore::Totp(std::string_view connection, TotpTime at,
                                   std::string_view purpose) {
  return impl_->ComputeTotp(connection, std::nullopt, at, purpose);
}

Result<TotpCode> SecretStore::TotpVersion(std::string_view connection, std::uint32_t version,
                                          TotpTime at, std::string_view purpose) {
  return impl_->ComputeTotp(connection, version, at, purpose);
}

Result<SecretBytes> SecretStore::Random(std::size_t size) {
  if (size == 0 || size > kMaxSecretBytes) {
    return InvalidArgument("random output must be 1 byte to 64 KiB");
  }
  CW_RETURN_IF_ERROR(impl_->token->capabilities().Require(Mechanism::kRandom, "random bytes"));
  SecretBytes out = SecretBytes::Allocate(size);
  if (const Status done = impl_->token->WithSession(
          [&](Session& s) -> Status { return s.Random(out.RevealMutable(SecretAccess::Grant())); });
      !done.ok()) {
    return done;
  }
  return out;
}

}  // namespace cakewalk::hsm
