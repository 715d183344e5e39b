// A minimal libcurl client for the fake control plane's own network tests (independent of the
// agent's transport): TLS verified against a given CA, optional client certificate from PEM.
#pragma once

#include <json/json.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace cakewalk::testing {

struct ClientResponse {
  int curl_code = 0;  // CURLcode; 0 when an HTTP answer arrived
  std::string curl_error;
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;

  std::string Header(const std::string& lower_name) const;
  Json::Value Json() const;  // null when the body is not JSON
};

class HttpsClient {
 public:
  // `ca_pem`: the server's CA. `cert_pem`/`key_pem`: a client identity, or empty for none.
  explicit HttpsClient(std::string ca_pem, std::string cert_pem = {}, std::string key_pem = {});

  ClientResponse Request(const std::string& method, const std::string& url,
                         const std::string& body = {}, std::vector<std::string> extra_headers = {},
                         std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;
  ClientResponse Get(const std::string& url) const { return Request("GET", url); }
  ClientResponse Post(const std::string& url, const Json::Value& body,
                      std::vector<std::string> extra_headers = {}) const;

 private:
  std::string ca_pem_;
  std::string cert_pem_;
  std::string key_pem_;
};

}  // namespace cakewalk::testing
