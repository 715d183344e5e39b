// cakewalk-agent: the composition root. Hardens the process before anything else, initialises
// libcurl once, then runs one command.
#include <malloc.h>

#include <iostream>
#include <string>
#include <vector>

#include "agent/cli.h"
#include "base/process.h"
#include "jira/curl_transport.h"

int main(int argc, char** argv) {
  // glibc gives every thread that allocates its own malloc arena (up to 8 per core), and each
  // keeps the memory freed in it. The access sync's fetch threads, its record builder and the job
  // loop's threads all allocate pages' worth of JSON, so every arena ends up holding some: at 1M
  // users two arenas gave a peak 3.7 MB lower (docs/performance.md, "Access sync memory"). The
  // agent's threads mostly wait on the network; two arenas are enough contention-wise.
  mallopt(M_ARENA_MAX, 2);
  // A fixed mmap threshold: blocks of 128 KiB and more (Jira's pages of 1000 users, records calls
  // of 1000 records, as they grow) are mapped and unmapped on their own. glibc's default raises
  // the threshold to the largest block freed so far (up to 32 MiB), after which those buffers come
  // from the arenas, and the small objects allocated between them keep the freed space resident.
  // Setting it also keeps the trim threshold at its 128 KiB default instead of growing with it.
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
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
