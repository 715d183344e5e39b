#include "tests/fakes/control_plane/https_client.h"

#include <curl/curl.h>

#include <mutex>

#include "base/c_free.h"
#include "base/json.h"

namespace cakewalk::testing {
namespace {

using CurlPtr = CPtr<CURL, curl_easy_cleanup>;
using SlistPtr = CPtr<curl_slist, curl_slist_free_all>;

size_t OnBody(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  auto* headers = static_cast<std::vector<std::pair<std::string, std::string>>*>(user);
  std::string line(data, size * count);
  const auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (char& c : name) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ')) value.erase(0, 1);
    while (!value.empty() &&
           (value.back() == '\n' || value.back() == '\r' || value.back() == ' ')) {
      value.pop_back();
    }
    headers->emplace_back(std::move(name), std::move(value));
  }
  return size * count;
}

curl_blob Blob(const std::string& s) {
  return curl_blob{const_cast<char*>(s.data()), s.size(), CURL_BLOB_COPY};
}

}  // namespace

std::string ClientResponse::Header(const std::string& lower_name) const {
  for (const auto& [n, v] : headers) {
    if (n == lower_name) return v;
  }
  return {};
}

Json::Value ClientResponse::Json() const {
  auto v = ParseJson(body, "response");
  return v.ok() ? *v : Json::Value();
}

HttpsClient::HttpsClient(std::string ca_pem, std::string cert_pem, std::string key_pem)
    : ca_pem_(std::move(ca_pem)), cert_pem_(std::move(cert_pem)), key_pem_(std::move(key_pem)) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

ClientResponse HttpsClient::Request(const std::string& method, const std::string& url,
                                    const std::string& body, std::vector<std::string> extra_headers,
                                    std::chrono::milliseconds timeout) const {
  ClientResponse out;
  CurlPtr curl(curl_easy_init());
  char error[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_PROXY, "");
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_blob ca = Blob(ca_pem_);
  curl_easy_setopt(curl.get(), CURLOPT_CAINFO_BLOB, &ca);
  curl_easy_setopt(curl.get(), CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_SSL_VERIFYHOST, 2L);
  curl_blob cert = Blob(cert_pem_);
  curl_blob key = Blob(key_pem_);
  if (!cert_pem_.empty()) {
    curl_easy_setopt(curl.get(), CURLOPT_SSLCERT_BLOB, &cert);
    curl_easy_setopt(curl.get(), CURLOPT_SSLCERTTYPE, "PEM");
    curl_easy_setopt(curl.get(), CURLOPT_SSLKEY_BLOB, &key);
    curl_easy_setopt(curl.get(), CURLOPT_SSLKEYTYPE, "PEM");
  }
  curl_easy_setopt(curl.get(), CURLOPT_CUSTOMREQUEST, method.c_str());
  SlistPtr headers;
  if (method == "POST") {
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    extra_headers.push_back("Content-Type: application/json");
  }
  for (const auto& h : extra_headers)
    headers.reset(curl_slist_append(headers.release(), h.c_str()));
  curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &out.body);
  curl_easy_setopt(curl.get(), CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(curl.get(), CURLOPT_HEADERDATA, &out.headers);
  const CURLcode rc = curl_easy_perform(curl.get());
  out.curl_code = static_cast<int>(rc);
  out.curl_error = error[0] != '\0' ? error : curl_easy_strerror(rc);
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &out.status);
  return out;
}

ClientResponse HttpsClient::Post(const std::string& url, const Json::Value& body,
                                 std::vector<std::string> extra_headers) const {
  return Request("POST", url, WriteJson(body), std::move(extra_headers));
}

}  // namespace cakewalk::testing
