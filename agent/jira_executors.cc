#include "agent/jira_executors.h"

#include "jira/access_sync.h"
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

// jira.access_sync: the connector's sync (jira/access_sync.h) writing into the job's record sink,
// its progress shown by the loop (STATUS=, D-Bus, `status`) and logged every 10 s.
class RecordSinkAdapter final : public jira::SyncRecordSink {
 public:
  explicit RecordSinkAdapter(RecordSink& records) : records_(records) {}
  Status Write(std::string record_json) override {
    return records_.EmitJson(std::move(record_json));
  }
  Result<std::int64_t> Finish() override {
    CW_RETURN_IF_ERROR(records_.Flush());
    return records_.calls_made();
  }

 private:
  RecordSink& records_;
};

class AccessSyncExecutor final : public Executor {
 public:
  explicit AccessSyncExecutor(JiraConnections& connections) : connections_(connections) {}

  Result<Json::Value> Run(JobContext& job) override {
    if (job.stop.stop_requested()) return StoppedStatus();
    auto connection = connections_.Get(job.connection);
    if (!connection.ok()) return JobStatus(connection.status());
    jira::AccessSyncOptions options;
    if (job.connection.access_sync) {
      options.max_concurrency = job.connection.access_sync->max_concurrency;
    }
    options.nhi_patterns = job.connection.nhi_patterns;
    auto next_log = std::chrono::steady_clock::now();
    options.progress = [&](const jira::SyncProgress& p) {
      const std::string line = jira::DescribeProgress(p);
      job.progress(line);
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_log || p.phase == "done") {
        next_log = now + kProgressLogInterval;
        job.log.Log(Severity::kInfo, event::kSyncProgress, "job " + job.job_id + ": " + line,
                    {{"JOB_ID", job.job_id},
                     {"CONNECTION", job.connection.name},
                     {"SYNC_RECORDS", std::to_string(p.records)},
                     {"SYNC_REQUESTS", std::to_string(p.requests)}});
      }
    };
    RecordSinkAdapter sink(job.records);
    auto report = jira::RunAccessSync(**connection, job.params, options, sink, job.stop);
    if (!report.ok()) return JobStatus(report.status());
    // What the output claims must be what the control plane received.
    if (report->output["records"].asInt64() != job.records.records_sent()) {
      return Status(Code::kInternal,
                    "access sync counted " + report->output["records"].toStyledString() +
                        " records but " + std::to_string(job.records.records_sent()) + " were sent",
                    "internal");
    }
    return std::move(report->output);
  }

 private:
  static constexpr std::chrono::seconds kProgressLogInterval{10};
  JiraConnections& connections_;
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
  return registry.Register(std::string(kJobTypeAccessSync),
                           std::make_shared<AccessSyncExecutor>(connections));
}

}  // namespace cakewalk::agent
