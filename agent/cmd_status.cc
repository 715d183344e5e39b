// `status`: the running daemon's state, read over D-Bus (the agent's only local interface).
#include <ostream>

#include "agent/commands.h"
#include "base/json.h"
#include "base/time.h"
#include "systemd/status_client.h"

namespace cakewalk::agent {

Status CommandStatus(bool json, CliIo io) {
  CW_ASSIGN_OR_RETURN(sd::StatusSnapshot s, sd::QueryAgentStatus());
  if (!json) {
    io.out << sd::FormatStatus(s, std::chrono::system_clock::now());
    return Status::Ok();
  }
  Json::Value v;
  v["state"] = s.state;
  v["version"] = s.version;
  v["uptime_seconds"] = static_cast<Json::Int64>(s.uptime.count());
  v["jobs_running"] = s.jobs_running;
  v["results_pending"] = s.results_pending;
  v["certificate_expires_at"] =
      s.certificate_expires_at ? FormatRfc3339(*s.certificate_expires_at) : Json::Value();
  v["sync_progress"] = s.sync_progress;
  Json::Value conns(Json::arrayValue);
  for (const auto& c : s.connections) {
    Json::Value cv;
    cv["name"] = c.name;
    cv["state"] = c.state;
    cv["detail"] = c.detail;
    conns.append(cv);
  }
  v["connections"] = conns;
  io.out << WritePrettyJson(v) << "\n";
  return Status::Ok();
}

}  // namespace cakewalk::agent
