// Test-only program: stands in for `cakewalk-agent run` in the booted-container test
// (scripts/container-test) until the real daemon exists, so that the unit, the package and the
// bus policy are exercised under a real systemd. It does what the daemon does with the systemd
// layer, in the documented order, and nothing else:
//   - log through MakeLogSink() (the journal, under systemd);
//   - read the PIN credential $CREDENTIALS_DIRECTORY/hsm-pin: the text "wrong" plays a refused
//     token login and exits 77, an empty or missing file exits 78;
//   - try listen() once and log whether the sandbox refused it;
//   - take the bus name, send READY=1, serve the D-Bus API with fixed data, reload on SIGHUP;
//   - exit 0 on SIGTERM, 1 when the bus connection is lost.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "systemd/agent_control.h"
#include "systemd/bus_service.h"
#include "systemd/event_loop.h"
#include "systemd/journal_sink.h"
#include "systemd/notify.h"

namespace {

using namespace cakewalk;

class StandInAgent final : public sd::AgentControl {
 public:
  sd::StatusSnapshot GetStatus() override {
    sd::StatusSnapshot s;
    s.state = "running";
    s.version = "stand-in";
    s.connections = {{"control-plane", "ok", "stand-in"}};
    return s;
  }
  Result<std::vector<sd::SecretInfo>> ListSecrets() override {
    return std::vector<sd::SecretInfo>{};
  }
  void RotateSecret(std::string, std::string, sd::Reply<int64_t> done) override {
    std::move(done).Send(FailedPrecondition("the stand-in has no secrets"));
  }
  Status Reload() override {
    ++reloads;
    return Status::Ok();
  }
  int reloads = 0;
};

}  // namespace

int main() {
  auto log = sd::MakeLogSink();
  const char* dir = std::getenv("CREDENTIALS_DIRECTORY");
  std::string pin;
  if (dir != nullptr) {
    std::ifstream in(std::string(dir) + "/hsm-pin");
    std::stringstream ss;
    ss << in.rdbuf();
    pin = ss.str();
  }
  if (pin.empty()) {
    log->Log(Severity::kError, event::kConfig, "no token PIN credential");
    return 78;
  }
  if (pin == "wrong") {
    log->Log(Severity::kCritical, event::kTokenSession,
             "token login refused: PIN incorrect; not retrying");
    return 77;
  }

  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool bound = fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  const int listened = bound ? listen(fd, 1) : -1;
  const int listen_errno = errno;
  if (fd >= 0) close(fd);
  log->Log(Severity::kInfo, event::kAgentLifecycle,
           listened == 0 ? std::string("listen() was allowed")
                         : std::string("listen() refused: ") + std::strerror(listen_errno));

  auto loop = sd::EventLoop::Create(sd::Notifier::FromEnvironment(), *log);
  if (!loop.ok()) return 1;
  StandInAgent agent;
  auto bus = sd::BusService::Start(**loop, agent, {"stand-in"});
  if (!bus.ok()) {
    log->Log(Severity::kError, event::kAgentLifecycle, bus.status().message());
    return 1;
  }
  (*loop)->SetReloadHandler([&agent] { return agent.Reload(); });
  (*bus)->SetProperties({"running", std::nullopt, 0, 0});
  (*loop)->notifier().Ready("Running (stand-in)").IgnoreError();
  const sd::LoopExit exit = (*loop)->Run();
  if (exit.reason != sd::LoopExit::Reason::kSignal) {
    (*loop)->notifier().Stopping(exit.status.message()).IgnoreError();
  }
  bus->reset();
  loop->reset();
  return exit.reason == sd::LoopExit::Reason::kSignal ? 0 : 1;
}
