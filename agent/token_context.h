// The token as the agent uses it: the PKCS#11 module, the logged-in token and the secret store,
// opened from the configuration and torn down in the order hsm/module.h requires.
#pragma once

#include <memory>

#include "agent/config.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/status.h"
#include "hsm/module.h"
#include "hsm/secret_store.h"
#include "hsm/token.h"

namespace cakewalk::agent {

class TokenContext {
 public:
  // Loads token.module, reads the PIN (token.pin_file or $CREDENTIALS_DIRECTORY/hsm-pin), selects
  // token.uri and logs in, then opens the secret store writing audit events to `audit`.
  // A wrong PIN comes back with reason hsm::kPinIncorrectReason (see ExitCodeFor in cli.h).
  [[nodiscard]] static Result<std::unique_ptr<TokenContext>> Open(
      const Config& config, LogSink& audit, const Clock& clock = SystemClock());
  ~TokenContext();  // releases provider keys, then the store, the token and the module

  TokenContext(const TokenContext&) = delete;
  TokenContext& operator=(const TokenContext&) = delete;

  hsm::Module& module() { return *module_; }
  hsm::Token& token() { return *token_; }
  hsm::SecretStore& secrets() { return *store_; }

 private:
  TokenContext() = default;
  std::unique_ptr<hsm::Module> module_;
  std::unique_ptr<hsm::Token> token_;
  std::unique_ptr<hsm::SecretStore> store_;
};

}  // namespace cakewalk::agent
