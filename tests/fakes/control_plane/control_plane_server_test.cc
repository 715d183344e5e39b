// RunningControlPlane over real HTTPS on 127.0.0.1, with an independent libcurl client: the
// optional client certificate (enrollment without, everything else with), long polls, faults on
// the wire, a whole job round trip, and shutdown with a claim held open.
#include "tests/fakes/control_plane/running_control_plane.h"

#include <curl/curl.h>
#include <gtest/gtest.h>

#include <chrono>
#include <future>

#include "base/json.h"
#include "tests/fakes/control_plane/https_client.h"
#include "tests/fakes/control_plane/test_util.h"
#include "tests/support/pki.h"

namespace cakewalk::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::unique_ptr<RunningControlPlane> StartControlPlane(RunningControlPlaneOptions options = {}) {
  auto cp = RunningControlPlane::Start(std::move(options));
  EXPECT_TRUE(cp.ok()) << cp.status().ToString();
  return cp.ok() ? std::move(cp).value() : nullptr;
}

struct EnrolledClient {
  std::string agent_id;
  std::string chain;
  HttpsClient client;
};

// Enrolls over HTTPS (no client certificate) and returns a client presenting the new identity.
EnrolledClient EnrollOverHttps(RunningControlPlane& cp) {
  EvpPkeyPtr key = NewEcP256Key();
  HttpsClient anonymous(cp.server_ca_pem());
  const std::string token = cp.fake().NewEnrollmentToken();
  ClientResponse r = anonymous.Post(cp.base_url() + "/enroll", EnrollBody(MakeCsrPem(key.get())),
                                    {"Authorization: Bearer " + token});
  EXPECT_EQ(r.curl_code, CURLE_OK) << r.curl_error;
  EXPECT_EQ(r.status, 201) << r.body;
  const Json::Value body = r.Json();
  return EnrolledClient{body["agent_id"].asString(), body["certificate_chain"].asString(),
                        HttpsClient(cp.server_ca_pem(), body["certificate_chain"].asString(),
                                    PrivateKeyPem(key.get()))};
}

Json::Value ClaimBody(int max_jobs, int wait_seconds) {
  Json::Value b(Json::objectValue);
  b["max_jobs"] = max_jobs;
  b["wait_seconds"] = wait_seconds;
  return b;
}

TEST(ControlPlaneServer, EnrollsWithoutACertificateThenNeedsOne) {
  auto cp = StartControlPlane();
  ASSERT_NE(cp, nullptr);
  EXPECT_EQ(cp->base_url(), "https://localhost:" + std::to_string(cp->port()) + "/agent/v1");
  EnrolledClient agent = EnrollOverHttps(*cp);
  ASSERT_EQ(agent.agent_id.rfind("agt_", 0), 0u);

  HttpsClient anonymous(cp->server_ca_pem());
  ClientResponse no_cert = anonymous.Get(cp->base_url() + "/signing-keys");
  ASSERT_EQ(no_cert.curl_code, CURLE_OK) << no_cert.curl_error;
  EXPECT_EQ(no_cert.status, 401);
  EXPECT_EQ(no_cert.Json()["error"]["code"], "certificate_required");

  ClientResponse keys = agent.client.Get(cp->base_url() + "/signing-keys");
  ASSERT_EQ(keys.curl_code, CURLE_OK) << keys.curl_error;
  EXPECT_EQ(keys.status, 200) << keys.body;
  EXPECT_EQ(keys.Header("content-type"), "application/json");
  EXPECT_EQ(keys.Json()["job_signing_keys"].size(), 1u);

  ClientResponse hb = agent.client.Post(cp->base_url() + "/heartbeat", HeartbeatBody(agent.chain));
  EXPECT_EQ(hb.status, 200) << hb.body;
  ClientResponse claim = agent.client.Post(cp->base_url() + "/jobs/claim", ClaimBody(1, 0));
  EXPECT_EQ(claim.status, 200) << claim.body;
  EXPECT_EQ(claim.body, R"({"jobs":[]})");

  const std::vector<RequestInfo> requests = cp->fake().Requests();
  ASSERT_EQ(requests.size(), 5u);
  EXPECT_EQ(requests[0].endpoint, Endpoint::kEnroll);
  EXPECT_EQ(requests[1].agent_id, "");
  EXPECT_EQ(requests[2].agent_id, agent.agent_id);
  EXPECT_EQ(requests[2].client_key_sha256, cp->fake().Agent(agent.agent_id)->key_sha256[0]);
  ASSERT_EQ(cp->fake().Heartbeats().size(), 1u);
  EXPECT_TRUE(cp->fake().Heartbeats()[0].accepted);
  EXPECT_TRUE(cp->fake().Violations().empty());  // incl. the certificate expiry it reported
}

TEST(ControlPlaneServer, CertificateFromAnotherCaNeverReachesTheHandler) {
  auto cp = StartControlPlane();
  ASSERT_NE(cp, nullptr);
  auto other = TestCa::Create("Not the agent CA");
  TestCa::LeafOptions leaf;
  leaf.common_name = "agt_000001";
  leaf.server = false;
  auto identity = other->Issue(leaf);
  ASSERT_TRUE(identity.ok()) << identity.status().ToString();
  HttpsClient impostor(cp->server_ca_pem(), identity->chain_pem, identity->key_pem);
  ClientResponse r = impostor.Get(cp->base_url() + "/signing-keys");
  EXPECT_NE(r.curl_code, CURLE_OK) << "HTTP " << r.status << " " << r.body;
  EXPECT_TRUE(cp->fake().Requests().empty());
}

TEST(ControlPlaneServer, LongPollIsHeldAndAnsweredWhenAJobArrives) {
  auto cp = StartControlPlane();
  ASSERT_NE(cp, nullptr);
  EnrolledClient agent = EnrollOverHttps(*cp);

  const auto idle_start = std::chrono::steady_clock::now();
  ClientResponse idle = agent.client.Post(cp->base_url() + "/jobs/claim", ClaimBody(1, 1));
  EXPECT_EQ(idle.status, 200);
  EXPECT_GE(std::chrono::steady_clock::now() - idle_start, milliseconds(950));

  auto held = std::async(std::launch::async, [&] {
    return agent.client.Post(cp->base_url() + "/jobs/claim", ClaimBody(5, 30));
  });
  ASSERT_TRUE(cp->fake().WaitForWaitingClaims(1));
  JobSpec spec;
  spec.type = "jira.connection.verify";
  spec.connection = "jira-prod";
  const auto enqueued = std::chrono::steady_clock::now();
  auto id = cp->fake().EnqueueJob(spec);
  ASSERT_TRUE(id.ok());
  ASSERT_EQ(held.wait_for(seconds(5)), std::future_status::ready);
  EXPECT_LT(std::chrono::steady_clock::now() - enqueued, seconds(2));
  ClientResponse r = held.get();
  ASSERT_EQ(r.status, 200) << r.body;
  const Json::Value jobs = r.Json()["jobs"];
  ASSERT_EQ(jobs.size(), 1u);
  auto claims = VerifyJobJws(jobs[0]["jws"].asString(), cp->fake().PublishedJwks());
  ASSERT_TRUE(claims.ok()) << claims.status().ToString();
  EXPECT_EQ((*claims)["jti"], *id);
  EXPECT_EQ((*claims)["aud"], agent.agent_id);
}

TEST(ControlPlaneServer, JobRoundTripOverTheWire) {
  auto cp = StartControlPlane();
  ASSERT_NE(cp, nullptr);
  EnrolledClient agent = EnrollOverHttps(*cp);
  JobSpec spec;
  spec.type = "jira.access_sync";
  spec.connection = "jira-prod";
  auto id = cp->fake().EnqueueJob(spec);
  ASSERT_TRUE(id.ok());

  ClientResponse claim = agent.client.Post(cp->base_url() + "/jobs/claim", ClaimBody(1, 0));
  ASSERT_EQ(claim.status, 200) << claim.body;
  const std::string lease = claim.Json()["jobs"][0]["lease_id"].asString();
  const std::string job_url = cp->base_url() + "/jobs/" + *id;

  Json::Value lease_body(Json::objectValue);
  lease_body["lease_id"] = lease;
  EXPECT_EQ(agent.client.Post(job_url + "/lease", lease_body).status, 200);
  Json::Value records(Json::objectValue);
  records["lease_id"] = lease;
  records["seq"] = 0;
  records["records"].append(UserRecord("u1"));
  EXPECT_EQ(agent.client.Post(job_url + "/records", records).status, 200);
  EXPECT_EQ(agent.client.Post(job_url + "/records", records).status, 200);  // a retry

  Json::Value error(Json::objectValue);
  error["code"] = "jira_unavailable";
  error["message"] = "Jira answered 503";
  error["retryable"] = true;
  const Json::Value result = ResultBody(lease, "failed", error);
  EXPECT_EQ(agent.client.Post(job_url + "/result", result).status, 200);
  EXPECT_EQ(agent.client.Post(job_url + "/result", result).status, 200);

  auto job = cp->fake().Job(*id);
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->state, JobState::kFinished);
  EXPECT_EQ(job->Records().size(), 1u);
  EXPECT_EQ(job->result_posts(), 2);
  EXPECT_FALSE(job->differing_results);
  EXPECT_EQ(job->leases[0].extensions, 1);
  EXPECT_TRUE(cp->fake().Violations().empty());
}

TEST(ControlPlaneServer, FaultsReachTheClientAsTheyWould) {
  auto cp = StartControlPlane();
  ASSERT_NE(cp, nullptr);
  EnrolledClient agent = EnrollOverHttps(*cp);
  const std::string url = cp->base_url() + "/signing-keys";

  cp->fake().QueueFault(ControlPlaneFault::Status(503, "3"));
  ClientResponse unavailable = agent.client.Get(url);
  EXPECT_EQ(unavailable.status, 503);
  EXPECT_EQ(unavailable.Header("retry-after"), "3");
  EXPECT_EQ(unavailable.Json()["error"]["code"], "unavailable");

  cp->fake().QueueFault(ControlPlaneFault::Reset());
  ClientResponse reset = agent.client.Get(url);
  EXPECT_NE(reset.curl_code, CURLE_OK);
  EXPECT_EQ(reset.status, 0);

  ControlPlaneFault truncate;
  truncate.kind = ControlPlaneFault::Kind::kTruncateBody;
  cp->fake().QueueFault(truncate);
  ClientResponse cut = agent.client.Get(url);
  EXPECT_EQ(cut.curl_code, CURLE_PARTIAL_FILE) << cut.curl_error;

  ControlPlaneFault garbage;
  garbage.kind = ControlPlaneFault::Kind::kMalformedJson;
  cp->fake().QueueFault(garbage);
  ClientResponse bad = agent.client.Get(url);
  EXPECT_EQ(bad.status, 200);
  EXPECT_TRUE(bad.Json().isNull());

  ControlPlaneFault delay;
  delay.kind = ControlPlaneFault::Kind::kDelay;
  delay.delay = milliseconds(400);
  cp->fake().QueueFault(delay);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(agent.client.Get(url).status, 200);
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(390));

  ControlPlaneFault stall;
  stall.kind = ControlPlaneFault::Kind::kStall;
  stall.delay = seconds(20);
  cp->fake().QueueFault(stall);
  ClientResponse stalled =
      agent.client.Request("GET", url, {}, {}, milliseconds(500));  // the client gives up
  EXPECT_EQ(stalled.curl_code, CURLE_OPERATION_TIMEDOUT) << stalled.curl_error;

  EXPECT_EQ(agent.client.Get(url).status, 200);
}

TEST(ControlPlaneServer, StoppingReleasesAHeldClaim) {
  auto cp = StartControlPlane();
  ASSERT_NE(cp, nullptr);
  EnrolledClient agent = EnrollOverHttps(*cp);
  const std::string url = cp->base_url() + "/jobs/claim";
  auto held =
      std::async(std::launch::async, [&] { return agent.client.Post(url, ClaimBody(1, 60)); });
  ASSERT_TRUE(cp->fake().WaitForWaitingClaims(1));
  const auto start = std::chrono::steady_clock::now();
  cp.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(10));
  ASSERT_EQ(held.wait_for(seconds(10)), std::future_status::ready);
  held.get();  // an empty answer or a closed connection; either way it returned
}

}  // namespace
}  // namespace cakewalk::testing
