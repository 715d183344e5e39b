// A FakeControlPlane served over HTTPS by FakeHttpsServer on 127.0.0.1, ready for an agent:
// the server certificate ("localhost", 127.0.0.1) comes from a fresh test CA, client certificates
// are verified against the fake's agent CA when presented (enrollment has none yet).
//
//   auto cp = RunningControlPlane::Start();
//   ASSERT_TRUE(cp.ok()) << cp.status().ToString();
//   config.control_plane.url = (*cp)->base_url();        // https://localhost:<port>/agent/v1
//   WriteFile(dir / "cp-ca.pem", (*cp)->server_ca_pem());  // control_plane.ca_file
//   std::string token = (*cp)->fake().NewEnrollmentToken();
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"
#include "tests/fakes/control_plane/fake_control_plane.h"
#include "tests/fakes/https_server.h"

namespace cakewalk::testing {

class TestCa;

struct RunningControlPlaneOptions {
  FakeControlPlaneOptions control_plane;
  std::uint16_t port = 0;  // 0: ephemeral
};

class RunningControlPlane {
 public:
  static Result<std::unique_ptr<RunningControlPlane>> Start(
      RunningControlPlaneOptions options = {});
  // Releases held long polls, then stops the server.
  ~RunningControlPlane();

  FakeControlPlane& fake() { return *fake_; }
  FakeHttpsServer& server() { return *server_; }
  std::uint16_t port() const;
  // "https://localhost:<port>" + base path.
  std::string base_url() const;
  // "https://localhost:<port>" (the admin API lives under /_fake/ there).
  std::string root_url() const;
  // The CA that signed the server certificate: the agent's control_plane.ca_file.
  const std::string& server_ca_pem() const;
  // The server's certificate (leaf), e.g. for SPKI pins.
  const std::string& server_cert_pem() const { return server_cert_pem_; }

 private:
  RunningControlPlane() = default;

  std::unique_ptr<TestCa> server_ca_;
  std::string server_cert_pem_;
  std::unique_ptr<FakeControlPlane> fake_;
  std::unique_ptr<FakeHttpsServer> server_;
};

}  // namespace cakewalk::testing
