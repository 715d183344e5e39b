// A private SoftHSM2 token store for one test, and raw PKCS#11 access for probes.
//
//   auto hsm = SoftHsm::Create();                 // temp folder, softhsm2.conf, SOFTHSM2_CONF
//   ASSERT_TRUE(hsm.ok()) << hsm.status().ToString();
//   const SoftHsm::TokenSpec& t = (*hsm)->token(); // label, uri, pin_file, user_pin
//   auto module = hsm::Module::Load(SoftHsm::kModulePath);
//
// Tokens are initialised through PKCS#11 (C_InitToken, then C_InitPIN as the security officer),
// never with softhsm2-util and a PIN on its command line. The user PIN (a throw-away test value)
// is written to a 0600 file. The object store is `file` (Debian's SoftHSM has no SQLite backend)
// in <temp>/tokens. SOFTHSM2_CONF is set for the whole process, so create one SoftHsm per test
// (each ctest test runs in its own process).
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "hsm/cryptoki.h"
#include "tests/support/temp_dir.h"

namespace cakewalk::testing {

class SoftHsm {
 public:
  static constexpr const char* kModulePath = "/usr/lib/softhsm/libsofthsm2.so";

  struct TokenSpec {
    std::string label;
    std::string uri;  // "pkcs11:token=<label>"
    std::filesystem::path pin_file;
    std::string user_pin;  // throw-away test PIN
    std::string so_pin;
  };

  // A store with one initialised token labelled `label`.
  static Result<std::unique_ptr<SoftHsm>> Create(std::string label = "cakewalk-test");

  // Initialises one more token in the same store.
  Result<TokenSpec> AddToken(const std::string& label);

  const TokenSpec& token() const { return tokens_.front(); }
  // Keeps the store's folder after this object goes away (the softhsm-init tool).
  void Keep() { dir_.Keep(); }
  const std::filesystem::path& dir() const { return dir_.path(); }
  std::filesystem::path token_dir() const { return dir_.path() / "tokens"; }
  std::filesystem::path conf() const { return dir_.path() / "softhsm2.conf"; }

 private:
  SoftHsm() : dir_("cakewalk-softhsm") {}
  TempDir dir_;
  std::vector<TokenSpec> tokens_;
};

// SoftHSM's own function list, loaded by p11-kit without its managed wrapper, for raw probes
// next to an hsm::Module in the same process (both reach the same SoftHSM instance). Calls
// C_Initialize only when nobody has; never finalises a module it did not initialise.
class RawPkcs11 {
 public:
  static Result<std::unique_ptr<RawPkcs11>> Load(const std::string& path = SoftHsm::kModulePath);
  ~RawPkcs11();
  RawPkcs11(const RawPkcs11&) = delete;
  RawPkcs11& operator=(const RawPkcs11&) = delete;

  CK_FUNCTION_LIST* f() const { return functions_; }
  // The slot currently holding the token labelled `label`.
  Result<CK_SLOT_ID> SlotOf(std::string_view label);
  // Opens a read-write session on that token and logs in as the user (already-logged-in is fine).
  Result<CK_SESSION_HANDLE> OpenUserSession(std::string_view label, std::string_view pin);
  // Handles of every object matching {CKA_LABEL=label} (and class, unless 0xffffffff).
  Result<std::vector<CK_OBJECT_HANDLE>> FindByLabel(CK_SESSION_HANDLE session,
                                                    std::string_view label,
                                                    CK_OBJECT_CLASS cls = ~CK_OBJECT_CLASS{0});
  // Number of token objects visible to the session.
  Result<std::size_t> CountObjects(CK_SESSION_HANDLE session);

 private:
  RawPkcs11() = default;
  CK_FUNCTION_LIST* functions_ = nullptr;
  bool finalize_ = false;
};

// Runs a program with posix_spawnp (never fork after C_Initialize), feeding `input` on its
// standard input and capturing both outputs. The environment is inherited.
struct ProgramResult {
  int exit_code = -1;  // -1 when it could not run or was killed by a signal
  std::string out;
  std::string err;
};
ProgramResult RunProgram(const std::vector<std::string>& argv, std::string_view input = {});

}  // namespace cakewalk::testing
