#include "hsm/session.h"

#include <p11-kit/uri.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace cakewalk::hsm::internal {

// ---- Template ---------------------------------------------------------------------------------

Template& Template::Owned(CK_ATTRIBUTE_TYPE type, const void* data, std::size_t size) {
  auto buffer = std::make_unique<std::uint8_t[]>(size == 0 ? 1 : size);
  if (size > 0) std::memcpy(buffer.get(), data, size);
  attributes_.push_back({type, buffer.get(), static_cast<CK_ULONG>(size)});
  storage_.push_back(std::move(buffer));
  return *this;
}

Template& Template::Bool(CK_ATTRIBUTE_TYPE type, bool value) {
  const CK_BBOOL b = value ? CK_TRUE : CK_FALSE;
  return Owned(type, &b, sizeof b);
}

Template& Template::Ulong(CK_ATTRIBUTE_TYPE type, CK_ULONG value) {
  return Owned(type, &value, sizeof value);
}

Template& Template::Bytes(CK_ATTRIBUTE_TYPE type, std::span<const std::uint8_t> value) {
  return Owned(type, value.data(), value.size());
}

Template& Template::String(CK_ATTRIBUTE_TYPE type, std::string_view value) {
  return Owned(type, value.data(), value.size());
}

Template& Template::Mechanisms(std::span<const CK_MECHANISM_TYPE> mechanisms) {
  return Owned(CKA_ALLOWED_MECHANISMS, mechanisms.data(), mechanisms.size_bytes());
}

Template& Template::Secret(CK_ATTRIBUTE_TYPE type, const SecretBytes& value) {
  // Read-only use by the module; CK_ATTRIBUTE's pValue is not const in the C API.
  std::span<const std::uint8_t> bytes = value.Reveal(SecretAccess::Grant());
  attributes_.push_back(
      {type, const_cast<std::uint8_t*>(bytes.data()), static_cast<CK_ULONG>(bytes.size())});
  return *this;
}

// ---- Session ----------------------------------------------------------------------------------

Result<std::vector<CK_OBJECT_HANDLE>> Session::Find(Template& tmpl, std::size_t limit) {
  CW_RETURN_IF_ERROR(CW_SESSION_CALL(*this, C_FindObjectsInit, tmpl.data(), tmpl.size()));
  std::vector<CK_OBJECT_HANDLE> found;
  Status status;
  CK_OBJECT_HANDLE batch[64];
  while (found.size() < limit) {
    CK_ULONG n = 0;
    status = CW_SESSION_CALL(*this, C_FindObjects, batch, CK_ULONG{64}, &n);
    if (!status.ok() || n == 0) break;
    found.insert(found.end(), batch, batch + n);
  }
  const Status final_status = CW_SESSION_CALL(*this, C_FindObjectsFinal);
  CW_RETURN_IF_ERROR(status);
  CW_RETURN_IF_ERROR(final_status);
  if (found.size() > limit) found.resize(limit);
  return found;
}

Result<std::vector<std::uint8_t>> Session::GetBytes(CK_OBJECT_HANDLE object,
                                                    CK_ATTRIBUTE_TYPE type) {
  CK_ATTRIBUTE attribute{type, nullptr, 0};
  CK_RV rv = CW_SESSION_INVOKE(*this, C_GetAttributeValue, object, &attribute, CK_ULONG{1});
  if (rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID ||
      (rv == CKR_OK && attribute.ulValueLen == CK_UNAVAILABLE_INFORMATION)) {
    return FailedPrecondition("the token object has no readable attribute 0x" + [&] {
      char b[20];
      std::snprintf(b, sizeof b, "%lx", type);
      return std::string(b);
    }());
  }
  CW_RETURN_IF_ERROR(CkrStatus(rv, "C_GetAttributeValue"));
  std::vector<std::uint8_t> value(attribute.ulValueLen);
  attribute.pValue = value.data();
  rv = CW_SESSION_INVOKE(*this, C_GetAttributeValue, object, &attribute, CK_ULONG{1});
  CW_RETURN_IF_ERROR(CkrStatus(rv, "C_GetAttributeValue"));
  value.resize(attribute.ulValueLen);
  return value;
}

Result<std::string> Session::GetString(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type) {
  CW_ASSIGN_OR_RETURN(std::vector<std::uint8_t> bytes, GetBytes(object, type));
  return std::string(bytes.begin(), bytes.end());
}

Result<CK_OBJECT_HANDLE> Session::Create(Template& tmpl) {
  CK_OBJECT_HANDLE object = CK_INVALID_HANDLE;
  CW_RETURN_IF_ERROR(CW_SESSION_CALL(*this, C_CreateObject, tmpl.data(), tmpl.size(), &object));
  MarkMutated();
  return object;
}

Status Session::Destroy(CK_OBJECT_HANDLE object) {
  CW_RETURN_IF_ERROR(CW_SESSION_CALL(*this, C_DestroyObject, object));
  MarkMutated();
  return Status::Ok();
}

Status Session::SetString(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type, std::string_view value) {
  CK_ATTRIBUTE attribute{type, const_cast<char*>(value.data()),
                         static_cast<CK_ULONG>(value.size())};
  CW_RETURN_IF_ERROR(CW_SESSION_CALL(*this, C_SetAttributeValue, object, &attribute, CK_ULONG{1}));
  MarkMutated();
  return Status::Ok();
}

Status Session::Random(std::span<std::uint8_t> out) {
  return CW_SESSION_CALL(*this, C_GenerateRandom, out.data(), static_cast<CK_ULONG>(out.size()));
}

Result<KeyProvisioner*> Session::Provisioner() { return owner_.ProvisionerLocked(); }

Status Session::ChangeOutOfBand(FunctionRef<Status(const ProvisionTarget&)> change) {
  return owner_.ChangeOutOfBandLocked(*this, change);
}

// ---- The PIN latch ----------------------------------------------------------------------------

namespace {

struct PinLatch {
  std::mutex mu;  // serialises every C_Login of the process
  bool pin_incorrect = false;
};

PinLatch& Latch() {
  static PinLatch* latch = new PinLatch;
  return *latch;
}

std::string Trimmed(const unsigned char* field, std::size_t size) {
  std::string s(reinterpret_cast<const char*>(field), size);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

std::string TokenName(const CK_TOKEN_INFO& ti) {
  return "'" + Trimmed(ti.label, sizeof ti.label) + "' (serial " +
         Trimmed(ti.serialNumber, sizeof ti.serialNumber) + ")";
}

// Refuses a login the token says could lock it or cannot succeed.
Status CheckPinFlags(const CK_TOKEN_INFO& ti) {
  const std::string name = "token " + TokenName(ti);
  auto refuse = [&](std::string why) {
    return Status(Code::kFailedPrecondition, name + ": " + why, "token_unavailable");
  };
  if ((ti.flags & CKF_TOKEN_INITIALIZED) == 0) {
    return refuse("the token is not initialised; initialise it and set a user PIN first");
  }
  if ((ti.flags & CKF_USER_PIN_LOCKED) != 0) {
    return refuse(
        "the user PIN is locked; the token's security officer must unlock or reset it, then "
        "update the PIN file");
  }
  if ((ti.flags & CKF_USER_PIN_FINAL_TRY) != 0) {
    return refuse(
        "the token reports that one more wrong PIN locks it, so the agent does not try to log "
        "in; check the PIN file by hand (one careful login, e.g. with pkcs11-tool --login), then "
        "start the agent again");
  }
  if ((ti.flags & CKF_USER_PIN_TO_BE_CHANGED) != 0) {
    return refuse(
        "the token requires the user PIN to be changed before use; change it with the token's "
        "tools and update the PIN file");
  }
  if ((ti.flags & CKF_USER_PIN_INITIALIZED) == 0) {
    return refuse("the user PIN was never set; set it (e.g. pkcs11-tool --init-pin) first");
  }
  return Status::Ok();
}

Status PinIncorrect(const std::string& token, bool this_attempt) {
  std::string m =
      this_attempt
          ? "token " + token +
                " rejected the user PIN (CKR_PIN_INCORRECT). The agent made this one login "
                "attempt and will make no other in this process, so that restarts cannot lock "
                "the token"
          : "not logging in to token " + token +
                ": an earlier login in this process failed with an incorrect PIN, and the agent "
                "makes only one attempt so that it cannot lock the token";
  m += ". Put the correct user PIN into the PIN file (token.pin_file, or hsm-pin in "
       "$CREDENTIALS_DIRECTORY) and start the agent again.";
  return Status(Code::kFailedPrecondition, std::move(m), std::string(kPinIncorrectReason));
}

}  // namespace

void ResetPinLatchForTesting() {
  std::lock_guard lock(Latch().mu);
  Latch().pin_incorrect = false;
}

// ---- TokenCore --------------------------------------------------------------------------------

TokenCore::TokenCore(std::shared_ptr<ModuleCore> module, p11_kit_uri* uri, SecretBytes pin)
    : module_(std::move(module)), uri_(uri), pin_(std::move(pin)) {}

TokenCore::~TokenCore() {
  Close().IgnoreError();
  p11_kit_uri_free(uri_);
}

Result<std::shared_ptr<TokenCore>> TokenCore::Open(std::shared_ptr<ModuleCore> module,
                                                   std::string_view uri, SecretBytes pin) {
  const std::string text(uri);
  auto fail = [&](const std::string& why) {
    return InvalidArgument("token.uri '" + text + "' " + why);
  };
  if (text.rfind("pkcs11:", 0) != 0) {
    return fail("is not a PKCS#11 URI (RFC 7512); write e.g. pkcs11:token=cakewalk");
  }
  p11_kit_uri* parsed = p11_kit_uri_new();
  const int rc =
      p11_kit_uri_parse(text.c_str(),
                        static_cast<P11KitUriType>(P11_KIT_URI_FOR_TOKEN | P11_KIT_URI_FOR_SLOT |
                                                   P11_KIT_URI_FOR_MODULE_WITH_VERSION),
                        parsed);
  if (rc != P11_KIT_URI_OK) {
    p11_kit_uri_free(parsed);
    return fail(std::string("cannot be parsed: ") + p11_kit_uri_message(rc));
  }
  if (p11_kit_uri_any_unrecognized(parsed) != 0) {
    p11_kit_uri_free(parsed);
    return fail("has attributes p11-kit does not recognise");
  }
  if (p11_kit_uri_get_pin_value(parsed) != nullptr ||
      p11_kit_uri_get_pin_source(parsed) != nullptr) {
    p11_kit_uri_free(parsed);
    return InvalidArgument(
        "token.uri must not carry a PIN (pin-value / pin-source); the PIN comes only from the PIN "
        "file (token.pin_file or $CREDENTIALS_DIRECTORY/hsm-pin)");
  }
  if (pin.empty()) {
    p11_kit_uri_free(parsed);
    return InvalidArgument("the token PIN is empty");
  }
  std::shared_ptr<TokenCore> core(new TokenCore(std::move(module), parsed, std::move(pin)));
  core->uri_text_ = text;
  std::lock_guard lock(core->mu_);
  Status found = core->FindSlot();
  // SoftHSM2 leaves a token out of the C_Initialize that reads its files while another process
  // rewrites them (two `secret rotate` at once, or one next to the running agent): the token is
  // missing only from that initialisation, and the module finds it when initialised again. A
  // token that is really absent costs the three looks, 350 ms, before the error.
  for (int attempt = 0; !found.ok() && found.code() == Code::kNotFound && attempt < 3; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50 << attempt));
    if (!core->module_->Reinitialize().ok()) break;  // a borrowed function list: no second look
    found = core->FindSlot();
  }
  CW_RETURN_IF_ERROR(found);
  CW_RETURN_IF_ERROR(core->DetectCapabilities());
  CW_RETURN_IF_ERROR(core->OpenSessionLocked());
  return core;
}

Status TokenCore::FindSlot() {
  ModuleCore& m = *module_;
  CK_ULONG count = 0;
  CW_RETURN_IF_ERROR(CW_CK_CALL(m, C_GetSlotList, CK_TRUE, nullptr, &count));
  std::vector<CK_SLOT_ID> slots(count);
  if (count > 0) {
    CW_RETURN_IF_ERROR(CW_CK_CALL(m, C_GetSlotList, CK_TRUE, slots.data(), &count));
    slots.resize(count);
  }
  CK_INFO module_info{};
  const bool module_matches = CW_CK_INVOKE(m, C_GetInfo, &module_info) == CKR_OK &&
                              p11_kit_uri_match_module_info(uri_, &module_info) != 0;
  const CK_SLOT_ID wanted_slot = p11_kit_uri_get_slot_id(uri_);

  std::vector<std::pair<CK_SLOT_ID, CK_TOKEN_INFO>> matches;
  std::string present;
  int uninitialised = 0;
  for (CK_SLOT_ID slot : slots) {
    CK_TOKEN_INFO ti{};
    if (CW_CK_INVOKE(m, C_GetTokenInfo, slot, &ti) != CKR_OK) continue;
    if ((ti.flags & CKF_TOKEN_INITIALIZED) == 0) {
      ++uninitialised;
      continue;
    }
    present += (present.empty() ? "" : ", ") + TokenName(ti);
    CK_SLOT_INFO si{};
    if (CW_CK_INVOKE(m, C_GetSlotInfo, slot, &si) != CKR_OK) continue;
    if (!module_matches || p11_kit_uri_match_slot_info(uri_, &si) == 0 ||
        p11_kit_uri_match_token_info(uri_, &ti) == 0) {
      continue;
    }
    if (wanted_slot != static_cast<CK_SLOT_ID>(-1) && wanted_slot != slot) continue;
    // After a reopen, insist on the same token (serial) that was selected at Open.
    if (!info_.serial.empty() && Trimmed(ti.serialNumber, sizeof ti.serialNumber) != info_.serial) {
      continue;
    }
    matches.emplace_back(slot, ti);
  }
  if (matches.empty()) {
    std::string m2 = "no token in " + module_->description() + " matches " + uri_text_ + "; ";
    m2 += present.empty() ? std::string("no initialised token is present")
                          : "tokens present: " + present;
    if (uninitialised > 0) m2 += " (and " + std::to_string(uninitialised) + " uninitialised)";
    return Status(info_.serial.empty() ? Code::kNotFound : Code::kUnavailable, m2,
                  "token_unavailable");
  }
  if (matches.size() > 1) {
    std::string names;
    for (const auto& [slot, ti] : matches) names += (names.empty() ? "" : ", ") + TokenName(ti);
    return FailedPrecondition(std::to_string(matches.size()) + " tokens match " + uri_text_ + ": " +
                              names + "; make token.uri select one, e.g. by adding ;serial=...");
  }
  slot_ = matches[0].first;
  const CK_TOKEN_INFO& ti = matches[0].second;
  if (info_.serial.empty()) {
    info_.label = Trimmed(ti.label, sizeof ti.label);
    info_.manufacturer = Trimmed(ti.manufacturerID, sizeof ti.manufacturerID);
    info_.model = Trimmed(ti.model, sizeof ti.model);
    info_.serial = Trimmed(ti.serialNumber, sizeof ti.serialNumber);
    info_.module = module_->description();
    p11_kit_uri* exact = p11_kit_uri_new();
    CK_TOKEN_INFO* exact_info = p11_kit_uri_get_token_info(exact);
    std::memcpy(exact_info->label, ti.label, sizeof ti.label);
    std::memcpy(exact_info->manufacturerID, ti.manufacturerID, sizeof ti.manufacturerID);
    std::memcpy(exact_info->model, ti.model, sizeof ti.model);
    std::memcpy(exact_info->serialNumber, ti.serialNumber, sizeof ti.serialNumber);
    char* formatted = nullptr;
    if (p11_kit_uri_format(exact, P11_KIT_URI_FOR_TOKEN, &formatted) == P11_KIT_URI_OK) {
      info_.uri = formatted;
      std::free(formatted);
    }
    p11_kit_uri_free(exact);
  }
  return Status::Ok();
}

Status TokenCore::DetectCapabilities() {
  ModuleCore& m = *module_;
  capabilities_.token_label_ = info_.label;
  CK_ULONG count = 0;
  CW_RETURN_IF_ERROR(CW_CK_CALL(m, C_GetMechanismList, slot_, nullptr, &count));
  std::vector<CK_MECHANISM_TYPE> list(count);
  if (count > 0) {
    CW_RETURN_IF_ERROR(CW_CK_CALL(m, C_GetMechanismList, slot_, list.data(), &count));
    list.resize(count);
  }
  auto info = [&](CK_MECHANISM_TYPE type) -> std::optional<CK_MECHANISM_INFO> {
    if (std::find(list.begin(), list.end(), type) == list.end()) return std::nullopt;
    CK_MECHANISM_INFO mi{};
    if (CW_CK_INVOKE(m, C_GetMechanismInfo, slot_, type, &mi) != CKR_OK) return std::nullopt;
    return mi;
  };
  // Key sizes are in bytes for AES and in bits for EC and RSA; some tokens report 0 for "any".
  auto size_ok = [](const CK_MECHANISM_INFO& mi, CK_ULONG size) {
    if (mi.ulMaxKeySize == 0) return true;
    return mi.ulMinKeySize <= size && size <= mi.ulMaxKeySize;
  };
  auto set = [&](Mechanism mech, bool has) {
    if (has) capabilities_.bits_ |= 1u << static_cast<int>(mech);
  };
  auto flagged = [&](CK_MECHANISM_TYPE type, CK_FLAGS flags) {
    auto mi = info(type);
    return mi.has_value() && (mi->flags & flags) == flags;
  };
  {
    auto mi = info(CKM_AES_KEY_GEN);
    set(Mechanism::kAesKeyGen,
        mi && (mi->flags & CKF_GENERATE) && (size_ok(*mi, 32) || size_ok(*mi, 256)));
  }
  set(Mechanism::kAesGcm, flagged(CKM_AES_GCM, CKF_ENCRYPT | CKF_DECRYPT));
  set(Mechanism::kSha1Hmac, flagged(CKM_SHA_1_HMAC, CKF_SIGN));
  set(Mechanism::kSha256Hmac, flagged(CKM_SHA256_HMAC, CKF_SIGN));
  set(Mechanism::kSha512Hmac, flagged(CKM_SHA512_HMAC, CKF_SIGN));
  {
    auto mi = info(CKM_EC_KEY_PAIR_GEN);
    set(Mechanism::kEcKeyPairGen, mi && (mi->flags & CKF_GENERATE_KEY_PAIR) &&
                                      (mi->ulMaxKeySize == 0 || mi->ulMaxKeySize >= 256));
  }
  set(Mechanism::kEcdsa, flagged(CKM_ECDSA, CKF_SIGN));
  {
    auto mi = info(CKM_RSA_PKCS_KEY_PAIR_GEN);
    set(Mechanism::kRsaKeyPairGen, mi && (mi->flags & CKF_GENERATE_KEY_PAIR) && size_ok(*mi, 3072));
  }
  set(Mechanism::kRsaPkcs, flagged(CKM_RSA_PKCS, CKF_SIGN));
  set(Mechanism::kRsaPkcsPss, flagged(CKM_RSA_PKCS_PSS, CKF_SIGN));
  set(Mechanism::kAesCbc, flagged(CKM_AES_CBC, CKF_ENCRYPT | CKF_DECRYPT));
  CK_TOKEN_INFO ti{};
  if (CW_CK_INVOKE(m, C_GetTokenInfo, slot_, &ti) == CKR_OK) {
    set(Mechanism::kRandom, (ti.flags & CKF_RNG) != 0);
  }
  min_key_sizes_.clear();
  for (CK_MECHANISM_TYPE hmac : {CKM_SHA_1_HMAC, CKM_SHA256_HMAC, CKM_SHA512_HMAC}) {
    if (auto mi = info(hmac)) min_key_sizes_.emplace_back(hmac, mi->ulMinKeySize);
  }
  return Status::Ok();
}

CK_ULONG TokenCore::MinKeySize(CK_MECHANISM_TYPE mechanism) const noexcept {
  for (const auto& [m, size] : min_key_sizes_) {
    if (m == mechanism) return size;
  }
  return 0;
}

Status TokenCore::LoginLocked(CK_SESSION_HANDLE handle) {
  PinLatch& latch = Latch();
  std::lock_guard lock(latch.mu);
  const std::string name = "'" + info_.label + "' (serial " + info_.serial + ")";
  if (latch.pin_incorrect) return PinIncorrect(name, /*this_attempt=*/false);
  CK_TOKEN_INFO ti{};
  CW_RETURN_IF_ERROR(CW_CK_CALL(*module_, C_GetTokenInfo, slot_, &ti));
  CW_RETURN_IF_ERROR(CheckPinFlags(ti));
  std::span<const std::uint8_t> pin = pin_.Reveal(SecretAccess::Grant());
  const CK_RV rv =
      CW_CK_INVOKE(*module_, C_Login, handle, CKU_USER, const_cast<CK_UTF8CHAR*>(pin.data()),
                   static_cast<CK_ULONG>(pin.size()));
  if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) return Status::Ok();
  if (rv == CKR_PIN_INCORRECT) {
    latch.pin_incorrect = true;
    return PinIncorrect(name, /*this_attempt=*/true);
  }
  if (rv == CKR_PIN_LOCKED) {
    return Status(Code::kFailedPrecondition,
                  "token " + name +
                      ": the user PIN is locked (CKR_PIN_LOCKED); the security officer must "
                      "unlock it",
                  "token_unavailable");
  }
  return CkrStatus(rv, "C_Login").WithContext("token " + name);
}

Result<std::pair<CK_SESSION_HANDLE, std::uint64_t>> TokenCore::OpenHandleLocked() {
  // The epoch is read before the session is opened: should the module be initialised again in
  // between, the session is merely considered stale one call too early.
  const std::uint64_t epoch = module_->epoch();
  CK_SESSION_HANDLE handle = CK_INVALID_HANDLE;
  CW_RETURN_IF_ERROR(CW_CK_CALL(*module_, C_OpenSession, slot_,
                                CK_FLAGS{CKF_SERIAL_SESSION | CKF_RW_SESSION}, nullptr, nullptr,
                                &handle)
                         .WithContext("token '" + info_.label + "'"));
  CK_SESSION_INFO si{};
  Status status = CW_CK_CALL(*module_, C_GetSessionInfo, handle, &si);
  if (status.ok() && si.state != CKS_RW_USER_FUNCTIONS) status = LoginLocked(handle);
  if (!status.ok()) {
    module_->InvokeInEpoch(epoch, [&](CK_FUNCTION_LIST& f) { return f.C_CloseSession(handle); });
    return status;
  }
  return std::make_pair(handle, epoch);
}

Status TokenCore::OpenSessionLocked() {
  CW_ASSIGN_OR_RETURN(auto opened, OpenHandleLocked());
  session_.emplace(*this, *module_, opened.first, ++generation_, opened.second);
  return Status::Ok();
}

void TokenCore::CloseSessionLocked() noexcept {
  if (!session_) return;
  const CK_SESSION_HANDLE handle = session_->handle();
  // A session of an earlier epoch is gone already, and its number may now name another session.
  module_->InvokeInEpoch(session_->epoch(),
                         [&](CK_FUNCTION_LIST& f) { return f.C_CloseSession(handle); });
  session_.reset();
}

Result<KeyProvisioner*> TokenCore::ProvisionerLocked() {
  if (!provisioner_) {
    Result<std::shared_ptr<KeyProvisioner>> made = DefaultKeyProvisioner();
    if (!made.ok()) return made.status();
    provisioner_ = std::move(*made);
  }
  return provisioner_.get();
}

void TokenCore::SetProvisionerForTesting(std::shared_ptr<KeyProvisioner> provisioner) {
  std::lock_guard lock(mu_);
  provisioner_ = std::move(provisioner);
}

Status TokenCore::ChangeOutOfBandLocked(Session& session,
                                        FunctionRef<Status(const ProvisionTarget&)> change) {
  session.MarkMutated();
  CW_RETURN_IF_ERROR(change(ProvisionTarget{info_, pin_}));
  // The module reads its store again; every session of this module ends with it.
  Status reinitialised = module_->Reinitialize();
  if (reinitialised.ok()) reinitialised = FindSlot();  // slot ids may change with it
  if (!reinitialised.ok()) {
    session.lost_ = true;
    return reinitialised;
  }
  Result<std::pair<CK_SESSION_HANDLE, std::uint64_t>> opened = OpenHandleLocked();
  if (!opened.ok()) {
    session.lost_ = true;
    return opened.status();
  }
  session.handle_ = opened->first;
  session.epoch_ = opened->second;
  session.generation_ = ++generation_;
  session.lost_ = false;
  return Status::Ok();
}

Status TokenCore::Refresh() {
  std::lock_guard lock(mu_);
  if (closed_) return FailedPrecondition("token '" + info_.label + "' is closed");
  CloseSessionLocked();
  return module_->Reinitialize();
}

Status TokenCore::WithSession(FunctionRef<Status(Session&)> fn) {
  std::lock_guard lock(mu_);
  if (closed_) return FailedPrecondition("token '" + info_.label + "' is closed");
  for (int attempt = 0;; ++attempt) {
    // The module was initialised again (Refresh, an out-of-band change by another token): this
    // session ended with it.
    if (session_ && session_->epoch() != module_->epoch()) session_.reset();
    if (!session_) {
      Status found = FindSlot();
      if (found.ok()) found = OpenSessionLocked();
      if (!found.ok()) return found;
    }
    session_->BeginRun();
    Status status = fn(*session_);
    if (session_->discarded()) {
      CloseSessionLocked();
      return status;
    }
    if (status.ok() || !session_->lost()) return status;
    const bool mutated = session_->mutated();
    CloseSessionLocked();
    if (mutated || attempt > 0) return status;
  }
}

Status TokenCore::Close() {
  std::lock_guard lock(mu_);
  if (closed_) return Status::Ok();
  closed_ = true;
  CloseSessionLocked();
  pin_.Wipe();
  return Status::Ok();
}

}  // namespace cakewalk::hsm::internal

// ---- Public Token / Capabilities --------------------------------------------------------------

namespace cakewalk::hsm {

std::string_view MechanismName(Mechanism m) noexcept {
  switch (m) {
    case Mechanism::kAesKeyGen:
      return "CKM_AES_KEY_GEN";
    case Mechanism::kAesGcm:
      return "CKM_AES_GCM";
    case Mechanism::kSha1Hmac:
      return "CKM_SHA_1_HMAC";
    case Mechanism::kSha256Hmac:
      return "CKM_SHA256_HMAC";
    case Mechanism::kSha512Hmac:
      return "CKM_SHA512_HMAC";
    case Mechanism::kEcKeyPairGen:
      return "CKM_EC_KEY_PAIR_GEN";
    case Mechanism::kEcdsa:
      return "CKM_ECDSA";
    case Mechanism::kRsaKeyPairGen:
      return "CKM_RSA_PKCS_KEY_PAIR_GEN";
    case Mechanism::kRsaPkcs:
      return "CKM_RSA_PKCS";
    case Mechanism::kRsaPkcsPss:
      return "CKM_RSA_PKCS_PSS";
    case Mechanism::kRandom:
      return "a random number generator (CKF_RNG)";
    case Mechanism::kAesCbc:
      return "CKM_AES_CBC";
  }
  return "an unknown mechanism";
}

Status Capabilities::Require(Mechanism m, std::string_view needed_for) const {
  if (Has(m)) return Status::Ok();
  return FailedPrecondition("token '" + token_label_ + "' does not offer " +
                            std::string(MechanismName(m)) + ", needed for " +
                            std::string(needed_for));
}

std::string Capabilities::Summary() const {
  std::string has;
  std::string lacks;
  for (int i = 0; i < kMechanismCount; ++i) {
    const auto m = static_cast<Mechanism>(i);
    std::string& list = Has(m) ? has : lacks;
    list += (list.empty() ? "" : ", ") + std::string(MechanismName(m));
  }
  return "has " + (has.empty() ? std::string("none") : has) + "; lacks " +
         (lacks.empty() ? std::string("nothing") : lacks);
}

Token::Token(std::shared_ptr<internal::TokenCore> core) : core_(std::move(core)) {}

Token::~Token() {
  if (core_) core_->Close().IgnoreError();
}

Result<std::unique_ptr<Token>> Token::Open(Module& module, std::string_view uri, SecretBytes pin) {
  CW_ASSIGN_OR_RETURN(auto core, internal::TokenCore::Open(internal::ModuleAccess::core(module),
                                                           uri, std::move(pin)));
  return std::unique_ptr<Token>(new Token(std::move(core)));
}

const TokenInfo& Token::info() const { return core_->info(); }
const Capabilities& Token::capabilities() const { return core_->capabilities(); }
Status Token::Close() { return core_->Close(); }
Status Token::Refresh() { return core_->Refresh(); }

}  // namespace cakewalk::hsm
