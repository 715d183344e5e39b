#include "hsm/ck.h"

#include <dlfcn.h>
#include <p11-kit/p11-kit.h>

#include <cstdio>

namespace cakewalk::hsm::internal {
namespace {

struct Named {
  CK_ULONG value;
  std::string_view name;
};

#define CW_NAMED(x) \
  Named { x, #x }

constexpr Named kReturnValues[] = {
    CW_NAMED(CKR_OK),
    CW_NAMED(CKR_CANCEL),
    CW_NAMED(CKR_HOST_MEMORY),
    CW_NAMED(CKR_SLOT_ID_INVALID),
    CW_NAMED(CKR_GENERAL_ERROR),
    CW_NAMED(CKR_FUNCTION_FAILED),
    CW_NAMED(CKR_ARGUMENTS_BAD),
    CW_NAMED(CKR_NO_EVENT),
    CW_NAMED(CKR_NEED_TO_CREATE_THREADS),
    CW_NAMED(CKR_CANT_LOCK),
    CW_NAMED(CKR_ATTRIBUTE_READ_ONLY),
    CW_NAMED(CKR_ATTRIBUTE_SENSITIVE),
    CW_NAMED(CKR_ATTRIBUTE_TYPE_INVALID),
    CW_NAMED(CKR_ATTRIBUTE_VALUE_INVALID),
    CW_NAMED(CKR_ACTION_PROHIBITED),
    CW_NAMED(CKR_DATA_INVALID),
    CW_NAMED(CKR_DATA_LEN_RANGE),
    CW_NAMED(CKR_DEVICE_ERROR),
    CW_NAMED(CKR_DEVICE_MEMORY),
    CW_NAMED(CKR_DEVICE_REMOVED),
    CW_NAMED(CKR_ENCRYPTED_DATA_INVALID),
    CW_NAMED(CKR_ENCRYPTED_DATA_LEN_RANGE),
    CW_NAMED(CKR_FUNCTION_CANCELED),
    CW_NAMED(CKR_FUNCTION_NOT_PARALLEL),
    CW_NAMED(CKR_FUNCTION_NOT_SUPPORTED),
    CW_NAMED(CKR_KEY_HANDLE_INVALID),
    CW_NAMED(CKR_KEY_SIZE_RANGE),
    CW_NAMED(CKR_KEY_TYPE_INCONSISTENT),
    CW_NAMED(CKR_KEY_NOT_NEEDED),
    CW_NAMED(CKR_KEY_CHANGED),
    CW_NAMED(CKR_KEY_NEEDED),
    CW_NAMED(CKR_KEY_INDIGESTIBLE),
    CW_NAMED(CKR_KEY_FUNCTION_NOT_PERMITTED),
    CW_NAMED(CKR_KEY_NOT_WRAPPABLE),
    CW_NAMED(CKR_KEY_UNEXTRACTABLE),
    CW_NAMED(CKR_MECHANISM_INVALID),
    CW_NAMED(CKR_MECHANISM_PARAM_INVALID),
    CW_NAMED(CKR_OBJECT_HANDLE_INVALID),
    CW_NAMED(CKR_OPERATION_ACTIVE),
    CW_NAMED(CKR_OPERATION_NOT_INITIALIZED),
    CW_NAMED(CKR_PIN_INCORRECT),
    CW_NAMED(CKR_PIN_INVALID),
    CW_NAMED(CKR_PIN_LEN_RANGE),
    CW_NAMED(CKR_PIN_EXPIRED),
    CW_NAMED(CKR_PIN_LOCKED),
    CW_NAMED(CKR_SESSION_CLOSED),
    CW_NAMED(CKR_SESSION_COUNT),
    CW_NAMED(CKR_SESSION_HANDLE_INVALID),
    CW_NAMED(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
    CW_NAMED(CKR_SESSION_READ_ONLY),
    CW_NAMED(CKR_SESSION_EXISTS),
    CW_NAMED(CKR_SESSION_READ_ONLY_EXISTS),
    CW_NAMED(CKR_SESSION_READ_WRITE_SO_EXISTS),
    CW_NAMED(CKR_SIGNATURE_INVALID),
    CW_NAMED(CKR_SIGNATURE_LEN_RANGE),
    CW_NAMED(CKR_TEMPLATE_INCOMPLETE),
    CW_NAMED(CKR_TEMPLATE_INCONSISTENT),
    CW_NAMED(CKR_TOKEN_NOT_PRESENT),
    CW_NAMED(CKR_TOKEN_NOT_RECOGNIZED),
    CW_NAMED(CKR_TOKEN_WRITE_PROTECTED),
    CW_NAMED(CKR_UNWRAPPING_KEY_SIZE_RANGE),
    CW_NAMED(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT),
    CW_NAMED(CKR_USER_ALREADY_LOGGED_IN),
    CW_NAMED(CKR_USER_NOT_LOGGED_IN),
    CW_NAMED(CKR_USER_PIN_NOT_INITIALIZED),
    CW_NAMED(CKR_USER_TYPE_INVALID),
    CW_NAMED(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
    CW_NAMED(CKR_USER_TOO_MANY_TYPES),
    CW_NAMED(CKR_WRAPPED_KEY_INVALID),
    CW_NAMED(CKR_WRAPPED_KEY_LEN_RANGE),
    CW_NAMED(CKR_WRAPPING_KEY_HANDLE_INVALID),
    CW_NAMED(CKR_WRAPPING_KEY_SIZE_RANGE),
    CW_NAMED(CKR_WRAPPING_KEY_TYPE_INCONSISTENT),
    CW_NAMED(CKR_RANDOM_SEED_NOT_SUPPORTED),
    CW_NAMED(CKR_RANDOM_NO_RNG),
    CW_NAMED(CKR_DOMAIN_PARAMS_INVALID),
    CW_NAMED(CKR_CURVE_NOT_SUPPORTED),
    CW_NAMED(CKR_BUFFER_TOO_SMALL),
    CW_NAMED(CKR_SAVED_STATE_INVALID),
    CW_NAMED(CKR_INFORMATION_SENSITIVE),
    CW_NAMED(CKR_STATE_UNSAVEABLE),
    CW_NAMED(CKR_CRYPTOKI_NOT_INITIALIZED),
    CW_NAMED(CKR_CRYPTOKI_ALREADY_INITIALIZED),
    CW_NAMED(CKR_MUTEX_BAD),
    CW_NAMED(CKR_MUTEX_NOT_LOCKED),
    CW_NAMED(CKR_NEW_PIN_MODE),
    CW_NAMED(CKR_NEXT_OTP),
    CW_NAMED(CKR_EXCEEDED_MAX_ITERATIONS),
    CW_NAMED(CKR_FIPS_SELF_TEST_FAILED),
    CW_NAMED(CKR_LIBRARY_LOAD_FAILED),
    CW_NAMED(CKR_PIN_TOO_WEAK),
    CW_NAMED(CKR_PUBLIC_KEY_INVALID),
    CW_NAMED(CKR_FUNCTION_REJECTED),
};

constexpr Named kMechanisms[] = {
    CW_NAMED(CKM_RSA_PKCS_KEY_PAIR_GEN),
    CW_NAMED(CKM_RSA_PKCS),
    CW_NAMED(CKM_RSA_PKCS_PSS),
    CW_NAMED(CKM_SHA_1),
    CW_NAMED(CKM_SHA_1_HMAC),
    CW_NAMED(CKM_SHA256),
    CW_NAMED(CKM_SHA256_HMAC),
    CW_NAMED(CKM_SHA384),
    CW_NAMED(CKM_SHA384_HMAC),
    CW_NAMED(CKM_SHA512),
    CW_NAMED(CKM_SHA512_HMAC),
    CW_NAMED(CKM_GENERIC_SECRET_KEY_GEN),
    CW_NAMED(CKM_EC_KEY_PAIR_GEN),
    CW_NAMED(CKM_ECDSA),
    CW_NAMED(CKM_ECDSA_SHA256),
    CW_NAMED(CKM_AES_KEY_GEN),
    CW_NAMED(CKM_AES_CBC_PAD),
    CW_NAMED(CKM_AES_GCM),
};
#undef CW_NAMED

std::string Hex(CK_ULONG v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%lx", v);
  return buf;
}

}  // namespace

std::string_view CkrName(CK_RV rv) noexcept {
  for (const Named& n : kReturnValues) {
    if (n.value == rv) return n.name;
  }
  if (rv & CKR_VENDOR_DEFINED) return "CKR_VENDOR_DEFINED";
  return "CKR_(unknown)";
}

std::string CkrText(CK_RV rv) { return std::string(CkrName(rv)) + " (" + Hex(rv) + ")"; }

std::string_view MechanismName(CK_MECHANISM_TYPE m) noexcept {
  for (const Named& n : kMechanisms) {
    if (n.value == m) return n.name;
  }
  return {};
}

std::string MechanismText(CK_MECHANISM_TYPE m) {
  std::string_view name = MechanismName(m);
  return (name.empty() ? std::string("mechanism") : std::string(name)) + " (" + Hex(m) + ")";
}

bool IsSessionLoss(CK_RV rv) noexcept {
  switch (rv) {
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_USER_NOT_LOGGED_IN:
    case CKR_DEVICE_ERROR:
      return true;
    default:
      return false;
  }
}

Status CkrStatus(CK_RV rv, std::string_view call) {
  if (rv == CKR_OK) return Status::Ok();
  const std::string what = std::string(call) + " failed: " + CkrText(rv);
  switch (rv) {
    case CKR_PIN_INCORRECT:
    case CKR_PIN_LOCKED:
    case CKR_PIN_EXPIRED:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
    case CKR_USER_PIN_NOT_INITIALIZED:
      return Status(Code::kFailedPrecondition,
                    what +
                        ": the token refused the user PIN; fix the PIN or the token before "
                        "starting again",
                    "token_unavailable");
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_DEVICE_REMOVED:
    case CKR_DEVICE_ERROR:
    case CKR_DEVICE_MEMORY:
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_SESSION_COUNT:
    case CKR_USER_NOT_LOGGED_IN:
      return Status(Code::kUnavailable,
                    what + ": the token or its session went away; the agent reopens the session",
                    "token_unavailable");
    case CKR_MECHANISM_INVALID:
    case CKR_MECHANISM_PARAM_INVALID:
    case CKR_KEY_SIZE_RANGE:
    case CKR_KEY_TYPE_INCONSISTENT:
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
    case CKR_CURVE_NOT_SUPPORTED:
    case CKR_DOMAIN_PARAMS_INVALID:
    case CKR_FUNCTION_NOT_SUPPORTED:
      return FailedPrecondition(what +
                                ": the token does not support this use of the key "
                                "(a provisioning problem, not a transient error)");
    case CKR_TOKEN_WRITE_PROTECTED:
    case CKR_SESSION_READ_ONLY:
      return FailedPrecondition(what + ": the token is write-protected");
    case CKR_CRYPTOKI_NOT_INITIALIZED:
      return FailedPrecondition(what +
                                ": the PKCS#11 module is closed (the process is shutting down)");
    default:
      return Internal(what);
  }
}

ModuleCore::ModuleCore(CK_FUNCTION_LIST* functions, Ownership ownership, std::string description,
                       void* dl_handle)
    : functions_(functions),
      ownership_(ownership),
      description_(std::move(description)),
      dl_handle_(dl_handle) {}

ModuleCore::~ModuleCore() { Close().IgnoreError(); }

bool ModuleCore::closed() const {
  std::shared_lock lock(mu_);
  return functions_ == nullptr;
}

Status ModuleCore::Close() noexcept {
  std::unique_lock lock(mu_);
  if (functions_ == nullptr) return Status::Ok();
  CK_FUNCTION_LIST* f = functions_;
  functions_ = nullptr;
  CK_RV rv = CKR_OK;
  ERR_set_mark();
  switch (ownership_) {
    case Ownership::kP11KitManaged:
      rv = p11_kit_module_finalize(f);
      p11_kit_module_release(f);
      break;
    case Ownership::kProxy:
      rv = f->C_Finalize(nullptr);
      break;
    case Ownership::kBorrowed:
      break;
  }
  if (dl_handle_ != nullptr) {
    dlclose(dl_handle_);
    dl_handle_ = nullptr;
  }
  ERR_pop_to_mark();
  if (rv != CKR_OK && rv != CKR_CRYPTOKI_NOT_INITIALIZED) {
    return CkrStatus(rv, "C_Finalize").WithContext(description_);
  }
  return Status::Ok();
}

Status ModuleCore::Reinitialize() noexcept {
  std::unique_lock lock(mu_);
  if (functions_ == nullptr) {
    return FailedPrecondition(description_ + " is closed; it cannot be initialised again");
  }
  if (ownership_ == Ownership::kBorrowed) {
    return FailedPrecondition(description_ + " is borrowed; its owner must initialise it again");
  }
  ERR_set_mark();
  CK_RV rv = CKR_OK;
  if (ownership_ == Ownership::kP11KitManaged) {
    rv = p11_kit_module_finalize(functions_);
    if (rv == CKR_OK || rv == CKR_CRYPTOKI_NOT_INITIALIZED)
      rv = p11_kit_module_initialize(functions_);
  } else {
    rv = functions_->C_Finalize(nullptr);
    if (rv == CKR_OK || rv == CKR_CRYPTOKI_NOT_INITIALIZED) {
      CK_C_INITIALIZE_ARGS args{};
      args.flags = CKF_OS_LOCKING_OK;
      rv = functions_->C_Initialize(&args);
    }
  }
  ERR_pop_to_mark();
  ++epoch_;
  if (rv != CKR_OK) {
    // The module is unusable now; every later call fails cleanly with this module's errors.
    return CkrStatus(rv, "C_Initialize").WithContext("initialising " + description_ + " again");
  }
  return Status::Ok();
}

}  // namespace cakewalk::hsm::internal
