#include "tests/fakes/jira/directory.h"

#include <algorithm>
#include <array>
#include <cstdio>

namespace cakewalk::testing::jira_fake {

namespace {

constexpr std::uint32_t kBlock = 1024;
constexpr std::uint32_t kAccountMask = 0x5bd1e995u;
constexpr std::int64_t kReferenceUnix = 1767225600;  // 2026-01-01T00:00:00Z

constexpr std::array<std::string_view, 40> kFirstNames = {
    "Ada",   "Bruno",  "Chloe",  "Dmitri",  "Elena", "Farid",  "Greta", "Hiro",  "Ines",   "Jonas",
    "Kavya", "Liam",   "Maren",  "Nikolai", "Olga",  "Pavel",  "Quinn", "Rosa",  "Sven",   "Tara",
    "Umar",  "Vera",   "Wen",    "Xavier",  "Yara",  "Zoltan", "Amara", "Bjorn", "Carmen", "Deniz",
    "Emil",  "Fatima", "Gideon", "Hanna",   "Ivo",   "Jana",   "Kofi",  "Lucia", "Mateo",  "Noor"};
constexpr std::array<std::string_view, 40> kLastNames = {
    "Moreau",   "Tanaka", "Okafor",   "Lindqvist", "Novak",    "Haddad",  "Fischer", "Rossi",
    "Kowalski", "Silva",  "Nakamura", "Dubois",    "Petrov",   "Schmidt", "Larsen",  "Costa",
    "Horvat",   "Yilmaz", "Jensen",   "Ibrahim",   "Weber",    "Marino",  "Sato",    "Kaur",
    "Nilsen",   "Varga",  "Mendes",   "Keller",    "Baptiste", "Olsen",   "Popescu", "Ferreira",
    "Brennan",  "Aziz",   "Holm",     "Ricci",     "Suzuki",   "Wagner",  "Quist",   "Zhou"};
constexpr std::array<std::string_view, 16> kWords = {
    "build", "deploy",  "backup",  "sync",  "monitor", "report",  "import", "export",
    "ci",    "release", "scanner", "audit", "mailer",  "webhook", "etl",    "metrics"};
constexpr std::array<std::string_view, 12> kDepartments = {
    "engineering", "finance",  "legal",  "support",  "marketing", "sales",
    "platform",    "security", "design", "research", "hr",        "operations"};

std::uint64_t SplitMix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::uint64_t Mix(std::uint64_t seed, std::uint64_t i, std::uint64_t salt) {
  return SplitMix(SplitMix(seed ^ (salt * 0x632be59bd9b4e019ull)) ^ i);
}

// True with probability `fraction`, decided by the hash `h`.
bool Below(std::uint64_t h, double fraction) {
  return static_cast<double>(h >> 11) * 0x1.0p-53 < fraction;
}

std::string Hex(std::uint64_t v, int digits) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(static_cast<std::size_t>(digits), '0');
  for (int i = digits - 1; i >= 0; --i) {
    out[static_cast<std::size_t>(i)] = kDigits[v & 0xf];
    v >>= 4;
  }
  return out;
}

std::string Uuid(std::uint64_t a, std::uint64_t b) {
  std::string h = Hex(a, 16) + Hex(b, 16);
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-4" + h.substr(13, 3) + "-a" + h.substr(17, 3) +
         "-" + h.substr(20, 12);
}

std::string Capitalised(std::string_view w) {
  std::string s(w);
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

// Trailing decimal digits of `s` (at most 9), or nullopt.
std::optional<std::uint32_t> TrailingNumber(std::string_view s) {
  std::size_t end = s.size();
  std::size_t start = end;
  while (start > 0 && s[start - 1] >= '0' && s[start - 1] <= '9') --start;
  if (start == end || end - start > 9) return std::nullopt;
  std::uint32_t v = 0;
  for (std::size_t k = start; k < end; ++k) v = v * 10 + static_cast<std::uint32_t>(s[k] - '0');
  return v;
}

void InsertSorted(std::vector<UserIndex>& v, UserIndex u) {
  v.insert(std::lower_bound(v.begin(), v.end(), u), u);
}

}  // namespace

std::uint64_t Hash64(std::uint64_t seed, std::uint64_t i, std::uint64_t salt) {
  return Mix(seed, i, salt);
}

bool HashBelow(std::uint64_t h, double fraction) { return Below(h, fraction); }

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

const std::vector<GlobalPermissionInfo>& GlobalPermissionCatalog() {
  static const std::vector<GlobalPermissionInfo> kCatalog = {
      {"ADMINISTER", "0", "Administer Jira",
       "Create and administer projects, issue types, fields, workflows, and schemes for all "
       "projects. Users with this permission can perform most administration tasks, except: "
       "managing users, importing data, and editing system email settings."},
      {"SYSTEM_ADMIN", "44", "Jira System Administrators",
       "Ability to perform all administration functions. There must be at least one group with "
       "this permission."},
      {"USER_PICKER", "27", "Browse users and groups",
       "View and select users or groups from the user picker, and share issues. Users with this "
       "permission can see the names of all users and groups on your site."},
      {"CREATE_SHARED_OBJECTS", "22", "Share dashboards and filters",
       "Share dashboards and filters with other users."},
      {"BULK_CHANGE", "33", "Make bulk changes",
       "Modify collections of issues at once. For example, resolve multiple issues in one step."},
  };
  return kCatalog;
}

Directory::Directory(JiraFlavor flavor, std::string site_name)
    : flavor_(flavor), site_name_(std::move(site_name)) {
  AddStandardGroupsAndRoles();
}

void Directory::AddStandardGroupsAndRoles() {
  auto add = [&](const char* name) { return *AddGroup(name); };
  const bool dc = flavor_ == JiraFlavor::kDataCenter;
  const GroupIndex admins = add("jira-administrators");
  const GroupIndex sysadmins = add(dc ? "jira-system-administrators" : "site-admins");
  const GroupIndex software = add("jira-software-users");
  const GroupIndex servicedesk = add("jira-servicedesk-users");
  const GroupIndex core = add("jira-core-users");
  std::vector<GroupIndex> users = {software, servicedesk, core};
  roles_.push_back({"jira-software", "Jira Software", {software}, {software}, true, false, 1});
  roles_.push_back({"jira-servicedesk",
                    "Jira Service Management",
                    {servicedesk},
                    {servicedesk},
                    false,
                    false,
                    1});
  roles_.push_back(
      {"jira-core", dc ? "Jira Core" : "Jira Work Management", {core}, {core}, false, true, 1});
  if (!dc) {
    const GroupIndex discovery = add("jira-product-discovery-users");
    const GroupIndex addons = add("atlassian-addons-admin");
    roles_.push_back({"jira-product-discovery",
                      "Jira Product Discovery",
                      {discovery},
                      {discovery},
                      false,
                      false,
                      1});
    users.push_back(discovery);
    permissions_["ADMINISTER"] = {admins, sysadmins, addons};
  } else {
    permissions_["ADMINISTER"] = {admins};
  }
  permissions_["SYSTEM_ADMIN"] = {sysadmins};
  std::vector<GroupIndex> pickers = users;
  pickers.push_back(admins);
  permissions_["USER_PICKER"] = pickers;
  permissions_["CREATE_SHARED_OBJECTS"] = users;
  permissions_["BULK_CHANGE"] = users;
}

// ---- Users ------------------------------------------------------------------------------------

NhiKind Directory::Nhi(UserIndex i) const {
  if (const UserRecord* r = Stored(i)) return r->nhi;
  const SiteSpec& s = *spec_;
  if (!Below(Mix(s.seed, i, 2), s.non_human_fraction)) return NhiKind::kHuman;
  const std::uint64_t k = Mix(s.seed, i, 3) % 100;
  if (flavor_ == JiraFlavor::kDataCenter) {
    return k < 50 ? NhiKind::kServiceAccount : k < 85 ? NhiKind::kBot : NhiKind::kSystem;
  }
  return k < 50 ? NhiKind::kApp : k < 80 ? NhiKind::kServiceAccount : NhiKind::kCustomer;
}

UserRecord Directory::Generated(UserIndex i) const {
  const SiteSpec& s = *spec_;
  UserRecord r;
  r.nhi = Nhi(i);
  r.active = !Below(Mix(s.seed, i, 4), s.inactive_fraction);
  const std::string_view first = kFirstNames[Mix(s.seed, i, 5) % kFirstNames.size()];
  const std::string_view last = kLastNames[Mix(s.seed, i, 6) % kLastNames.size()];
  const std::string_view word = kWords[Mix(s.seed, i, 7) % kWords.size()];
  const std::string num = std::to_string(i);
  const std::uint64_t login_h = Mix(s.seed, i, 8);
  const bool never = r.nhi == NhiKind::kHuman ? Below(login_h, 0.10) : Below(login_h, 0.60);
  if (!never) {
    const std::int64_t max_age = r.active ? 90 * 86400 : 720 * 86400;
    r.last_login = SysTime(std::chrono::seconds(
        kReferenceUnix -
        static_cast<std::int64_t>((login_h >> 8) % static_cast<std::uint64_t>(max_age))));
  }
  const std::string human_local = ToLower(first) + "." + ToLower(last) + num;
  if (flavor_ == JiraFlavor::kDataCenter) {
    r.key = "JIRAUSER" + std::to_string(10000ull + i);
    switch (r.nhi) {
      case NhiKind::kServiceAccount:
        r.name = "svc-" + std::string(word) + "-" + num;
        r.display_name = Capitalised(word) + " Service " + num;
        break;
      case NhiKind::kBot:
        r.name = std::string(word) + "-bot-" + num;
        r.display_name = Capitalised(word) + " Bot " + num;
        break;
      case NhiKind::kSystem:
        r.name = "sys-" + std::string(word) + "-" + num;
        r.display_name = "System " + std::string(word) + " " + num;
        break;
      default:
        r.name = human_local;
        r.display_name = std::string(first) + " " + std::string(last);
        break;
    }
    r.email = r.name + "@corp.example";
    r.directory = r.nhi == NhiKind::kHuman && !Below(Mix(s.seed, i, 9), 0.10)
                      ? "Corporate LDAP"
                      : "Jira Internal Directory";
    return r;
  }
  r.account_id = Hex(i ^ kAccountMask, 8) + Hex(Mix(s.seed, i, 10), 16);
  switch (r.nhi) {
    case NhiKind::kApp:
      r.account_type = CloudAccountType::kApp;
      r.display_name = Capitalised(word) + " for Jira " + num;
      r.email = std::nullopt;
      r.managed = false;
      break;
    case NhiKind::kServiceAccount:
      r.account_type = CloudAccountType::kApp;
      r.display_name = Capitalised(word) + " service account " + num;
      r.email = std::string(word) + "-" + num + "@serviceaccount.atlassian.com";
      break;
    case NhiKind::kCustomer:
      r.account_type = CloudAccountType::kCustomer;
      r.display_name = std::string(first) + " " + std::string(last);
      r.email = ToLower(first) + num + "@customer.example";
      r.managed = false;
      break;
    default:
      r.account_type = CloudAccountType::kAtlassian;
      r.display_name = std::string(first) + " " + std::string(last);
      r.email = human_local + "@corp.example";
      r.email_hidden = Below(Mix(s.seed, i, 11), s.hidden_email_fraction);
      r.search_hidden = Below(Mix(s.seed, i, 12), s.search_hidden_fraction);
      break;
  }
  return r;
}

const UserRecord* Directory::Stored(UserIndex i) const {
  if (i >= generated_count_) {
    const std::size_t k = i - generated_count_;
    return k < extra_.size() ? &extra_[k] : nullptr;
  }
  auto it = overrides_.find(i);
  return it == overrides_.end() ? nullptr : &it->second;
}

UserRecord Directory::User(UserIndex i) const {
  if (const UserRecord* r = Stored(i)) return *r;
  return Generated(i);
}

bool Directory::IsDeleted(UserIndex i) const {
  if (const UserRecord* r = Stored(i)) return r->deleted;
  return false;
}

bool Directory::IsActive(UserIndex i) const {
  if (const UserRecord* r = Stored(i)) return r->active;
  return !Below(Mix(spec_->seed, i, 4), spec_->inactive_fraction);
}

bool Directory::IsSearchHidden(UserIndex i) const {
  if (const UserRecord* r = Stored(i)) return r->search_hidden;
  if (flavor_ == JiraFlavor::kDataCenter || Nhi(i) != NhiKind::kHuman) return false;
  return Below(Mix(spec_->seed, i, 12), spec_->search_hidden_fraction);
}

std::optional<UserIndex> Directory::ParseGeneratedIndex(std::string_view text) const {
  auto n = TrailingNumber(text);
  if (!n || *n >= user_count()) return std::nullopt;
  return *n;
}

std::optional<UserIndex> Directory::FindByName(std::string_view name) const {
  const std::string lower = ToLower(name);
  if (auto it = by_name_.find(lower); it != by_name_.end()) return it->second;
  if (auto i = ParseGeneratedIndex(lower);
      i && *i < generated_count_ && !Stored(*i) && Generated(*i).name == lower) {
    return i;
  }
  return std::nullopt;
}

std::optional<UserIndex> Directory::FindByKey(std::string_view key) const {
  if (auto it = by_key_.find(ToLower(key)); it != by_key_.end()) return it->second;
  constexpr std::string_view kPrefix = "JIRAUSER";
  if (key.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  auto n = TrailingNumber(key);
  if (!n || *n < 10000 || key.size() != kPrefix.size() + std::to_string(*n).size()) {
    return std::nullopt;
  }
  const UserIndex i = *n - 10000;
  if (i >= generated_count_ || Stored(i)) return std::nullopt;
  return i;
}

std::optional<UserIndex> Directory::FindByAccountId(std::string_view id) const {
  if (auto it = by_account_.find(ToLower(id)); it != by_account_.end()) return it->second;
  if (id.size() != 24 || generated_count_ == 0) return std::nullopt;
  std::uint32_t v = 0;
  for (char c : id.substr(0, 8)) {
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return std::nullopt;
    v = (v << 4) | static_cast<std::uint32_t>(d);
  }
  const UserIndex i = v ^ kAccountMask;
  if (i >= generated_count_ || Stored(i) || Generated(i).account_id != id) return std::nullopt;
  return i;
}

std::vector<UserIndex> Directory::FindByEmail(std::string_view email) const {
  const std::string lower = ToLower(email);
  std::vector<UserIndex> out;
  if (auto it = by_email_.find(lower); it != by_email_.end()) {
    for (UserIndex i : it->second) {
      const UserRecord* r = Stored(i);
      if (r && r->email && ToLower(*r->email) == lower) out.push_back(i);
    }
  }
  const std::size_t at = lower.find('@');
  if (at != std::string::npos) {
    if (auto i = ParseGeneratedIndex(std::string_view(lower).substr(0, at));
        i && *i < generated_count_ && !Stored(*i)) {
      const UserRecord r = Generated(*i);
      if (r.email && ToLower(*r.email) == lower) out.push_back(*i);
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::optional<UserIndex> Directory::FindRef(std::string_view ref) const {
  if (flavor_ == JiraFlavor::kDataCenter) {
    if (auto i = FindByName(ref)) return i;
    if (auto i = FindByKey(ref)) return i;
  } else if (auto i = FindByAccountId(ref)) {
    return i;
  }
  auto by_mail = FindByEmail(ref);
  if (by_mail.size() == 1) return by_mail[0];
  return std::nullopt;
}

void Directory::IndexRecord(UserIndex i, const UserRecord& r) {
  if (!r.name.empty()) by_name_[ToLower(r.name)] = i;
  if (!r.key.empty()) by_key_[ToLower(r.key)] = i;
  if (!r.account_id.empty()) by_account_[ToLower(r.account_id)] = i;
  if (r.email) {
    auto& v = by_email_[ToLower(*r.email)];
    if (std::find(v.begin(), v.end(), i) == v.end()) v.push_back(i);
  }
}

Result<UserIndex> Directory::AddUser(UserRecord record) {
  if (flavor_ == JiraFlavor::kDataCenter) {
    if (record.name.empty()) return InvalidArgument("a Data Center user needs a username");
    if (auto existing = FindByName(record.name); existing && !IsDeleted(*existing)) {
      return AlreadyExists("a user named '" + record.name + "' already exists");
    }
  }
  if (user_count() == UINT32_MAX) return ResourceExhausted("too many users");
  const UserIndex i = user_count();
  if (flavor_ == JiraFlavor::kDataCenter) {
    if (record.key.empty()) record.key = "JIRAUSER" + std::to_string(10000ull + i);
    if (FindByKey(record.key)) return AlreadyExists("user key '" + record.key + "' is taken");
  } else {
    if (record.account_id.empty()) {
      record.account_id = Hex(i ^ kAccountMask, 8) + Hex(SplitMix(i ^ 0xacc0u), 16);
    }
    if (FindByAccountId(record.account_id)) {
      return AlreadyExists("account id '" + record.account_id + "' is taken");
    }
  }
  extra_.push_back(std::move(record));
  IndexRecord(i, extra_.back());
  Touch();
  return i;
}

void Directory::PutUser(UserIndex i, UserRecord record) {
  if (i >= generated_count_) {
    extra_[i - generated_count_] = std::move(record);
    IndexRecord(i, extra_[i - generated_count_]);
  } else {
    overrides_[i] = std::move(record);
    IndexRecord(i, overrides_[i]);
  }
  Touch();
}

// ---- Groups -----------------------------------------------------------------------------------

std::optional<GroupIndex> Directory::FindGroup(std::string_view name) const {
  auto it = group_by_name_.find(ToLower(name));
  if (it == group_by_name_.end()) return std::nullopt;
  return it->second;
}

std::optional<GroupIndex> Directory::FindGroupById(std::string_view id) const {
  auto it = group_by_id_.find(ToLower(id));
  if (it == group_by_id_.end()) return std::nullopt;
  return it->second;
}

Result<GroupIndex> Directory::AddGroup(std::string name) {
  if (name.empty()) return InvalidArgument("a group needs a name");
  if (FindGroup(name)) return AlreadyExists("group '" + name + "' already exists");
  const GroupIndex g = group_count();
  Group group;
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : ToLower(name)) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  group.id = Uuid(SplitMix(h), SplitMix(h ^ g));
  group.name = std::move(name);
  group_by_name_[ToLower(group.name)] = g;
  group_by_id_[group.id] = g;
  groups_.push_back(std::move(group));
  Touch();
  return g;
}

void Directory::DeleteGroup(GroupIndex g) {
  Group& group = groups_[g];
  group.deleted = true;
  group.members.clear();
  group.members.shrink_to_fit();
  group_by_name_.erase(ToLower(group.name));
  group_by_id_.erase(group.id);
  auto drop = [g](std::vector<GroupIndex>& v) { std::erase(v, g); };
  for (AppRole& role : roles_) {
    drop(role.groups);
    drop(role.default_groups);
    ++role.version;
  }
  for (auto& [key, groups] : permissions_) drop(groups);
  Touch();
}

bool Directory::IsMember(GroupIndex g, UserIndex u) const {
  const auto& m = groups_[g].members;
  return std::binary_search(m.begin(), m.end(), u);
}

bool Directory::AddMember(GroupIndex g, UserIndex u) {
  if (groups_[g].deleted || IsMember(g, u)) return false;
  InsertSorted(groups_[g].members, u);
  Touch();
  return true;
}

bool Directory::RemoveMember(GroupIndex g, UserIndex u) {
  auto& m = groups_[g].members;
  auto it = std::lower_bound(m.begin(), m.end(), u);
  if (it == m.end() || *it != u) return false;
  m.erase(it);
  Touch();
  return true;
}

void Directory::RebuildUserGroups() const {
  if (user_groups_version_ == version_) return;
  const std::size_t n = user_count();
  user_group_offsets_.assign(n + 1, 0);
  for (const Group& g : groups_) {
    for (UserIndex u : g.members) ++user_group_offsets_[u + 1];
  }
  for (std::size_t k = 0; k < n; ++k) user_group_offsets_[k + 1] += user_group_offsets_[k];
  user_group_data_.assign(user_group_offsets_[n], 0);
  std::vector<std::uint32_t> fill(user_group_offsets_.begin(), user_group_offsets_.end() - 1);
  for (GroupIndex g = 0; g < groups_.size(); ++g) {
    for (UserIndex u : groups_[g].members) user_group_data_[fill[u]++] = g;
  }
  user_groups_version_ = version_;
}

std::vector<GroupIndex> Directory::GroupsOf(UserIndex u) const {
  RebuildUserGroups();
  if (u + 1 >= user_group_offsets_.size()) return {};
  return {user_group_data_.begin() + user_group_offsets_[u],
          user_group_data_.begin() + user_group_offsets_[u + 1]};
}

std::uint64_t Directory::membership_count() const {
  std::uint64_t n = 0;
  for (const Group& g : groups_) n += g.members.size();
  return n;
}

// ---- Roles and permissions --------------------------------------------------------------------

AppRole* Directory::FindRole(std::string_view key) {
  for (AppRole& r : roles_) {
    if (r.key == key) return &r;
  }
  return nullptr;
}

const AppRole* Directory::FindRole(std::string_view key) const {
  return const_cast<Directory*>(this)->FindRole(key);
}

bool Directory::HasProduct(UserIndex u, const AppRole& role) const {
  for (GroupIndex g : role.groups) {
    if (IsMember(g, u)) return true;
  }
  return false;
}

std::vector<std::string> Directory::ProductsOf(UserIndex u) const {
  std::vector<std::string> out;
  for (const AppRole& role : roles_) {
    if (HasProduct(u, role)) out.push_back(role.key);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::uint64_t Directory::RoleUserCount(const AppRole& role) const {
  std::vector<UserIndex> all;
  for (GroupIndex g : role.groups) {
    all.insert(all.end(), groups_[g].members.begin(), groups_[g].members.end());
  }
  if (role.groups.size() > 1) {
    std::sort(all.begin(), all.end());
    all.erase(std::unique(all.begin(), all.end()), all.end());
  }
  std::uint64_t n = 0;
  for (UserIndex u : all) {
    if (IsActive(u) && !IsDeleted(u)) ++n;
  }
  return n;
}

bool Directory::HasPermission(UserIndex u, std::string_view key) const {
  auto granted = [&](std::string_view k) {
    auto it = permissions_.find(std::string(k));
    if (it == permissions_.end()) return false;
    for (GroupIndex g : it->second) {
      if (IsMember(g, u)) return true;
    }
    return false;
  };
  if (granted(key)) return true;
  // System administrators can do everything administrators can.
  return key == "ADMINISTER" && granted("SYSTEM_ADMIN");
}

std::vector<std::string> Directory::PermissionsOf(UserIndex u) const {
  std::vector<std::string> out;
  for (const GlobalPermissionInfo& p : GlobalPermissionCatalog()) {
    if (HasPermission(u, p.key)) out.emplace_back(p.key);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// ---- Listing ------------------------------------------------------------------------------------

void Directory::RebuildListing() const {
  if (listing_version_ == version_) return;
  const std::uint32_t n = user_count();
  const std::size_t blocks = (n + kBlock - 1) / kBlock;
  listed_active_prefix_.assign(blocks + 1, 0);
  listed_inactive_prefix_.assign(blocks + 1, 0);
  for (std::uint32_t i = 0; i < n; ++i) {
    const bool listed = flavor_ == JiraFlavor::kCloud || !IsDeleted(i);
    if (!listed) continue;
    (IsActive(i) ? listed_active_prefix_ : listed_inactive_prefix_)[i / kBlock + 1]++;
  }
  for (std::size_t b = 0; b < blocks; ++b) {
    listed_active_prefix_[b + 1] += listed_active_prefix_[b];
    listed_inactive_prefix_[b + 1] += listed_inactive_prefix_[b];
  }
  listing_version_ = version_;
}

std::uint64_t Directory::CountListed(bool include_active, bool include_inactive) const {
  RebuildListing();
  return (include_active ? listed_active_prefix_.back() : 0u) +
         (include_inactive ? listed_inactive_prefix_.back() : 0u);
}

std::optional<UserIndex> Directory::SelectListed(std::uint64_t position, bool include_active,
                                                 bool include_inactive) const {
  RebuildListing();
  auto prefix = [&](std::size_t b) -> std::uint64_t {
    return (include_active ? listed_active_prefix_[b] : 0u) +
           (include_inactive ? listed_inactive_prefix_[b] : 0u);
  };
  const std::size_t blocks = listed_active_prefix_.size() - 1;
  if (position >= prefix(blocks)) return std::nullopt;
  // The last block whose prefix is <= position.
  std::size_t lo = 0, hi = blocks;
  while (hi - lo > 1) {
    const std::size_t mid = (lo + hi) / 2;
    if (prefix(mid) <= position) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  std::uint64_t seen = prefix(lo);
  const std::uint32_t end =
      std::min<std::uint32_t>(user_count(), static_cast<std::uint32_t>((lo + 1) * kBlock));
  for (std::uint32_t i = static_cast<std::uint32_t>(lo * kBlock); i < end; ++i) {
    if (flavor_ == JiraFlavor::kDataCenter && IsDeleted(i)) continue;
    const bool active = IsActive(i);
    if ((active && !include_active) || (!active && !include_inactive)) continue;
    if (seen == position) return i;
    ++seen;
  }
  return std::nullopt;
}

// ---- Generation -------------------------------------------------------------------------------

Status Directory::Generate(const SiteSpec& spec) {
  if (user_count() != 0) return FailedPrecondition("GenerateSite needs a fake without users");
  if (spec.users == 0) return InvalidArgument("a generated site needs users");
  if (spec.memberships > 0 &&
      (spec.groups == 0 || spec.memberships > std::uint64_t{spec.users} * spec.groups / 2)) {
    return InvalidArgument("memberships must be at most half of users x groups");
  }
  spec_ = spec;
  generated_count_ = spec.users;

  // Standard groups, in index order so member vectors stay sorted.
  const bool dc = flavor_ == JiraFlavor::kDataCenter;
  const GroupIndex admins = *FindGroup("jira-administrators");
  const GroupIndex sysadmins = *FindGroup(dc ? "jira-system-administrators" : "site-admins");
  const GroupIndex software = *FindGroup("jira-software-users");
  const GroupIndex servicedesk = *FindGroup("jira-servicedesk-users");
  const std::optional<GroupIndex> addons = FindGroup("atlassian-addons-admin");
  for (UserIndex i = 0; i < spec.users; ++i) {
    const std::uint64_t s = spec.seed;
    switch (Nhi(i)) {
      case NhiKind::kHuman:
        if (Below(Mix(s, i, 20), spec.product_access_fraction))
          groups_[software].members.push_back(i);
        if (Below(Mix(s, i, 21), 0.10)) groups_[servicedesk].members.push_back(i);
        if (Below(Mix(s, i, 22), 0.002)) groups_[admins].members.push_back(i);
        if (Below(Mix(s, i, 23), 0.0005)) groups_[sysadmins].members.push_back(i);
        break;
      case NhiKind::kServiceAccount:
        if (Below(Mix(s, i, 20), 0.5)) groups_[software].members.push_back(i);
        if (Below(Mix(s, i, 22), 0.1)) groups_[admins].members.push_back(i);
        break;
      case NhiKind::kBot:
        if (Below(Mix(s, i, 22), 0.2)) groups_[admins].members.push_back(i);
        groups_[software].members.push_back(i);
        break;
      case NhiKind::kApp:
        if (addons) groups_[*addons].members.push_back(i);
        break;
      default:  // system accounts and customers hold no group
        break;
    }
  }

  // Custom groups and exactly spec.memberships memberships among them.
  std::vector<GroupIndex> custom;
  for (std::uint32_t k = 0; k < spec.groups; ++k) {
    const std::string_view dept = kDepartments[Mix(spec.seed, k, 30) % kDepartments.size()];
    custom.push_back(*AddGroup(std::string(dept) + "-team-" + std::to_string(k)));
  }
  std::uint64_t total = 0;
  std::uint64_t counter = 0;
  while (total < spec.memberships) {
    const std::uint64_t need = spec.memberships - total;
    for (std::uint64_t k = 0; k < need; ++k, ++counter) {
      const GroupIndex g = custom[Mix(spec.seed, counter, 31) % custom.size()];
      const UserIndex u = static_cast<UserIndex>(Mix(spec.seed, counter, 32) % spec.users);
      groups_[g].members.push_back(u);
    }
    total = 0;
    for (GroupIndex g : custom) {
      auto& m = groups_[g].members;
      std::sort(m.begin(), m.end());
      m.erase(std::unique(m.begin(), m.end()), m.end());
      total += m.size();
    }
  }
  // Each batch adds at most `need` new pairs, so the total never overshoots.
  custom_memberships_ = total;
  Touch();
  return Status::Ok();
}

}  // namespace cakewalk::testing::jira_fake
