// ServedJira: a FakeJira behind FakeHttpsServer on 127.0.0.1 with a certificate ("localhost",
// 127.0.0.1) from a fresh run-time test CA, for tests that reach the fake over real TLS. The CA's
// certificate (ca_pem()) is what a client trusts; nothing is written to disk.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "tests/fakes/https_server.h"
#include "tests/fakes/jira/fake_jira.h"
#include "tests/support/pki.h"

namespace cakewalk::testing {

class ServedJira {
 public:
  // Answers every request instead of the fake's Handle: it may record the request, answer some
  // itself, or call jira.Handle(request) and look at the answer. Called on the server's connection
  // threads, so it must be thread-safe, and whatever it uses must outlive the ServedJira.
  using Wrapper = std::function<HttpResponse(const HttpRequest& request, FakeJira& jira)>;

  // The fake with `options`, served; without `wrapper` the fake answers every request.
  static Result<std::unique_ptr<ServedJira>> Start(FakeJiraOptions options = {},
                                                   Wrapper wrapper = {});
  ServedJira(const ServedJira&) = delete;
  ServedJira& operator=(const ServedJira&) = delete;

  FakeJira& jira() { return *jira_; }
  const FakeJira& jira() const { return *jira_; }
  // "https://localhost:<port>".
  std::string base_url() const { return server_->base_url(); }
  // The test CA's certificate (PEM), the one trust anchor of the server's certificate.
  const std::string& ca_pem() const { return ca_->cert_pem(); }
  // Every request the server received, in order of arrival.
  std::vector<HttpRequest> requests() const { return server_->requests(); }
  // Transport-level control: QueueFault, ClearRequests, DropConnections, Stop...
  FakeHttpsServer& server() { return *server_; }
  const FakeHttpsServer& server() const { return *server_; }

 private:
  ServedJira() = default;
  std::unique_ptr<TestCa> ca_;
  std::unique_ptr<FakeJira> jira_;
  std::unique_ptr<FakeHttpsServer> server_;  // last: stopped before the fake goes
};

}  // namespace cakewalk::testing
