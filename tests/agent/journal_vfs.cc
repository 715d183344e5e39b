#include "tests/agent/journal_vfs.h"

#include <gtest/gtest.h>

namespace cakewalk::testing {

JournalVfs::JournalVfs() {
  base_ = sqlite3_vfs_find(nullptr);
  vfs_ = *base_;
  vfs_.zName = "cakewalk_test_journal";
  vfs_.pNext = nullptr;
  vfs_.xOpen = &JournalVfs::Open;
  EXPECT_EQ(self_, nullptr) << "one JournalVfs at a time";
  self_ = this;
  EXPECT_EQ(sqlite3_vfs_register(&vfs_, 1), SQLITE_OK);
}

JournalVfs::~JournalVfs() {
  sqlite3_vfs_unregister(&vfs_);
  self_ = nullptr;
}

int JournalVfs::Open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* file, int flags,
                     int* out_flags) {
  JournalVfs& me = *self_;
  const int rc = me.base_->xOpen(me.base_, name, file, flags, out_flags);
  if (rc == SQLITE_OK && file->pMethods != nullptr) {
    std::lock_guard lock(me.mu_);
    Methods* found = nullptr;
    for (auto& m : me.methods_) {
      if (m->real == file->pMethods) found = m.get();
    }
    if (found == nullptr) {
      found = me.methods_.emplace_back(std::make_unique<Methods>()).get();
      found->real = file->pMethods;
      found->wrapped = *file->pMethods;
      found->wrapped.xSync = &JournalVfs::Sync;
      found->wrapped.xWrite = &JournalVfs::Write;
    }
    file->pMethods = &found->wrapped;
  }
  return rc;
}

const sqlite3_io_methods* JournalVfs::Real(const sqlite3_file* file) {
  std::lock_guard lock(mu_);
  for (auto& m : methods_) {
    if (&m->wrapped == file->pMethods) return m->real;
  }
  return nullptr;
}

int JournalVfs::Sync(sqlite3_file* file, int flags) {
  JournalVfs& me = *self_;
  ++me.syncs_;
  const sqlite3_io_methods* real = me.Real(file);
  return real != nullptr ? real->xSync(file, flags) : SQLITE_IOERR_FSYNC;
}

int JournalVfs::Write(sqlite3_file* file, const void* data, int amount, sqlite3_int64 offset) {
  JournalVfs& me = *self_;
  if (me.fail_writes_) {
    ++me.failed_writes_;
    return SQLITE_FULL;
  }
  const sqlite3_io_methods* real = me.Real(file);
  return real != nullptr ? real->xWrite(file, data, amount, offset) : SQLITE_IOERR_WRITE;
}

}  // namespace cakewalk::testing
