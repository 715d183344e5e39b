// The configuration file (agent/config.h ParseConfig), with proxy variables from the environment
// or not (chosen by the input's length, so the corpus covers both).
//
// Properties: an accepted configuration only names https:// servers (control plane, every
// connection's base, API, admin and OAuth URLs), valid and unique connection names, and job
// settings inside their documented ranges.
#include <string>

#include "agent/config.h"
#include "tests/fuzz/fuzz_support.h"

using cakewalk::fuzz::FuzzCheck;

namespace {

bool IsHttps(const std::string& url) {
  if (url.size() < 8) return false;
  std::string scheme = url.substr(0, 8);
  for (char& c : scheme) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return scheme == "https://";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = cakewalk::fuzz::AsText(data, size);
  cakewalk::agent::ConfigEnvironment env;
  switch (size % 3) {
    case 1:
      env.vars["https_proxy"] = "http://proxy.corp.example:3128";
      env.vars["no_proxy"] = "localhost,.corp.example";
      break;
    case 2:
      env.vars["HTTPS_PROXY"] = "http://proxy.corp.example:8080/";
      break;
    default:
      break;
  }
  auto config = cakewalk::agent::ParseConfig(text, "/etc/cakewalk-agent/agent.json", env);
  if (!config.ok()) {
    FuzzCheck(!config.status().message().empty(), "a refusal says why");
    return 0;
  }
  FuzzCheck(IsHttps(config->control_plane.url), "the control plane is https://");
  FuzzCheck(config->jobs.max_concurrent >= 1, "at least one worker");
  for (const auto& c : config->connections) {
    FuzzCheck(cakewalk::agent::ValidateName("connection", c.name).ok(), "valid connection name");
    FuzzCheck(config->FindConnection(c.name) == &c, "connection names are unique");
    FuzzCheck(IsHttps(c.base_url), "a connection's base URL is https://");
    FuzzCheck(c.api_base_url.empty() || IsHttps(c.api_base_url), "api_base_url is https://");
    FuzzCheck(c.admin_api_url.empty() || IsHttps(c.admin_api_url), "admin_api_url is https://");
    if (c.access_sync && c.access_sync->auth == cakewalk::agent::AccessSyncConfig::Auth::kOAuth2) {
      FuzzCheck(IsHttps(c.access_sync->token_url), "the OAuth token URL is https://");
      FuzzCheck(IsHttps(c.access_sync->authorize_url), "the OAuth authorize URL is https://");
    }
  }
  return 0;
}
