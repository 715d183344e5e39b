// A SQLite VFS for the journal's tests: the default VFS with each file's syncs counted and its
// writes able to fail the way they do on a full disk. Registered as the default VFS while it
// lives, so a journal opened meanwhile (JobJournal opens its file through the default VFS) uses
// it. One at a time per process; close the journals opened through it before it goes away.
#pragma once

#include <sqlite3.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

namespace cakewalk::testing {

class JournalVfs {
 public:
  JournalVfs();
  ~JournalVfs();
  JournalVfs(const JournalVfs&) = delete;
  JournalVfs& operator=(const JournalVfs&) = delete;

  // Syncs SQLite asked for since the last call.
  int TakeSyncs() { return syncs_.exchange(0); }

  // While set, every write fails with SQLITE_FULL ("database or disk is full").
  void FailWrites(bool fail) { fail_writes_ = fail; }
  int failed_writes() const { return failed_writes_; }

 private:
  // The unix VFS has several method tables (one per locking style); each gets a copy of its own
  // with xSync and xWrite replaced.
  struct Methods {
    const sqlite3_io_methods* real = nullptr;
    sqlite3_io_methods wrapped{};
  };

  static int Open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* file, int flags,
                  int* out_flags);
  static int Sync(sqlite3_file* file, int flags);
  static int Write(sqlite3_file* file, const void* data, int amount, sqlite3_int64 offset);
  const sqlite3_io_methods* Real(const sqlite3_file* file);

  static inline JournalVfs* self_ = nullptr;
  sqlite3_vfs* base_ = nullptr;
  sqlite3_vfs vfs_{};
  std::mutex mu_;
  std::vector<std::unique_ptr<Methods>> methods_;
  std::atomic<int> syncs_{0};
  std::atomic<bool> fail_writes_{false};
  std::atomic<int> failed_writes_{0};
};

}  // namespace cakewalk::testing
