#include "tests/fakes/control_plane/fake_control_plane.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <utility>

#include "base/c_free.h"
#include "base/encoding.h"
#include "base/json.h"
#include "tests/fakes/control_plane/admin_api.h"
#include "tests/fakes/control_plane/wire.h"
#include "tests/support/canary.h"
#include "tests/support/pki.h"

namespace cakewalk::testing {
namespace {

using X509Ptr = CPtr<X509, X509_free>;
using X509ReqPtr = CPtr<X509_REQ, X509_REQ_free>;
using EvpPkey = CPtr<EVP_PKEY, EVP_PKEY_free>;
using BioPtr = CPtr<BIO, BIO_free>;
using Sha256 = std::array<std::uint8_t, 32>;

constexpr std::string_view kIssuer = "cakewalk";
constexpr std::string_view kWrongAudience = "agt_someone_else";
constexpr std::string_view kUnknownType = "jira.no_such_job_type";
constexpr std::string_view kUnknownConnection = "no-such-connection";
constexpr std::chrono::milliseconds kPollSlice{50};

struct EndpointEntry {
  Endpoint endpoint;
  std::string_view name;
};
constexpr std::array<EndpointEntry, 10> kEndpoints = {{
    {Endpoint::kEnroll, "enroll"},
    {Endpoint::kCertificate, "certificate"},
    {Endpoint::kSigningKeys, "signing-keys"},
    {Endpoint::kHeartbeat, "heartbeat"},
    {Endpoint::kClaim, "jobs/claim"},
    {Endpoint::kLease, "jobs/lease"},
    {Endpoint::kRecords, "jobs/records"},
    {Endpoint::kResult, "jobs/result"},
    {Endpoint::kAdmin, "_fake"},
    {Endpoint::kUnknown, "unknown"},
}};

struct FaultKindEntry {
  ControlPlaneFault::Kind kind;
  std::string_view name;
};
constexpr std::array<FaultKindEntry, 7> kFaultKinds = {{
    {ControlPlaneFault::Kind::kStatus, "status"},
    {ControlPlaneFault::Kind::kHtmlPage, "html"},
    {ControlPlaneFault::Kind::kMalformedJson, "malformed_json"},
    {ControlPlaneFault::Kind::kResetBeforeHeaders, "reset"},
    {ControlPlaneFault::Kind::kTruncateBody, "truncate"},
    {ControlPlaneFault::Kind::kDelay, "delay"},
    {ControlPlaneFault::Kind::kStall, "stall"},
}};

Sha256 Sha256Of(std::string_view data) {
  Sha256 out{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr) != 1) {
    out.fill(0);
  }
  return out;
}

std::string HexSha256(std::string_view data) { return HexEncode(Sha256Of(data)); }

// Hex SHA-256 of the key's DER SubjectPublicKeyInfo.
std::string SpkiHash(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(key, &der);
  if (len <= 0) return {};
  std::string h = HexSha256(
      std::string_view(reinterpret_cast<const char*>(der), static_cast<std::size_t>(len)));
  OPENSSL_free(der);
  return h;
}

std::string Pad(std::uint64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%06llu", static_cast<unsigned long long>(n));
  return buf;
}

std::int64_t UnixSeconds(SysTime t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// The result body without its lease id: what "the same result" compares.
std::string ResultContent(const Json::Value& body) {
  Json::Value copy = body;
  copy.removeMember("lease_id");
  return WriteJson(copy);
}

// A PKCS#10 request whose self-signature verifies and whose key the protocol allows.
struct ParsedCsr {
  std::string spki_sha256;
};
Result<ParsedCsr> CheckCsr(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (bio == nullptr) return Internal("BIO_new_mem_buf failed");
  X509ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (req == nullptr) {
    return Status(Code::kFailedPrecondition, "$.csr is not a PEM certificate request",
                  "invalid_csr");
  }
  EVP_PKEY* key = X509_REQ_get0_pubkey(req.get());
  if (key == nullptr || X509_REQ_verify(req.get(), key) != 1) {
    return Status(Code::kFailedPrecondition, "$.csr: the self-signature does not verify",
                  "invalid_csr");
  }
  const int id = EVP_PKEY_get_base_id(key);
  bool allowed = false;
  if (id == EVP_PKEY_EC) {
    char group[64] = {};
    std::size_t len = 0;
    allowed = EVP_PKEY_get_group_name(key, group, sizeof group, &len) == 1 &&
              std::string_view(group, len) == "prime256v1";
  } else if (id == EVP_PKEY_RSA) {
    allowed = EVP_PKEY_get_bits(key) >= 3072;
  }
  if (!allowed) {
    return Status(Code::kFailedPrecondition,
                  "$.csr: the key must be EC P-256 or RSA of at least 3072 bits",
                  "unsupported_key");
  }
  return ParsedCsr{SpkiHash(key)};
}

struct Route {
  Endpoint endpoint = Endpoint::kUnknown;
  std::string job_id;
  std::string method;  // the method the route accepts
};

Route RouteOf(std::string_view base_path, std::string_view path) {
  Route r;
  if (StartsWith(path, "/_fake/")) {
    r.endpoint = Endpoint::kAdmin;
    return r;
  }
  if (!StartsWith(path, std::string(base_path) + "/")) return r;
  std::string_view rel = path.substr(base_path.size());
  struct Fixed {
    std::string_view path;
    Endpoint endpoint;
    std::string_view method;
  };
  constexpr std::array<Fixed, 5> kFixed = {{{"/enroll", Endpoint::kEnroll, "POST"},
                                            {"/certificate", Endpoint::kCertificate, "POST"},
                                            {"/signing-keys", Endpoint::kSigningKeys, "GET"},
                                            {"/heartbeat", Endpoint::kHeartbeat, "POST"},
                                            {"/jobs/claim", Endpoint::kClaim, "POST"}}};
  for (const auto& f : kFixed) {
    if (rel == f.path) {
      r.endpoint = f.endpoint;
      r.method = f.method;
      return r;
    }
  }
  if (!StartsWith(rel, "/jobs/")) return r;
  rel.remove_prefix(6);
  const std::size_t slash = rel.find('/');
  if (slash == 0 || slash == std::string_view::npos) return r;
  std::string_view id = rel.substr(0, slash);
  std::string_view action = rel.substr(slash + 1);
  if (action == "lease") {
    r.endpoint = Endpoint::kLease;
  } else if (action == "records") {
    r.endpoint = Endpoint::kRecords;
  } else if (action == "result") {
    r.endpoint = Endpoint::kResult;
  } else {
    return r;
  }
  r.job_id = std::string(id);
  r.method = "POST";
  return r;
}

HttpResponse Err(int status, std::string_view code, std::string_view message) {
  return HttpResponse::Error(status, code, message);
}

HttpResponse ErrFromStatus(const Status& s) {
  return Err(wire::HttpStatusFor(s), s.reason().empty() ? "invalid_request" : s.reason(),
             s.message());
}

HttpResponse FaultResponse(const ControlPlaneFault& fault, HttpResponse real) {
  using Kind = ControlPlaneFault::Kind;
  switch (fault.kind) {
    case Kind::kStatus: {
      std::string_view code = fault.status == 429   ? "rate_limited"
                              : fault.status == 503 ? "unavailable"
                              : fault.status >= 500 ? "internal"
                                                    : "injected";
      HttpResponse r = Err(fault.status, code, "injected by the fake control plane");
      if (fault.retry_after) r.WithHeader("Retry-After", *fault.retry_after);
      return r;
    }
    case Kind::kHtmlPage: {
      HttpResponse r;
      r.status = fault.status;
      r.headers.emplace_back("Content-Type", "text/html; charset=utf-8");
      r.body = "<html><head><title>" + std::to_string(fault.status) +
               " Bad Gateway</title></head><body><h1>Bad Gateway</h1>"
               "<p>The upstream server did not answer.</p></body></html>\n";
      if (fault.retry_after) r.WithHeader("Retry-After", *fault.retry_after);
      return r;
    }
    case Kind::kMalformedJson: {
      HttpResponse r;
      r.status = 200;
      r.headers.emplace_back("Content-Type", "application/json");
      r.body = "{\"jobs\": [{\"jws\": \"eyJ";  // cut off mid-document
      return r;
    }
    case Kind::kResetBeforeHeaders:
      real.fault = Fault{Fault::kResetBeforeHeaders, fault.delay};
      return real;
    case Kind::kTruncateBody:
      real.fault = Fault{Fault::kTruncateBody, fault.delay};
      return real;
    case Kind::kDelay:
      real.fault = Fault{Fault::kDelay, fault.delay};
      return real;
    case Kind::kStall:
      real.fault = Fault{Fault::kStall, fault.delay};
      return real;
  }
  return Err(500, "internal", "unknown fault kind");
}

}  // namespace

std::string_view EndpointName(Endpoint endpoint) noexcept {
  for (const auto& e : kEndpoints) {
    if (e.endpoint == endpoint) return e.name;
  }
  return "unknown";
}

std::optional<Endpoint> ParseEndpoint(std::string_view name) {
  for (const auto& e : kEndpoints) {
    if (e.name == name) return e.endpoint;
  }
  return std::nullopt;
}

std::string_view FaultKindName(ControlPlaneFault::Kind kind) noexcept {
  for (const auto& e : kFaultKinds) {
    if (e.kind == kind) return e.name;
  }
  return "unknown";
}

std::optional<ControlPlaneFault::Kind> ParseFaultKind(std::string_view name) {
  for (const auto& e : kFaultKinds) {
    if (e.name == name) return e.kind;
  }
  return std::nullopt;
}

ControlPlaneFault ControlPlaneFault::Status(int status, std::optional<std::string> retry_after) {
  ControlPlaneFault f;
  f.kind = Kind::kStatus;
  f.status = status;
  f.retry_after = std::move(retry_after);
  return f;
}

ControlPlaneFault ControlPlaneFault::Reset(bool process_request) {
  ControlPlaneFault f;
  f.kind = Kind::kResetBeforeHeaders;
  f.process_request = process_request;
  return f;
}

std::string_view JobStateName(JobState state) noexcept {
  switch (state) {
    case JobState::kQueued:
      return "queued";
    case JobState::kLeased:
      return "leased";
    case JobState::kFinished:
      return "finished";
  }
  return "unknown";
}

std::string_view AgentStatusName(AgentInfo::Status status) noexcept {
  switch (status) {
    case AgentInfo::Status::kActive:
      return "active";
    case AgentInfo::Status::kRevoked:
      return "revoked";
    case AgentInfo::Status::kDeleted:
      return "deleted";
  }
  return "unknown";
}

void RecordTexts::push_back(const Json::Value& record) { texts_.push_back(WriteJson(record)); }

Json::Value RecordTexts::operator[](std::size_t i) const {
  auto parsed = ParseJson(texts_[i], "a stored record");
  return parsed.ok() ? std::move(*parsed) : Json::Value();
}

std::vector<Json::Value> JobInfo::Records() const {
  const std::vector<RecordBatch>* batches = nullptr;
  if (!finishing_lease.empty()) {
    auto it = records_by_lease.find(finishing_lease);
    if (it != records_by_lease.end()) batches = &it->second;
  }
  if (batches == nullptr) {
    for (auto l = leases.rbegin(); l != leases.rend() && batches == nullptr; ++l) {
      auto it = records_by_lease.find(l->lease_id);
      if (it != records_by_lease.end()) batches = &it->second;
    }
  }
  std::vector<Json::Value> out;
  if (batches == nullptr) return out;
  for (const auto& b : *batches) {
    for (const auto& r : b.records) out.push_back(r);
  }
  return out;
}

// ------------------------------------------------------------------------------------------------

class FakeControlPlane::Impl {
 public:
  Impl(Options options, std::unique_ptr<TestCa> ca, EvpPkey ca_key, JobSigningKey first_key,
       JobSigningKey stranger)
      : options_(std::move(options)),
        clock_(options_.clock != nullptr ? *options_.clock : SystemClock()),
        ca_(std::move(ca)),
        ca_key_(std::move(ca_key)),
        stranger_(std::move(stranger)),
        lease_duration_(options_.lease_duration) {
    current_kid_ = first_key.kid();
    signing_keys_.push_back(std::move(first_key));
  }

  HttpResponse Handle(FakeControlPlane& self, const HttpRequest& req);
  void Shutdown();

  const Options& options() const { return options_; }
  const std::string& agent_ca_pem() const { return ca_->cert_pem(); }

  std::string NewEnrollmentToken();
  void AddEnrollmentToken(std::string token);
  Status SetAgentStatus(std::string_view agent_id, AgentInfo::Status status);
  Status RequestCertificateRenewal(std::string_view agent_id);
  Result<std::string> RotateSigningKey();
  Status RetireSigningKey(std::string_view kid);
  std::string current_kid() const;
  Json::Value PublishedJwks() const;
  Result<std::string> EnqueueJob(JobSpec spec);
  Status ExpireLease(std::string_view job_id);
  void SetLeaseDuration(std::chrono::milliseconds d);
  void QueueFault(ControlPlaneFault fault, int count, std::optional<Endpoint> endpoint);
  void ClearFaults();
  int queued_faults() const;
  void AddForbiddenValue(std::string value);

  std::vector<JobInfo> Jobs() const;
  std::optional<JobInfo> Job(std::string_view id) const;
  std::size_t FinishedJobs() const {
    std::lock_guard lock(mu_);
    return finished_jobs_;
  }
  std::vector<AgentInfo> Agents() const;
  std::optional<AgentInfo> Agent(std::string_view id) const;
  std::vector<HeartbeatInfo> Heartbeats() const;
  std::vector<RequestInfo> Requests() const;
  std::vector<Violation> Violations() const;
  int waiting_claims() const;
  ::testing::AssertionResult WaitUntil(const std::function<bool()>& predicate,
                                       std::string_view what, std::chrono::milliseconds timeout);

 private:
  struct Caller {
    std::string agent_id;
    std::string key_sha256;
    SysTime not_after;  // of the presented certificate
  };
  // What a client certificate says, once its signature checked out (see Authenticate).
  struct CheckedCertificate {
    Caller caller;
    SysTime not_before;
  };
  struct TokenEntry {
    Sha256 hash;
    bool used = false;
  };
  struct QueuedFault {
    ControlPlaneFault fault;
    int remaining = 0;
    std::optional<Endpoint> endpoint;
  };

  HttpResponse Dispatch(const HttpRequest& req, const Route& route, RequestInfo& info);
  Result<Caller> Authenticate(const HttpRequest& req, HttpResponse& error);
  HttpResponse Enroll(const HttpRequest& req, const Json::Value& body);
  HttpResponse Renew(const Caller& caller, const Json::Value& body);
  HttpResponse SigningKeys();
  HttpResponse Heartbeat(const Caller& caller, const HttpRequest& req, const Json::Value& body);
  HttpResponse Claim(const Caller& caller, const Json::Value& body);
  HttpResponse ExtendLease(const Caller& caller, const std::string& job_id,
                           const Json::Value& body);
  HttpResponse Records(const Caller& caller, const std::string& job_id, const Json::Value& body);
  HttpResponse PostResult(const Caller& caller, const std::string& job_id, const Json::Value& body);

  // Everything below runs with mu_ held.
  void ChangedLocked() {
    ++generation_;
    changed_.notify_all();
  }
  void EventLocked(const std::string& line) {
    if (options_.event_log) options_.event_log(line);
  }
  void ViolationLocked(std::string agent, std::string job, std::string what) {
    EventLocked("VIOLATION " + (agent.empty() ? std::string() : agent + " ") +
                (job.empty() ? std::string() : job + ": ") + what);
    violations_.push_back({std::move(agent), std::move(job), std::move(what)});
  }
  void ExpireLeasesLocked();
  std::optional<QueuedFault> PopFaultLocked(Endpoint endpoint);
  const JobSigningKey* CurrentKeyLocked() const;
  Json::Value JwksLocked() const;
  // The entry with this URL id whose leases include `lease_id`; sets *any_entry when the id exists.
  JobInfo* FindByLeaseLocked(const std::string& job_id, const std::string& lease_id,
                             LeaseInfo** lease, bool* any_entry);
  JobInfo* FindOriginalLocked(std::string_view job_id);
  Result<std::string> IssueLocked(const std::string& csr_pem, const std::string& agent_id);
  void CheckSyncOutputLocked(JobInfo& job, const std::string& agent_id);

  const Options options_;
  Clock& clock_;
  const std::unique_ptr<TestCa> ca_;
  const EvpPkey ca_key_;          // the agent CA's public key, for checking client certificates
  const JobSigningKey stranger_;  // never published (Forgery::kUnknownKid)

  mutable std::mutex mu_;
  std::condition_variable changed_;                       // notified whenever state changes
  std::uint64_t generation_ = 0;                          // GUARDED_BY(mu_)
  bool shutdown_ = false;                                 // GUARDED_BY(mu_)
  int waiting_claims_ = 0;                                // GUARDED_BY(mu_)
  std::chrono::milliseconds lease_duration_;              // GUARDED_BY(mu_)
  std::vector<TokenEntry> tokens_;                        // GUARDED_BY(mu_)
  std::vector<JobSigningKey> signing_keys_;               // GUARDED_BY(mu_) published keys
  std::string current_kid_;                               // GUARDED_BY(mu_)
  int next_kid_ = 2;                                      // GUARDED_BY(mu_)
  std::map<std::string, AgentInfo, std::less<>> agents_;  // GUARDED_BY(mu_)
  std::map<std::string, std::string> key_owner_;          // GUARDED_BY(mu_) SPKI hash -> agent id
  std::deque<JobInfo> jobs_;                              // GUARDED_BY(mu_) in enqueue order
  std::size_t finished_jobs_ = 0;                         // GUARDED_BY(mu_)
  // Client certificates already parsed and verified, by their DER (a real server checks the
  // certificate once per TLS handshake; this fake sees it with every request).
  std::map<std::string, CheckedCertificate, std::less<>> checked_certificates_;  // GUARDED_BY(mu_)
  std::uint64_t next_job_ = 1;                                                   // GUARDED_BY(mu_)
  std::uint64_t next_lease_ = 1;                                                 // GUARDED_BY(mu_)
  std::uint64_t next_agent_ = 1;                                                 // GUARDED_BY(mu_)
  std::deque<QueuedFault> faults_;                                               // GUARDED_BY(mu_)
  std::vector<std::string> forbidden_;     // GUARDED_BY(mu_) originals
  std::vector<HeartbeatInfo> heartbeats_;  // GUARDED_BY(mu_)
  std::vector<RequestInfo> requests_;      // GUARDED_BY(mu_)
  std::vector<Violation> violations_;      // GUARDED_BY(mu_)
};

// --- Request entry point ------------------------------------------------------------------------

HttpResponse FakeControlPlane::Impl::Handle(FakeControlPlane& self, const HttpRequest& req) {
  RequestInfo info;
  info.arrived = std::chrono::steady_clock::now();
  info.method = req.method;
  std::string path = req.path;
  if (path.empty()) path = req.target.substr(0, req.target.find('?'));
  info.path = path;
  const Route route = RouteOf(options_.base_path, path);
  info.endpoint = route.endpoint;
  info.job_id = route.job_id;

  if (route.endpoint == Endpoint::kAdmin) {
    if (!options_.enable_admin_api) return Err(404, "not_found", "no such endpoint");
    return HandleAdminRequest(self, req);
  }

  std::size_t index = 0;
  std::optional<QueuedFault> fault;
  {
    std::lock_guard lock(mu_);
    info.at = clock_.Now();
    index = requests_.size();
    requests_.push_back(info);
    // Canaries: nothing the test marked as secret may reach the control plane in any form.
    std::string wire = req.method + " " + req.target + "\n";
    for (const auto& [name, value] : req.headers) wire += name + ": " + value + "\n";
    wire += req.body;
    for (const auto& secret : forbidden_) {
      if (!FindCanaryIn(secret, wire, "request").empty()) {
        ViolationLocked("", route.job_id,
                        "a forbidden value reached the control plane in a " +
                            std::string(EndpointName(route.endpoint)) + " request");
      }
    }
    fault = PopFaultLocked(route.endpoint);
    ChangedLocked();
  }

  HttpResponse response;
  using Kind = ControlPlaneFault::Kind;
  const bool process = !fault.has_value() || fault->fault.process_request ||
                       fault->fault.kind == Kind::kTruncateBody ||
                       fault->fault.kind == Kind::kDelay;
  if (process) response = Dispatch(req, route, info);
  if (fault.has_value()) {
    response = FaultResponse(fault->fault, std::move(response));
    info.fault = std::string(FaultKindName(fault->fault.kind));
  }

  std::lock_guard lock(mu_);
  RequestInfo& stored = requests_[index];
  stored.agent_id = info.agent_id;
  stored.client_key_sha256 = info.client_key_sha256;
  stored.status = response.status;
  stored.error_code = info.error_code;
  stored.fault = info.fault;
  if (!fault.has_value() && response.status >= 400) {
    EventLocked("answered " + std::to_string(response.status) + " " + info.error_code + " to " +
                req.method + " " + path +
                (info.agent_id.empty() ? std::string() : " from " + info.agent_id));
  }
  if (fault.has_value()) {
    EventLocked("fault " + info.fault +
                (fault->fault.kind == Kind::kStatus || fault->fault.kind == Kind::kHtmlPage
                     ? " " + std::to_string(fault->fault.status)
                     : std::string()) +
                " on " + req.method + " " + path);
  }
  ChangedLocked();
  return response;
}

HttpResponse FakeControlPlane::Impl::Dispatch(const HttpRequest& req, const Route& route,
                                              RequestInfo& info) {
  // Notes the error code of an error answer in the request log.
  auto fail = [&](HttpResponse r) {
    if (r.status < 400) return r;
    auto body = ParseJson(r.body, "response");
    if (body.ok() && body->isObject() && (*body)["error"].isObject() &&
        (*body)["error"]["code"].isString()) {
      info.error_code = (*body)["error"]["code"].asString();
    }
    return r;
  };

  if (route.endpoint == Endpoint::kUnknown) return fail(Err(404, "not_found", "no such endpoint"));
  if (req.method != route.method) {
    return fail(Err(405, "method_not_allowed", "use " + route.method + " here")
                    .WithHeader("Allow", route.method));
  }
  if (!req.query.empty() || req.target.find('?') != std::string::npos) {
    return fail(Err(400, "invalid_request", "this endpoint takes no query parameters"));
  }

  Json::Value body;
  if (req.method == "POST") {
    const std::string type = Lower(req.Header("content-type"));
    if (type != "application/json" && !StartsWith(type, "application/json;")) {
      return fail(Err(400, "invalid_request", "request bodies are application/json"));
    }
    auto parsed = ParseJson(req.body, "request body");
    if (!parsed.ok()) return fail(Err(400, "invalid_request", parsed.status().message()));
    body = std::move(parsed).value();
    if (!body.isObject()) {
      return fail(Err(400, "invalid_request", "the request body must be a JSON object"));
    }
  } else if (!req.body.empty()) {
    return fail(Err(400, "invalid_request", "a GET request has no body"));
  }

  if (route.endpoint == Endpoint::kEnroll) return fail(Enroll(req, body));

  HttpResponse auth_error;
  auto caller = Authenticate(req, auth_error);
  if (!caller.ok()) return fail(std::move(auth_error));
  info.agent_id = caller->agent_id;
  info.client_key_sha256 = caller->key_sha256;

  switch (route.endpoint) {
    case Endpoint::kCertificate:
      return fail(Renew(*caller, body));
    case Endpoint::kSigningKeys:
      return fail(SigningKeys());
    case Endpoint::kHeartbeat:
      return fail(Heartbeat(*caller, req, body));
    case Endpoint::kClaim:
      return fail(Claim(*caller, body));
    case Endpoint::kLease:
      return fail(ExtendLease(*caller, route.job_id, body));
    case Endpoint::kRecords:
      return fail(Records(*caller, route.job_id, body));
    case Endpoint::kResult:
      return fail(PostResult(*caller, route.job_id, body));
    default:
      break;
  }
  return fail(Err(404, "not_found", "no such endpoint"));
}

Result<FakeControlPlane::Impl::Caller> FakeControlPlane::Impl::Authenticate(const HttpRequest& req,
                                                                            HttpResponse& error) {
  auto deny = [&](int status, std::string_view code, std::string_view message) -> Status {
    error = Err(status, code, message);
    return Unauthenticated(std::string(message));
  };
  if (req.client_cert_der.empty()) {
    return deny(401, "certificate_required", "this endpoint needs the agent's client certificate");
  }
  std::optional<CheckedCertificate> checked;
  {
    std::lock_guard lock(mu_);
    auto known = checked_certificates_.find(req.client_cert_der);
    if (known != checked_certificates_.end()) checked = known->second;
  }
  if (!checked) {
    const auto* p = reinterpret_cast<const unsigned char*>(req.client_cert_der.data());
    X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(req.client_cert_der.size())));
    if (cert == nullptr) return deny(401, "certificate_invalid", "unreadable client certificate");
    if (X509_verify(cert.get(), ca_key_.get()) != 1) {
      return deny(401, "certificate_invalid", "the client certificate was not issued to an agent");
    }
    X509_NAME* subject = X509_get_subject_name(cert.get());
    const int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (idx < 0) return deny(401, "certificate_invalid", "the client certificate has no CN");
    const ASN1_STRING* cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
    std::tm not_after{};
    std::tm not_before{};
    if (ASN1_TIME_to_tm(X509_get0_notAfter(cert.get()), &not_after) != 1 ||
        ASN1_TIME_to_tm(X509_get0_notBefore(cert.get()), &not_before) != 1) {
      return deny(401, "certificate_invalid", "the client certificate's validity is unreadable");
    }
    checked.emplace();
    checked->caller.agent_id = std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(cn)),
                                           static_cast<std::size_t>(ASN1_STRING_length(cn)));
    checked->caller.key_sha256 = SpkiHash(X509_get0_pubkey(cert.get()));
    checked->caller.not_after = std::chrono::system_clock::from_time_t(timegm(&not_after));
    checked->not_before = std::chrono::system_clock::from_time_t(timegm(&not_before));
    std::lock_guard lock(mu_);
    checked_certificates_.emplace(req.client_cert_der, *checked);
  }
  // Validity by the real clock, as the TLS layer would judge it.
  const SysTime now = std::chrono::system_clock::now();
  if (now >= checked->caller.not_after || now < checked->not_before) {
    return deny(401, "certificate_expired", "the client certificate is not valid now");
  }
  Caller caller = checked->caller;

  std::lock_guard lock(mu_);
  auto it = agents_.find(caller.agent_id);
  if (it == agents_.end()) return deny(401, "unknown_agent", "no such agent");
  const AgentInfo& agent = it->second;
  if (agent.status == AgentInfo::Status::kRevoked) {
    return deny(401, "certificate_revoked", "this agent's certificate was revoked");
  }
  if (agent.status == AgentInfo::Status::kDeleted) {
    return deny(403, "agent_deleted", "this agent was deleted");
  }
  if (std::find(agent.key_sha256.begin(), agent.key_sha256.end(), caller.key_sha256) ==
      agent.key_sha256.end()) {
    return deny(401, "certificate_invalid", "the certificate's key was never enrolled");
  }
  return caller;
}

// --- Enrollment and identity ---------------------------------------------------------------------

Result<std::string> FakeControlPlane::Impl::IssueLocked(const std::string& csr_pem,
                                                        const std::string& agent_id) {
  CW_ASSIGN_OR_RETURN(std::string leaf,
                      ca_->IssueFromCsr(csr_pem, agent_id, options_.certificate_lifetime));
  // Leaf first, then the agent CA (the server trusts that CA; the chain lets the agent check it).
  if (leaf.find(ca_->cert_pem()) == std::string::npos) {
    if (!leaf.empty() && leaf.back() != '\n') leaf += '\n';
    leaf += ca_->cert_pem();
  }
  return leaf;
}

HttpResponse FakeControlPlane::Impl::Enroll(const HttpRequest& req, const Json::Value& body) {
  const std::string auth = req.Header("authorization");
  if (auth.size() <= 7 || Lower(auth.substr(0, 7)) != "bearer ") {
    return Err(401, "invalid_token", "enrollment needs 'Authorization: Bearer <token>'");
  }
  const Sha256 presented = Sha256Of(std::string_view(auth).substr(7));

  auto find_token = [&]() -> TokenEntry* {
    // Compare against every token, in constant time per comparison, without stopping early.
    TokenEntry* match = nullptr;
    for (auto& t : tokens_) {
      if (CRYPTO_memcmp(t.hash.data(), presented.data(), presented.size()) == 0) match = &t;
    }
    return match;
  };
  {
    std::lock_guard lock(mu_);
    TokenEntry* t = find_token();
    if (t == nullptr) return Err(401, "invalid_token", "unknown enrollment token");
    if (t->used) return Err(401, "token_used", "this enrollment token was already used");
  }

  auto request = wire::ParseEnroll(body);
  if (!request.ok()) return ErrFromStatus(request.status());
  auto csr = CheckCsr(request->csr_pem);
  if (!csr.ok()) return ErrFromStatus(csr.status());

  std::lock_guard lock(mu_);
  TokenEntry* t = find_token();
  if (t == nullptr || t->used) {
    return Err(401, "token_used", "this enrollment token was already used");
  }
  if (auto owner = key_owner_.find(csr->spki_sha256); owner != key_owner_.end()) {
    return Err(409, "already_enrolled", "this key is already enrolled");
  }
  const std::string agent_id = "agt_" + Pad(next_agent_);
  auto chain = IssueLocked(request->csr_pem, agent_id);
  if (!chain.ok()) {
    ViolationLocked("", "", "fake could not issue a certificate: " + chain.status().message());
    return Err(500, "internal", "certificate issuance failed");
  }
  ++next_agent_;
  t->used = true;

  AgentInfo agent;
  agent.agent_id = agent_id;
  agent.hostname = request->hostname;
  agent.agent_version = request->agent_version;
  agent.token = body["token"];
  agent.enrolled_at = clock_.Now();
  agent.key_sha256.push_back(csr->spki_sha256);
  agent.certificates.push_back(*chain);
  key_owner_[csr->spki_sha256] = agent_id;
  agents_[agent_id] = std::move(agent);
  EventLocked("enrolled " + agent_id + " (host " + request->hostname + ", agent " +
              request->agent_version + ", token " + request->token.label + ")");
  ChangedLocked();

  Json::Value out(Json::objectValue);
  out["agent_id"] = agent_id;
  out["certificate_chain"] = *chain;
  out["job_signing_keys"] = JwksLocked();
  out["poll_wait_seconds"] = options_.poll_wait_seconds;
  return HttpResponse::Json(201, out);
}

HttpResponse FakeControlPlane::Impl::Renew(const Caller& caller, const Json::Value& body) {
  auto csr_pem = wire::ParseRenewal(body);
  if (!csr_pem.ok()) return ErrFromStatus(csr_pem.status());
  auto csr = CheckCsr(*csr_pem);
  if (!csr.ok()) return ErrFromStatus(csr.status());

  std::lock_guard lock(mu_);
  if (key_owner_.count(csr->spki_sha256) != 0) {
    return Err(409, "already_enrolled", "renewal needs a new key pair");
  }
  auto chain = IssueLocked(*csr_pem, caller.agent_id);
  if (!chain.ok()) {
    ViolationLocked(caller.agent_id, "", "fake could not issue a certificate");
    return Err(500, "internal", "certificate issuance failed");
  }
  AgentInfo& agent = agents_[caller.agent_id];
  agent.key_sha256.push_back(csr->spki_sha256);
  agent.certificates.push_back(*chain);
  agent.renewal_requested = false;
  ++agent.renewals;
  key_owner_[csr->spki_sha256] = caller.agent_id;
  EventLocked("certificate renewed for " + caller.agent_id);
  ChangedLocked();
  Json::Value out(Json::objectValue);
  out["certificate_chain"] = *chain;
  return HttpResponse::Json(200, out);
}

HttpResponse FakeControlPlane::Impl::SigningKeys() {
  std::lock_guard lock(mu_);
  Json::Value out(Json::objectValue);
  out["job_signing_keys"] = JwksLocked();
  return HttpResponse::Json(200, out);
}

HttpResponse FakeControlPlane::Impl::Heartbeat(const Caller& caller, const HttpRequest& req,
                                               const Json::Value& body) {
  auto hb = wire::ParseHeartbeat(body);
  std::lock_guard lock(mu_);
  HeartbeatInfo info;
  info.agent_id = caller.agent_id;
  info.received_at = clock_.Now();
  info.body = req.body;
  info.accepted = hb.ok();
  if (!hb.ok()) info.problem = hb.status().message();
  heartbeats_.push_back(std::move(info));
  ChangedLocked();
  if (!hb.ok()) {
    ViolationLocked(caller.agent_id, "", "heartbeat refused: " + hb.status().message());
    return ErrFromStatus(hb.status());
  }
  if (hb->certificate_expires_at != caller.not_after) {
    ViolationLocked(
        caller.agent_id, "",
        "heartbeat says the certificate expires at " + FormatRfc3339(hb->certificate_expires_at) +
            " but the certificate presented expires at " + FormatRfc3339(caller.not_after));
  }
  const AgentInfo& agent = agents_[caller.agent_id];
  EventLocked("heartbeat from " + caller.agent_id + " (running " +
              std::to_string(hb->jobs_running) + ", results pending " +
              std::to_string(hb->results_pending) + ")");
  Json::Value out(Json::objectValue);
  out["renew_certificate"] = agent.renewal_requested;
  return HttpResponse::Json(200, out);
}

// --- Jobs ----------------------------------------------------------------------------------------

void FakeControlPlane::Impl::ExpireLeasesLocked() {
  const SysTime now = clock_.Now();
  for (auto& job : jobs_) {
    if (job.state != JobState::kLeased || job.leases.empty()) continue;
    LeaseInfo& lease = job.leases.back();
    if (lease.end == LeaseInfo::End::kActive && lease.expires_at <= now) {
      lease.end = LeaseInfo::End::kExpired;
      job.state = JobState::kQueued;
      EventLocked("lease " + lease.lease_id + " on " + job.id + " (" + lease.agent_id +
                  ") expired; the job can be claimed again");
      ChangedLocked();
    }
  }
}

HttpResponse FakeControlPlane::Impl::Claim(const Caller& caller, const Json::Value& body) {
  auto request = wire::ParseClaim(body);
  if (!request.ok()) return ErrFromStatus(request.status());

  std::unique_lock lock(mu_);
  const auto deadline =
      std::chrono::steady_clock::now() +
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double>(request->wait_seconds * options_.long_poll_time_scale));
  ++waiting_claims_;
  ChangedLocked();
  std::vector<JobInfo*> picked;
  while (true) {
    ExpireLeasesLocked();
    picked.clear();
    for (auto& job : jobs_) {
      if (static_cast<int>(picked.size()) >= request->max_jobs) break;
      if (job.state != JobState::kQueued) continue;
      if (!job.spec.agent_id.empty() && job.spec.agent_id != caller.agent_id) continue;
      picked.push_back(&job);
    }
    const auto now = std::chrono::steady_clock::now();
    if (!picked.empty() || shutdown_ || now >= deadline) break;
    const std::uint64_t seen = generation_;
    changed_.wait_until(lock, std::min(deadline, now + kPollSlice),
                        [&] { return generation_ != seen; });
  }
  --waiting_claims_;

  Json::Value jobs(Json::arrayValue);
  const JobSigningKey* key = CurrentKeyLocked();
  const SysTime now = clock_.Now();
  for (JobInfo* job : picked) {
    Json::Value claims = job->claims;
    if (job->spec.forgery != Forgery::kWrongAudience &&
        !(job->spec.forgery == Forgery::kMissingClaims &&
          std::find(job->spec.omit_claims.begin(), job->spec.omit_claims.end(), "aud") !=
              job->spec.omit_claims.end())) {
      claims["aud"] = caller.agent_id;
    }
    auto jws = MakeJobJws(claims, job->spec.forgery, *key, stranger_);
    if (!jws.ok()) {
      ViolationLocked("", job->id, "fake could not sign the job: " + jws.status().message());
      ChangedLocked();
      return Err(500, "internal", "job signing failed");
    }
    LeaseInfo lease;
    lease.lease_id = "lease_" + Pad(next_lease_++);
    lease.agent_id = caller.agent_id;
    lease.granted_at = now;
    lease.expires_at = now + lease_duration_;
    lease.jws = *jws;
    job->state = JobState::kLeased;
    Json::Value item(Json::objectValue);
    item["jws"] = *jws;
    item["lease_id"] = lease.lease_id;
    item["lease_expires_at"] = FormatRfc3339(lease.expires_at);
    jobs.append(item);
    EventLocked("job " + job->id + " claimed by " + caller.agent_id + " (" + lease.lease_id +
                ", until " + FormatRfc3339(lease.expires_at) +
                (job->spec.forgery == Forgery::kNone
                     ? std::string()
                     : ", forged: " + std::string(ForgeryName(job->spec.forgery))) +
                ")");
    job->leases.push_back(std::move(lease));
  }
  ChangedLocked();
  Json::Value out(Json::objectValue);
  out["jobs"] = jobs;
  return HttpResponse::Json(200, out);
}

JobInfo* FakeControlPlane::Impl::FindByLeaseLocked(const std::string& job_id,
                                                   const std::string& lease_id, LeaseInfo** lease,
                                                   bool* any_entry) {
  *any_entry = false;
  *lease = nullptr;
  for (auto& job : jobs_) {
    if (job.id != job_id) continue;
    *any_entry = true;
    for (auto& l : job.leases) {
      if (l.lease_id == lease_id) {
        *lease = &l;
        return &job;
      }
    }
  }
  return nullptr;
}

JobInfo* FakeControlPlane::Impl::FindOriginalLocked(std::string_view job_id) {
  for (auto& job : jobs_) {
    if (job.id == job_id && job.spec.forgery != Forgery::kReplayedJti) return &job;
  }
  for (auto& job : jobs_) {
    if (job.id == job_id) return &job;
  }
  return nullptr;
}

HttpResponse FakeControlPlane::Impl::ExtendLease(const Caller& caller, const std::string& job_id,
                                                 const Json::Value& body) {
  auto lease_id = wire::ParseLeaseExtension(body);
  if (!lease_id.ok()) return ErrFromStatus(lease_id.status());
  std::lock_guard lock(mu_);
  ExpireLeasesLocked();
  LeaseInfo* lease = nullptr;
  bool exists = false;
  JobInfo* job = FindByLeaseLocked(job_id, *lease_id, &lease, &exists);
  if (!exists) return Err(404, "job_not_found", "no such job");
  if (job == nullptr) return Err(409, "lease_unknown", "no such lease on this job");
  if (lease->agent_id != caller.agent_id) {
    ViolationLocked(caller.agent_id, job_id, "used a lease granted to " + lease->agent_id);
    ChangedLocked();
    return Err(409, "lease_unknown", "no such lease on this job");
  }
  if (job->state == JobState::kFinished) return Err(409, "job_finished", "the job is finished");
  if (lease->end != LeaseInfo::End::kActive) {
    return Err(409, "lease_lost", "the lease expired; the job may be delivered again");
  }
  lease->expires_at = clock_.Now() + lease_duration_;
  ++lease->extensions;
  EventLocked("lease " + lease->lease_id + " on " + job_id + " extended until " +
              FormatRfc3339(lease->expires_at));
  ChangedLocked();
  Json::Value out(Json::objectValue);
  out["lease_expires_at"] = FormatRfc3339(lease->expires_at);
  return HttpResponse::Json(200, out);
}

HttpResponse FakeControlPlane::Impl::Records(const Caller& caller, const std::string& job_id,
                                             const Json::Value& body) {
  auto request = wire::ParseRecords(body);
  std::lock_guard lock(mu_);
  ExpireLeasesLocked();
  if (!request.ok()) {
    const Json::Value& seq = body["seq"];
    ViolationLocked(caller.agent_id, job_id,
                    "records call refused (seq " + (seq.isIntegral() ? WriteJson(seq) : "?") +
                        "): " + request.status().message());
    ChangedLocked();
    return ErrFromStatus(request.status());
  }
  LeaseInfo* lease = nullptr;
  bool exists = false;
  JobInfo* job = FindByLeaseLocked(job_id, request->lease_id, &lease, &exists);
  if (!exists) return Err(404, "job_not_found", "no such job");
  if (job == nullptr) return Err(409, "lease_unknown", "no such lease on this job");
  if (lease->agent_id != caller.agent_id) {
    ViolationLocked(caller.agent_id, job_id, "used a lease granted to " + lease->agent_id);
    ChangedLocked();
    return Err(409, "lease_unknown", "no such lease on this job");
  }
  if (job->state == JobState::kFinished) return Err(409, "job_finished", "the job is finished");
  if (lease->end != LeaseInfo::End::kActive) {
    return Err(409, "lease_lost", "the lease expired; the job may be delivered again");
  }
  if (job->spec.type != "jira.access_sync") {
    ViolationLocked(caller.agent_id, job_id, "records sent for a " + job->spec.type + " job");
    ChangedLocked();
    return Err(422, "records_not_expected", "only jira.access_sync jobs stream records");
  }
  std::vector<RecordBatch>& stream = job->records_by_lease[lease->lease_id];
  const auto next = static_cast<std::int64_t>(stream.size());
  if (request->seq > next) {
    ViolationLocked(caller.agent_id, job_id,
                    "records seq " + std::to_string(request->seq) + " skips ahead (expected " +
                        std::to_string(next) + ")");
    ChangedLocked();
    return Err(422, "seq_out_of_order",
               "expected seq " + std::to_string(next) + ", found " + std::to_string(request->seq));
  }
  if (request->seq < next) {
    RecordBatch& earlier = stream[static_cast<std::size_t>(request->seq)];
    ++earlier.deliveries;
    RecordTexts again;
    for (const Json::Value& r : request->records) again.push_back(r);
    if (earlier.records != again) {
      ViolationLocked(
          caller.agent_id, job_id,
          "records seq " + std::to_string(request->seq) + " sent again with different content");
    }
    EventLocked("records " + job_id + " seq " + std::to_string(request->seq) +
                " repeated (idempotent)");
    ChangedLocked();
    return HttpResponse::Json(200, Json::Value(Json::objectValue));
  }
  RecordBatch batch;
  batch.seq = request->seq;
  for (const Json::Value& r : request->records) {
    batch.records.push_back(r);
    const std::string kind = r["kind"].asString();
    if (kind == "user") {
      ++batch.users;
      if (!r["human"].asBool()) ++batch.non_human;
    } else if (kind == "group") {
      ++batch.groups;
    } else if (kind == "credential") {
      ++batch.credentials;
    }
  }
  batch.received_at = clock_.Now();
  stream.push_back(std::move(batch));
  EventLocked("records " + job_id + " seq " + std::to_string(request->seq) + " (" +
              std::to_string(request->records.size()) + " records)");
  ChangedLocked();
  return HttpResponse::Json(200, Json::Value(Json::objectValue));
}

void FakeControlPlane::Impl::CheckSyncOutputLocked(JobInfo& job, const std::string& agent_id) {
  const Json::Value& output = job.result["output"];
  struct Summary {
    std::int64_t users = 0, groups = 0, credentials = 0, non_human = 0, records = 0, pages = 0;
    std::string sha256;
  };
  const auto summarize = [](const std::vector<RecordBatch>* batches) {
    Summary s;
    std::string concatenated;
    for (const auto& batch : batches != nullptr ? *batches : std::vector<RecordBatch>{}) {
      ++s.pages;
      for (std::size_t i = 0; i < batch.records.size(); ++i) {
        concatenated += batch.records.text(i);
      }
      s.records += static_cast<std::int64_t>(batch.records.size());
      s.users += batch.users;
      s.non_human += batch.non_human;
      s.groups += batch.groups;
      s.credentials += batch.credentials;
    }
    s.sha256 = HexSha256(concatenated);
    return s;
  };
  const auto same = [](const Json::Value& got, std::int64_t expected) {
    return got.isIntegral() && got.asInt64() == expected;
  };
  const auto matches = [&](const Summary& s) {
    return same(output["records"], s.records) && same(output["pages"], s.pages) &&
           same(output["counts"]["users"], s.users) && same(output["counts"]["groups"], s.groups) &&
           same(output["counts"]["credentials"], s.credentials) &&
           same(output["counts"]["non_human"], s.non_human) &&
           output["sha256"].asString() == s.sha256;
  };
  auto it = job.records_by_lease.find(job.finishing_lease);
  const Summary own = summarize(it != job.records_by_lease.end() ? &it->second : nullptr);
  if (matches(own)) return;
  // A job the agent already finished is not run again: the result it stored is re-sent under the
  // new delivery, and answers for the records of the delivery that produced it — exactly.
  if (own.records == 0) {
    for (auto l = job.leases.rbegin(); l != job.leases.rend(); ++l) {
      auto earlier = job.records_by_lease.find(l->lease_id);
      if (l->lease_id == job.finishing_lease || earlier == job.records_by_lease.end()) continue;
      if (matches(summarize(&earlier->second))) {
        EventLocked("result " + job.id + ": the output answers for the records of " + l->lease_id +
                    " (a stored result sent again under " + job.finishing_lease + ")");
        return;
      }
    }
  }
  auto check = [&](const std::string& what, std::int64_t expected, const Json::Value& got) {
    if (!same(got, expected)) {
      ViolationLocked(agent_id, job.id,
                      "access_sync output " + what + " is " + WriteJson(got) + " but " +
                          std::to_string(expected) + " were received");
    }
  };
  check("records", own.records, output["records"]);
  check("pages", own.pages, output["pages"]);
  check("counts.users", own.users, output["counts"]["users"]);
  check("counts.groups", own.groups, output["counts"]["groups"]);
  check("counts.credentials", own.credentials, output["counts"]["credentials"]);
  check("counts.non_human", own.non_human, output["counts"]["non_human"]);
  if (output["sha256"].asString() != own.sha256) {
    ViolationLocked(
        agent_id, job.id,
        "access_sync output sha256 does not match the records received (" + own.sha256 + ")");
  }
}

HttpResponse FakeControlPlane::Impl::PostResult(const Caller& caller, const std::string& job_id,
                                                const Json::Value& body) {
  std::lock_guard lock(mu_);
  ExpireLeasesLocked();
  const std::string lease_id = body["lease_id"].isString() ? body["lease_id"].asString() : "";
  LeaseInfo* lease = nullptr;
  bool exists = false;
  JobInfo* job = FindByLeaseLocked(job_id, lease_id, &lease, &exists);
  if (!exists) return Err(404, "job_not_found", "no such job");
  JobInfo* target = job != nullptr ? job : FindOriginalLocked(job_id);

  ResultDelivery delivery;
  delivery.agent_id = caller.agent_id;
  delivery.lease_id = lease_id;
  delivery.received_at = clock_.Now();
  delivery.body = body;
  auto answer = [&](HttpResponse r, std::string outcome) {
    delivery.http_status = r.status;
    delivery.outcome = std::move(outcome);
    target->result_deliveries.push_back(std::move(delivery));
    ChangedLocked();
    return r;
  };

  auto parsed = wire::ParseResult(body, target->spec.type, options_.validate_outputs);
  if (!parsed.ok()) {
    ViolationLocked(caller.agent_id, job_id, "result refused: " + parsed.status().message());
    HttpResponse r = ErrFromStatus(parsed.status());
    const std::string code = parsed.status().reason();
    return answer(std::move(r), code.empty() ? "invalid_request" : code);
  }
  if (job == nullptr)
    return answer(Err(409, "lease_unknown", "no such lease on this job"), "lease_unknown");
  if (lease->agent_id != caller.agent_id) {
    ViolationLocked(caller.agent_id, job_id, "used a lease granted to " + lease->agent_id);
    return answer(Err(409, "lease_unknown", "no such lease on this job"), "lease_unknown");
  }
  if (job->state == JobState::kFinished) {
    if (job->finished_by != caller.agent_id) {
      return answer(Err(409, "job_finished", "the job was finished by another agent"),
                    "job_finished");
    }
    if (ResultContent(job->result) == ResultContent(body)) {
      EventLocked("result " + job_id + " " + parsed->status + " delivered again (idempotent)");
      return answer(HttpResponse::Json(200, Json::Value(Json::objectValue)), "duplicate");
    }
    job->differing_results = true;
    ViolationLocked(caller.agent_id, job_id, "a different result was posted for a finished job");
    return answer(Err(409, "job_finished", "the job already has a different result"),
                  "job_finished");
  }
  if (lease != &job->leases.back()) {
    return answer(Err(409, "lease_lost", "the job was delivered again under another lease"),
                  "lease_lost");
  }
  if (lease->end == LeaseInfo::End::kExpired && !options_.accept_late_results) {
    return answer(Err(409, "lease_lost", "the lease expired"), "lease_lost");
  }
  lease->end = LeaseInfo::End::kFinished;
  job->state = JobState::kFinished;
  ++finished_jobs_;
  job->result = body;
  job->finished_by = caller.agent_id;
  job->finishing_lease = lease->lease_id;
  if (job->spec.type == "jira.access_sync" && parsed->status == "succeeded") {
    CheckSyncOutputLocked(*job, caller.agent_id);
  }
  std::string line = "result " + job_id + " " + parsed->status + " (" + caller.agent_id + ")";
  if (!parsed->error.isNull()) {
    line += ": " + parsed->error["code"].asString() + " - " + parsed->error["message"].asString();
  }
  EventLocked(line);
  return answer(HttpResponse::Json(200, Json::Value(Json::objectValue)), "accepted");
}

// --- Test controls -------------------------------------------------------------------------------

void FakeControlPlane::Impl::Shutdown() {
  std::lock_guard lock(mu_);
  shutdown_ = true;
  ChangedLocked();
}

std::string FakeControlPlane::Impl::NewEnrollmentToken() {
  std::array<std::uint8_t, 24> raw{};
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) std::abort();
  std::string token = "cwe_" + Base64UrlEncode(raw);
  AddEnrollmentToken(token);
  return token;
}

void FakeControlPlane::Impl::AddEnrollmentToken(std::string token) {
  std::lock_guard lock(mu_);
  tokens_.push_back({Sha256Of(token), false});
  ChangedLocked();
}

Status FakeControlPlane::Impl::SetAgentStatus(std::string_view agent_id, AgentInfo::Status status) {
  std::lock_guard lock(mu_);
  auto it = agents_.find(agent_id);
  if (it == agents_.end()) return NotFound("no agent " + std::string(agent_id));
  it->second.status = status;
  EventLocked("agent " + std::string(agent_id) + " is now " + std::string(AgentStatusName(status)));
  ChangedLocked();
  return Status::Ok();
}

Status FakeControlPlane::Impl::RequestCertificateRenewal(std::string_view agent_id) {
  std::lock_guard lock(mu_);
  auto it = agents_.find(agent_id);
  if (it == agents_.end()) return NotFound("no agent " + std::string(agent_id));
  it->second.renewal_requested = true;
  EventLocked("the next heartbeats ask " + std::string(agent_id) + " to renew its certificate");
  ChangedLocked();
  return Status::Ok();
}

const JobSigningKey* FakeControlPlane::Impl::CurrentKeyLocked() const {
  for (const auto& k : signing_keys_) {
    if (k.kid() == current_kid_) return &k;
  }
  return &signing_keys_.front();  // unreachable: the current key cannot be retired
}

Json::Value FakeControlPlane::Impl::JwksLocked() const {
  Json::Value keys(Json::arrayValue);
  for (const auto& k : signing_keys_) keys.append(k.Jwk());
  return keys;
}

Result<std::string> FakeControlPlane::Impl::RotateSigningKey() {
  std::lock_guard lock(mu_);
  CW_ASSIGN_OR_RETURN(JobSigningKey key,
                      JobSigningKey::Generate("jsk_" + std::to_string(next_kid_)));
  ++next_kid_;
  current_kid_ = key.kid();
  signing_keys_.push_back(std::move(key));
  EventLocked("job-signing key rotated; jobs are now signed with " + current_kid_);
  ChangedLocked();
  return current_kid_;
}

Status FakeControlPlane::Impl::RetireSigningKey(std::string_view kid) {
  std::lock_guard lock(mu_);
  if (kid == current_kid_) return FailedPrecondition("the current signing key cannot be retired");
  auto it = std::find_if(signing_keys_.begin(), signing_keys_.end(),
                         [&](const JobSigningKey& k) { return k.kid() == kid; });
  if (it == signing_keys_.end()) return NotFound("no published key " + std::string(kid));
  signing_keys_.erase(it);
  EventLocked("job-signing key " + std::string(kid) + " retired");
  ChangedLocked();
  return Status::Ok();
}

std::string FakeControlPlane::Impl::current_kid() const {
  std::lock_guard lock(mu_);
  return current_kid_;
}

Json::Value FakeControlPlane::Impl::PublishedJwks() const {
  std::lock_guard lock(mu_);
  return JwksLocked();
}

Result<std::string> FakeControlPlane::Impl::EnqueueJob(JobSpec spec) {
  std::lock_guard lock(mu_);
  JobInfo job;
  job.serial = next_job_;
  job.created_at = clock_.Now();
  if (spec.forgery == Forgery::kReplayedJti) {
    const JobInfo* original = nullptr;
    for (auto it = jobs_.rbegin(); it != jobs_.rend(); ++it) {
      if (it->spec.forgery == Forgery::kReplayedJti) continue;
      if (spec.replay_of.empty() || it->id == spec.replay_of) {
        original = &*it;
        break;
      }
    }
    if (original == nullptr) return NotFound("no job to replay");
    if (!spec.id.empty() && spec.id != original->id) {
      return InvalidArgument("a replay keeps its original's id");
    }
    job.id = original->id;
    job.claims = original->claims;
    job.created_at = original->created_at;
    spec.type = original->spec.type;
    spec.connection = original->spec.connection;
    spec.params = original->spec.params;
    spec.replay_of = original->id;
    if (spec.agent_id.empty()) spec.agent_id = original->spec.agent_id;
    job.spec = std::move(spec);
  } else {
    if (spec.id.empty()) spec.id = "job_" + Pad(next_job_);
    if (spec.id == "claim" || spec.id.find_first_of("/?#% ") != std::string::npos) {
      return InvalidArgument("job id '" + spec.id + "' cannot appear in a URL path as is");
    }
    for (const auto& j : jobs_) {
      if (j.id == spec.id) return AlreadyExists("job " + spec.id + " exists");
    }
    if (spec.forgery == Forgery::kUnknownType && spec.type.empty()) spec.type = kUnknownType;
    if (spec.forgery == Forgery::kConnectionNotConfigured && spec.connection.empty()) {
      spec.connection = kUnknownConnection;
    }
    if (spec.type.empty()) return InvalidArgument("a job needs a type");
    if (!spec.params.isObject()) return InvalidArgument("params must be an object");
    if (spec.forgery == Forgery::kMissingClaims && spec.omit_claims.empty()) {
      spec.omit_claims = {"exp"};
    }
    SysTime iat = job.created_at;
    if (spec.forgery == Forgery::kExpired) iat = job.created_at - std::chrono::minutes(70);
    if (spec.forgery == Forgery::kIssuedInFuture) iat = job.created_at + std::chrono::hours(1);
    SysTime exp = iat + spec.ttl;
    if (spec.forgery == Forgery::kExpired) exp = job.created_at - std::chrono::minutes(10);

    Json::Value claims(Json::objectValue);
    claims["jti"] = spec.id;
    claims["iss"] = std::string(kIssuer);
    claims["aud"] = spec.forgery == Forgery::kWrongAudience ? std::string(kWrongAudience)
                                                            : std::string();  // set per claim
    claims["iat"] = static_cast<Json::Int64>(UnixSeconds(iat));
    claims["exp"] = static_cast<Json::Int64>(UnixSeconds(exp));
    claims["type"] = spec.type;
    claims["connection"] = spec.connection;
    claims["params"] = spec.params;
    if (spec.forgery == Forgery::kMissingClaims) {
      for (const auto& name : spec.omit_claims) claims.removeMember(name);
    }
    job.id = spec.id;
    job.claims = std::move(claims);
    job.spec = std::move(spec);
  }
  ++next_job_;
  EventLocked("job " + job.id + " queued: " + job.spec.type + " on " + job.spec.connection +
              (job.spec.forgery == Forgery::kNone
                   ? std::string()
                   : " (forged: " + std::string(ForgeryName(job.spec.forgery)) + ")"));
  std::string id = job.id;
  jobs_.push_back(std::move(job));
  ChangedLocked();
  return id;
}

Status FakeControlPlane::Impl::ExpireLease(std::string_view job_id) {
  std::lock_guard lock(mu_);
  for (auto& job : jobs_) {
    if (job.id != job_id || job.state != JobState::kLeased) continue;
    LeaseInfo& lease = job.leases.back();
    lease.expires_at = clock_.Now();
    lease.end = LeaseInfo::End::kExpired;
    job.state = JobState::kQueued;
    EventLocked("lease " + lease.lease_id + " on " + job.id + " expired (forced by the test)");
    ChangedLocked();
    return Status::Ok();
  }
  return NotFound("job " + std::string(job_id) + " holds no active lease");
}

void FakeControlPlane::Impl::SetLeaseDuration(std::chrono::milliseconds d) {
  std::lock_guard lock(mu_);
  lease_duration_ = d;
}

void FakeControlPlane::Impl::QueueFault(ControlPlaneFault fault, int count,
                                        std::optional<Endpoint> endpoint) {
  if (count <= 0) return;
  std::lock_guard lock(mu_);
  faults_.push_back({std::move(fault), count, endpoint});
  ChangedLocked();
}

std::optional<FakeControlPlane::Impl::QueuedFault> FakeControlPlane::Impl::PopFaultLocked(
    Endpoint endpoint) {
  for (auto it = faults_.begin(); it != faults_.end(); ++it) {
    if (it->endpoint.has_value() && *it->endpoint != endpoint) continue;
    QueuedFault out = *it;
    if (--it->remaining <= 0) faults_.erase(it);
    return out;
  }
  return std::nullopt;
}

void FakeControlPlane::Impl::ClearFaults() {
  std::lock_guard lock(mu_);
  faults_.clear();
  ChangedLocked();
}

int FakeControlPlane::Impl::queued_faults() const {
  std::lock_guard lock(mu_);
  int n = 0;
  for (const auto& f : faults_) n += f.remaining;
  return n;
}

void FakeControlPlane::Impl::AddForbiddenValue(std::string value) {
  std::lock_guard lock(mu_);
  forbidden_.push_back(std::move(value));
}

// --- Ground truth --------------------------------------------------------------------------------

std::vector<JobInfo> FakeControlPlane::Impl::Jobs() const {
  std::lock_guard lock(mu_);
  return {jobs_.begin(), jobs_.end()};
}

std::optional<JobInfo> FakeControlPlane::Impl::Job(std::string_view id) const {
  std::lock_guard lock(mu_);
  for (const auto& j : jobs_) {
    if (j.id == id && j.spec.forgery != Forgery::kReplayedJti) return j;
  }
  return std::nullopt;
}

std::vector<AgentInfo> FakeControlPlane::Impl::Agents() const {
  std::lock_guard lock(mu_);
  std::vector<AgentInfo> out;
  for (const auto& [id, a] : agents_) out.push_back(a);
  return out;
}

std::optional<AgentInfo> FakeControlPlane::Impl::Agent(std::string_view id) const {
  std::lock_guard lock(mu_);
  auto it = agents_.find(id);
  if (it == agents_.end()) return std::nullopt;
  return it->second;
}

std::vector<HeartbeatInfo> FakeControlPlane::Impl::Heartbeats() const {
  std::lock_guard lock(mu_);
  return heartbeats_;
}

std::vector<RequestInfo> FakeControlPlane::Impl::Requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

std::vector<Violation> FakeControlPlane::Impl::Violations() const {
  std::lock_guard lock(mu_);
  return violations_;
}

int FakeControlPlane::Impl::waiting_claims() const {
  std::lock_guard lock(mu_);
  return waiting_claims_;
}

::testing::AssertionResult FakeControlPlane::Impl::WaitUntil(const std::function<bool()>& predicate,
                                                             std::string_view what,
                                                             std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lock(mu_);
  while (true) {
    const std::uint64_t seen = generation_;
    lock.unlock();
    if (predicate()) return ::testing::AssertionSuccess();
    lock.lock();
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      return ::testing::AssertionFailure()
             << "timed out after " << timeout.count() << " ms waiting for " << what;
    }
    // Re-check at least every 100 ms: leases also expire by the passing of time.
    changed_.wait_until(lock, std::min(deadline, now + std::chrono::milliseconds(100)),
                        [&] { return generation_ != seen; });
  }
}

// ------------------------------------------------------------------------------------------------

Result<std::unique_ptr<FakeControlPlane>> FakeControlPlane::Create(Options options) {
  if (options.base_path.empty() || options.base_path.front() != '/' ||
      options.base_path.back() == '/') {
    return InvalidArgument("base_path must start with '/' and not end with one");
  }
  if (options.long_poll_time_scale <= 0) {
    return InvalidArgument("long_poll_time_scale must be positive");
  }
  std::unique_ptr<TestCa> ca = TestCa::Create("Cakewalk fake agent CA");
  if (ca == nullptr) return Internal("could not create the agent CA");
  const std::string& pem = ca->cert_pem();
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr ca_cert(bio == nullptr ? nullptr
                                 : PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (ca_cert == nullptr) return Internal("could not read the agent CA certificate");
  EvpPkey ca_key(X509_get_pubkey(ca_cert.get()));
  if (ca_key == nullptr) return Internal("the agent CA certificate has no key");
  CW_ASSIGN_OR_RETURN(JobSigningKey first, JobSigningKey::Generate("jsk_1"));
  CW_ASSIGN_OR_RETURN(JobSigningKey stranger, JobSigningKey::Generate("jsk_unpublished"));
  auto impl = std::make_unique<Impl>(std::move(options), std::move(ca), std::move(ca_key),
                                     std::move(first), std::move(stranger));
  return std::unique_ptr<FakeControlPlane>(new FakeControlPlane(std::move(impl)));
}

FakeControlPlane::FakeControlPlane(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FakeControlPlane::~FakeControlPlane() = default;

HttpResponse FakeControlPlane::Handle(const HttpRequest& request) {
  return impl_->Handle(*this, request);
}
Handler FakeControlPlane::AsHandler() {
  return [this](const HttpRequest& request) { return Handle(request); };
}
void FakeControlPlane::Shutdown() { impl_->Shutdown(); }
const FakeControlPlane::Options& FakeControlPlane::options() const { return impl_->options(); }
const std::string& FakeControlPlane::agent_ca_pem() const { return impl_->agent_ca_pem(); }
std::string FakeControlPlane::NewEnrollmentToken() { return impl_->NewEnrollmentToken(); }
void FakeControlPlane::AddEnrollmentToken(std::string token) {
  impl_->AddEnrollmentToken(std::move(token));
}
Status FakeControlPlane::RevokeAgent(std::string_view agent_id) {
  return impl_->SetAgentStatus(agent_id, AgentInfo::Status::kRevoked);
}
Status FakeControlPlane::DeleteAgent(std::string_view agent_id) {
  return impl_->SetAgentStatus(agent_id, AgentInfo::Status::kDeleted);
}
Status FakeControlPlane::RestoreAgent(std::string_view agent_id) {
  return impl_->SetAgentStatus(agent_id, AgentInfo::Status::kActive);
}
Status FakeControlPlane::RequestCertificateRenewal(std::string_view agent_id) {
  return impl_->RequestCertificateRenewal(agent_id);
}
Result<std::string> FakeControlPlane::RotateSigningKey() { return impl_->RotateSigningKey(); }
Status FakeControlPlane::RetireSigningKey(std::string_view kid) {
  return impl_->RetireSigningKey(kid);
}
std::string FakeControlPlane::current_kid() const { return impl_->current_kid(); }
Json::Value FakeControlPlane::PublishedJwks() const { return impl_->PublishedJwks(); }
Result<std::string> FakeControlPlane::EnqueueJob(JobSpec spec) {
  return impl_->EnqueueJob(std::move(spec));
}
Status FakeControlPlane::ExpireLease(std::string_view job_id) { return impl_->ExpireLease(job_id); }
void FakeControlPlane::SetLeaseDuration(std::chrono::milliseconds duration) {
  impl_->SetLeaseDuration(duration);
}
void FakeControlPlane::QueueFault(ControlPlaneFault fault, int count,
                                  std::optional<Endpoint> endpoint) {
  impl_->QueueFault(std::move(fault), count, endpoint);
}
void FakeControlPlane::ClearFaults() { impl_->ClearFaults(); }
int FakeControlPlane::queued_faults() const { return impl_->queued_faults(); }
void FakeControlPlane::AddForbiddenValue(std::string value) {
  impl_->AddForbiddenValue(std::move(value));
}
std::vector<JobInfo> FakeControlPlane::Jobs() const { return impl_->Jobs(); }
std::optional<JobInfo> FakeControlPlane::Job(std::string_view job_id) const {
  return impl_->Job(job_id);
}
std::size_t FakeControlPlane::FinishedJobs() const { return impl_->FinishedJobs(); }
std::vector<AgentInfo> FakeControlPlane::Agents() const { return impl_->Agents(); }
std::optional<AgentInfo> FakeControlPlane::Agent(std::string_view agent_id) const {
  return impl_->Agent(agent_id);
}
std::vector<HeartbeatInfo> FakeControlPlane::Heartbeats() const { return impl_->Heartbeats(); }
std::vector<RequestInfo> FakeControlPlane::Requests() const { return impl_->Requests(); }
std::vector<std::chrono::steady_clock::time_point> FakeControlPlane::Arrivals(
    Endpoint endpoint) const {
  std::vector<std::chrono::steady_clock::time_point> out;
  for (const auto& r : impl_->Requests()) {
    if (r.endpoint == endpoint) out.push_back(r.arrived);
  }
  return out;
}
std::vector<Violation> FakeControlPlane::Violations() const { return impl_->Violations(); }
int FakeControlPlane::waiting_claims() const { return impl_->waiting_claims(); }
Json::Value FakeControlPlane::StateJson(bool include_records) const {
  return StateToJson(*this, include_records);
}

::testing::AssertionResult FakeControlPlane::WaitUntil(const std::function<bool()>& predicate,
                                                       std::string_view what,
                                                       std::chrono::milliseconds timeout) {
  return impl_->WaitUntil(predicate, what, timeout);
}

::testing::AssertionResult FakeControlPlane::WaitForJobState(std::string_view job_id,
                                                             JobState state,
                                                             std::chrono::milliseconds timeout) {
  return WaitUntil(
      [&] {
        auto job = Job(job_id);
        return job.has_value() && job->state == state;
      },
      "job " + std::string(job_id) + " to be " + std::string(JobStateName(state)), timeout);
}

::testing::AssertionResult FakeControlPlane::WaitForResultPosts(std::string_view job_id, int count,
                                                                std::chrono::milliseconds timeout) {
  return WaitUntil(
      [&] {
        auto job = Job(job_id);
        return job.has_value() && job->result_posts() >= count;
      },
      std::to_string(count) + " result post(s) for " + std::string(job_id), timeout);
}

::testing::AssertionResult FakeControlPlane::WaitForRequests(Endpoint endpoint, int count,
                                                             std::chrono::milliseconds timeout) {
  return WaitUntil([&] { return static_cast<int>(Arrivals(endpoint).size()) >= count; },
                   std::to_string(count) + " request(s) to " + std::string(EndpointName(endpoint)),
                   timeout);
}

::testing::AssertionResult FakeControlPlane::WaitForWaitingClaims(
    int count, std::chrono::milliseconds timeout) {
  return WaitUntil([&] { return waiting_claims() >= count; },
                   std::to_string(count) + " claim(s) held open", timeout);
}

::testing::AssertionResult FakeControlPlane::WaitForEnrollments(int count,
                                                                std::chrono::milliseconds timeout) {
  return WaitUntil([&] { return static_cast<int>(Agents().size()) >= count; },
                   std::to_string(count) + " enrollment(s)", timeout);
}

::testing::AssertionResult FakeControlPlane::WaitForHeartbeats(int count,
                                                               std::chrono::milliseconds timeout) {
  return WaitUntil([&] { return static_cast<int>(Heartbeats().size()) >= count; },
                   std::to_string(count) + " heartbeat(s)", timeout);
}

}  // namespace cakewalk::testing
