// cakewalk-agent: the composition root. Hardens the process before anything else, initialises
// libcurl once, then runs one command.
#include <iostream>
#include <string>
#include <vector>

#include "agent/cli.h"
#include "base/process.h"
#include "jira/curl_transport.h"

int main(int argc, char** argv) {
  if (cakewalk::Status s = cakewalk::HardenProcess(); !s.ok()) {
    std::cerr << "cakewalk-agent: " << s.message() << "\n";
    return cakewalk::agent::kExitFailure;
  }
  if (cakewalk::Status s = cakewalk::http::GlobalInit(); !s.ok()) {
    std::cerr << "cakewalk-agent: " << s.message() << "\n";
    return cakewalk::agent::kExitFailure;
  }
  std::vector<std::string> args(argv + 1, argv + argc);
  return cakewalk::agent::RunCli(args, {std::cout, std::cerr});
}
