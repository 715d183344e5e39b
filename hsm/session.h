// The token's session and the TokenCore behind hsm::Token (internal to hsm/).
//
// Everything that touches token objects runs inside TokenCore::WithSession(fn): fn gets the one
// logged-in Session, under the token's mutex, so object-handle caches kept by SecretStore and
// KeyPair need no lock of their own as long as they are only read and written inside fn.
//
// Handles: a Session's generation() changes whenever a new session had to be opened; object
// handles cached under an older generation must be found again (SoftHSM invalidates handles of
// private objects when the last session closes).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/secret.h"
#include "base/status.h"
#include "hsm/ck.h"
#include "hsm/function_ref.h"
#include "hsm/key_provisioner.h"
#include "hsm/token.h"

struct p11_kit_uri;

namespace cakewalk::hsm::internal {

// An attribute template whose values stay valid while the Template lives. Values are copied,
// except Secret(), which points at the caller's SecretBytes (no copy of secret material).
class Template {
 public:
  Template() = default;
  Template(const Template&) = delete;
  Template& operator=(const Template&) = delete;

  Template& Bool(CK_ATTRIBUTE_TYPE type, bool value);
  Template& Ulong(CK_ATTRIBUTE_TYPE type, CK_ULONG value);
  Template& Bytes(CK_ATTRIBUTE_TYPE type, std::span<const std::uint8_t> value);
  Template& String(CK_ATTRIBUTE_TYPE type, std::string_view value);
  Template& Mechanisms(std::span<const CK_MECHANISM_TYPE> mechanisms);
  // Points at `value` without copying; `value` must outlive the Template's use.
  Template& Secret(CK_ATTRIBUTE_TYPE type, const SecretBytes& value);

  CK_ATTRIBUTE* data() noexcept { return attributes_.data(); }
  CK_ULONG size() const noexcept { return static_cast<CK_ULONG>(attributes_.size()); }

 private:
  Template& Owned(CK_ATTRIBUTE_TYPE type, const void* data, std::size_t size);

  std::vector<std::unique_ptr<std::uint8_t[]>> storage_;
  std::vector<CK_ATTRIBUTE> attributes_;
};

class TokenCore;

class Session {
 public:
  Session(TokenCore& owner, ModuleCore& module, CK_SESSION_HANDLE handle, std::uint64_t generation,
          std::uint64_t epoch) noexcept
      : owner_(owner), module_(module), handle_(handle), generation_(generation), epoch_(epoch) {}

  CK_SESSION_HANDLE handle() const noexcept { return handle_; }
  std::uint64_t generation() const noexcept { return generation_; }
  // The module epoch (ModuleCore::epoch) the session was opened in.
  std::uint64_t epoch() const noexcept { return epoch_; }
  // True once a call reported that the session is gone (IsSessionLoss).
  bool lost() const noexcept { return lost_; }
  // True once a call that changes token objects succeeded in the current WithSession run.
  bool mutated() const noexcept { return mutated_; }
  void BeginRun() noexcept {
    mutated_ = false;
    discard_ = false;
  }
  void MarkMutated() noexcept { mutated_ = true; }
  // Closes the session once the current WithSession run ends (without running it again). For
  // failed cryptographic calls: some modules leave the operation active after an error
  // (tpm2-pkcs11 does), so that every later C_*Init in the session fails with
  // CKR_OPERATION_ACTIVE.
  void DiscardAfterRun() noexcept { discard_ = true; }
  bool discarded() const noexcept { return discard_; }

  // The choke point for session calls: fn(functions, session handle) -> CK_RV. A session of an
  // earlier module epoch is never passed to the module (CKR_SESSION_HANDLE_INVALID instead).
  template <class Fn>
  CK_RV Invoke(Fn&& fn) noexcept {
    const CK_RV rv =
        module_.InvokeInEpoch(epoch_, [&](CK_FUNCTION_LIST& f) { return fn(f, handle_); });
    if (IsSessionLoss(rv)) lost_ = true;
    return rv;
  }

  // For secret keys the token will not create through PKCS#11 (key_provisioner.h): the
  // provisioner for this token, created on first use (kFailedPrecondition when none is
  // configured).
  Result<KeyProvisioner*> Provisioner();
  // Runs `change` (it adds keys to the token's store out of band), then makes the module read its
  // objects again (ModuleCore::Reinitialize) and continues on a new, logged-in session of the
  // same token: this Session object stays valid, but its handle and generation() change, so every
  // object handle found before is invalid. Counts as a change (mutated()). `change` gets the
  // token's description and the user PIN.
  Status ChangeOutOfBand(FunctionRef<Status(const ProvisionTarget&)> change);

  // Typed helpers over Invoke.
  // Every object matching `tmpl` (at most `limit`).
  Result<std::vector<CK_OBJECT_HANDLE>> Find(Template& tmpl, std::size_t limit = 4096);
  // One attribute's bytes; kFailedPrecondition when sensitive or absent.
  Result<std::vector<std::uint8_t>> GetBytes(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type);
  Result<std::string> GetString(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type);
  Result<CK_OBJECT_HANDLE> Create(Template& tmpl);
  Status Destroy(CK_OBJECT_HANDLE object);
  Status SetString(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type, std::string_view value);
  Status Random(std::span<std::uint8_t> out);

 private:
  friend class TokenCore;

  TokenCore& owner_;
  ModuleCore& module_;
  CK_SESSION_HANDLE handle_;
  std::uint64_t generation_;
  std::uint64_t epoch_;
  bool lost_ = false;
  bool mutated_ = false;
  bool discard_ = false;
};

class TokenCore {
 public:
  static Result<std::shared_ptr<TokenCore>> Open(std::shared_ptr<ModuleCore> module,
                                                 std::string_view uri, SecretBytes pin);
  ~TokenCore();
  TokenCore(const TokenCore&) = delete;
  TokenCore& operator=(const TokenCore&) = delete;

  const TokenInfo& info() const noexcept { return info_; }
  const Capabilities& capabilities() const noexcept { return capabilities_; }
  // The smallest key the module says `mechanism` takes (C_GetMechanismInfo ulMinKeySize, bytes
  // for HMAC), 0 when it says nothing. Filled for CKM_SHA_1_HMAC, CKM_SHA256_HMAC, CKM_SHA512_HMAC.
  CK_ULONG MinKeySize(CK_MECHANISM_TYPE mechanism) const noexcept;
  // Learned from a refusal: C_GenerateKeyPair fails when the public key's usage flags are in the
  // template (tpm2-pkcs11 derives them itself). Later key pairs leave them out at once.
  bool public_usages_refused() const noexcept { return public_usages_refused_.load(); }
  void set_public_usages_refused() noexcept { public_usages_refused_ = true; }

  // Runs fn(session) under the token mutex. When fn fails because the session was lost and fn
  // changed nothing on the token, reopens the session (logging in again if needed) and runs fn
  // once more; after a change, the error is returned (kUnavailable, retryable) and the next call
  // gets a fresh session.
  Status WithSession(FunctionRef<Status(Session&)> fn);

  // Token::Refresh: re-initialises the module so that objects added by other processes become
  // visible; the next WithSession opens a new session.
  Status Refresh();

  // Replaces the key provisioner (tests: a provisioner that records or fails).
  void SetProvisionerForTesting(std::shared_ptr<KeyProvisioner> provisioner);

  Status Close();

 private:
  TokenCore(std::shared_ptr<ModuleCore> module, p11_kit_uri* uri, SecretBytes pin);

  friend class Session;

  Status FindSlot();
  // A new logged-in session handle (and the module epoch it belongs to).
  Result<std::pair<CK_SESSION_HANDLE, std::uint64_t>> OpenHandleLocked();
  Status OpenSessionLocked();
  void CloseSessionLocked() noexcept;
  Status LoginLocked(CK_SESSION_HANDLE handle);
  Status DetectCapabilities();
  Result<KeyProvisioner*> ProvisionerLocked();
  Status ChangeOutOfBandLocked(Session& session,
                               FunctionRef<Status(const ProvisionTarget&)> change);

  std::shared_ptr<ModuleCore> module_;
  p11_kit_uri* uri_;
  std::string uri_text_;
  std::mutex mu_;
  bool closed_ = false;
  SecretBytes pin_;
  CK_SLOT_ID slot_ = 0;
  TokenInfo info_;
  Capabilities capabilities_;
  std::optional<Session> session_;
  std::uint64_t generation_ = 0;
  std::shared_ptr<KeyProvisioner> provisioner_;
  std::vector<std::pair<CK_MECHANISM_TYPE, CK_ULONG>> min_key_sizes_;
  std::atomic<bool> public_usages_refused_{false};
};

struct TokenAccess {
  static const std::shared_ptr<TokenCore>& core(const Token& t) noexcept { return t.core_; }
};

// Resets the process-wide wrong-PIN latch. Tests only: they run several cases in one process.
void ResetPinLatchForTesting();

}  // namespace cakewalk::hsm::internal

// CW_SESSION_INVOKE(session, C_SignInit, &mechanism, key) -> CK_RV; the session handle is passed
// as the first argument.
#define CW_SESSION_INVOKE(session, fn, ...)                                         \
  (session).Invoke([&](CK_FUNCTION_LIST& cw_f_, CK_SESSION_HANDLE cw_h_) -> CK_RV { \
    if (cw_f_.fn == nullptr) return CKR_FUNCTION_NOT_SUPPORTED;                     \
    return cw_f_.fn(cw_h_ __VA_OPT__(, ) __VA_ARGS__);                              \
  })
// CW_SESSION_CALL(session, C_Sign, data, n, out, &out_len) -> Status
#define CW_SESSION_CALL(session, fn, ...) \
  ::cakewalk::hsm::internal::CkrStatus(CW_SESSION_INVOKE(session, fn, __VA_ARGS__), #fn)
