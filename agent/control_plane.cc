#include "agent/control_plane.h"

#include <algorithm>
#include <set>
#include <utility>

#include "base/clock.h"
#include "base/encoding.h"
#include "base/json.h"

namespace cakewalk::agent {
namespace {

// A claim's request timeout is its wait plus this margin (docs/protocol.md §6: at least 30 s).
constexpr std::chrono::seconds kClaimTimeoutMargin{30};
// Retry-After values are honoured up to this (docs/protocol.md §2).
constexpr std::chrono::seconds kRetryAfterCap{15 * 60};
// Server-provided text quoted in messages is cut to this many bytes.
constexpr std::size_t kMaxQuotedBytes = 300;

// Server text for a message: printable ASCII kept, anything else replaced, length capped.
std::string Quote(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, kMaxQuotedBytes)) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u >= 0x20 && u < 0x7f ? c : '?');
  }
  if (text.size() > kMaxQuotedBytes) out += "...";
  return out;
}

std::string StatusLine(const std::string& what, const http::Response& r) {
  return what + ": the control plane answered HTTP " + std::to_string(r.status);
}

// The server's {"error": {"code", "message"}} as " code: message", or a note on what came
// instead.
std::string ErrorDetail(const http::Response& r) {
  auto parsed = ParseJson(r.body, "error body", 64 * 1024);
  if (parsed.ok() && parsed->isObject()) {
    const Json::Value& e = (*parsed)["error"];
    if (e.isObject() && e["code"].isString()) {
      std::string s = " " + Quote(e["code"].asString());
      if (e["message"].isString()) s += ": " + Quote(e["message"].asString());
      return s;
    }
  }
  const std::string type = r.Header("content-type").value_or("no content type");
  return " (without the control plane's error body; got " + std::to_string(r.body.size()) +
         " bytes of " + Quote(type) + ")";
}

// The Status for a non-2xx answer, with the reason mapping documented in the header.
Status ErrorFor(const std::string& what, const http::Response& r) {
  const std::string message = StatusLine(what, r) + ErrorDetail(r);
  const long s = r.status;
  if (s == 409) return Status(Code::kAborted, message, cp_reason::kConflict);
  if (s == 401) return Status(Code::kUnauthenticated, message, cp_reason::kIdentityRejected);
  if (s == 403) return Status(Code::kPermissionDenied, message, cp_reason::kIdentityRejected);
  if (s == 429 || s == 503) {
    Status st(s == 429 ? Code::kResourceExhausted : Code::kUnavailable, message,
              cp_reason::kRateLimited);
    if (auto value = r.Header("retry-after")) {
      const SysTime now = r.server_date.value_or(SystemClock().Now());
      if (auto delay = ParseRetryAfter(*value, now, kRetryAfterCap)) {
        st = st.WithRetryAfter(std::chrono::duration_cast<std::chrono::milliseconds>(*delay));
      }
    }
    return st;
  }
  if (s >= 500) return Status(Code::kUnavailable, message, cp_reason::kServerError);
  if (s == 404) return Status(Code::kNotFound, message, cp_reason::kRequestRejected);
  if (s == 400 || s == 422) {
    return Status(Code::kInvalidArgument, message, cp_reason::kRequestRejected);
  }
  // Anything else (1xx, 3xx — redirects are never followed —, other 4xx) is not part of the
  // protocol: treat it as a broken server.
  return Status(Code::kUnavailable, message + " (not a status the protocol uses)",
                cp_reason::kServerError);
}

// A 2xx whose body is not the documented JSON.
Status Malformed(const std::string& what, const Status& problem) {
  return Status(
      Code::kUnavailable,
      what + ": the control plane's answer is not the documented JSON: " + problem.message(),
      cp_reason::kServerError);
}

std::string OutcomeName(JobResult::Outcome o) {
  switch (o) {
    case JobResult::Outcome::kSucceeded:
      return "succeeded";
    case JobResult::Outcome::kFailed:
      return "failed";
    case JobResult::Outcome::kRejected:
      return "rejected";
  }
  return "failed";
}

Result<std::vector<SigningKey>> ParseKeySet(JsonFields& f, std::string_view key) {
  const Json::Value* keys = f.Array(key, JsonFields::kRequired);
  std::vector<SigningKey> out;
  std::set<std::string> kids;
  if (keys != nullptr) {
    for (Json::ArrayIndex i = 0; i < keys->size(); ++i) {
      auto k = ParseSigningKey((*keys)[i], f.ChildPath(key) + "[" + std::to_string(i) + "]");
      if (!k.ok()) {
        f.Merge(k.status());
        break;
      }
      if (!kids.insert(k->kid).second) {
        f.Fail(std::string(key) + "[" + std::to_string(i) + "]",
               "repeats the kid '" + Quote(k->kid) + "'");
        break;
      }
      out.push_back(std::move(k).value());
    }
  }
  CW_RETURN_IF_ERROR(f.FinishAllowingUnknown());
  return out;
}

}  // namespace

Result<SigningKey> ParseSigningKey(const Json::Value& jwk, const std::string& path) {
  if (!jwk.isObject()) {
    return InvalidArgument(path + ": expected a JWK object, found " +
                           std::string(JsonTypeName(jwk)));
  }
  JsonFields f(jwk, path);
  const std::string kty = f.String("kty", JsonFields::kRequired);
  const std::string crv = f.String("crv", JsonFields::kRequired);
  SigningKey key;
  key.kid = f.String("kid", JsonFields::kRequired);
  const std::string x = f.String("x", JsonFields::kRequired);
  // Optional members a JWK may carry; when present they must agree with an Ed25519 signing key.
  const auto alg = f.OptionalString("alg");
  const auto use = f.OptionalString("use");
  if (f.ok() && kty != "OKP")
    f.Fail("kty", "must be \"OKP\" (an Ed25519 key), found \"" + Quote(kty) + "\"");
  if (f.ok() && crv != "Ed25519")
    f.Fail("crv", "must be \"Ed25519\", found \"" + Quote(crv) + "\"");
  if (f.ok() && (key.kid.empty() || key.kid.size() > 200))
    f.Fail("kid", "must be 1 to 200 characters");
  if (f.ok() && alg && *alg != "EdDSA") f.Fail("alg", "must be \"EdDSA\" when present");
  if (f.ok() && use && *use != "sig") f.Fail("use", "must be \"sig\" when present");
  if (f.ok()) {
    auto bytes = Base64UrlDecode(x);
    if (!bytes.ok()) {
      f.Fail("x", "is not base64url without padding");
    } else if (bytes->size() != 32) {
      f.Fail("x", "must encode 32 bytes, found " + std::to_string(bytes->size()));
    } else {
      key.public_key = std::move(bytes).value();
    }
  }
  CW_RETURN_IF_ERROR(f.FinishAllowingUnknown());
  return key;
}

namespace {

// One request to the control plane: a non-2xx answer becomes ErrorFor; transport failures pass
// through with their reason and `what` as context.
Result<http::Response> Exchange(http::Transport& transport, const std::string& what,
                                http::Request request) {
  auto response = transport.Send(request);
  if (!response.ok()) return response.status().WithContext(what);
  if (!response->ok()) return ErrorFor(what, *response);
  return response;
}

Result<Json::Value> ObjectBody(const std::string& what, const http::Response& r) {
  auto body = ParseJson(r.body, "response body");
  if (!body.ok()) return Malformed(what, body.status());
  if (!body->isObject()) {
    return Malformed(
        what, InvalidArgument("expected a JSON object, found " + std::string(JsonTypeName(*body))));
  }
  return body;
}

http::Request Post(std::string url, const Json::Value& body) {
  http::Request r;
  r.method = "POST";
  r.url = std::move(url);
  r.body = WriteJson(body);
  return r;
}

std::string JobPath(const std::string& job_id, std::string_view tail) {
  return "/jobs/" + UrlEncode(job_id) + "/" + std::string(tail);
}

}  // namespace

ControlPlaneClient::ControlPlaneClient(http::Transport& transport, std::string base_url)
    : transport_(transport), base_url_(std::move(base_url)) {
  while (!base_url_.empty() && base_url_.back() == '/') base_url_.pop_back();
}

Result<EnrollResponse> ControlPlaneClient::Enroll(const SecretBytes& enrollment_token,
                                                  const EnrollRequest& request) {
  const std::string what = "enrollment (POST /enroll)";
  const std::string_view token = enrollment_token.RevealString(SecretAccess::Grant());
  if (token.empty() || !std::all_of(token.begin(), token.end(), [](char c) {
        return static_cast<unsigned char>(c) > 0x20 && static_cast<unsigned char>(c) < 0x7f;
      })) {
    return InvalidArgument(what +
                           ": the enrollment token is empty or contains characters that cannot "
                           "be sent (spaces, control characters or non-ASCII)");
  }
  Json::Value body(Json::objectValue);
  body["csr"] = request.csr_pem;
  body["hostname"] = request.hostname;
  body["agent_version"] = request.agent_version;
  Json::Value t(Json::objectValue);
  t["manufacturer"] = request.token.manufacturer;
  t["model"] = request.token.model;
  t["serial"] = request.token.serial;
  t["label"] = request.token.label;
  body["token"] = t;
  http::Request req = Post(base_url_ + "/enroll", body);
  req.authorization = SecretBytes::CopyOf(std::string_view("Bearer "));
  req.authorization.Append(enrollment_token);

  CW_ASSIGN_OR_RETURN(http::Response response, Exchange(transport_, what, std::move(req)));
  CW_ASSIGN_OR_RETURN(Json::Value root, ObjectBody(what, response));
  JsonFields f(root, "$");
  EnrollResponse out;
  out.agent_id = f.String("agent_id", JsonFields::kRequired);
  out.certificate_chain_pem = f.String("certificate_chain", JsonFields::kRequired);
  out.poll_wait_seconds =
      static_cast<int>(f.Int("poll_wait_seconds", 0, 0, 60, JsonFields::kRequired));
  if (f.ok() && out.agent_id.empty()) f.Fail("agent_id", "is empty");
  auto keys = ParseKeySet(f, "job_signing_keys");
  if (!keys.ok()) return Malformed(what, keys.status());
  out.signing_keys = std::move(keys).value();
  return out;
}

Result<std::string> ControlPlaneClient::RenewCertificate(const std::string& csr_pem) {
  const std::string what = "certificate renewal (POST /certificate)";
  Json::Value body(Json::objectValue);
  body["csr"] = csr_pem;
  CW_ASSIGN_OR_RETURN(http::Response response,
                      Exchange(transport_, what, Post(base_url_ + "/certificate", body)));
  CW_ASSIGN_OR_RETURN(Json::Value root, ObjectBody(what, response));
  JsonFields f(root, "$");
  std::string chain = f.String("certificate_chain", JsonFields::kRequired);
  if (f.ok() && chain.empty()) f.Fail("certificate_chain", "is empty");
  if (Status s = f.FinishAllowingUnknown(); !s.ok()) return Malformed(what, s);
  return chain;
}

Result<std::vector<SigningKey>> ControlPlaneClient::SigningKeys() {
  const std::string what = "job-signing keys (GET /signing-keys)";
  http::Request req;
  req.url = base_url_ + "/signing-keys";
  CW_ASSIGN_OR_RETURN(http::Response response, Exchange(transport_, what, std::move(req)));
  CW_ASSIGN_OR_RETURN(Json::Value root, ObjectBody(what, response));
  JsonFields f(root, "$");
  auto keys = ParseKeySet(f, "job_signing_keys");
  if (!keys.ok()) return Malformed(what, keys.status());
  return keys;
}

Result<std::vector<ClaimedJob>> ControlPlaneClient::Claim(int max_jobs, int wait_seconds,
                                                          std::stop_token cancel) {
  const std::string what = "claim (POST /jobs/claim)";
  if (max_jobs < 1 || max_jobs > 100 || wait_seconds < 0 || wait_seconds > 60) {
    return InvalidArgument(what + ": max_jobs must be 1..100 and wait_seconds 0..60, got " +
                           std::to_string(max_jobs) + " and " + std::to_string(wait_seconds));
  }
  Json::Value body(Json::objectValue);
  body["max_jobs"] = max_jobs;
  body["wait_seconds"] = wait_seconds;
  http::Request req = Post(base_url_ + "/jobs/claim", body);
  req.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::seconds(wait_seconds) + kClaimTimeoutMargin);
  req.cancel = std::move(cancel);
  CW_ASSIGN_OR_RETURN(http::Response response, Exchange(transport_, what, std::move(req)));
  CW_ASSIGN_OR_RETURN(Json::Value root, ObjectBody(what, response));
  JsonFields f(root, "$");
  std::vector<ClaimedJob> jobs;
  if (const Json::Value* list = f.Array("jobs", JsonFields::kRequired); list != nullptr) {
    if (list->size() > static_cast<Json::ArrayIndex>(max_jobs)) {
      f.Fail("jobs", "holds " + std::to_string(list->size()) + " jobs, more than the " +
                         std::to_string(max_jobs) + " asked for");
    }
    for (Json::ArrayIndex i = 0; f.ok() && i < list->size(); ++i) {
      const std::string path = f.ChildPath("jobs") + "[" + std::to_string(i) + "]";
      const Json::Value& item = (*list)[i];
      if (!item.isObject()) {
        f.Merge(InvalidArgument(path + ": expected an object, found " +
                                std::string(JsonTypeName(item))));
        break;
      }
      JsonFields j(item, path);
      ClaimedJob job;
      job.jws = j.String("jws", JsonFields::kRequired);
      job.lease_id = j.String("lease_id", JsonFields::kRequired);
      const std::string expires = j.String("lease_expires_at", JsonFields::kRequired);
      if (j.ok() && job.jws.empty()) j.Fail("jws", "is empty");
      if (j.ok() && job.lease_id.empty()) j.Fail("lease_id", "is empty");
      if (j.ok()) {
        auto t = ParseRfc3339(expires);
        if (!t.ok()) {
          j.Fail("lease_expires_at", "is not an RFC 3339 time");
        } else {
          job.lease_expires_at = *t;
        }
      }
      f.Merge(j.FinishAllowingUnknown());
      jobs.push_back(std::move(job));
    }
  }
  if (Status s = f.FinishAllowingUnknown(); !s.ok()) return Malformed(what, s);
  return jobs;
}

Result<SysTime> ControlPlaneClient::ExtendLease(const std::string& job_id,
                                                const std::string& lease_id) {
  const std::string what = "lease extension of job " + Quote(job_id);
  Json::Value body(Json::objectValue);
  body["lease_id"] = lease_id;
  CW_ASSIGN_OR_RETURN(http::Response response,
                      Exchange(transport_, what, Post(base_url_ + JobPath(job_id, "lease"), body)));
  CW_ASSIGN_OR_RETURN(Json::Value root, ObjectBody(what, response));
  JsonFields f(root, "$");
  const std::string expires = f.String("lease_expires_at", JsonFields::kRequired);
  SysTime at;
  if (f.ok()) {
    auto t = ParseRfc3339(expires);
    if (!t.ok()) {
      f.Fail("lease_expires_at", "is not an RFC 3339 time");
    } else {
      at = *t;
    }
  }
  if (Status s = f.FinishAllowingUnknown(); !s.ok()) return Malformed(what, s);
  return at;
}

Status ControlPlaneClient::PostRecordTexts(const std::string& job_id, const std::string& lease_id,
                                           std::int64_t seq,
                                           const std::vector<std::string>& records) {
  const std::string what = "records of job " + Quote(job_id) + " (seq " + std::to_string(seq) + ")";
  // WriteJson's form of {"lease_id", "records", "seq"}: keys in byte order, no spaces.
  const std::string prefix = "{\"lease_id\":" + WriteJson(Json::Value(lease_id)) + ",\"records\":[";
  const std::string suffix = "],\"seq\":" + std::to_string(seq) + "}";
  std::size_t size = prefix.size() + suffix.size() + records.size();
  for (const std::string& r : records) {
    if (r.size() < 2 || r.front() != '{' || r.back() != '}') {
      return InvalidArgument(what + ": each record must be a JSON object");
    }
    size += r.size();
  }
  http::Request request;
  request.method = "POST";
  request.url = base_url_ + JobPath(job_id, "records");
  request.body.reserve(size);
  request.body += prefix;
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (i > 0) request.body += ',';
    request.body += records[i];
  }
  request.body += suffix;
  CW_ASSIGN_OR_RETURN(http::Response response, Exchange(transport_, what, std::move(request)));
  CW_ASSIGN_OR_RETURN(Json::Value root, ObjectBody(what, response));
  (void)root;  // {} — anything the server adds is tolerated
  return Status::Ok();
}

Status ControlPlaneClient::PostResult(const std::string& job_id, const JobResult& result) {
  const std::string what = "result of job " + Quote(job_id);
  Json::Value body(Json::objectValue);
  body["lease_id"] = result.lease_id;
  body["status"] = OutcomeName(result.outcome);
  body["started_at"] = FormatRfc3339(result.started_at);
  body["finished_at"] = FormatRfc3339(result.finished_at);
  if (result.outcome == JobResult::Outcome::kSucceeded) {
    body["output"] = result.output.isNull() ? Json::Value(Json::objectValue) : result.output;
  } else {
    Json::Value e(Json::objectValue);
    e["code"] = result.error.code;
    e["message"] = result.error.message;
    e["retryable"] = result.error.retryable;
    body["error"] = e;
  }
  CW_ASSIGN_OR_RETURN(
      http::Response response,
      Exchange(transport_, what, Post(base_url_ + JobPath(job_id, "result"), body)));
  CW_ASSIGN_OR_RETURN(Json::Value root, ObjectBody(what, response));
  (void)root;
  return Status::Ok();
}

Result<HeartbeatResponse> ControlPlaneClient::Heartbeat(const Json::Value& body) {
  const std::string what = "heartbeat (POST /heartbeat)";
  if (!body.isObject()) return InvalidArgument(what + ": the body must be a JSON object");
  CW_ASSIGN_OR_RETURN(http::Response response,
                      Exchange(transport_, what, Post(base_url_ + "/heartbeat", body)));
  CW_ASSIGN_OR_RETURN(Json::Value root, ObjectBody(what, response));
  JsonFields f(root, "$");
  HeartbeatResponse out;
  out.renew_certificate = f.Bool("renew_certificate", false, JsonFields::kRequired);
  if (Status s = f.FinishAllowingUnknown(); !s.ok()) return Malformed(what, s);
  return out;
}

}  // namespace cakewalk::agent
