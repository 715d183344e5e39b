// The provisioning jobs of docs/protocol.md §12, over a Connection. Each takes the job's params
// object (checked strictly: an unknown, missing or mistyped parameter fails with invalid_params)
// and returns the documented output object, or a Status whose reason() is the jobs.md error code.
//
// All mutating jobs are idempotent: they look before they change, change only what differs, and
// say what they found (created: false, groups_already, changed: false, already: true). Outputs
// contain only the documented fields; no output or message contains a secret.
#pragma once

#include <json/json.h>

#include <stop_token>

#include "base/status.h"
#include "jira/connection.h"

namespace cakewalk::jira {

// jira.connection.verify — params {}.
Result<Json::Value> RunVerify(Connection& connection, const Json::Value& params,
                              std::stop_token stop);
// jira.user.provision — {email, display_name, username (DC), groups?, products?, reactivate?}.
Result<Json::Value> RunProvision(Connection& connection, const Json::Value& params,
                                 std::stop_token stop);
// jira.user.deprovision — {user: {username|account_id|email}, action}.
Result<Json::Value> RunDeprovision(Connection& connection, const Json::Value& params,
                                   std::stop_token stop);
// jira.group.add_member / jira.group.remove_member — {user: {...}, group}.
Result<Json::Value> RunGroupMembership(Connection& connection, const Json::Value& params, bool add,
                                       std::stop_token stop);

}  // namespace cakewalk::jira
