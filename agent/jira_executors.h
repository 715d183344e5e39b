// The executors of the Jira job types (docs/protocol.md §12): jira.connection.verify,
// jira.user.provision, jira.user.deprovision, jira.group.add_member, jira.group.remove_member.
// Each runs the connector's job (jira/jobs.h) on the job's connection, shared through
// JiraConnections, and reports its Status as the job error: Status::reason() is the jobs.md code
// (anything else becomes `internal`), retryable only for rate_limited, jira_unavailable and
// token_unavailable; a stop request is reported as StoppedStatus(). jira.access_sync runs
// jira/access_sync.h into the job's record sink (max_concurrency and nhi_patterns from the
// connection) and reports its progress through JobContext::progress and kSyncProgress log lines.
#pragma once

#include <memory>

#include "agent/executor.h"
#include "agent/jira_connection.h"
#include "base/status.h"

namespace cakewalk::agent {

// Registers the six executors; `connections` must outlive the registry.
Status RegisterJiraExecutors(ExecutorRegistry& registry, JiraConnections& connections);

// The job error for a connector status (exposed for tests): a jobs.md reason is kept (retryable
// only when transient), "stopped" becomes StoppedStatus(), anything else `internal`.
Status JobStatus(const Status& status);

}  // namespace cakewalk::agent
