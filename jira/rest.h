// RestClient: one Jira (or Atlassian) REST base URL, spoken through an http::Transport.
//
// - URLs are built from the configured base plus path segments and query values, each
//   percent-encoded (UrlEncode): a name like "a&b/../x" stays one segment or one value.
// - Credentials come from an Authenticator (jira/auth.h); a call without one is anonymous
//   (serverInfo, logins, token endpoints).
// - Every response is checked for the ways Jira says "not logged in" without a 401: an anonymous
//   200 with X-Seraph-LoginReason: AUTHENTICATED_FAILED, X-AUSERNAME: anonymous on a request that
//   carried credentials, and the CAPTCHA denial (X-Authentication-Denied-Reason).
// - 429 and 503 (and 409 where the call says it means "took too long") are retried after the
//   server's Retry-After / X-RateLimit-Reset, else after an exponential wait with full jitter,
//   bounded by RetryPolicy; then the call fails with rate_limited / jira_unavailable (retryable)
//   carrying Status::retry_after(). Other 5xx answers, HTML where JSON was due and transport
//   failures are jira_unavailable; GETs are retried after those as well, other methods never
//   (Jira may have acted on them).
// - Every wait goes through the Sleeper and stops when the stop_token is requested.
// - The clock skew to Jira is measured from each Date header against the injected Clock.
#pragma once

#include <json/json.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/clock.h"
#include "base/secret.h"
#include "base/status.h"
#include "jira/http.h"
#include "jira/retry.h"

namespace cakewalk::jira {

// Time, waiting and retry bounds shared by everything one connection does.
struct Runtime {
  const Clock* clock = nullptr;  // never null once built
  Sleeper* sleeper = nullptr;
  RandomUnit random;
  RetryPolicy retry;

  static Runtime Default();
};

// Jira's clock minus ours, from the most recent Date header.
class SkewTracker {
 public:
  void Record(std::optional<SysTime> server_date, SysTime local_now);
  std::optional<std::chrono::seconds> skew() const;

 private:
  mutable std::mutex mu_;
  std::optional<std::chrono::seconds> skew_;
};

struct RestCall {
  std::string method = "GET";
  std::vector<std::string> path;                           // appended to the base, encoded
  std::vector<std::pair<std::string, std::string>> query;  // values encoded
  std::optional<Json::Value> json;                         // request body
  SecretBytes secret_body;          // a body carrying a secret (logins, token requests)
  std::string content_type;         // of secret_body; default application/json
  bool sensitive_response = false;  // the answer carries a secret: not parsed, wiped
  bool retry_conflict = false;      // 409 means "took too long": retry like a 429
  // A successful answer's body is left unparsed (reply.json null; still refused when it is not
  // JSON): for big pages that the caller parses piece by piece instead of as one tree.
  bool unparsed_success = false;
  std::vector<http::Header> headers;
};

struct RestReply {
  long status = 0;
  Json::Value json;  // the parsed body (null when empty, not JSON, or sensitive)
  http::Response response;

  bool ok() const { return status >= 200 && status < 300; }
  // Jira's own words from an error body (errorMessages, errors, message, error_description),
  // joined and bounded; "" when there are none. Never contains what we sent.
  std::string ErrorText() const;
};

class Authenticator {
 public:
  virtual ~Authenticator() = default;
  // Adds credentials to `request`, logging in first when there is no live session. Returns an
  // opaque generation for Renew().
  virtual Result<std::uint64_t> Apply(http::Request& request, std::stop_token stop) = 0;
  // Jira did not accept what Apply added. True when fresh credentials may help (a session or an
  // access token that expired): the call is then sent once more.
  virtual bool Renew(std::uint64_t generation) = 0;
  // The failure to report once Jira refused the credentials.
  virtual Status Refused(const http::Response& response, std::string_view what) = 0;
  // Cookie-based: non-GET requests then carry X-Atlassian-Token: no-check (the XSRF check).
  virtual bool cookies() const { return false; }
};

class RestClient {
 public:
  // `base` is an https:// URL without a trailing slash, from configuration only.
  RestClient(std::shared_ptr<http::Transport> transport, std::string base, Runtime runtime,
             std::shared_ptr<SkewTracker> skew);

  const std::string& base() const { return base_; }
  const Runtime& runtime() const { return runtime_; }
  SkewTracker& skew() { return *skew_; }
  http::Transport& transport() { return *transport_; }

  // The absolute URL of a call.
  std::string Url(const RestCall& call) const;

  // Sends `call` (retrying as described above). A reply is returned for every HTTP status the
  // caller must interpret (2xx, 4xx); `what` names the operation in messages ("GET user").
  Result<RestReply> Execute(const RestCall& call, Authenticator* auth, std::stop_token stop,
                            std::string_view what);

 private:
  std::shared_ptr<http::Transport> transport_;
  std::string base_;
  Runtime runtime_;
  std::shared_ptr<SkewTracker> skew_;
};

// The status for an unexpected answer: 400 → invalid_params (licence messages →
// license_exceeded), 401 → auth_failed, 403 → not_admin (IdP-managed refusals →
// unsupported_by_jira_version), 404 → internal, else internal; with Jira's own words.
Status UnexpectedReply(const RestReply& reply, std::string_view what);
// True when Jira's words say a licence or seat limit was hit.
bool MentionsLicenceLimit(const RestReply& reply);

}  // namespace cakewalk::jira
