// A process that renews the agent certificate and dies at a chosen step of the renewal state
// machine (agent/renewal.h), for the crash tests in renewal_test.cc.
//
//   renewal_crash_helper CONFIG POINT
//
// Exit status: 42 when it stopped at POINT (with _exit: no destructors, no flushing, no cleanup,
// as a crash would), 0 when the renewal finished without reaching POINT, 1 on an error (printed).
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "agent/config.h"
#include "agent/cp_transport.h"
#include "agent/identity.h"
#include "agent/renewal.h"
#include "agent/token_context.h"
#include "base/log.h"

int main(int argc, char** argv) {
  using namespace cakewalk;
  using namespace cakewalk::agent;
  if (argc != 3) {
    std::cerr << "usage: renewal_crash_helper CONFIG POINT\n";
    return 1;
  }
  const std::string point = argv[2];
  auto config = LoadConfig(argv[1], ConfigEnvironment::FromProcess());
  if (!config.ok()) {
    std::cerr << config.status().ToString() << "\n";
    return 1;
  }
  NullLogSink log;
  auto token = TokenContext::Open(*config, log);
  if (!token.ok()) {
    std::cerr << token.status().ToString() << "\n";
    return 1;
  }
  auto identity = Identity::Open(config->state_dir, (*token)->token(), log);
  if (!identity.ok()) {
    std::cerr << identity.status().ToString() << "\n";
    return 1;
  }
  ControlPlaneLink link(*config, (*token)->secrets(), **identity);
  CertificateRenewer renewer(**identity, [&link] { return link.Client(); });
  renewer.SetStepHook([&point](RenewalPoint p) {
    if (RenewalPointName(p) == point) _exit(42);
  });
  auto outcome = renewer.MaybeRenew(/*requested_by_server=*/true);
  if (!outcome.ok()) {
    std::cerr << outcome.status().ToString() << "\n";
    return 1;
  }
  return 0;
}
