// The journald sink: field-name rules, entry layout, the fallback to standard error, the choice
// between journal and standard error, and — since no journald runs here — the real
// sd_journal_sendv datagram, received by a stand-in journal socket at /run/systemd/journal/socket
// in a private mount namespace of this test process (root only).
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "systemd/journal_sink.h"
#include "tests/support/temp_dir.h"

namespace cakewalk::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(JournalFieldNameTest, ValidNamesPassUnchanged) {
  for (const char* name : {"CONNECTION", "JOB_ID", "A1", "SECRET_NAME", "X"}) {
    EXPECT_TRUE(sd::IsValidJournalFieldName(name)) << name;
    EXPECT_EQ(sd::JournalFieldName(name), name);
  }
}

TEST(JournalFieldNameTest, BadNamesAreSanitized) {
  EXPECT_EQ(sd::JournalFieldName("job_id"), "JOB_ID");
  EXPECT_EQ(sd::JournalFieldName("http.status"), "HTTP_STATUS");
  EXPECT_EQ(sd::JournalFieldName("_PID"), "FIELD__PID");  // journald's trusted fields
  EXPECT_EQ(sd::JournalFieldName("2FA"), "FIELD_2FA");
  EXPECT_EQ(sd::JournalFieldName(""), "FIELD_");
  EXPECT_EQ(sd::JournalFieldName("MESSAGE"), "FIELD_MESSAGE");  // would shadow our own fields
  EXPECT_EQ(sd::JournalFieldName("PRIORITY"), "FIELD_PRIORITY");
  EXPECT_EQ(sd::JournalFieldName("Ä"), "FIELD___");
  EXPECT_EQ(sd::JournalFieldName(std::string(100, 'A')), std::string(64, 'A'));
  for (const char* bad : {"job_id", "_PID", "2FA", "", "A-B", "a"}) {
    EXPECT_FALSE(sd::IsValidJournalFieldName(bad)) << bad;
    EXPECT_TRUE(sd::IsValidJournalFieldName(sd::JournalFieldName(bad))) << bad;
  }
  EXPECT_FALSE(sd::IsValidJournalFieldName(std::string(65, 'A')));
}

TEST(JournalSinkTest, EntryCarriesMessageIdPriorityIdentifierAndFields) {
  const LogField fields[] = {{"CONNECTION", "jira-prod"}, {"job id", "j-1"}};
  EXPECT_THAT(sd::JournalAssignments(Severity::kWarning, event::kJobFinished, "job failed", fields),
              ElementsAre("MESSAGE=job failed", "PRIORITY=4", "SYSLOG_IDENTIFIER=cakewalk-agent",
                          "MESSAGE_ID=fc4f1854a1e006ae29caad5ea545e8f1", "CONNECTION=jira-prod",
                          "JOB_ID=j-1"));
  EXPECT_THAT(sd::JournalAssignments(Severity::kDebug, "", "x", {}),
              ElementsAre("MESSAGE=x", "PRIORITY=7", "SYSLOG_IDENTIFIER=cakewalk-agent"));
  EXPECT_EQ(sd::JournalPriority(Severity::kCritical), 2);
  EXPECT_EQ(sd::JournalPriority(Severity::kError), 3);
  EXPECT_EQ(sd::JournalPriority(Severity::kNotice), 5);
  EXPECT_EQ(sd::JournalPriority(Severity::kInfo), 6);
}

TEST(JournalSinkTest, SendsThroughTheSenderAndFiltersBySeverity) {
  std::vector<std::vector<std::string>> sent;
  sd::JournalLogSink sink(Severity::kInfo, [&](std::span<const iovec> iov) {
    std::vector<std::string> entry;
    for (const iovec& v : iov) entry.emplace_back(static_cast<const char*>(v.iov_base), v.iov_len);
    sent.push_back(entry);
    return 0;
  });
  sink.Log(Severity::kDebug, event::kJira, "not sent");
  sink.Log(Severity::kInfo, event::kJira, "sent", {{"CONNECTION", "jira-prod"}});
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_THAT(sent[0],
              ElementsAre("MESSAGE=sent", "PRIORITY=6", "SYSLOG_IDENTIFIER=cakewalk-agent",
                          "MESSAGE_ID=0ebd633f994ccd0a43f804d80274cee0", "CONNECTION=jira-prod"));
}

// Redirects standard error into a file for the lifetime of the object.
class StderrCapture {
 public:
  StderrCapture() : path_(dir_ / "stderr") {
    fflush(stderr);
    saved_ = dup(STDERR_FILENO);
    const int fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    dup2(fd, STDERR_FILENO);
    close(fd);
  }
  ~StderrCapture() { Restore(); }
  std::string Text() {
    Restore();
    return ReadFile(path_);
  }

 private:
  void Restore() {
    if (saved_ < 0) return;
    fflush(stderr);
    dup2(saved_, STDERR_FILENO);
    close(saved_);
    saved_ = -1;
  }
  TempDir dir_;
  std::filesystem::path path_;
  int saved_ = -1;
};

TEST(JournalSinkTest, FallsBackToStandardErrorWhenTheJournalRefuses) {
  StderrCapture capture;
  sd::JournalLogSink sink(Severity::kInfo, [](std::span<const iovec>) { return -ENOENT; });
  sink.Log(Severity::kError, event::kControlPlane, "control plane unreachable",
           {{"URL", "https://agents.example/agent/v1"}});
  EXPECT_EQ(capture.Text(),
            "cakewalk-agent: error: control plane unreachable [URL=https://agents.example/agent/"
            "v1]\n");
}

TEST(JournalSinkTest, ASenderThatThrowsDoesNotEscape) {
  StderrCapture capture;
  sd::JournalLogSink sink(Severity::kInfo,
                          [](std::span<const iovec>) -> int { throw std::runtime_error("boom"); });
  sink.Log(Severity::kInfo, event::kConfig, "still logged");
  EXPECT_THAT(capture.Text(), HasSubstr("still logged"));
}

TEST(JournalSelectionTest, JournalStreamMustNameStandardError) {
  TempDir dir;
  WriteFile(dir / "f", "x");
  const int fd = open((dir / "f").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  struct stat st {};
  ASSERT_EQ(fstat(fd, &st), 0);
  const std::string match = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  const std::string other = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino + 1);
  EXPECT_TRUE(sd::IsJournalStream(match.c_str(), fd));
  EXPECT_FALSE(sd::IsJournalStream(other.c_str(), fd));
  for (const char* bad : {"", "12", ":", "1:", ":2", "a:b", "1:2x", "-1:2"}) {
    EXPECT_FALSE(sd::IsJournalStream(bad, fd)) << bad;
  }
  EXPECT_FALSE(sd::IsJournalStream(nullptr, fd));

  // The journal socket must exist too.
  EXPECT_FALSE(sd::ShouldUseJournal(match.c_str(), fd, dir / "no-socket"));
  EXPECT_FALSE(sd::ShouldUseJournal(match.c_str(), fd, dir / "f"));  // not a socket
  const int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", (dir / "socket").c_str());
  ASSERT_EQ(bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_TRUE(sd::ShouldUseJournal(match.c_str(), fd, dir / "socket"));
  EXPECT_FALSE(sd::ShouldUseJournal(other.c_str(), fd, dir / "socket"));
  close(s);
  close(fd);
}

TEST(JournalSelectionTest, AShellGetsStandardError) {
  unsetenv("JOURNAL_STREAM");
  auto sink = sd::MakeLogSink();
  EXPECT_NE(dynamic_cast<StderrLogSink*>(sink.get()), nullptr);
  EXPECT_NE(dynamic_cast<sd::JournalLogSink*>(sd::MakeLogSink(sd::LogTarget::kJournal).get()),
            nullptr);
  EXPECT_NE(dynamic_cast<StderrLogSink*>(sd::MakeLogSink(sd::LogTarget::kStderr).get()), nullptr);
}

// journald's native protocol: "NAME=value\n", or for values with a newline
// "NAME\n" + 64-bit little-endian length + value + "\n".
std::map<std::string, std::string> ParseNative(const std::string& d) {
  std::map<std::string, std::string> out;
  size_t i = 0;
  while (i < d.size()) {
    const size_t nl = d.find('\n', i);
    if (nl == std::string::npos) break;
    const std::string line = d.substr(i, nl - i);
    const size_t eq = line.find('=');
    if (eq != std::string::npos) {
      out[line.substr(0, eq)] = line.substr(eq + 1);
      i = nl + 1;
      continue;
    }
    uint64_t len = 0;
    std::memcpy(&len, d.data() + nl + 1, sizeof len);
    out[line] = d.substr(nl + 1 + sizeof len, len);
    i = nl + 1 + sizeof len + len + 1;
  }
  return out;
}

TEST(JournalSinkTest, RealEntriesReachAStandInJournalSocket) {
  ASSERT_EQ(geteuid(), 0u) << "this test needs root for a private mount namespace";
  ASSERT_EQ(unshare(CLONE_NEWNS), 0) << std::strerror(errno);
  ASSERT_EQ(mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr), 0) << std::strerror(errno);
  TempDir dir("cakewalk-journal");
  ASSERT_EQ(mkdir((dir / "journal").c_str(), 0755), 0);
  const int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", (dir / "journal" / "socket").c_str());
  ASSERT_EQ(bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  // A private /run (a tmpfs seen by this process only) holds the stand-in journal directory,
  // so nothing is created on the host.
  ASSERT_EQ(mount("tmpfs", "/run", "tmpfs", 0, "mode=0755"), 0) << std::strerror(errno);
  ASSERT_EQ(mkdir("/run/systemd", 0755), 0);
  ASSERT_EQ(mkdir("/run/systemd/journal", 0755), 0);
  ASSERT_EQ(mount((dir / "journal").c_str(), "/run/systemd/journal", nullptr, MS_BIND, nullptr), 0)
      << std::strerror(errno);

  {
    StderrCapture capture;
    sd::JournalLogSink sink;
    sink.Log(Severity::kNotice, event::kSecretRotation, "rotation promoted",
             {{"connection", "jira-prod"}, {"DETAIL", "line one\nline two"}, {"_UID", "0"}});
    EXPECT_THAT(capture.Text(), IsEmpty());  // went to the journal, not to the fallback
  }
  pollfd p{s, POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 5000), 1);
  char buf[8192];
  const ssize_t n = recv(s, buf, sizeof buf, 0);
  ASSERT_GT(n, 0);
  const auto fields = ParseNative(std::string(buf, static_cast<size_t>(n)));
  EXPECT_EQ(fields.at("MESSAGE"), "rotation promoted");
  EXPECT_EQ(fields.at("MESSAGE_ID"), "fd496ec636c1716346c27419e67fd74a");
  EXPECT_EQ(fields.at("PRIORITY"), "5");
  EXPECT_EQ(fields.at("SYSLOG_IDENTIFIER"), "cakewalk-agent");
  EXPECT_EQ(fields.at("CONNECTION"), "jira-prod");
  EXPECT_EQ(fields.at("DETAIL"), "line one\nline two");
  EXPECT_EQ(fields.at("FIELD__UID"), "0");
  EXPECT_EQ(fields.count("_UID"), 0u);

  umount2("/run/systemd/journal", MNT_DETACH);
  umount2("/run", MNT_DETACH);
  close(s);
}

}  // namespace
}  // namespace cakewalk::testing
