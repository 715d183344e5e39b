#include "tests/fakes/control_plane/running_control_plane.h"

#include <utility>

#include "tests/support/pki.h"

namespace cakewalk::testing {

Result<std::unique_ptr<RunningControlPlane>> RunningControlPlane::Start(
    RunningControlPlaneOptions options) {
  std::unique_ptr<RunningControlPlane> cp(new RunningControlPlane());
  cp->server_ca_ = TestCa::Create("Cakewalk fake control plane server CA");
  if (cp->server_ca_ == nullptr) return Internal("could not create the server CA");
  CW_ASSIGN_OR_RETURN(KeyAndCert server_cert, cp->server_ca_->Issue(TestCa::LeafOptions{}));
  cp->server_cert_pem_ = server_cert.cert_pem;
  CW_ASSIGN_OR_RETURN(cp->fake_, FakeControlPlane::Create(std::move(options.control_plane)));

  ServerOptions server;
  server.certificate_chain_pem = server_cert.chain_pem;
  server.private_key_pem = server_cert.key_pem;
  server.client_certs = ServerOptions::ClientCerts::kVerifyIfPresented;
  server.client_ca_pem = cp->fake_->agent_ca_pem();
  server.port = options.port;
  cp->server_ = FakeHttpsServer::Start(std::move(server), cp->fake_->AsHandler());
  if (cp->server_ == nullptr) return Unavailable("the fake control plane's server did not start");
  return cp;
}

RunningControlPlane::~RunningControlPlane() {
  if (fake_ != nullptr) fake_->Shutdown();
  if (server_ != nullptr) server_->Stop();
  server_.reset();
}

std::uint16_t RunningControlPlane::port() const { return server_->port(); }

std::string RunningControlPlane::root_url() const { return server_->base_url(); }

std::string RunningControlPlane::base_url() const {
  return root_url() + fake_->options().base_path;
}

const std::string& RunningControlPlane::server_ca_pem() const { return server_ca_->cert_pem(); }

}  // namespace cakewalk::testing
