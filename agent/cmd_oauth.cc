// `oauth authorize CONNECTION`: the OAuth 2.0 authorization code flow with PKCE for Access Sync,
// without any inbound port: the URL goes to standard output, the redirect (or the code) comes
// back on standard input, and the refresh token is sealed in the token.
#include "agent/commands.h"
#include "agent/jira_connection.h"
#include "agent/token_context.h"
#include "base/secret.h"

namespace cakewalk::agent {

namespace {
constexpr std::size_t kMaxPasted = 8192;
}  // namespace

Status CommandOauthAuthorize(const Config& config, const std::string& connection, CliIo io) {
  const ConnectionConfig* conn = config.FindConnection(connection);
  if (conn == nullptr) {
    return NotFound("no connection named '" + connection + "' in " + config.file.string());
  }
  CW_ASSIGN_OR_RETURN(auto ctx, TokenContext::Open(config, CommandLogSink()));
  return AuthorizeOAuth(config, connection, ctx->secrets(), io, [] {
    return SecretBytes::ReadStdin("Redirect address or code: ", kMaxPasted,
                                  SecretBytes::Trim::kWhitespace);
  });
}

}  // namespace cakewalk::agent
