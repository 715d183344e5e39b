// The fake's user directory: users, groups, memberships, application roles and global
// permissions, for either flavor.
//
// Users are numbered. A generated site (SiteSpec) stores no per-user record at all: the fields of
// user i are derived from (seed, i) on demand, and only users the test or the agent changed are
// materialised (`overrides_`). Names, keys, e-mails and account ids of generated users embed the
// index, so lookups parse it back and regenerate to confirm. Memberships are sorted member vectors
// per group (4 bytes each); the user -> groups view is rebuilt lazily after changes. A site of a
// million users therefore costs a few tens of megabytes.
//
// Not thread-safe: FakeJira serialises access.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "base/time.h"
#include "tests/fakes/jira/fake_jira.h"

namespace cakewalk::testing::jira_fake {

using UserIndex = std::uint32_t;
using GroupIndex = std::uint32_t;

struct UserRecord {
  std::string key;         // DC
  std::string name;        // DC login name
  std::string account_id;  // Cloud
  CloudAccountType account_type = CloudAccountType::kAtlassian;
  std::optional<std::string> email;  // nullopt: the account has none (Cloud apps)
  bool email_hidden = false;         // Cloud privacy: Jira knows it but does not show it
  std::string display_name;
  bool active = true;
  bool deleted = false;
  bool search_hidden = false;
  bool managed = true;
  NhiKind nhi = NhiKind::kHuman;
  std::string directory;
  std::optional<SysTime> last_login;
};

struct Group {
  std::string name;
  std::string id;                  // Cloud groupId (UUID)
  std::vector<UserIndex> members;  // sorted, unique
  bool deleted = false;
};

struct AppRole {
  std::string key;
  std::string name;
  std::vector<GroupIndex> groups;
  std::vector<GroupIndex> default_groups;
  bool selected_by_default = false;
  bool platform = false;
  std::uint64_t version = 1;  // bumped on every change: the ETag
};

// Global permission keys the fake knows, with their display names.
struct GlobalPermissionInfo {
  std::string_view key;
  std::string_view id;
  std::string_view name;
  std::string_view description;
};
const std::vector<GlobalPermissionInfo>& GlobalPermissionCatalog();

class Directory {
 public:
  Directory(JiraFlavor flavor, std::string site_name);

  JiraFlavor flavor() const { return flavor_; }

  // ---- Users -------------------------------------------------------------------------------
  std::uint32_t user_count() const {
    return generated_count_ + static_cast<UserIndex>(extra_.size());
  }
  UserRecord User(UserIndex i) const;
  bool IsDeleted(UserIndex i) const;
  bool IsActive(UserIndex i) const;
  bool IsSearchHidden(UserIndex i) const;
  NhiKind Nhi(UserIndex i) const;

  std::optional<UserIndex> FindByName(std::string_view name) const;  // case-insensitive
  std::optional<UserIndex> FindByKey(std::string_view key) const;
  std::optional<UserIndex> FindByAccountId(std::string_view account_id) const;
  // Every user with this e-mail (case-insensitive), hidden ones included (Jira knows them).
  std::vector<UserIndex> FindByEmail(std::string_view email) const;
  // username, key, accountId or a unique e-mail.
  std::optional<UserIndex> FindRef(std::string_view ref) const;

  // Adds a user; assigns key (DC) or accountId (Cloud) when empty. Refuses duplicates.
  Result<UserIndex> AddUser(UserRecord record);
  // Replaces a user's record (name, key and account id must stay the same).
  void PutUser(UserIndex i, UserRecord record);

  // ---- Groups ------------------------------------------------------------------------------
  GroupIndex group_count() const { return static_cast<GroupIndex>(groups_.size()); }
  const Group& group(GroupIndex g) const { return groups_[g]; }
  std::optional<GroupIndex> FindGroup(std::string_view name) const;  // case-insensitive
  std::optional<GroupIndex> FindGroupById(std::string_view id) const;
  Result<GroupIndex> AddGroup(std::string name);
  void DeleteGroup(GroupIndex g);
  bool IsMember(GroupIndex g, UserIndex u) const;
  bool AddMember(GroupIndex g, UserIndex u);            // false when already a member
  bool RemoveMember(GroupIndex g, UserIndex u);         // false when not a member
  std::vector<GroupIndex> GroupsOf(UserIndex u) const;  // live groups, by index
  std::uint64_t membership_count() const;
  std::uint64_t custom_membership_count() const { return custom_memberships_; }

  // ---- Application roles and global permissions -------------------------------------------
  std::vector<AppRole>& roles() { return roles_; }
  const std::vector<AppRole>& roles() const { return roles_; }
  AppRole* FindRole(std::string_view key);
  const AppRole* FindRole(std::string_view key) const;
  std::vector<std::string> ProductsOf(UserIndex u) const;  // role keys, sorted
  bool HasProduct(UserIndex u, const AppRole& role) const;
  // Active, non-deleted users holding the role.
  std::uint64_t RoleUserCount(const AppRole& role) const;
  // permission key -> groups granted it.
  std::map<std::string, std::vector<GroupIndex>>& global_permissions() { return permissions_; }
  std::vector<std::string> PermissionsOf(UserIndex u) const;  // sorted keys
  bool HasPermission(UserIndex u, std::string_view key) const;

  // ---- Listing -----------------------------------------------------------------------------
  // Users that listings show (DC: not deleted; Cloud: everyone), filtered by activity, in index
  // order: how many there are, and the one at a position.
  std::uint64_t CountListed(bool include_active, bool include_inactive) const;
  std::optional<UserIndex> SelectListed(std::uint64_t position, bool include_active,
                                        bool include_inactive) const;

  // ---- Generation --------------------------------------------------------------------------
  // Only on a directory without users.
  Status Generate(const SiteSpec& spec);
  const std::optional<SiteSpec>& spec() const { return spec_; }

  // Changes whenever users or memberships change (for caches kept by the caller).
  std::uint64_t version() const { return version_; }

 private:
  UserRecord Generated(UserIndex i) const;
  const UserRecord* Stored(UserIndex i) const;
  std::optional<UserIndex> ParseGeneratedIndex(std::string_view text) const;
  void IndexRecord(UserIndex i, const UserRecord& r);
  void Touch() { ++version_; }
  void RebuildUserGroups() const;
  void RebuildListing() const;
  void AddStandardGroupsAndRoles();

  JiraFlavor flavor_;
  std::string site_name_;
  std::optional<SiteSpec> spec_;
  UserIndex generated_count_ = 0;
  std::vector<UserRecord> extra_;                        // users added after generation
  std::unordered_map<UserIndex, UserRecord> overrides_;  // changed generated users
  // Lower-cased name / key / account id / e-mail of stored records -> index.
  std::unordered_map<std::string, UserIndex> by_name_, by_key_, by_account_;
  std::unordered_map<std::string, std::vector<UserIndex>> by_email_;

  std::vector<Group> groups_;
  std::unordered_map<std::string, GroupIndex> group_by_name_;  // lower-cased
  std::unordered_map<std::string, GroupIndex> group_by_id_;
  std::vector<AppRole> roles_;
  std::map<std::string, std::vector<GroupIndex>> permissions_;
  std::uint64_t custom_memberships_ = 0;

  std::uint64_t version_ = 1;
  // user -> groups (CSR), rebuilt when stale.
  mutable std::uint64_t user_groups_version_ = 0;
  mutable std::vector<std::uint32_t> user_group_offsets_;
  mutable std::vector<GroupIndex> user_group_data_;
  // Prefix counts of listed users per block of 1024, for [active, inactive].
  mutable std::uint64_t listing_version_ = 0;
  mutable std::vector<std::uint32_t> listed_active_prefix_, listed_inactive_prefix_;
};

std::string ToLower(std::string_view s);
// The generator's hash: deterministic 64 bits from (seed, i, salt).
std::uint64_t Hash64(std::uint64_t seed, std::uint64_t i, std::uint64_t salt);
// True with probability `fraction`, decided by the hash `h`.
bool HashBelow(std::uint64_t h, double fraction);

}  // namespace cakewalk::testing::jira_fake
