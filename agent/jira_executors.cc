#include "agent/jira_executors.h"

#include "jira/errors.h"
#include "jira/jobs.h"

namespace cakewalk::agent {
namespace {

enum class Kind { kVerify, kProvision, kDeprovision, kAddMember, kRemoveMember };

class JiraExecutor final : public Executor {
 public:
  JiraExecutor(JiraConnections& connections, Kind kind) : connections_(connections), kind_(kind) {}

  Result<Json::Value> Run(JobContext& job) override {
    if (job.stop.stop_requested()) return StoppedStatus();
    auto connection = connections_.Get(job.connection);
    if (!connection.ok()) return JobStatus(connection.status());
    jira::Connection& c = **connection;
    Result<Json::Value> out = Dispatch(c, job);
    if (!out.ok()) return JobStatus(out.status());
    return out;
  }

 private:
  Result<Json::Value> Dispatch(jira::Connection& c, JobContext& job) {
    switch (kind_) {
      case Kind::kVerify:
        return jira::RunVerify(c, job.params, job.stop);
      case Kind::kProvision:
        return jira::RunProvision(c, job.params, job.stop);
      case Kind::kDeprovision:
        return jira::RunDeprovision(c, job.params, job.stop);
      case Kind::kAddMember:
        return jira::RunGroupMembership(c, job.params, true, job.stop);
      case Kind::kRemoveMember:
        return jira::RunGroupMembership(c, job.params, false, job.stop);
    }
    return Status(Code::kInternal, "unknown Jira job kind", "internal");
  }

  JiraConnections& connections_;
  const Kind kind_;
};

}  // namespace

Status JobStatus(const Status& status) {
  if (status.ok()) return status;
  if (status.reason() == jira::reason::kStopped || IsStoppedStatus(status)) return StoppedStatus();
  if (IsJobErrorCode(status.reason())) {
    if (status.retryable() && !IsTransientErrorCode(status.reason())) {
      // Only transient causes may be retried: keep the code, drop the retryable code.
      return Status(Code::kFailedPrecondition, status.message(), status.reason());
    }
    return status;
  }
  return Status(Code::kInternal, status.message(), "internal");
}

Status RegisterJiraExecutors(ExecutorRegistry& registry, JiraConnections& connections) {
  const std::pair<std::string_view, Kind> kinds[] = {
      {kJobTypeVerify, Kind::kVerify},
      {kJobTypeProvision, Kind::kProvision},
      {kJobTypeDeprovision, Kind::kDeprovision},
      {kJobTypeAddMember, Kind::kAddMember},
      {kJobTypeRemoveMember, Kind::kRemoveMember},
  };
  for (const auto& [type, kind] : kinds) {
    CW_RETURN_IF_ERROR(
        registry.Register(std::string(type), std::make_shared<JiraExecutor>(connections, kind)));
  }
  return Status::Ok();
}

}  // namespace cakewalk::agent
