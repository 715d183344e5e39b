// The Transport the agent uses to talk to the control plane, built from control_plane.* of the
// configuration, the token (proxy password) and the enrolled identity (mutual TLS).
//
// - TLS: control_plane.ca_file (else the system store), control_plane.pinned_spki_sha256.
// - Timeouts: control_plane.connect_timeout_seconds / request_timeout_seconds.
// - Proxy: control_plane.proxy (or the environment, resolved by the configuration loader) with
//   control_plane.no_proxy; when control_plane.proxy_username is set, the password is the token
//   secret `proxy-password` of connection `control-plane`, unsealed (audit-logged) each time a
//   transport is built and kept by the transport in secret memory.
// - Client identity: none before enrollment; afterwards the identity's token key, through the
//   cakewalk-token OpenSSL provider (hsm/provider.h), with its certificate chain.
//
// Teardown: transports hold provider keys; free them before the TokenContext (which releases the
// provider keys and closes the token).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>

#include "agent/config.h"
#include "agent/control_plane.h"
#include "agent/identity.h"
#include "base/status.h"
#include "hsm/secret_store.h"
#include "jira/curl_transport.h"
#include "jira/http.h"

namespace cakewalk::agent {

// The secret name of the proxy password (connection kControlPlaneConnection).
inline constexpr char kProxyPasswordSecret[] = "proxy-password";

// Options for CurlTransport. `secrets` is needed only when control_plane.proxy_username is set
// (it may be null otherwise); `client` is null before enrollment.
Result<http::TransportOptions> ControlPlaneTransportOptions(const Config& config,
                                                            hsm::SecretStore* secrets,
                                                            const ClientIdentity* client);

// The transport itself (pre-enrollment when `client` is null).
Result<std::unique_ptr<http::Transport>> MakeControlPlaneTransport(const Config& config,
                                                                   hsm::SecretStore* secrets,
                                                                   const ClientIdentity* client);

// What kind of failure a control-plane call had, in words, from its reason (a transport reason
// of jira/http.h or a cp_reason): "the proxy refused the credentials (HTTP 407/401)", "the
// control plane's TLS certificate was not accepted", ... Empty for an unknown reason.
std::string FailureKind(const Status& status);

// A ControlPlaneClient that owns its transport: the shared_ptr keeps both alive.
Result<std::shared_ptr<ControlPlaneClient>> MakeControlPlaneClient(const Config& config,
                                                                   hsm::SecretStore* secrets,
                                                                   const ClientIdentity* client);

// The job loop's way to the control plane: hands out a client for the identity in use and
// rebuilds it (new transport, new TLS identity) when the identity's generation changed, i.e.
// after a certificate renewal switched keys. A client already handed out stays valid (with its
// own transport) for as long as the caller holds it, so a long poll in flight is not cut.
// Thread-safe.
//
//   auto conn = link.Current();          // before each call (cheap when nothing changed)
//   conn->client->Claim(n, wait);
//   ... heartbeat body with conn->certificate_not_after ...
class ControlPlaneLink {
 public:
  // `config`, `secrets` and `identity` must outlive the link.
  ControlPlaneLink(const Config& config, hsm::SecretStore& secrets, const Identity& identity)
      : config_(config), secrets_(secrets), identity_(identity) {}

  struct Connection {
    std::shared_ptr<ControlPlaneClient> client;
    std::uint64_t generation = 0;   // the identity generation the client presents
    SysTime certificate_not_after;  // of the certificate the client presents (for heartbeats)
  };
  Result<Connection> Current();
  Result<std::shared_ptr<ControlPlaneClient>> Client();
  // Forgets the cached client: the next call builds a new transport (e.g. after the proxy
  // password was changed in the token).
  void Reset();

 private:
  const Config& config_;
  hsm::SecretStore& secrets_;
  const Identity& identity_;
  std::mutex mu_;
  Connection cached_;
};

}  // namespace cakewalk::agent
