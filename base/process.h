// Process hygiene for a process that holds secrets.
#pragma once

#include "base/status.h"

namespace cakewalk {

// Makes the process non-dumpable (no core files, no ptrace by other users, /proc/self owned by
// root) and sets RLIMIT_CORE to 0. Called first thing in main().
Status HardenProcess();

}  // namespace cakewalk
