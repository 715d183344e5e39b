#include "jira/access_sync.h"

#include <malloc.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stop_token>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "base/encoding.h"
#include "base/json.h"
#include "base/time.h"
#include "jira/client_util.h"
#include "jira/dc_client.h"
#include "jira/errors.h"
#include "jira/pagination.h"
#include "jira/sync_classify.h"
#include "jira/sync_names.h"
#include "jira/sync_pool.h"
#include "jira/sync_store.h"

namespace cakewalk::jira {
namespace {

using internal::OptString;
using Steady = std::chrono::steady_clock;

constexpr int kUserPageSize = 1000;
constexpr int kMemberPageSize = 50;
constexpr int kGroupPageSize = 50;
constexpr int kPatPageSize = 100;
constexpr int kUserPagesInFlight = 2;
constexpr int kEmitBatch = 250;
// User batches read from the store and being built on the pool ahead of the one being emitted.
constexpr std::size_t kUserBatchesAhead = 2;
constexpr std::int64_t kBatchesPerTrim = 8;  // malloc_trim every 2000 users emitted
constexpr std::size_t kReadyLimit = 2000;  // queued group/credential records before producers wait
constexpr int kPickerMaxResults = 1000;
constexpr std::int64_t kExcludePagingLimit = 250;  // names a query may page through by exclusion
constexpr std::size_t kExcludeUrlBudget = 6000;    // bytes of exclude parameters per request
constexpr std::size_t kMaxQueryLength = 64;
constexpr std::int64_t kMaxPages = 10'000'000;
// A group's member pages queued or in flight at once, and the groups whose pages are, at least
// (twice the concurrency if more): more than the gate's slots, so that one big group alone still
// fills them; bounded, so that neither a group's `total` nor the number of groups decides how
// much is queued.
constexpr std::int64_t kMemberPagesAhead = 16;

char FoldChar(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string FoldAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = FoldChar(c);
  return out;
}

// Jira's time stamps ("2026-01-01T10:00:00.000+0000") as RFC 3339 in UTC; nullopt when absent or
// not a time.
std::optional<std::string> JiraTimeOrNull(const Json::Value& v, const char* key) {
  auto text = OptString(v, key);
  if (!text || text->empty()) return std::nullopt;
  auto t = ParseRfc3339(*text);
  if (!t.ok()) return std::nullopt;
  return FormatRfc3339(*t);
}

// A page of 1000 users parses into a few megabytes on whichever worker thread fetched it, and
// glibc keeps what a thread freed in that thread's arena: over a sync every worker would hold a
// page's worth. Handing freed memory back after each big page keeps the peak at the pages in
// flight.
void ReleaseFreedMemory() { malloc_trim(0); }

Json::Value TextOrNull(const std::optional<std::string>& v) {
  return v ? Json::Value(*v) : Json::Value(Json::nullValue);
}

// ---- Big pages, parsed an element at a time ---------------------------------------------------
// A page of 1000 users parsed as one Json::Value tree takes about 3 MB (a map node, a key and a
// value for every member of every user), several times its text, and the user listing's pages
// overlap everything else the sync holds: on a site with many users for as long as the user
// records go out. So the listing's pages are split first: a scanner finds where each element of
// the page's array begins and ends, each element is parsed on its own by ParseJson (at most one
// user's tree at a time), and the rest of the page (`{"isLast":..,"values":[]}`) likewise. The
// scanner only finds boundaries, ParseJson still judges every byte; a body it does not follow
// (anything but an array of values, or an object with one such member) is parsed whole as before.

constexpr std::size_t kNoEnd = std::string_view::npos;
// Nesting the scanner follows; deeper bodies are parsed whole, so that ParseJson's limit (64)
// applies to them as to any answer.
constexpr std::size_t kScanDepth = 60;

bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::size_t SkipSpace(std::string_view t, std::size_t pos) {
  while (pos < t.size() && IsJsonSpace(t[pos])) ++pos;
  return pos;
}

// The end of the value starting at `pos`, nested `depth` deep in the document; kNoEnd when the
// scanner cannot follow it (ParseJson then reads the whole body and says what is wrong).
std::size_t ValueEnd(std::string_view t, std::size_t pos, std::size_t depth) {
  if (pos >= t.size()) return kNoEnd;
  const char c = t[pos];
  if (c == '"') {
    for (std::size_t i = pos + 1; i < t.size(); ++i) {
      if (t[i] == '\\') {
        ++i;
      } else if (t[i] == '"') {
        return i + 1;
      }
    }
    return kNoEnd;
  }
  if (c == '{' || c == '[') {
    std::string open;  // brackets not closed yet
    for (std::size_t i = pos; i < t.size(); ++i) {
      const char d = t[i];
      if (d == '"') {
        const std::size_t end = ValueEnd(t, i, 0);
        if (end == kNoEnd) return kNoEnd;
        i = end - 1;
      } else if (d == '{' || d == '[') {
        open.push_back(d);
        if (depth + open.size() > kScanDepth) return kNoEnd;
      } else if (d == '}' || d == ']') {
        if (open.empty() || open.back() != (d == '}' ? '{' : '[')) return kNoEnd;
        open.pop_back();
        if (open.empty()) return i + 1;
      }
    }
    return kNoEnd;
  }
  // A number, true, false or null: up to the next delimiter.
  std::size_t i = pos;
  while (i < t.size() && t[i] != ',' && t[i] != ']' && t[i] != '}' && !IsJsonSpace(t[i])) ++i;
  return i == pos ? kNoEnd : i;
}

// The elements of the array starting at `open` (a '['), nested `depth` deep; the position after
// its ']', or kNoEnd.
std::size_t ArrayItems(std::string_view t, std::size_t open, std::size_t depth,
                       std::vector<std::string_view>& items) {
  std::size_t pos = SkipSpace(t, open + 1);
  if (pos < t.size() && t[pos] == ']') return pos + 1;
  while (true) {
    const std::size_t end = ValueEnd(t, pos, depth + 1);
    if (end == kNoEnd) return kNoEnd;
    items.push_back(t.substr(pos, end - pos));
    pos = SkipSpace(t, end);
    if (pos >= t.size()) return kNoEnd;
    if (t[pos] == ']') return pos + 1;
    if (t[pos] != ',') return kNoEnd;
    pos = SkipSpace(t, pos + 1);
  }
}

struct SplitPage {
  std::string rest;  // the page with the array emptied ("" when the page is the array)
  std::vector<std::string_view> items;
};

std::optional<SplitPage> SplitPageTextOfAnyItems(std::string_view body, std::string_view key);

// Splits `body`: an array of items (`key` empty) or an object whose member `key` (exactly so
// spelled, once) is the array of items, every item an object or an array (ParseJson takes no
// other document). nullopt when the body is not shaped so.
std::optional<SplitPage> SplitPageText(std::string_view body, std::string_view key) {
  std::optional<SplitPage> page = SplitPageTextOfAnyItems(body, key);
  if (!page) return std::nullopt;
  for (std::string_view item : page->items) {
    if (item.front() != '{' && item.front() != '[') return std::nullopt;
  }
  return page;
}

std::optional<SplitPage> SplitPageTextOfAnyItems(std::string_view body, std::string_view key) {
  SplitPage page;
  std::size_t pos = SkipSpace(body, 0);
  if (key.empty()) {
    if (pos >= body.size() || body[pos] != '[') return std::nullopt;
    const std::size_t end = ArrayItems(body, pos, 1, page.items);
    if (end == kNoEnd || SkipSpace(body, end) != body.size()) return std::nullopt;
    return page;
  }
  if (pos >= body.size() || body[pos] != '{') return std::nullopt;
  std::size_t array_open = kNoEnd, array_end = kNoEnd;
  pos = SkipSpace(body, pos + 1);
  if (pos < body.size() && body[pos] == '}') return std::nullopt;  // no array at all
  while (true) {
    const std::size_t key_end =
        pos < body.size() && body[pos] == '"' ? ValueEnd(body, pos, 1) : kNoEnd;
    if (key_end == kNoEnd) return std::nullopt;
    const std::string_view name = body.substr(pos + 1, key_end - pos - 2);
    pos = SkipSpace(body, key_end);
    if (pos >= body.size() || body[pos] != ':') return std::nullopt;
    pos = SkipSpace(body, pos + 1);
    std::size_t end;
    if (name == key) {
      if (array_open != kNoEnd || pos >= body.size() || body[pos] != '[') return std::nullopt;
      array_open = pos;
      end = ArrayItems(body, pos, 1, page.items);
      array_end = end;
    } else {
      end = ValueEnd(body, pos, 1);
    }
    if (end == kNoEnd) return std::nullopt;
    pos = SkipSpace(body, end);
    if (pos >= body.size()) return std::nullopt;
    if (body[pos] == '}') break;
    if (body[pos] != ',') return std::nullopt;
    pos = SkipSpace(body, pos + 1);
  }
  if (array_open == kNoEnd || SkipSpace(body, pos + 1) != body.size()) return std::nullopt;
  page.rest.reserve(body.size() - (array_end - array_open) + 2);
  page.rest.append(body.substr(0, array_open + 1));
  page.rest.append(body.substr(array_end - 1));
  return page;
}

// Parses a page of items (see above): `*rest` gets the page without its items (the array at `key`
// emptied; an empty array when `key` is empty and the page is an array), `item` each item in
// order. `before_items`, when given, sees `*rest` before the first item is parsed (a cursor chain
// asks for its next page then, while this one's items are still being read). An empty body leaves
// `*rest` null; malformed JSON is Jira's failure, as RestClient says.
Status ParsePageByItem(std::string_view body, std::string_view key, std::string_view what,
                       Json::Value* rest, const std::function<Status(const Json::Value&)>& item,
                       const std::function<Status(const Json::Value&)>& before_items = {}) {
  const auto malformed = [&] {
    return JiraUnavailable("Jira answered " + std::string(what) + " with malformed JSON");
  };
  *rest = Json::Value();
  if (body.empty()) return Status::Ok();
  std::optional<SplitPage> split;
  if (body.size() <= kMaxJsonBytes) split = SplitPageText(body, key);
  if (split) {
    if (key.empty()) {
      *rest = Json::Value(Json::arrayValue);
    } else {
      auto parsed = ParseJson(split->rest, "Jira's answer");
      if (!parsed.ok()) return malformed();
      *rest = std::move(*parsed);
      // An escaped spelling of the key parses to the same name: ParseJson refuses the duplicate
      // above; anything else but the emptied array here means the scanner was wrong.
      if (!rest->isObject() || !(*rest)[std::string(key)].isArray() ||
          !(*rest)[std::string(key)].empty()) {
        return malformed();
      }
    }
    if (before_items) CW_RETURN_IF_ERROR(before_items(*rest));
    for (std::string_view text : split->items) {
      auto parsed = ParseJson(text, "Jira's answer");
      if (!parsed.ok()) return malformed();
      CW_RETURN_IF_ERROR(item(*parsed));
    }
    return Status::Ok();
  }
  auto parsed = ParseJson(body, "Jira's answer");
  if (!parsed.ok()) return malformed();
  *rest = std::move(*parsed);
  Json::Value items;
  if (key.empty() && rest->isArray()) {
    items.swap(*rest);
    *rest = Json::Value(Json::arrayValue);
  } else if (!key.empty() && rest->isObject() && (*rest)[std::string(key)].isArray()) {
    items.swap((*rest)[std::string(key)]);
    (*rest)[std::string(key)] = Json::Value(Json::arrayValue);
  }
  if (before_items) CW_RETURN_IF_ERROR(before_items(*rest));
  for (const Json::Value& i : items) CW_RETURN_IF_ERROR(item(i));
  return Status::Ok();
}

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(std::string_view s) { EVP_DigestUpdate(ctx_, s.data(), s.size()); }
  std::string Hex() {
    std::array<std::uint8_t, 32> out{};
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_, out.data(), &n);
    return HexEncode(std::span<const std::uint8_t>(out.data(), n));
  }

 private:
  EVP_MD_CTX* ctx_;
};

struct Include {
  bool users = false;
  bool groups = false;
  bool credentials = false;
};

Result<Include> ParseParams(const Json::Value& params) {
  if (!params.isObject()) return InvalidParams("params must be an object");
  JsonFields f(params, "$.params");
  const bool has_include = f.Has("include");
  std::vector<std::string> include = f.StringArray("include");
  Status s = f.Finish();
  if (!s.ok()) return InvalidParams(s.message());
  Include out;
  if (!has_include) return Include{true, true, true};
  if (include.empty()) {
    return InvalidParams(
        "$.params.include: name at least one of users, groups, memberships, permissions, "
        "non_human (or leave include out for everything)");
  }
  for (const std::string& what : include) {
    if (what == "users" || what == "memberships" || what == "permissions") {
      // Memberships and permissions are parts of the user records, which are never sent with a
      // part left out.
      out.users = true;
    } else if (what == "groups") {
      out.groups = true;
    } else if (what == "non_human") {
      out.credentials = true;
    } else {
      return InvalidParams("$.params.include: unknown value '" + what +
                           "' (known: users, groups, memberships, permissions, non_human)");
    }
  }
  return out;
}

// A failure for an answer the sync did not expect. Jira's 400 is never the job's invalid_params.
Status Unexpected(const RestReply& reply, std::string_view what) {
  if (reply.status == 400) {
    return JiraInternal("Jira answered HTTP 400 to " + std::string(what) +
                        (reply.ErrorText().empty() ? "" : ": " + reply.ErrorText()));
  }
  return UnexpectedReply(reply, what);
}

// A known group, kept for the whole sync (user records name their groups). Its name and id are
// held by SyncRun::group_text_ (the same bytes when they are equal, as on Data Center).
struct Group {
  std::string_view name;
  std::string_view id;  // Cloud's groupId; Data Center's is the name
  bool admin = false;
  bool system_admin = false;
  std::uint64_t products = 0;  // bits over SyncRun::products_
  std::int64_t members = 0;    // distinct members stored
};

// Group names hashed and compared with ASCII case folded, given as they are or as an index into
// the known groups: a set of indexes finds a group by any spelling of its name without holding a
// second copy of every name.
struct FoldedNames {
  using is_transparent = void;
  const std::deque<Group>* groups;
  std::string_view Of(std::uint32_t gid) const { return (*groups)[gid].name; }
  std::string_view Of(std::string_view name) const { return name; }
};
struct FoldedHash : FoldedNames {
  template <typename Key>
  std::size_t operator()(const Key& key) const {
    std::size_t h = 14695981039346656037u;  // FNV-1a
    for (char c : Of(key)) h = (h ^ static_cast<unsigned char>(FoldChar(c))) * 1099511628211u;
    return h ^ (h >> 32);  // the high bits into the low ones, which IndexSet's slots use
  }
};
struct FoldedEqual : FoldedNames {
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    const std::string_view x = Of(a), y = Of(b);
    return x.size() == y.size() && std::equal(x.begin(), x.end(), y.begin(), [](char l, char r) {
             return FoldChar(l) == FoldChar(r);
           });
  }
};

// The member pages of an open group (SyncRun::OpenGroups), until its last page is done.
struct MemberPlan {
  std::int64_t pages_outstanding = 1;  // the first page
  std::int64_t last_scheduled_start = 0;
  // Pages planned from Jira's `total` are scheduled kMemberPagesAhead at a time: the next one
  // starts at next_start, the plan ends before planned_end.
  std::int64_t next_start = 0;
  std::int64_t planned_end = 0;
};

struct Warning {
  std::string code;
  std::string message;
};

class SyncRun {
 public:
  SyncRun(Connection& connection, const AccessSyncOptions& options, SyncRecordSink& sink,
          std::stop_token stop)
      : connection_(connection), options_(options), sink_(sink), outer_stop_(std::move(stop)) {}

  Result<SyncReport> Run(const Json::Value& params);

 private:
  // ---- Setup -------------------------------------------------------------------------------
  Status Prepare();
  Status LoadProducts();
  RestCall Api(std::initializer_list<std::string> tail) const;
  Result<RestReply> Execute(const RestCall& call, std::string_view what);
  Result<Json::Value> Get(const RestCall& call, std::string_view what);

  // ---- Groups ------------------------------------------------------------------------------
  // Registers a group (once per name); submits its member pages when memberships are wanted.
  // Returns the group's index when the name is new.
  std::optional<std::uint32_t> RegisterGroup(const std::string& name, const std::string& id,
                                             bool admin, bool system_admin);
  Status DiscoverDcGroups();
  Status DiscoverCloudGroups();
  Result<std::vector<std::string>> CloudGroupNames(const char* access_type);
  struct PickerAnswer {
    std::int64_t shown = 0;
    std::int64_t total = 0;
  };
  Result<PickerAnswer> Picker(const std::string& query, const std::vector<std::string>& exclude);
  std::int64_t KnownMatching(const std::string& folded_query);

  // ---- Pages -------------------------------------------------------------------------------
  void SubmitMemberPage(std::uint32_t gid, std::int64_t start, bool first);
  // Asks for the first member page of registered groups while fewer than MemberWindow() groups
  // have pages queued or in flight.
  void OpenGroups();
  // How many member pages a group keeps queued or in flight, and how many groups are open at once.
  std::int64_t MemberWindow() const;
  Status MemberPage(std::uint32_t gid, std::int64_t start, bool first);
  void GroupPageDone(std::uint32_t gid);
  Status UserListPage(std::optional<std::string> cursor, std::int64_t page);
  void SubmitUserSearchPage();
  Status UserSearchPage(std::int64_t start);
  void SubmitPatPage();
  Status PatPage(std::int64_t page);
  Status ListApplicationLinks();
  Status ListOAuthClients();
  Result<UserRow> ParseUserRow(const Json::Value& j, bool listing) const;

  // ---- Stages and emission -----------------------------------------------------------------
  void StageStarted(int stage);
  void StageDone(int stage);
  bool StageFinished(int stage) const;  // under mu_
  // Queues a group or credential record for the emitting thread, as its canonical JSON (written
  // here, on the producer's thread: a queued text is a fraction of a queued Json::Value).
  Status PushReady(const Json::Value& record);
  void AddWarning(std::string code, std::string message);
  // One record as its canonical JSON (WriteJson): hashed and handed to the sink as these bytes.
  Status Emit(std::string_view kind, std::string canonical);
  Status EmitUsers(bool* drained);
  // The user's record as canonical JSON; *human tells whether it is a human's.
  std::string UserRecordText(const SpooledUser& u, bool* human) const;
  Json::Value GroupRecord(const Group& g) const;
  SyncProgress Progress();
  void Notify() { events_cv_.notify_all(); }

  enum Stage { kDiscovery, kMembers, kUserListing, kTokens, kStageCount };

  Connection& connection_;
  const AccessSyncOptions& options_;
  SyncRecordSink& sink_;
  std::stop_token outer_stop_;

  Include include_;
  ServerInfo server_;
  Flavor flavor_ = Flavor::kDataCenter;
  DcUserListing listing_ = DcUserListing::kUserList;
  bool last_login_known_ = true;
  Authenticator* auth_ = nullptr;
  std::vector<std::string> products_;                           // product keys, by bit
  std::unordered_map<std::string, std::uint64_t> role_groups_;  // folded group name -> bits
  Steady::time_point started_;

  std::unique_ptr<SyncStore> store_;
  std::unique_ptr<SyncGate> gate_;
  std::unique_ptr<RestClient> rest_;

  mutable std::mutex mu_;
  std::condition_variable events_cv_;
  std::condition_variable ready_cv_;
  TextArena group_text_;  // the groups' names and ids, for the whole sync
  std::deque<Group> groups_;
  IndexSet<FoldedHash, FoldedEqual> group_by_name_{FoldedHash{{&groups_}}, FoldedEqual{{&groups_}}};
  // The names the Data Center group picker showed (folded), tagged with their index in groups_:
  // the discovery thread's only.
  GroupNameIndex picker_names_;
  struct ReadyRecord {
    std::string kind;
    std::string canonical;
  };
  std::deque<ReadyRecord> ready_;
  std::vector<Warning> warnings_;
  int stage_pending_[kStageCount] = {};
  bool stage_sealed_[kStageCount] = {};
  std::int64_t groups_done_ = 0;
  std::int64_t member_pages_done_ = 0;
  std::int64_t member_pages_known_ = 0;
  // Groups registered whose member pages are not asked for yet, and the groups whose pages are
  // (until their last page is done). A group's pages are queued only while it is open, so that
  // the pool's queue holds a bounded number of tasks however many groups the site has.
  std::deque<std::uint32_t> unopened_;
  std::unordered_map<std::uint32_t, MemberPlan> plans_;  // the open groups'
  std::int64_t groups_with_totals_ = 0;
  std::int64_t users_seen_ = 0;
  // The Data Center user/list chain: pages fetched and not yet stored, and the next page's
  // request held back while two are.
  int chain_unstored_ = 0;
  std::function<void()> chain_next_;
  // Windowed startAt listings (user/search, users/search) and the PAT inventory.
  std::int64_t user_next_start_ = 0;
  std::int64_t user_end_start_ = INT64_MAX;
  std::int64_t pat_next_page_ = 1;
  std::int64_t pat_end_page_ = INT64_MAX;

  // Emission state (the calling thread only).
  Sha256 sha_;
  std::int64_t records_ = 0, users_ = 0, groups_emitted_ = 0, non_human_ = 0, credentials_ = 0;
  // User records read from the store and built on the builder thread (canonical JSON, and whether
  // each is a person), emitted in store order. The emitting thread asks for each batch; the builder
  // reads the next kEmitBatch users after the last it read (an empty batch: none yet) and builds.
  struct UserBatch {
    std::int64_t asked_in_call = 0;  // which EmitUsers call asked for it
    std::vector<std::string> canonical;
    std::vector<bool> human;
    Status read;         // a failed store read
    bool built = false;  // under mu_
  };
  std::deque<std::shared_ptr<UserBatch>> user_batches_;
  std::int64_t user_batches_emitted_ = 0;
  std::int64_t emit_users_calls_ = 0;
  // One thread reads and builds them (the records live in its malloc arena only, not in every
  // pool thread's), started with the first batch.
  void BuildUsers(std::stop_token stop);
  std::int64_t last_user_seq_ = 0;                   // the builder thread's: the last user read
  std::deque<std::shared_ptr<UserBatch>> to_build_;  // mu_
  std::condition_variable_any build_cv_;
  std::jthread builder_;  // before pool_: stopped and joined after it

  std::unique_ptr<FetchPool> pool_;  // destroyed (joined) before everything above
  // Wakes the emitting thread as soon as the pool fails or is stopped (it would otherwise notice
  // at its next 50 ms check). Destroyed before the pool.
  std::optional<std::stop_callback<std::function<void()>>> wake_on_stop_;
};

// ---- Setup ----------------------------------------------------------------------------------

RestCall SyncRun::Api(std::initializer_list<std::string> tail) const {
  RestCall call;
  call.path = {"rest", "api", flavor_ == Flavor::kCloud ? "3" : "2"};
  call.path.insert(call.path.end(), tail.begin(), tail.end());
  return call;
}

Result<RestReply> SyncRun::Execute(const RestCall& call, std::string_view what) {
  return rest_->Execute(call, auth_, pool_->stop_token(), what);
}

Result<Json::Value> SyncRun::Get(const RestCall& call, std::string_view what) {
  CW_ASSIGN_OR_RETURN(RestReply reply, Execute(call, what));
  if (!reply.ok()) return Unexpected(reply, what);
  return std::move(reply.json);
}

Status SyncRun::Prepare() {
  CW_ASSIGN_OR_RETURN(Connection::RestAccess access, connection_.AccessSyncRest(outer_stop_));
  auth_ = access.auth;
  CW_ASSIGN_OR_RETURN(server_, connection_.Server(outer_stop_));
  flavor_ = connection_.settings().flavor;
  if (flavor_ == Flavor::kDataCenter) {
    listing_ = ChooseDcUserListing(server_);
    last_login_known_ = listing_ != DcUserListing::kGroupMembers;
  } else {
    last_login_known_ = false;
  }
  std::filesystem::path dir = options_.scratch_dir;
  if (dir.empty()) {
    if (connection_.settings().state_dir.empty()) {
      return JiraInternal("access sync needs a state directory for its scratch file");
    }
    dir = connection_.settings().state_dir / "jira" / "access-sync";
  }
  CW_ASSIGN_OR_RETURN(store_, SyncStore::Create(dir, options_.scratch_cache_kib));

  pool_ = std::make_unique<FetchPool>(std::max(1, options_.max_concurrency), outer_stop_);
  wake_on_stop_.emplace(pool_->stop_token(), std::function<void()>([this] { Notify(); }));
  const Runtime& rt = connection_.runtime();
  GateOptions gate;
  gate.max_concurrency = options_.max_concurrency;
  gate.initial_concurrency = options_.initial_concurrency;
  gate_ = std::make_unique<SyncGate>(connection_.transport(), *rt.clock, *rt.sleeper, gate,
                                     pool_->stop_token());
  if (options_.observer) gate_->SetObserver(options_.observer);
  Runtime runtime = rt;
  runtime.retry = options_.retry;
  // The gate is owned here; the RestClient only borrows it (an empty owner).
  std::shared_ptr<http::Transport> borrowed(std::shared_ptr<void>(), gate_.get());
  rest_ = std::make_unique<RestClient>(borrowed, access.api->base(), runtime, nullptr);
  return Status::Ok();
}

Status SyncRun::LoadProducts() {
  CW_ASSIGN_OR_RETURN(Json::Value roles, Get(Api({"applicationrole"}), "GET applicationrole"));
  if (!roles.isArray()) return JiraInternal("Jira answered GET applicationrole with no list");
  for (const Json::Value& role : roles) {
    auto key = OptString(role, "key");
    if (!key || products_.size() >= 64) continue;
    const std::uint64_t bit = std::uint64_t{1} << products_.size();
    products_.push_back(*key);
    if (role["groups"].isArray()) {
      for (const Json::Value& g : role["groups"]) {
        if (g.isString()) role_groups_[FoldAscii(g.asString())] |= bit;
      }
    }
  }
  return Status::Ok();
}

// ---- Stages -----------------------------------------------------------------------------------

void SyncRun::StageStarted(int stage) {
  std::lock_guard lock(mu_);
  ++stage_pending_[stage];
}

void SyncRun::StageDone(int stage) {
  {
    std::lock_guard lock(mu_);
    --stage_pending_[stage];
  }
  Notify();
}

bool SyncRun::StageFinished(int stage) const {
  return stage_sealed_[stage] && stage_pending_[stage] == 0;
}

void SyncRun::AddWarning(std::string code, std::string message) {
  std::lock_guard lock(mu_);
  for (const Warning& w : warnings_) {
    if (w.code == code) return;
  }
  warnings_.push_back({std::move(code), std::move(message)});
}

Status SyncRun::PushReady(const Json::Value& record) {
  ReadyRecord ready{record["kind"].asString(), WriteJson(record)};
  std::unique_lock lock(mu_);
  const std::stop_token stop = pool_->stop_token();
  while (ready_.size() >= kReadyLimit && !stop.stop_requested()) {
    ready_cv_.wait_for(lock, std::chrono::milliseconds(100));
  }
  if (stop.stop_requested()) return Stopped();
  ready_.push_back(std::move(ready));
  lock.unlock();
  Notify();
  return Status::Ok();
}

// ---- Groups -----------------------------------------------------------------------------------

std::optional<std::uint32_t> SyncRun::RegisterGroup(const std::string& name, const std::string& id,
                                                    bool admin, bool system_admin) {
  std::uint32_t gid;
  {
    std::lock_guard lock(mu_);
    if (auto known = group_by_name_.Find(std::string_view(name))) {
      Group& g = groups_[*known];
      g.admin |= admin;
      g.system_admin |= system_admin;
      return std::nullopt;
    }
    gid = static_cast<std::uint32_t>(groups_.size());
    Group g;
    g.name = group_text_.Add(name);
    g.id = id == name ? g.name : group_text_.Add(id);
    g.admin = admin || system_admin;
    g.system_admin = system_admin;
    if (auto it = role_groups_.find(FoldAscii(name)); it != role_groups_.end()) {
      g.products = it->second;
    }
    groups_.push_back(std::move(g));
    group_by_name_.Insert(gid);
    ++stage_pending_[kMembers];
    ++member_pages_known_;
    unopened_.push_back(gid);
  }
  OpenGroups();
  return gid;
}

// How many known groups contain the query. Only the group picker registers Data Center groups,
// so its index holds every known name.
std::int64_t SyncRun::KnownMatching(const std::string& folded_query) {
  return picker_names_.Count(folded_query);
}

Result<SyncRun::PickerAnswer> SyncRun::Picker(const std::string& query,
                                              const std::vector<std::string>& exclude) {
  RestCall call = Api({"groups", "picker"});
  call.query = {{"query", query}, {"maxResults", std::to_string(kPickerMaxResults)}};
  for (const std::string& e : exclude) call.query.emplace_back("exclude", e);
  CW_ASSIGN_OR_RETURN(Json::Value page, Get(call, "GET groups/picker"));
  if (!page.isObject() || !page["groups"].isArray()) {
    return JiraInternal("Jira answered GET groups/picker with no groups");
  }
  PickerAnswer answer;
  for (const Json::Value& g : page["groups"]) {
    auto name = OptString(g, "name");
    if (!name) continue;
    bool admin = false;
    if (g["labels"].isArray()) {
      for (const Json::Value& label : g["labels"]) {
        if (OptString(label, "type") == "ADMIN") admin = true;
      }
    }
    if (auto gid = RegisterGroup(*name, *name, admin, false)) {
      picker_names_.Add(FoldAscii(*name), *gid);
    }
    ++answer.shown;
  }
  answer.total = page["total"].isInt64() ? page["total"].asInt64() : answer.shown;
  return answer;
}

// The group picker shows at most jira.ajax.autocomplete.limit names per query and says how many
// matched (`total`). A query whose matches are not all known yet is narrowed: the same query one
// character longer on either side covers every longer name containing it. A query with few
// enough matches is instead paged by excluding the names already known. The alphabet is taken from
// the names seen so far, and each character learned later narrows again every query narrowed
// before it that is still short of its total (no query is asked twice). A name made only of
// characters no shown name has is found by exclusion alone; what cannot be found within the URL
// budget is reported.
Status SyncRun::DiscoverDcGroups() {
  // A query to take up, and the query it narrows with the total Jira gave for that one.
  struct Pending {
    std::string query;
    std::string parent;
    std::int64_t parent_total = 0;
  };
  std::deque<Pending> pending{{"", "", 0}};
  // Every query taken from `pending` (folded), sent or not: at 10k groups some 20k of them.
  std::optional<StringSet> asked_store;
  StringSet& asked = asked_store.emplace();
  std::int64_t everything = -1;  // the total Jira gave for ""
  std::int64_t unresolved = 0;
  const auto satisfied = [&](const std::string& q, std::int64_t total) {
    return KnownMatching(q) >= total;
  };
  // The characters known, in the order they became known, and each narrowed query with how many
  // of them it was narrowed by. A query is narrowed by every character known when it is; those
  // learned later (names sorting late show them only to later queries) narrow again, once the
  // queue is empty, every query still short of its total, "" included (waiting lets the other
  // queries complete it first). A complete query is dropped (its count only grows, its total is
  // fixed). Ends when the queue is empty and no query is short for want of a character.
  std::vector<std::string> letters;
  std::unordered_set<std::string> letter_set;
  const auto learn = [&] {
    if (picker_names_.alphabet().size() == letters.size()) return;
    for (const std::string& c : picker_names_.alphabet()) {
      if (letter_set.insert(c).second) letters.push_back(c);
    }
  };
  struct Narrowed {
    std::string query;
    std::int64_t total = 0;
    std::size_t letters = 0;  // how many of `letters` narrowed it
  };
  std::vector<Narrowed> narrowed;
  const auto narrow = [&](const std::string& q, std::int64_t total, std::size_t from) {
    for (std::size_t i = from; i < letters.size(); ++i) {
      for (std::string child : {q + letters[i], letters[i] + q}) {
        if (!asked.Contains(child)) pending.push_back({std::move(child), q, total});
      }
    }
  };
  while (true) {
    if (pending.empty()) {
      learn();
      std::erase_if(narrowed, [&](Narrowed& n) {
        if (satisfied(n.query, n.total)) return true;
        narrow(n.query, n.total, n.letters);
        n.letters = letters.size();
        return false;
      });
      if (pending.empty()) break;
    }
    if (pool_->stop_token().stop_requested()) return Stopped();
    Pending p = std::move(pending.front());
    pending.pop_front();
    if (!asked.Insert(p.query)) continue;
    if (!p.query.empty() && satisfied(p.parent, p.parent_total)) continue;
    CW_ASSIGN_OR_RETURN(PickerAnswer answer, Picker(p.query, {}));
    if (p.query.empty()) everything = answer.total;
    if (answer.shown >= answer.total || satisfied(p.query, answer.total)) continue;
    if (answer.total <= kExcludePagingLimit) {
      // Page by exclusion while it finds new names.
      bool resolved = false;
      while (true) {
        std::vector<std::string> known;
        std::size_t bytes = 0;
        {
          std::lock_guard lock(mu_);
          picker_names_.ForEachMatch(p.query, [&](std::uint32_t gid) {
            known.emplace_back(groups_[gid].name);
            bytes += UrlEncode(groups_[gid].name).size() + 9;
          });
        }
        if (static_cast<std::int64_t>(known.size()) >= answer.total) {
          resolved = true;
          break;
        }
        if (bytes > kExcludeUrlBudget) break;
        CW_ASSIGN_OR_RETURN(PickerAnswer more, Picker(p.query, known));
        if (more.shown == 0) break;
      }
      if (resolved) continue;
    }
    if (p.query.size() >= kMaxQueryLength) {
      ++unresolved;
      continue;
    }
    learn();
    narrow(p.query, answer.total, 0);
    narrowed.push_back({p.query, answer.total, letters.size()});
  }
  // Every query must be accounted for: what is still short was not found.
  std::int64_t missing = 0;
  if (everything >= 0) missing = std::max<std::int64_t>(0, everything - KnownMatching(""));
  if (missing > 0 || unresolved > 0) {
    AddWarning("groups_incomplete",
               "the group picker is capped (jira.ajax.autocomplete.limit) and " +
                   std::to_string(missing) +
                   " group(s) could not be listed through it; their members are missing");
  }
  // The index (a suffix per character of every name, a count per query) is needed by nothing
  // after discovery; the members' pages are still coming in, so its memory is given back now.
  picker_names_ = GroupNameIndex();
  asked_store.reset();
  narrowed = {};
  ReleaseFreedMemory();
  return Status::Ok();
}

Result<std::vector<std::string>> SyncRun::CloudGroupNames(const char* access_type) {
  std::vector<std::string> names;
  RestCall call = Api({"group", "bulk"});
  call.query = {{"accessType", access_type}};
  PageLimits limits;
  limits.page_size = kGroupPageSize;
  CW_RETURN_IF_ERROR(ForEachPageBeanItem(*rest_, call, auth_, limits, pool_->stop_token(),
                                         "GET group/bulk",
                                         [&](const Json::Value& g) -> Result<bool> {
                                           if (auto n = OptString(g, "name")) names.push_back(*n);
                                           return true;
                                         }));
  return names;
}

Status SyncRun::DiscoverCloudGroups() {
  CW_ASSIGN_OR_RETURN(std::vector<std::string> admins, CloudGroupNames("admin"));
  CW_ASSIGN_OR_RETURN(std::vector<std::string> site_admins, CloudGroupNames("site-admin"));
  std::set<std::string> admin_set, site_set;
  for (const auto& n : admins) admin_set.insert(FoldAscii(n));
  for (const auto& n : site_admins) site_set.insert(FoldAscii(n));
  RestCall call = Api({"group", "bulk"});
  PageLimits limits;
  limits.page_size = kGroupPageSize;
  return ForEachPageBeanItem(*rest_, call, auth_, limits, pool_->stop_token(), "GET group/bulk",
                             [&](const Json::Value& g) -> Result<bool> {
                               auto name = OptString(g, "name");
                               auto id = OptString(g, "groupId");
                               if (!name) return true;
                               const std::string folded = FoldAscii(*name);
                               RegisterGroup(*name, id.value_or(*name),
                                             admin_set.count(folded) != 0,
                                             site_set.count(folded) != 0);
                               return true;
                             });
}

// ---- Member pages ---------------------------------------------------------------------------

std::int64_t SyncRun::MemberWindow() const {
  // More than the gate's slots, so that one big group alone fills them, or as many groups of one
  // page each.
  return std::max<std::int64_t>(kMemberPagesAhead, 2 * std::int64_t{options_.max_concurrency});
}

void SyncRun::OpenGroups() {
  std::vector<std::uint32_t> opened;
  {
    std::lock_guard lock(mu_);
    while (!unopened_.empty() && static_cast<std::int64_t>(plans_.size()) < MemberWindow()) {
      opened.push_back(unopened_.front());
      unopened_.pop_front();
      plans_.emplace(opened.back(), MemberPlan{});
    }
  }
  for (std::uint32_t gid : opened) SubmitMemberPage(gid, 0, true);
}

void SyncRun::SubmitMemberPage(std::uint32_t gid, std::int64_t start, bool first) {
  pool_->Submit(FetchPool::kNormal, [this, gid, start, first] {
    Status s = MemberPage(gid, start, first);
    if (s.ok()) GroupPageDone(gid);
    return s;
  });
}

Status SyncRun::MemberPage(std::uint32_t gid, std::int64_t start, bool first) {
  std::string_view name, id;  // views of group_text_, which keeps them for the whole sync
  {
    std::lock_guard lock(mu_);
    name = groups_[gid].name;
    id = groups_[gid].id;
  }
  RestCall call = Api({"group", "member"});
  if (flavor_ == Flavor::kCloud) {
    call.query.emplace_back("groupId", id);
  } else {
    call.query.emplace_back("groupname", name);
  }
  call.query.emplace_back("includeInactiveUsers", "true");
  call.query.emplace_back("startAt", std::to_string(start));
  call.query.emplace_back("maxResults", std::to_string(kMemberPageSize));
  CW_ASSIGN_OR_RETURN(RestReply reply, Execute(call, "GET group/member"));
  if (reply.status == 404) return Status::Ok();  // deleted since it was listed
  if (!reply.ok()) return Unexpected(reply, "GET group/member");
  const Json::Value& bean = reply.json;
  if (!bean.isObject() || !bean["values"].isArray()) {
    return JiraInternal("Jira answered GET group/member with no page of values");
  }
  std::vector<std::string> ids;
  std::vector<UserRow> rows;
  const bool users_from_members =
      flavor_ == Flavor::kDataCenter && listing_ == DcUserListing::kGroupMembers && include_.users;
  for (const Json::Value& item : bean["values"]) {
    auto uid = OptString(item, flavor_ == Flavor::kCloud ? "accountId" : "key");
    if (!uid) continue;
    ids.push_back(*uid);
    if (users_from_members) {
      auto row = ParseUserRow(item, false);
      if (row.ok()) rows.push_back(std::move(*row));
    }
  }
  CW_ASSIGN_OR_RETURN(std::int64_t added, store_->AddMembers(gid, ids));
  std::int64_t new_users = 0;
  if (!rows.empty()) {
    CW_ASSIGN_OR_RETURN(new_users, store_->AddUsers(rows));
  }
  const std::int64_t received = static_cast<std::int64_t>(bean["values"].size());
  const bool last = !bean["isLast"].isBool() || bean["isLast"].asBool() || received == 0;
  std::vector<std::int64_t> follow;
  {
    std::lock_guard lock(mu_);
    Group& g = groups_[gid];
    MemberPlan& plan = plans_.at(gid);
    g.members += added;
    users_seen_ += new_users;
    ++member_pages_done_;
    // Keeps up to kMemberPagesAhead of the planned pages queued or in flight (this one counted
    // until it is done).
    const std::int64_t ahead = MemberWindow();
    const auto top_up = [&] {
      while (plan.next_start < plan.planned_end &&
             plan.pages_outstanding + static_cast<std::int64_t>(follow.size()) < ahead) {
        follow.push_back(plan.next_start);
        plan.next_start += kMemberPageSize;
      }
    };
    const auto unscheduled = [&]() -> std::int64_t {
      if (plan.next_start >= plan.planned_end) return 0;
      return (plan.planned_end - plan.next_start + kMemberPageSize - 1) / kMemberPageSize;
    };
    if (first) ++groups_with_totals_;
    if (first && !last) {
      const std::int64_t total = bean["total"].isInt64() ? bean["total"].asInt64() : -1;
      if (total > received) {
        plan.next_start = kMemberPageSize;
        plan.planned_end = total;
        member_pages_known_ += unscheduled();
        top_up();
      } else {
        follow.push_back(start + received);
        ++member_pages_known_;
      }
    } else if (!first && last) {
      // Nothing after this page: what is still planned beyond it is not asked for (nor counted
      // in the progress' pages).
      const std::int64_t planned = unscheduled();
      plan.planned_end = std::min(plan.planned_end, start + kMemberPageSize);
      member_pages_known_ -= planned - unscheduled();
    }
    if (!first && plan.next_start < plan.planned_end) {
      top_up();
    } else if (!first && !last && start == plan.last_scheduled_start) {
      // Jira's total was smaller than the group: go on one page at a time.
      follow.push_back(start + std::max<std::int64_t>(received, 1));
      ++member_pages_known_;
    }
    if (!follow.empty()) {
      plan.last_scheduled_start = std::max(plan.last_scheduled_start, follow.back());
      plan.pages_outstanding += static_cast<std::int64_t>(follow.size());
    }
  }
  for (std::int64_t s : follow) SubmitMemberPage(gid, s, false);
  return Status::Ok();
}

void SyncRun::GroupPageDone(std::uint32_t gid) {
  std::optional<Json::Value> record;
  {
    std::lock_guard lock(mu_);
    auto plan = plans_.find(gid);
    if (--plan->second.pages_outstanding > 0) return;
    plans_.erase(plan);
    ++groups_done_;
    --stage_pending_[kMembers];
    if (include_.groups) record = GroupRecord(groups_[gid]);
  }
  OpenGroups();
  if (record) {
    Status s = PushReady(*record);
    if (!s.ok()) pool_->Fail(s);
  }
  Notify();
}

Json::Value SyncRun::GroupRecord(const Group& g) const {
  Json::Value r(Json::objectValue);
  r["kind"] = "group";
  r["id"] = std::string(g.id);
  r["name"] = std::string(g.name);
  r["member_count"] = static_cast<Json::Int64>(g.members);
  return r;
}

// ---- Users ------------------------------------------------------------------------------------

Result<UserRow> SyncRun::ParseUserRow(const Json::Value& j, bool listing) const {
  if (!j.isObject()) return JiraInternal("Jira listed a user that is not an object");
  UserRow row;
  if (flavor_ == Flavor::kCloud) {
    auto id = OptString(j, "accountId");
    if (!id || id->empty()) return JiraInternal("Jira Cloud listed a user without accountId");
    row.id = *id;
    row.account_type = OptString(j, "accountType");
  } else {
    auto name = OptString(j, "name");
    auto key = OptString(j, "key");
    if (!name && !key) return JiraInternal("Jira listed a user without key or name");
    row.id = key ? *key : *name;  // (value_or would dereference `name` even with a key)
    row.username = name;
    if (listing) row.last_login = JiraTimeOrNull(j, "lastLoginTime");
  }
  // Hidden addresses are null (or absent, or empty on Data Center): never guessed.
  row.email = OptString(j, "emailAddress");
  if (row.email && row.email->empty()) row.email.reset();
  row.display_name = OptString(j, "displayName").value_or("");
  row.active = !j["active"].isBool() || j["active"].asBool();
  return row;
}

// The cursor chain is the one sequential path of a Data Center sync: the next page is asked for
// as soon as this one's cursor is known (before its users are parsed and stored, unless the page
// before is still being parsed or stored), and its requests go first at the gate.
Status SyncRun::UserListPage(std::optional<std::string> cursor, std::int64_t page) {
  if (page > kMaxPages) return JiraInternal("GET user/list did not end");
  RestCall call = Api({"user", "list"});
  call.query.emplace_back("maxResults", std::to_string(kUserPageSize));
  if (cursor) call.query.emplace_back("cursor", *cursor);
  call.unparsed_success = true;  // parsed a user at a time (ParsePageByItem)
  RestReply reply;
  {
    SyncGate::Priority first;
    CW_ASSIGN_OR_RETURN(reply, Execute(call, "GET user/list"));
  }
  if (!reply.ok()) return Unexpected(reply, "GET user/list");
  // The next page is asked for once this page's cursor is known, before its users are parsed;
  // while the page before this one is still being parsed or stored, whoever stores that one asks
  // for it instead. At most two pages of users are in memory.
  bool counted = false;  // this page is counted in chain_unstored_
  const auto ask_next = [&](const Json::Value& bean) -> Status {
    if (!bean.isObject() || !bean["values"].isArray()) {
      return JiraInternal("Jira answered GET user/list with no page of values");
    }
    const bool last = !bean["isLast"].isBool() || bean["isLast"].asBool();
    auto next = OptString(bean, "nextCursor");
    if (!next && bean["nextCursor"].isInt64()) next = std::to_string(bean["nextCursor"].asInt64());
    std::function<void()> submit_next;
    if (!last) {
      if (!next || next == cursor) {
        return JiraInternal("GET user/list said more pages follow but gave no new cursor");
      }
      StageStarted(kUserListing);
      submit_next = [this, next, page] {
        pool_->Submit(FetchPool::kHigh, [this, next, page] {
          Status s = UserListPage(next, page + 1);
          if (s.ok()) StageDone(kUserListing);
          return s;
        });
      };
    }
    bool defer = false;
    {
      std::lock_guard lock(mu_);
      ++chain_unstored_;
      counted = true;
      if (submit_next && chain_unstored_ > 1) {
        chain_next_ = std::move(submit_next);
        defer = true;
      }
    }
    if (submit_next && !defer) submit_next();
    return Status::Ok();
  };
  Json::Value bean;
  std::vector<UserRow> rows;
  rows.reserve(kUserPageSize);
  CW_RETURN_IF_ERROR(ParsePageByItem(
      reply.response.body, "values", "GET user/list", &bean,
      [&](const Json::Value& item) -> Status {
        CW_ASSIGN_OR_RETURN(UserRow row, ParseUserRow(item, true));
        rows.push_back(std::move(row));
        return Status::Ok();
      },
      ask_next));
  reply = RestReply();
  if (!counted) CW_RETURN_IF_ERROR(ask_next(bean));  // an empty body: no page at all
  CW_ASSIGN_OR_RETURN(std::int64_t added, store_->AddUsers(rows));
  rows = {};
  ReleaseFreedMemory();
  std::function<void()> held_back;
  {
    std::lock_guard lock(mu_);
    users_seen_ += added;
    --chain_unstored_;
    held_back = std::exchange(chain_next_, nullptr);
  }
  if (held_back) held_back();
  Notify();
  return Status::Ok();
}

void SyncRun::SubmitUserSearchPage() {
  std::int64_t start;
  {
    std::lock_guard lock(mu_);
    if (user_next_start_ >= user_end_start_) return;
    start = user_next_start_;
    user_next_start_ += kUserPageSize;
    ++stage_pending_[kUserListing];
  }
  pool_->Submit(FetchPool::kLow, [this, start] {
    Status s = UserSearchPage(start);
    if (s.ok()) StageDone(kUserListing);
    return s;
  });
}

// Data Center 9.x user/search?username=. and Cloud users/search: bare arrays from startAt. Pages
// may come back short (privacy filtering on Cloud), so startAt advances by the page size asked
// for, and only an empty page ends the listing.
Status SyncRun::UserSearchPage(std::int64_t start) {
  if (start / kUserPageSize > kMaxPages) return JiraInternal("the user listing did not end");
  RestCall call;
  std::string what;
  if (flavor_ == Flavor::kCloud) {
    call = Api({"users", "search"});
    call.retry_conflict = true;  // 409: the search took longer than Jira allows
    what = "GET users/search";
  } else {
    call = Api({"user", "search"});
    call.query = {{"username", "."}, {"includeActive", "true"}, {"includeInactive", "true"}};
    what = "GET user/search";
  }
  call.query.emplace_back("startAt", std::to_string(start));
  call.query.emplace_back("maxResults", std::to_string(kUserPageSize));
  call.unparsed_success = true;  // parsed a user at a time (ParsePageByItem)
  CW_ASSIGN_OR_RETURN(RestReply reply, Execute(call, what));
  if (!reply.ok()) return Unexpected(reply, what);
  Json::Value page;
  std::vector<UserRow> rows;
  rows.reserve(kUserPageSize);
  CW_RETURN_IF_ERROR(
      ParsePageByItem(reply.response.body, "", what, &page, [&](const Json::Value& item) -> Status {
        CW_ASSIGN_OR_RETURN(UserRow row, ParseUserRow(item, true));
        rows.push_back(std::move(row));
        return Status::Ok();
      }));
  reply = RestReply();
  if (!page.isArray()) return JiraInternal("Jira answered " + what + " with no list");
  const bool empty = rows.empty();
  CW_ASSIGN_OR_RETURN(std::int64_t added, store_->AddUsers(rows));
  rows = {};
  ReleaseFreedMemory();
  {
    std::lock_guard lock(mu_);
    users_seen_ += added;
    if (empty) user_end_start_ = std::min(user_end_start_, start);
  }
  if (!empty) SubmitUserSearchPage();
  Notify();
  return Status::Ok();
}

// ---- Credentials (Data Center) -----------------------------------------------------------------

void SyncRun::SubmitPatPage() {
  std::int64_t page;
  {
    std::lock_guard lock(mu_);
    if (pat_next_page_ >= pat_end_page_) return;
    page = pat_next_page_++;
    ++stage_pending_[kTokens];
  }
  pool_->Submit(FetchPool::kHigh, [this, page] {
    Status s = PatPage(page);
    if (s.ok()) StageDone(kTokens);
    return s;
  });
}

// The token inventory behind Jira's administration page: POST /rest/pat/latest/tokens/search
// {"page" (1-based), "limit"} -> {values[{id, name, createdAt, expiringAt, lastAccessedAt,
// userProfileResource{key, name}}], isLastPage}. Undocumented: a server without it (404/405) is a
// warning, not a failure.
Status SyncRun::PatPage(std::int64_t page) {
  if (page > kMaxPages) return JiraInternal("the token search did not end");
  RestCall call;
  call.method = "POST";
  call.path = {"rest", "pat", "latest", "tokens", "search"};
  Json::Value body(Json::objectValue);
  body["page"] = static_cast<Json::Int64>(page);
  body["limit"] = kPatPageSize;
  call.json = body;
  CW_ASSIGN_OR_RETURN(RestReply reply, Execute(call, "POST pat/latest/tokens/search"));
  if (reply.status == 404 || reply.status == 405) {
    AddWarning("personal_access_tokens_not_listed",
               "this Jira does not offer the personal access token inventory (HTTP " +
                   std::to_string(reply.status) +
                   "); token owners are not known to the non-human rules and no token "
                   "records are sent");
    std::lock_guard lock(mu_);
    pat_end_page_ = std::min(pat_end_page_, page);
    return Status::Ok();
  }
  if (!reply.ok()) return Unexpected(reply, "POST pat/latest/tokens/search");
  const Json::Value& j = reply.json;
  if (!j.isObject() || !j["values"].isArray()) {
    return JiraInternal("Jira answered the token search with no values");
  }
  std::vector<std::string> owners;
  std::vector<Json::Value> records;
  for (const Json::Value& t : j["values"]) {
    if (!t.isObject()) continue;  // jsoncpp throws for a member of anything else
    const Json::Value& owner = t["userProfileResource"];
    auto owner_key = owner.isObject() ? OptString(owner, "key") : std::nullopt;
    if (owner_key) owners.push_back(*owner_key);
    if (!include_.credentials) continue;
    std::optional<std::string> id = OptString(t, "id");
    if (!id && t["id"].isInt64()) id = std::to_string(t["id"].asInt64());
    if (!id) continue;
    Json::Value r(Json::objectValue);
    r["kind"] = "credential";
    r["id"] = *id;
    r["nhi_type"] = "personal_access_token";
    r["name"] = OptString(t, "name").value_or("");
    r["owner_id"] = TextOrNull(owner_key);
    r["created_at"] = TextOrNull(JiraTimeOrNull(t, "createdAt"));
    r["expires_at"] = TextOrNull(JiraTimeOrNull(t, "expiringAt"));
    r["last_used_at"] = TextOrNull(JiraTimeOrNull(t, "lastAccessedAt"));
    records.push_back(std::move(r));
  }
  CW_RETURN_IF_ERROR(store_->AddTokenOwners(owners));
  const bool last = j["values"].empty() || !j["isLastPage"].isBool() || j["isLastPage"].asBool();
  {
    std::lock_guard lock(mu_);
    if (last) pat_end_page_ = std::min(pat_end_page_, page + 1);
  }
  for (const Json::Value& r : records) CW_RETURN_IF_ERROR(PushReady(r));
  if (!last) SubmitPatPage();
  return Status::Ok();
}

Json::Value CredentialRecord(std::string id, const char* type, std::string name) {
  Json::Value r(Json::objectValue);
  r["kind"] = "credential";
  r["id"] = std::move(id);
  r["nhi_type"] = type;
  r["name"] = std::move(name);
  r["owner_id"] = Json::Value(Json::nullValue);
  r["created_at"] = Json::Value(Json::nullValue);
  r["expires_at"] = Json::Value(Json::nullValue);
  r["last_used_at"] = Json::Value(Json::nullValue);
  return r;
}

Status SyncRun::ListApplicationLinks() {
  RestCall call;
  call.path = {"rest", "applinks", "latest", "listApplicationlinks"};
  CW_ASSIGN_OR_RETURN(RestReply reply, Execute(call, "GET applinks/latest/listApplicationlinks"));
  if (reply.status == 404 || reply.status == 405) {
    AddWarning("application_links_not_listed", "this Jira does not list application links (HTTP " +
                                                   std::to_string(reply.status) + ")");
    return Status::Ok();
  }
  if (!reply.ok()) return Unexpected(reply, "GET applinks/latest/listApplicationlinks");
  if (!reply.json.isObject() || !reply.json["list"].isArray()) {
    return JiraInternal("Jira answered listApplicationlinks with no list");
  }
  for (const Json::Value& item : reply.json["list"]) {
    const Json::Value& app =
        item.isObject() && item["application"].isObject() ? item["application"] : item;
    auto id = OptString(app, "id");
    if (!id) continue;
    CW_RETURN_IF_ERROR(
        PushReady(CredentialRecord(*id, "application_link", OptString(app, "name").value_or(""))));
  }
  return Status::Ok();
}

Status SyncRun::ListOAuthClients() {
  RestCall call;
  call.path = {"rest", "oauth2", "latest", "client"};
  CW_ASSIGN_OR_RETURN(RestReply reply, Execute(call, "GET oauth2/latest/client"));
  if (reply.status == 404 || reply.status == 405) {
    AddWarning("oauth_clients_not_listed", "this Jira does not list OAuth 2.0 clients (HTTP " +
                                               std::to_string(reply.status) + ")");
    return Status::Ok();
  }
  if (!reply.ok()) return Unexpected(reply, "GET oauth2/latest/client");
  if (!reply.json.isArray()) return JiraInternal("Jira answered oauth2/latest/client with no list");
  for (const Json::Value& c : reply.json) {
    auto id = OptString(c, "clientId");
    if (!id) id = OptString(c, "id");
    if (!id) continue;
    CW_RETURN_IF_ERROR(
        PushReady(CredentialRecord(*id, "oauth_client", OptString(c, "name").value_or(""))));
  }
  return Status::Ok();
}

// ---- Emission ---------------------------------------------------------------------------------

Status SyncRun::Emit(std::string_view kind, std::string canonical) {
  // A stop (lease lost, timeout, shutdown) is honoured before every record: nothing more goes out.
  if (pool_->stop_token().stop_requested()) return pool_->failure().value_or(Stopped());
  // The hash is over the very bytes the sink sends.
  sha_.Update(canonical);
  CW_RETURN_IF_ERROR(sink_.Write(std::move(canonical)));
  ++records_;
  if (kind == "user") {
    ++users_;
  } else if (kind == "group") {
    ++groups_emitted_;
  } else {
    ++credentials_;
  }
  return Status::Ok();
}

std::string SyncRun::UserRecordText(const SpooledUser& u, bool* human) const {
  std::vector<std::string_view> group_names;  // views of group_text_
  std::uint64_t products = 0;
  bool admin = false, system_admin = false;
  {
    std::lock_guard lock(mu_);
    for (std::uint32_t gid : u.groups) {
      if (gid >= groups_.size()) continue;
      const Group& g = groups_[gid];
      group_names.push_back(g.name);
      products |= g.products;
      admin |= g.admin;
      system_admin |= g.system_admin;
    }
  }
  std::sort(group_names.begin(), group_names.end());
  std::vector<std::string> product_keys;
  for (std::size_t i = 0; i < products_.size(); ++i) {
    if (products & (std::uint64_t{1} << i)) product_keys.push_back(products_[i]);
  }
  std::sort(product_keys.begin(), product_keys.end());
  const bool has_product = !product_keys.empty();

  NhiVerdict verdict;
  if (flavor_ == Flavor::kCloud) {
    verdict = ClassifyCloudUser(u.row.account_type, u.row.email);
  } else {
    DcUserSignals signals;
    signals.username = u.row.username ? std::string_view(*u.row.username) : std::string_view();
    if (u.row.email) signals.email = *u.row.email;
    signals.owns_token = u.owns_token;
    signals.has_product = has_product;
    if (last_login_known_) signals.ever_logged_in = u.row.last_login.has_value();
    verdict = ClassifyDataCenterUser(signals, options_.nhi_patterns);
  }

  // Written as canonical JSON directly, members in byte order of their names as WriteJson writes
  // them: a JSON tree per user cost more than everything else the record needs. The sync tests
  // and the jira_responses fuzzer hold every record to WriteJson of its parsed self.
  std::string r;
  r.reserve(320 + 40 * group_names.size());
  const auto text = [&r](std::string_view v) { AppendJsonString(v, r); };
  const auto text_or_null = [&](const std::optional<std::string>& v) {
    if (v) {
      text(*v);
    } else {
      r += "null";
    }
  };
  const auto texts = [&](const auto& list) {
    r += '[';
    for (std::size_t i = 0; i < list.size(); ++i) {
      if (i > 0) r += ',';
      text(list[i]);
    }
    r += ']';
  };
  r += "{\"active\":";
  r += u.row.active ? "true" : "false";
  r += ",\"display_name\":";
  text(u.row.display_name);
  r += ",\"email\":";
  text_or_null(u.row.email);
  r += ",\"groups\":";
  texts(group_names);
  r += ",\"human\":";
  r += verdict.human ? "true" : "false";
  r += ",\"id\":";
  text(u.row.id);
  r += ",\"kind\":\"user\",\"last_login\":";
  text_or_null(u.row.last_login);
  r += ",\"level\":";
  text(AccessLevel(system_admin, admin, has_product));
  if (!verdict.human) {
    r += ",\"nhi_reason\":";
    text(verdict.reason);
  }
  r += ",\"nhi_type\":";
  if (verdict.human) {
    r += "null";
  } else {
    text(verdict.type);
  }
  r += ",\"permissions\":[";
  if (admin || system_admin) r += "\"ADMINISTER\"";
  if (system_admin) r += ",\"SYSTEM_ADMIN\"";
  r += "],\"products\":";
  texts(product_keys);
  r += ",\"username\":";
  text_or_null(u.row.username);
  r += '}';
  *human = verdict.human;
  return r;
}

// Emits the next batches of spooled users; `drained` tells whether none was left.
// The builder thread reads the users in store order, kEmitBatch at a time, and builds each
// batch's records (and their canonical JSON, for the hash) while this thread emits the batches
// before it, in the same order. At most kUserBatchesAhead batches are asked for ahead, so the
// memory stays bounded. One call emits at most kUserBatchesAhead batches (the caller reports
// progress between calls). *drained says that a read asked for in this call found no more users
// and every batch is out: the caller looked at the listing's state before this call, so a drained
// store after a finished listing has nothing left to add.
Status SyncRun::EmitUsers(bool* drained) {
  const std::int64_t call = ++emit_users_calls_;
  bool store_empty = false;
  std::size_t emitted = 0;
  while (true) {
    // Nothing more is asked for once a read of this call found the store empty: the batches
    // already asked for are emitted, and the call ends drained unless one of them found users.
    while (!store_empty && emitted < kUserBatchesAhead &&
           user_batches_.size() < kUserBatchesAhead) {
      auto batch = std::make_shared<UserBatch>();
      batch->asked_in_call = call;
      user_batches_.push_back(batch);
      {
        std::lock_guard lock(mu_);
        to_build_.push_back(batch);
      }
      build_cv_.notify_one();
      if (!builder_.joinable()) {
        builder_ = std::jthread([this](std::stop_token stop) { BuildUsers(stop); });
      }
    }
    if (user_batches_.empty()) break;
    const std::shared_ptr<UserBatch> batch = user_batches_.front();
    {
      // A failed pool ends the sync: the stop ends the wait.
      std::unique_lock lock(mu_);
      while (!batch->built) {
        if (pool_->stop_token().stop_requested()) {
          return pool_->failure().value_or(Stopped());
        }
        events_cv_.wait_for(lock, std::chrono::milliseconds(50));
      }
    }
    user_batches_.pop_front();
    CW_RETURN_IF_ERROR(batch->read);
    if (batch->canonical.empty()) {
      // An empty read asked for in an earlier call may predate users added since.
      store_empty = batch->asked_in_call == call;
      continue;
    }
    store_empty = false;
    for (std::size_t i = 0; i < batch->canonical.size(); ++i) {
      if (!batch->human[i]) ++non_human_;
      CW_RETURN_IF_ERROR(Emit("user", std::move(batch->canonical[i])));
    }
    // Records are freed here, in the builder's arena and by the sink: hand that back now and
    // then, as the user pages do.
    if (++user_batches_emitted_ % kBatchesPerTrim == 0) ReleaseFreedMemory();
    if (++emitted >= kUserBatchesAhead) break;
  }
  *drained = store_empty && user_batches_.empty();
  return Status::Ok();
}

void SyncRun::BuildUsers(std::stop_token stop) {
  while (true) {
    std::shared_ptr<UserBatch> batch;
    {
      std::unique_lock lock(mu_);
      if (!build_cv_.wait(lock, stop, [&] { return !to_build_.empty(); })) return;
      batch = std::move(to_build_.front());
      to_build_.pop_front();
    }
    auto users = store_->UsersAfter(last_user_seq_, kEmitBatch);
    if (!users.ok()) {
      batch->read = users.status();
    } else if (!users->empty()) {
      last_user_seq_ = users->back().seq;
      batch->canonical.reserve(users->size());
      batch->human.reserve(users->size());
      for (const SpooledUser& u : *users) {
        if (stop.stop_requested()) return;
        bool human = true;
        batch->canonical.push_back(UserRecordText(u, &human));
        batch->human.push_back(human);
      }
    }
    {
      std::lock_guard lock(mu_);
      batch->built = true;
    }
    Notify();
  }
}

SyncProgress SyncRun::Progress() {
  SyncProgress p;
  {
    std::lock_guard lock(mu_);
    p.users_seen = users_seen_;
    p.groups_known = static_cast<std::int64_t>(groups_.size());
    p.groups_done = groups_done_;
    p.member_pages_done = member_pages_done_;
    p.member_pages_known = member_pages_known_;
    p.member_pages_final = StageFinished(kDiscovery) &&
                           groups_with_totals_ >= static_cast<std::int64_t>(groups_.size());
    if (!StageFinished(kDiscovery) || !StageFinished(kMembers)) {
      p.phase = StageFinished(kDiscovery) ? "memberships" : "groups";
    } else {
      p.phase = "users";
    }
  }
  p.records = records_;
  p.users_emitted = users_;
  const GateStats gs = gate_->stats();
  p.requests = gs.requests;
  p.concurrency = gs.limit;
  p.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - started_);
  const double secs = std::max(0.001, std::chrono::duration<double>(p.elapsed).count());
  p.records_per_second = static_cast<double>(records_) / secs;
  if (p.member_pages_final && p.member_pages_done > 0 && p.phase == "memberships") {
    const double rate = static_cast<double>(p.member_pages_done) / secs;
    p.eta = std::chrono::seconds(static_cast<std::int64_t>(
        static_cast<double>(p.member_pages_known - p.member_pages_done) / rate + 0.5));
  }
  return p;
}

// ---- The run ----------------------------------------------------------------------------------

Result<SyncReport> SyncRun::Run(const Json::Value& params) {
  started_ = Steady::now();
  CW_ASSIGN_OR_RETURN(include_, ParseParams(params));
  CW_RETURN_IF_ERROR(Prepare());
  const bool dc = flavor_ == Flavor::kDataCenter;
  const bool want_members = include_.users || include_.groups;
  const bool want_tokens = dc && (include_.users || include_.credentials);

  if (want_members) CW_RETURN_IF_ERROR(LoadProducts());

  // Stages: every task that may add work to a stage holds it open until it is done.
  auto run_stage = [this](int stage, FetchPool::Priority priority, std::function<Status()> body) {
    StageStarted(stage);
    pool_->Submit(priority, [this, stage, body = std::move(body)] {
      Status s = body();
      if (s.ok()) StageDone(stage);
      return s;
    });
  };
  if (want_members) {
    run_stage(kDiscovery, FetchPool::kHigh,
              [this, dc] { return dc ? DiscoverDcGroups() : DiscoverCloudGroups(); });
  }
  if (include_.users) {
    if (!dc) {
      for (int i = 0; i < kUserPagesInFlight; ++i) SubmitUserSearchPage();
    } else if (listing_ == DcUserListing::kUserList) {
      run_stage(kUserListing, FetchPool::kNormal, [this] { return UserListPage(std::nullopt, 0); });
    } else if (listing_ == DcUserListing::kSearchAll) {
      for (int i = 0; i < kUserPagesInFlight; ++i) SubmitUserSearchPage();
    }
  }
  if (want_tokens) {
    for (int i = 0; i < 2; ++i) SubmitPatPage();
  }
  if (dc && include_.credentials) {
    run_stage(kTokens, FetchPool::kHigh, [this] { return ListApplicationLinks(); });
    run_stage(kTokens, FetchPool::kHigh, [this] { return ListOAuthClients(); });
  }
  {
    std::lock_guard lock(mu_);
    for (bool& sealed : stage_sealed_) sealed = true;
  }

  if (include_.users) {
    if (dc && listing_ == DcUserListing::kGroupMembers) {
      AddWarning("users_outside_groups_not_listed",
                 "Jira " + server_.version +
                     " returns only the first 100 results of user/search, so users were found "
                     "through the members of every group: accounts that belong to no group are "
                     "not in this sync");
    }
    if (!last_login_known_) {
      AddWarning("last_login_unavailable",
                 dc ? "group member listings do not show the last login: last_login is null and "
                      "the never-logged-in rule was not applied"
                    : "Jira Cloud's REST API does not show last logins (the organization admin "
                      "API does): last_login is null");
    }
    if (dc) {
      AddWarning("system_admin_not_distinguished",
                 "Jira Data Center publishes no list of the groups holding SYSTEM_ADMIN: members "
                 "of groups the group picker labels as administrative are reported with "
                 "ADMINISTER and level admin");
    }
  }
  if (!dc && include_.credentials) {
    AddWarning("credentials_not_listed",
               "Jira Cloud lists API tokens and OAuth clients only through the organization admin "
               "API, which access sync credentials cannot use: no credential records are sent");
  }

  // The calling thread emits: queued group and credential records as they come, then the users
  // once every membership (and token owner) is in.
  bool members_indexed = false;
  bool users_done = !include_.users;
  auto next_progress = Steady::now();
  while (true) {
    if (auto failure = pool_->failure()) return *failure;
    std::deque<ReadyRecord> ready;
    bool members_complete, listing_complete, idle;
    {
      std::unique_lock lock(mu_);
      ready.swap(ready_);
      members_complete =
          StageFinished(kDiscovery) && StageFinished(kMembers) && StageFinished(kTokens);
      listing_complete = members_complete && StageFinished(kUserListing);
    }
    ready_cv_.notify_all();
    for (ReadyRecord& r : ready) {
      if (pool_->stop_token().stop_requested()) break;
      Status s = Emit(r.kind, std::move(r.canonical));
      if (!s.ok()) {
        pool_->Fail(s);
        return s;
      }
    }
    bool drained = true;
    if (include_.users && members_complete && !users_done) {
      if (!members_indexed) {
        CW_RETURN_IF_ERROR(store_->IndexMembers());
        ReleaseFreedMemory();  // what SQLite's sorter used for the index
        members_indexed = true;
      }
      Status s = EmitUsers(&drained);
      if (!s.ok()) {
        pool_->Fail(s);
        return s;
      }
      if (drained && listing_complete) {
        // Rows added after the last read cannot exist: the listing finished before this read.
        users_done = true;
      }
    }
    idle = pool_->Idle();
    if (options_.progress && Steady::now() >= next_progress) {
      options_.progress(Progress());
      next_progress = Steady::now() + options_.progress_interval;
    }
    {
      std::unique_lock lock(mu_);
      const bool all_done = users_done && ready_.empty() && idle && StageFinished(kDiscovery) &&
                            StageFinished(kMembers) && StageFinished(kTokens) &&
                            StageFinished(kUserListing);
      if (all_done) break;
      if (drained && ready_.empty()) {
        events_cv_.wait_for(lock, std::chrono::milliseconds(50));
      }
    }
  }
  if (auto failure = pool_->failure()) return *failure;
  if (pool_->stop_token().stop_requested()) return Stopped();

  CW_ASSIGN_OR_RETURN(std::int64_t pages, sink_.Finish());
  SyncReport report;
  Json::Value& out = report.output;
  out = Json::Value(Json::objectValue);
  out["counts"]["users"] = static_cast<Json::Int64>(users_);
  out["counts"]["groups"] = static_cast<Json::Int64>(groups_emitted_);
  out["counts"]["non_human"] = static_cast<Json::Int64>(non_human_);
  out["counts"]["credentials"] = static_cast<Json::Int64>(credentials_);
  out["records"] = static_cast<Json::Int64>(records_);
  out["pages"] = static_cast<Json::Int64>(pages);
  out["sha256"] = sha_.Hex();
  out["duration_ms"] = static_cast<Json::Int64>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - started_).count());
  Json::Value warnings(Json::arrayValue);
  {
    std::lock_guard lock(mu_);
    for (const Warning& w : warnings_) {
      Json::Value j(Json::objectValue);
      j["code"] = w.code;
      j["message"] = w.message;
      warnings.append(j);
    }
  }
  out["warnings"] = warnings;
  report.gate = gate_->stats();
  report.fetches = pool_->tasks_done();
  if (options_.progress) {
    SyncProgress p = Progress();
    p.phase = "done";
    p.eta = std::chrono::seconds(0);
    options_.progress(p);
  }
  return report;
}

}  // namespace

std::string DescribeProgress(const SyncProgress& p) {
  std::string line = "access sync: " + p.phase;
  if (p.phase == "memberships" || p.phase == "groups") {
    line += " " + std::to_string(p.member_pages_done) + "/" + std::to_string(p.member_pages_known) +
            (p.member_pages_final ? "" : "+") + " member pages, " + std::to_string(p.groups_done) +
            "/" + std::to_string(p.groups_known) + " groups";
  }
  line += ", " + std::to_string(p.users_seen) + " users seen, " + std::to_string(p.records) +
          " records sent (" + std::to_string(static_cast<std::int64_t>(p.records_per_second)) +
          "/s), " + std::to_string(p.requests) + " requests, " + std::to_string(p.concurrency) +
          " parallel";
  if (p.eta.count() > 0) line += ", ~" + std::to_string(p.eta.count()) + " s left";
  return line;
}

Result<SyncReport> RunAccessSync(Connection& connection, const Json::Value& params,
                                 const AccessSyncOptions& options, SyncRecordSink& sink,
                                 std::stop_token stop) {
  SyncRun run(connection, options, sink, std::move(stop));
  return run.Run(params);
}

}  // namespace cakewalk::jira
