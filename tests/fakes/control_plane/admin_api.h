// The fake control plane's test-only administration API ("/_fake/..."), and the JSON form of its
// ground truth. Never part of the agent protocol: it exists so that the demo and chaos scripts can
// drive the standalone fake-control-plane with curl. docs/protocol.md lists the endpoints.
#pragma once

#include <json/json.h>

#include "tests/fakes/control_plane/fake_control_plane.h"
#include "tests/fakes/https_server.h"

namespace cakewalk::testing {

// Answers one request whose path starts with "/_fake/", using only FakeControlPlane's public API.
HttpResponse HandleAdminRequest(FakeControlPlane& fake, const HttpRequest& request);

Json::Value JobToJson(const JobInfo& job, bool include_records);
Json::Value AgentToJson(const AgentInfo& agent);
// Agents, jobs (with leases and result deliveries), heartbeats, violations and the request log.
Json::Value StateToJson(const FakeControlPlane& fake, bool include_records);

}  // namespace cakewalk::testing
