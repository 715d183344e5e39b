// Access Sync (job jira.access_sync, docs/protocol.md §12; docs/access-sync.md): every Jira
// identity with e-mail, name, groups, product access, global admin permissions and non-human
// classification, plus group and credential records, streamed to a sink while the site is read —
// in memory that does not grow with the number of users.
//
// Enumeration (per flavor and Data Center version):
//   users    DC 10.3+/11: GET user/list (cursor chain, 1000 per page; Jira never repeats a user);
//            DC 9.x: GET user/search?username=.&includeActive&includeInactive, startAt pages of
//            1000, until an empty page; DC 10.0-10.2: user/search stops at 100 results, so users
//            come from the members of every group — accounts in no group cannot be seen and the
//            output's `warnings` says so (code users_outside_groups_not_listed), and
//            group/member shows no last login (warning last_login_unavailable);
//            Cloud: GET users/search, bare arrays of at most 1000 from startAt, advancing startAt
//            by the page size asked for and stopping only on an EMPTY page (privacy filtering
//            shortens pages after the range was taken).
//   groups   DC: GET groups/picker, whose answer is capped (jira.ajax.autocomplete.limit); a
//            truncated answer (fewer shown than `total`) is completed by narrower queries
//            (substrings one character longer, either side) and, for what remains, by excluding
//            the names already seen; counts are checked against each query's `total`, and a
//            shortfall is a warning (groups_incomplete). Cloud: GET group/bulk PageBeans.
//   members  GET group/member?includeInactiveUsers=true, 50 per page: the first page of each
//            group gives `total`, the other pages of every group are then fetched concurrently,
//            a bounded window of each group at a time (and followed sequentially past `total`
//            while isLast is false; a page saying isLast ends the group).
//   products GET applicationrole: a user holds a product when a member of one of its groups.
//   admin    Cloud: group/bulk?accessType=admin (ADMINISTER) and accessType=site-admin
//            (SYSTEM_ADMIN, which implies ADMINISTER). Data Center publishes no list of global
//            permission grants; the group picker labels the groups that give administrative
//            access (label type ADMIN), so their members get ADMINISTER and level admin, and
//            SYSTEM_ADMIN is never claimed (warning system_admin_not_distinguished).
//   tokens   DC: POST /rest/pat/latest/tokens/search (the admin token inventory; undocumented),
//            GET /rest/applinks/latest/listApplicationlinks, GET /rest/oauth2/latest/client —
//            as credential records; PAT owners feed the non-human rules (sync_classify.h).
//            Cloud: API tokens are listed only by the organization admin API, which access sync
//            credentials cannot use (warning credentials_not_listed).
//
// Memory: nothing is kept per user. Users are spooled to a SQLite scratch file (SyncStore,
// de-duplicated by id there), memberships go to the same file, and user records are emitted from
// it once every membership is in, joined one bounded batch at a time; groups (a few thousand) are
// kept in memory. Pages in flight are bounded by the gate's slots, user pages (the big ones) by
// two at a time.
//
// Integrity: records are numbered by the sink in order; `sha256` is over each record's canonical
// JSON (WriteJson) in emission order, `counts` count what was emitted. Any failure — a page that
// cannot be fetched after RestClient's retries, a stop request (lease lost, timeout, shutdown),
// the sink refusing — ends the sync with that Status and no output: a partial stream is never
// reported as a result.
#pragma once

#include <json/json.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <stop_token>
#include <string>
#include <vector>

#include "base/status.h"
#include "jira/connection.h"
#include "jira/sync_gate.h"

namespace cakewalk::jira {

// Where records go, in order, from one thread. (The agent's job loop numbers them into records
// calls of at most 1000.)
class SyncRecordSink {
 public:
  virtual ~SyncRecordSink() = default;
  // One record (a JSON object) as its canonical JSON (base/json.h WriteJson): the output's sha256
  // is over these bytes, so a sink sends them as they are.
  virtual Status Write(std::string record_json) = 0;
  // Everything written is delivered; returns the number of calls (pages) used.
  virtual Result<std::int64_t> Finish() = 0;
};

struct SyncProgress {
  std::string phase;  // "groups", "memberships", "users", "done"
  std::int64_t records = 0;
  std::int64_t users_seen = 0;  // distinct users stored so far
  std::int64_t users_emitted = 0;
  std::int64_t groups_known = 0;
  std::int64_t groups_done = 0;  // groups whose members are all in
  std::int64_t member_pages_done = 0;
  std::int64_t member_pages_known = 0;  // pages the groups' totals call for, as known so far
  bool member_pages_final = false;      // every group's total is known
  std::int64_t requests = 0;            // HTTP requests to Jira
  int concurrency = 0;                  // the gate's slots now
  std::chrono::milliseconds elapsed{0};
  double records_per_second = 0;
  // Remaining time, where a total is known (the memberships), else negative.
  std::chrono::seconds eta{-1};
};
// One line for systemd's STATUS=, D-Bus and logs: "access sync: memberships 412/6104 pages,
// 20394 users seen, 1203 records (850/s), 6 parallel, ~31 s left".
std::string DescribeProgress(const SyncProgress& progress);

struct AccessSyncOptions {
  int max_concurrency = 8;                // access_sync.max_concurrency
  std::vector<std::string> nhi_patterns;  // Data Center name patterns
  // Parent of the scratch folder; empty: the connection's state_dir/jira/access-sync.
  std::filesystem::path scratch_dir;
  int scratch_cache_kib = 4096;
  // Called with fresh figures every `progress_interval` (from the calling thread).
  std::function<void(const SyncProgress&)> progress;
  std::chrono::milliseconds progress_interval{1000};
  // Tests and the bench: the gate's options and an observer of every exchange.
  int initial_concurrency = 2;
  std::function<void(const http::Request&, const http::Response&)> observer;
  // Retry bounds for page fetches (a sync waits longer for a throttled site than a job does).
  RetryPolicy retry{12, std::chrono::milliseconds(15 * 60'000), std::chrono::milliseconds(1000),
                    std::chrono::milliseconds(30'000), std::chrono::milliseconds(15 * 60'000)};
};

// What the sync learned besides the records (for the bench and tests).
struct SyncReport {
  Json::Value output;  // the job's output object
  GateStats gate;
  std::int64_t fetches = 0;  // page tasks run
};

// Runs jira.access_sync. `params` is the job's params object ({} or {"include": [...]}, checked
// strictly: invalid_params otherwise). Returns the output object, or the failure (jobs.md code in
// reason(); "stopped" when `stop` was requested).
Result<SyncReport> RunAccessSync(Connection& connection, const Json::Value& params,
                                 const AccessSyncOptions& options, SyncRecordSink& sink,
                                 std::stop_token stop);

}  // namespace cakewalk::jira
