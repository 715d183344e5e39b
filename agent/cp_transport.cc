#include "agent/cp_transport.h"

#include <utility>

#include "agent/version.h"
#include "hsm/provider.h"

namespace cakewalk::agent {

Result<http::TransportOptions> ControlPlaneTransportOptions(const Config& config,
                                                            hsm::SecretStore* secrets,
                                                            const ClientIdentity* client) {
  const ControlPlaneConfig& cp = config.control_plane;
  http::TransportOptions o;
  o.config_name = "control_plane";
  if (cp.ca_file) o.ca_file = cp.ca_file->string();
  o.pinned_spki_sha256 = cp.pinned_spki_sha256;
  o.connect_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(cp.connect_timeout);
  o.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(cp.request_timeout);
  o.user_agent = std::string("cakewalk-agent/") + kAgentVersion;
  if (cp.proxy) {
    o.proxy_url = *cp.proxy;
    o.no_proxy = cp.no_proxy;
    if (cp.proxy_username) {
      const std::string command = std::string("cakewalk-agent secret set ") +
                                  kControlPlaneConnection + " " + kProxyPasswordSecret;
      if (secrets == nullptr) {
        return FailedPrecondition(
            "control_plane.proxy_username is set, and the proxy password is kept in the token, "
            "which is not available");
      }
      auto password = secrets->Unseal(kControlPlaneConnection, kProxyPasswordSecret,
                                      "proxy authentication to the control plane");
      if (!password.ok()) {
        if (password.status().code() == Code::kNotFound) {
          return FailedPrecondition("control_plane.proxy_username is set but the token holds no '" +
                                    std::string(kProxyPasswordSecret) +
                                    "' secret for connection '" + kControlPlaneConnection +
                                    "'; store the proxy password with: " + command);
        }
        return password.status().WithContext("cannot read the control-plane proxy password (" +
                                             command + ") from the token");
      }
      o.proxy_username = *cp.proxy_username;
      o.proxy_password = std::move(password).value();
    }
  }
  if (client != nullptr) {
    if (client->key == nullptr) return Internal("control-plane client identity without a key");
    CW_ASSIGN_OR_RETURN(hsm::EvpPkey pkey, hsm::ProviderKey(client->key));
    auto hook = hsm::MakeClientIdentityHook(client->chain_pem, std::move(pkey));
    if (!hook.ok()) {
      return hook.status().WithContext("cannot use the agent certificate with key " +
                                       client->key->label());
    }
    o.client_identity = std::move(hook).value();
  }
  return o;
}

std::string FailureKind(const Status& status) {
  namespace r = http::reason;
  const std::string& why = status.reason();
  if (why == r::kConnectFailed) return "cannot connect to the control plane (DNS or TCP)";
  if (why == r::kTimeout) return "the control plane did not answer in time";
  if (why == r::kTlsVerifyFailed) return "the control plane's TLS certificate was not accepted";
  if (why == r::kTlsPinMismatch) {
    return "the control plane's key matches no control_plane.pinned_spki_sha256 entry";
  }
  if (why == r::kTlsHandshake) return "the TLS handshake with the control plane failed";
  if (why == r::kClientCertRejected) {
    return "the control plane rejected the agent's client certificate during the TLS handshake";
  }
  if (why == r::kProxyAuthFailed) return "the proxy refused the agent's credentials (HTTP 407/401)";
  if (why == r::kProxyError) return "the proxy could not open a tunnel to the control plane";
  if (why == r::kResponseTooLarge) return "the control plane's answer was too large";
  if (why == r::kProtocol) return "the connection to the control plane broke";
  if (why == r::kBadUrl) return "the control-plane URL cannot be used";
  if (why == cp_reason::kIdentityRejected) return "the control plane refused the agent's identity";
  if (why == cp_reason::kRateLimited) return "the control plane asked the agent to slow down";
  if (why == cp_reason::kServerError) return "the control plane failed";
  if (why == cp_reason::kRequestRejected) return "the control plane refused the request";
  if (why == cp_reason::kConflict) return "the control plane reported a conflict";
  return {};
}

Result<std::unique_ptr<http::Transport>> MakeControlPlaneTransport(const Config& config,
                                                                   hsm::SecretStore* secrets,
                                                                   const ClientIdentity* client) {
  CW_ASSIGN_OR_RETURN(http::TransportOptions options,
                      ControlPlaneTransportOptions(config, secrets, client));
  auto transport = http::CurlTransport::Create(std::move(options));
  if (!transport.ok()) return transport.status().WithContext("control-plane connection");
  return transport;
}

namespace {

struct OwnedClient {
  std::unique_ptr<http::Transport> transport;
  ControlPlaneClient client;
  OwnedClient(std::unique_ptr<http::Transport> t, const std::string& url)
      : transport(std::move(t)), client(*transport, url) {}
};

}  // namespace

Result<std::shared_ptr<ControlPlaneClient>> MakeControlPlaneClient(const Config& config,
                                                                   hsm::SecretStore* secrets,
                                                                   const ClientIdentity* client) {
  CW_ASSIGN_OR_RETURN(std::unique_ptr<http::Transport> transport,
                      MakeControlPlaneTransport(config, secrets, client));
  auto owned = std::make_shared<OwnedClient>(std::move(transport), config.control_plane.url);
  // Aliasing: the client pointer shares ownership of the whole (client and transport).
  return std::shared_ptr<ControlPlaneClient>(owned, &owned->client);
}

Result<ControlPlaneLink::Connection> ControlPlaneLink::Current() {
  std::lock_guard lock(mu_);
  const ClientIdentity id = identity_.client_identity();
  if (cached_.client != nullptr && cached_.generation == id.generation) return cached_;
  CW_ASSIGN_OR_RETURN(std::shared_ptr<ControlPlaneClient> client,
                      MakeControlPlaneClient(config_, &secrets_, &id));
  cached_ = Connection{std::move(client), id.generation, id.not_after};
  return cached_;
}

Result<std::shared_ptr<ControlPlaneClient>> ControlPlaneLink::Client() {
  CW_ASSIGN_OR_RETURN(Connection c, Current());
  return std::move(c.client);
}

void ControlPlaneLink::Reset() {
  std::lock_guard lock(mu_);
  cached_ = Connection{};
}

}  // namespace cakewalk::agent
