#include "tests/fakes/control_plane/admin_api.h"

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "base/clock.h"
#include "base/json.h"
#include "base/time.h"

namespace cakewalk::testing {
namespace {

std::string_view LeaseEndName(LeaseInfo::End end) {
  switch (end) {
    case LeaseInfo::End::kActive:
      return "active";
    case LeaseInfo::End::kExpired:
      return "expired";
    case LeaseInfo::End::kFinished:
      return "finished";
  }
  return "unknown";
}

std::vector<std::string> Split(std::string_view path) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t slash = path.find('/', start);
    const std::size_t end = slash == std::string_view::npos ? path.size() : slash;
    if (end > start) parts.emplace_back(path.substr(start, end - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return parts;
}

HttpResponse FromStatus(const Status& s) {
  int status = 400;
  if (s.code() == Code::kNotFound) status = 404;
  if (s.code() == Code::kAlreadyExists || s.code() == Code::kFailedPrecondition) status = 409;
  if (s.code() == Code::kInternal) status = 500;
  return HttpResponse::Error(status, "admin_error", s.message());
}

Result<Json::Value> Body(const HttpRequest& req) {
  if (req.body.empty()) return Json::Value(Json::objectValue);
  CW_ASSIGN_OR_RETURN(Json::Value v, ParseJson(req.body, "admin request body"));
  if (!v.isObject()) return InvalidArgument("the admin request body must be a JSON object");
  return v;
}

Result<std::string> Enqueue(FakeControlPlane& fake, const Json::Value& body) {
  JsonFields f(body, "$");
  JobSpec spec;
  spec.id = f.String("id", JsonFields::kOptional);
  spec.type = f.String("type", JsonFields::kOptional);
  spec.connection = f.String("connection", JsonFields::kOptional);
  if (const Json::Value* params = f.Object("params")) spec.params = *params;
  spec.agent_id = f.String("agent_id", JsonFields::kOptional);
  const std::string forgery = f.String("forgery", JsonFields::kOptional, "none");
  spec.replay_of = f.String("replay_of", JsonFields::kOptional);
  spec.omit_claims = f.StringArray("omit_claims");
  spec.ttl = std::chrono::seconds(f.Int("ttl_seconds", 3600, 1, 7 * 24 * 3600));
  CW_RETURN_IF_ERROR(f.Finish());
  auto kind = ParseForgery(forgery);
  if (!kind) return InvalidArgument("$.forgery: unknown forgery '" + forgery + "'");
  spec.forgery = *kind;
  return fake.EnqueueJob(std::move(spec));
}

Status QueueFault(FakeControlPlane& fake, const Json::Value& body) {
  JsonFields f(body, "$");
  const std::string kind_name = f.String("kind", JsonFields::kRequired);
  ControlPlaneFault fault;
  fault.status = static_cast<int>(f.Int("status", 503, 400, 599));
  if (auto ra = f.OptionalString("retry_after")) fault.retry_after = *ra;
  const std::int64_t date_in = f.Int("retry_after_http_date_in", -1, 0, 86400);
  fault.delay = std::chrono::milliseconds(f.Int("delay_ms", 0, 0, 600000));
  fault.process_request = f.Bool("process_request", false);
  const int count = static_cast<int>(f.Int("count", 1, 1, 100000));
  const std::string endpoint_name = f.String("endpoint", JsonFields::kOptional);
  CW_RETURN_IF_ERROR(f.Finish());
  auto kind = ParseFaultKind(kind_name);
  if (!kind) return InvalidArgument("$.kind: unknown fault kind '" + kind_name + "'");
  fault.kind = *kind;
  if (date_in >= 0) {
    fault.retry_after = FormatHttpDate(SystemClock().Now() + std::chrono::seconds(date_in));
  }
  std::optional<Endpoint> endpoint;
  if (!endpoint_name.empty()) {
    endpoint = ParseEndpoint(endpoint_name);
    if (!endpoint || *endpoint == Endpoint::kAdmin || *endpoint == Endpoint::kUnknown) {
      return InvalidArgument("$.endpoint: unknown endpoint '" + endpoint_name + "'");
    }
  }
  fake.QueueFault(fault, count, endpoint);
  return Status::Ok();
}

HttpResponse Ok(Json::Value body = Json::Value(Json::objectValue), int status = 200) {
  return HttpResponse::Json(status, body);
}

}  // namespace

Json::Value JobToJson(const JobInfo& job, bool include_records) {
  Json::Value j(Json::objectValue);
  j["id"] = job.id;
  j["serial"] = static_cast<Json::UInt64>(job.serial);
  j["type"] = job.spec.type;
  j["connection"] = job.spec.connection;
  j["params"] = job.spec.params;
  j["agent_id"] = job.spec.agent_id.empty() ? Json::Value() : Json::Value(job.spec.agent_id);
  j["forgery"] = std::string(ForgeryName(job.spec.forgery));
  if (!job.spec.replay_of.empty()) j["replay_of"] = job.spec.replay_of;
  j["state"] = std::string(JobStateName(job.state));
  j["created_at"] = FormatRfc3339(job.created_at);
  j["claims"] = job.claims;
  Json::Value leases(Json::arrayValue);
  for (const auto& l : job.leases) {
    Json::Value lj(Json::objectValue);
    lj["lease_id"] = l.lease_id;
    lj["agent_id"] = l.agent_id;
    lj["granted_at"] = FormatRfc3339(l.granted_at);
    lj["expires_at"] = FormatRfc3339(l.expires_at);
    lj["extensions"] = l.extensions;
    lj["end"] = std::string(LeaseEndName(l.end));
    Json::Value batches(Json::arrayValue);
    if (auto it = job.records_by_lease.find(l.lease_id); it != job.records_by_lease.end()) {
      for (const auto& b : it->second) {
        Json::Value bj(Json::objectValue);
        bj["seq"] = static_cast<Json::Int64>(b.seq);
        bj["count"] = static_cast<Json::UInt64>(b.records.size());
        bj["deliveries"] = b.deliveries;
        batches.append(bj);
      }
    }
    lj["record_batches"] = batches;
    leases.append(lj);
  }
  j["leases"] = leases;
  j["result"] = job.result;
  j["finished_by"] = job.finished_by.empty() ? Json::Value() : Json::Value(job.finished_by);
  Json::Value deliveries(Json::arrayValue);
  for (const auto& d : job.result_deliveries) {
    Json::Value dj(Json::objectValue);
    dj["agent_id"] = d.agent_id;
    dj["lease_id"] = d.lease_id;
    dj["received_at"] = FormatRfc3339(d.received_at);
    dj["http_status"] = d.http_status;
    dj["outcome"] = d.outcome;
    dj["status"] = d.body["status"];
    deliveries.append(dj);
  }
  j["result_deliveries"] = deliveries;
  j["differing_results"] = job.differing_results;
  const std::vector<Json::Value> records = job.Records();
  j["records_received"] = static_cast<Json::UInt64>(records.size());
  if (include_records) {
    Json::Value rj(Json::arrayValue);
    for (const auto& r : records) rj.append(r);
    j["records"] = rj;
  }
  return j;
}

Json::Value AgentToJson(const AgentInfo& agent) {
  Json::Value a(Json::objectValue);
  a["agent_id"] = agent.agent_id;
  a["hostname"] = agent.hostname;
  a["agent_version"] = agent.agent_version;
  a["token"] = agent.token;
  a["status"] = std::string(AgentStatusName(agent.status));
  a["enrolled_at"] = FormatRfc3339(agent.enrolled_at);
  Json::Value keys(Json::arrayValue);
  for (const auto& k : agent.key_sha256) keys.append(k);
  a["key_sha256"] = keys;
  a["renewals"] = agent.renewals;
  a["renewal_requested"] = agent.renewal_requested;
  return a;
}

Json::Value StateToJson(const FakeControlPlane& fake, bool include_records) {
  Json::Value s(Json::objectValue);
  Json::Value agents(Json::arrayValue);
  for (const auto& a : fake.Agents()) agents.append(AgentToJson(a));
  s["agents"] = agents;
  Json::Value jobs(Json::arrayValue);
  for (const auto& j : fake.Jobs()) jobs.append(JobToJson(j, include_records));
  s["jobs"] = jobs;
  Json::Value heartbeats(Json::arrayValue);
  for (const auto& h : fake.Heartbeats()) {
    Json::Value hj(Json::objectValue);
    hj["agent_id"] = h.agent_id;
    hj["received_at"] = FormatRfc3339(h.received_at);
    hj["accepted"] = h.accepted;
    if (!h.accepted) hj["problem"] = h.problem;
    auto body = ParseJson(h.body, "heartbeat");
    hj["body"] = body.ok() ? *body : Json::Value(h.body);
    heartbeats.append(hj);
  }
  s["heartbeats"] = heartbeats;
  Json::Value violations(Json::arrayValue);
  for (const auto& v : fake.Violations()) {
    Json::Value vj(Json::objectValue);
    vj["agent_id"] = v.agent_id;
    vj["job_id"] = v.job_id;
    vj["what"] = v.what;
    violations.append(vj);
  }
  s["violations"] = violations;
  Json::Value requests(Json::arrayValue);
  std::optional<std::chrono::steady_clock::time_point> first;
  for (const auto& r : fake.Requests()) {
    if (!first) first = r.arrived;
    Json::Value rj(Json::objectValue);
    rj["endpoint"] = std::string(EndpointName(r.endpoint));
    rj["method"] = r.method;
    rj["path"] = r.path;
    rj["agent_id"] = r.agent_id;
    rj["at"] = FormatRfc3339(r.at);
    rj["ms_since_first"] = static_cast<Json::Int64>(
        std::chrono::duration_cast<std::chrono::milliseconds>(r.arrived - *first).count());
    rj["status"] = r.status;
    if (!r.error_code.empty()) rj["error_code"] = r.error_code;
    if (!r.fault.empty()) rj["fault"] = r.fault;
    requests.append(rj);
  }
  s["requests"] = requests;
  s["current_kid"] = fake.current_kid();
  s["job_signing_keys"] = fake.PublishedJwks();
  s["waiting_claims"] = fake.waiting_claims();
  s["queued_faults"] = fake.queued_faults();
  return s;
}

HttpResponse HandleAdminRequest(FakeControlPlane& fake, const HttpRequest& req) {
  std::string path = req.path.empty() ? req.target.substr(0, req.target.find('?')) : req.path;
  const std::vector<std::string> p = Split(path);  // p[0] == "_fake"
  const std::string& m = req.method;
  auto body = Body(req);
  if (!body.ok()) return FromStatus(body.status());
  const auto n = p.size();

  if (n == 2 && p[1] == "state" && m == "GET") {
    return Ok(fake.StateJson(req.Query("records").value_or("") == "1"));
  }
  if (n == 2 && p[1] == "violations" && m == "GET") {
    return Ok(StateToJson(fake, false)["violations"]);
  }
  if (n == 2 && p[1] == "jobs" && m == "GET") {
    Json::Value jobs(Json::arrayValue);
    for (const auto& j : fake.Jobs()) jobs.append(JobToJson(j, false));
    Json::Value out(Json::objectValue);
    out["jobs"] = jobs;
    return Ok(out);
  }
  if (n == 2 && p[1] == "jobs" && m == "POST") {
    auto id = Enqueue(fake, *body);
    if (!id.ok()) return FromStatus(id.status());
    Json::Value out(Json::objectValue);
    out["job_id"] = *id;
    return Ok(out, 201);
  }
  if (n == 3 && p[1] == "jobs" && m == "GET") {
    auto job = fake.Job(p[2]);
    if (!job) return HttpResponse::Error(404, "admin_error", "no such job");
    return Ok(JobToJson(*job, true));
  }
  if (n == 4 && p[1] == "jobs" && p[3] == "expire-lease" && m == "POST") {
    Status s = fake.ExpireLease(p[2]);
    return s.ok() ? Ok() : FromStatus(s);
  }
  if (n == 2 && p[1] == "faults" && m == "POST") {
    Status s = QueueFault(fake, *body);
    if (!s.ok()) return FromStatus(s);
    Json::Value out(Json::objectValue);
    out["queued_faults"] = fake.queued_faults();
    return Ok(out);
  }
  if (n == 2 && p[1] == "faults" && m == "DELETE") {
    fake.ClearFaults();
    return Ok();
  }
  if (n == 2 && p[1] == "enrollment-tokens" && m == "POST") {
    Json::Value out(Json::objectValue);
    out["token"] = fake.NewEnrollmentToken();
    return Ok(out, 201);
  }
  if (n == 4 && p[1] == "agents" && m == "POST") {
    Status s = InvalidArgument("unknown agent action '" + p[3] + "'");
    if (p[3] == "revoke") s = fake.RevokeAgent(p[2]);
    if (p[3] == "delete") s = fake.DeleteAgent(p[2]);
    if (p[3] == "restore") s = fake.RestoreAgent(p[2]);
    if (p[3] == "request-renewal") s = fake.RequestCertificateRenewal(p[2]);
    return s.ok() ? Ok() : FromStatus(s);
  }
  if (n == 3 && p[1] == "signing-keys" && p[2] == "rotate" && m == "POST") {
    auto kid = fake.RotateSigningKey();
    if (!kid.ok()) return FromStatus(kid.status());
    Json::Value out(Json::objectValue);
    out["kid"] = *kid;
    return Ok(out);
  }
  if (n == 4 && p[1] == "signing-keys" && p[3] == "retire" && m == "POST") {
    Status s = fake.RetireSigningKey(p[2]);
    return s.ok() ? Ok() : FromStatus(s);
  }
  return HttpResponse::Error(404, "not_found", "no such admin endpoint");
}

}  // namespace cakewalk::testing
