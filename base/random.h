// Randomness for jitter (back-off, retries): not for keys or secrets, which come from the token or
// OpenSSL's DRBG.
#pragma once

namespace cakewalk {

// A uniform draw from [0, 1) from one process-wide engine, seeded once from std::random_device.
// Thread-safe. Seeding an engine per back-off schedule cost tens of microseconds per job (the
// schedule is built for every job and every Jira client, and std::random_device's set-up showed
// in the agent's profile).
double SharedUniformUnit();

}  // namespace cakewalk
