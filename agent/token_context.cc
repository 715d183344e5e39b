#include "agent/token_context.h"

#include "hsm/pin.h"
#include "hsm/provider.h"

namespace cakewalk::agent {

Result<std::unique_ptr<TokenContext>> TokenContext::Open(const Config& config, LogSink& audit,
                                                         const Clock& clock) {
  std::unique_ptr<TokenContext> ctx(new TokenContext());
  CW_ASSIGN_OR_RETURN(ctx->module_, hsm::Module::Load(config.token.module));
  CW_ASSIGN_OR_RETURN(SecretBytes pin, hsm::ResolvePin(config.token.pin_file));
  CW_ASSIGN_OR_RETURN(ctx->token_,
                      hsm::Token::Open(*ctx->module_, config.token.uri, std::move(pin)));
  CW_ASSIGN_OR_RETURN(ctx->store_, hsm::SecretStore::Open(*ctx->token_, audit, clock));
  return ctx;
}

TokenContext::~TokenContext() {
  hsm::ReleaseProviderKeys();
  store_.reset();
  if (token_) token_->Close().IgnoreError();
  token_.reset();
  if (module_) module_->Close().IgnoreError();
}

}  // namespace cakewalk::agent
