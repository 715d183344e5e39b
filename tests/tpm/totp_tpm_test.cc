// TOTP computed inside the TPM: seeds enter through the token store's import path (tpm2-pkcs11
// refuses C_CreateObject of secret keys), RFC 6238 vectors, agreement with oathtool, the imported
// key's protection, and no secret on any command line, in any environment or in any file.
#include <dirent.h>
#include <gtest/gtest.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "base/encoding.h"
#include "hsm/otpauth.h"
#include "hsm/session.h"
#include "tests/support/canary.h"
#include "tests/tpm/fixture.h"

namespace cakewalk::testing {
namespace {

using hsm::TotpAlgorithm;

std::string Code(const Result<hsm::TotpCode>& r) {
  if (!r.ok()) return "<error: " + r.status().ToString() + ">";
  return std::string(r->code.Reveal(SecretAccess::Grant()));
}

hsm::TotpSeed Seed(std::string_view key, TotpAlgorithm a, int digits,
                   std::chrono::seconds period = std::chrono::seconds(30)) {
  hsm::TotpSeed s;
  s.key = SecretBytes::CopyOf(key);
  s.params = {a, digits, period};
  return s;
}

// oathtool reads the hex key from standard input ("-"): the seeds stay off command lines.
std::string Oathtool(const std::string& hex_key, TotpAlgorithm a, int digits, int period,
                     long long time) {
  const char* mode = a == TotpAlgorithm::kSha1     ? "--totp=SHA1"
                     : a == TotpAlgorithm::kSha256 ? "--totp=SHA256"
                                                   : "--totp=SHA512";
  ProgramResult r =
      RunProgram({"oathtool", mode, "-d", std::to_string(digits), "-s",
                  std::to_string(period) + "s", "-N", "@" + std::to_string(time), "-"},
                 hex_key + "\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  while (!r.out.empty() && (r.out.back() == '\n' || r.out.back() == '\r')) r.out.pop_back();
  return r.out;
}

class TotpTpmTest : public TpmFixture {};

TEST_F(TotpTpmTest, Rfc6238AppendixBVectorsComputedInTheTpm) {
  const std::string base = "1234567890123456789012345678901234567890123456789012345678901234";
  struct Algo {
    TotpAlgorithm algorithm;
    std::size_t seed_bytes;
    std::string connection;
  };
  const Algo algos[] = {{TotpAlgorithm::kSha1, 20, "rfc-sha1"},
                        {TotpAlgorithm::kSha256, 32, "rfc-sha256"},
                        {TotpAlgorithm::kSha512, 64, "rfc-sha512"}};
  struct Vector {
    long long time;
    const char* codes[3];
  };
  const Vector vectors[] = {
      {59, {"94287082", "46119246", "90693936"}},
      {1111111109, {"07081804", "68084774", "25091201"}},
      {1111111111, {"14050471", "67062674", "99943326"}},
      {1234567890, {"89005924", "91819424", "93441116"}},
      {2000000000, {"69279037", "90698825", "38618901"}},
      {20000000000, {"65353130", "77737706", "47863826"}},
  };
  for (const Algo& a : algos) {
    auto enrolled =
        store_->EnrollTotp(a.connection, Seed(base.substr(0, a.seed_bytes), a.algorithm, 8),
                           hsm::Activation::kCurrent);
    ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
    EXPECT_EQ(enrolled->scheme, std::string(hsm::TotpAlgorithmName(a.algorithm)) + "/8/30s");
  }
  int checked = 0;
  for (const Vector& v : vectors) {
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(Code(store_->Totp(algos[i].connection, UnixSeconds(v.time), "rfc vector")),
                v.codes[i])
          << algos[i].connection << " at " << v.time;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 18);

  // The codes come from keys in the TPM: they survive a restart of everything but the TPM.
  ASSERT_NO_FATAL_FAILURE(ReopenToken());
  EXPECT_EQ(Code(store_->Totp("rfc-sha256", UnixSeconds(2000000000), "after restart")), "90698825");
}

TEST_F(TotpTpmTest, RandomSeedsAgreeWithOathtool) {
  // 10 bytes is what Jira hands out (imported as it is, no padding: the TPM's HMAC takes any key
  // length); 20/32/64 are the digest lengths; 100 and 512 are beyond the hash block (64 bytes for
  // SHA-1/SHA-256, 128 for SHA-512), imported as their hash, as HMAC itself does (the TPM takes
  // at most 64 bytes).
  struct Case {
    std::size_t len;
    TotpAlgorithm algorithm;
    int digits;
    int period;
  };
  const Case cases[] = {
      {10, TotpAlgorithm::kSha1, 6, 30},    {10, TotpAlgorithm::kSha256, 8, 30},
      {10, TotpAlgorithm::kSha512, 8, 60},  {20, TotpAlgorithm::kSha1, 6, 30},
      {32, TotpAlgorithm::kSha256, 6, 60},  {64, TotpAlgorithm::kSha512, 8, 30},
      {100, TotpAlgorithm::kSha1, 6, 30},   {100, TotpAlgorithm::kSha256, 8, 30},
      {129, TotpAlgorithm::kSha512, 6, 30}, {512, TotpAlgorithm::kSha1, 8, 30},
  };
  int n = 0;
  for (const Case& c : cases) {
    std::string key(c.len, '\0');
    ASSERT_EQ(RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), static_cast<int>(c.len)), 1);
    const std::string connection = "oath-" + std::to_string(n++);
    auto enrolled = store_->EnrollTotp(
        connection, Seed(key, c.algorithm, c.digits, std::chrono::seconds(c.period)),
        hsm::Activation::kCurrent);
    ASSERT_TRUE(enrolled.ok()) << c.len << " bytes: " << enrolled.status().ToString();
    std::uint32_t r = 0;
    ASSERT_EQ(RAND_bytes(reinterpret_cast<unsigned char*>(&r), sizeof r), 1);
    for (long long t : {1700000000LL, 1796398080LL, 1999999999LL,
                        static_cast<long long>(1000000000u + r % 3000000000u)}) {
      EXPECT_EQ(Code(store_->Totp(connection, std::chrono::sys_seconds(std::chrono::seconds(t)),
                                  "oathtool comparison")),
                Oathtool(HexEncode(AsBytes(key)), c.algorithm, c.digits, c.period, t))
          << "seed " << c.len << " bytes, " << hsm::TotpAlgorithmName(c.algorithm) << ", t=" << t;
    }
  }
}

TEST_F(TotpTpmTest, ASha512SeedBetweenTheTpmLimitAndTheBlockSizeIsRefusedClearly) {
  // 65..128 bytes: too long for the TPM (64), not long enough for HMAC to hash it.
  auto enrolled = store_->EnrollTotp("c", Seed(std::string(100, 'k'), TotpAlgorithm::kSha512, 6),
                                     hsm::Activation::kCurrent);
  ASSERT_FALSE(enrolled.ok());
  EXPECT_EQ(enrolled.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(enrolled.status().message().find("hmac key size"), std::string::npos)
      << enrolled.status().message();
  // Nothing was left behind.
  auto listed = store_->List();
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->empty());
}

TEST_F(TotpTpmTest, TheTokenRefusesCreateObjectSoTheSeedWasImportedOutOfBand) {
  // What makes the store choose the import path: C_CreateObject of a secret key is refused.
  ASSERT_NO_FATAL_FAILURE(OpenRaw());
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE type = CKK_GENERIC_SECRET;
  CK_BBOOL yes = CK_TRUE;
  std::uint8_t value[20] = {1, 2, 3};
  CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof cls},
                         {CKA_KEY_TYPE, &type, sizeof type},
                         {CKA_TOKEN, &yes, sizeof yes},
                         {CKA_SIGN, &yes, sizeof yes},
                         {CKA_VALUE, value, sizeof value}};
  CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
  const CK_RV rv = raw_->f()->C_CreateObject(raw_session_, tmpl, 5, &h);
  EXPECT_TRUE(rv == CKR_ATTRIBUTE_VALUE_INVALID || rv == CKR_TEMPLATE_INCONSISTENT) << rv;
  CloseRaw();

  auto enrolled = store_->EnrollTotp("jira-prod", Seed("0123456789", TotpAlgorithm::kSha1, 6),
                                     hsm::Activation::kCurrent);
  ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
  EXPECT_EQ(enrolled->version, 1u);
  auto listed = store_->List();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].kind, hsm::SecretKind::kTotp);
  EXPECT_EQ((*listed)[0].state, hsm::SecretState::kCurrent);

  // The key in the token: typed to its hash, labelled as the layout says, and not exportable.
  ASSERT_NO_FATAL_FAILURE(OpenRaw());
  auto keys = raw_->FindByLabel(raw_session_, "cakewalk:seed:jira-prod:totp:v1", CKO_SECRET_KEY);
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  ASSERT_EQ(keys->size(), 1u);
  CK_FUNCTION_LIST* f = raw_->f();
  CK_KEY_TYPE key_type = 0;
  CK_BBOOL b[5] = {};
  CK_ATTRIBUTE attrs[] = {{CKA_KEY_TYPE, &key_type, sizeof key_type},
                          {CKA_TOKEN, &b[0], 1},
                          {CKA_PRIVATE, &b[1], 1},
                          {CKA_SIGN, &b[2], 1},
                          {CKA_LOCAL, &b[3], 1},
                          {CKA_MODIFIABLE, &b[4], 1}};
  ASSERT_EQ(f->C_GetAttributeValue(raw_session_, (*keys)[0], attrs, 6), CKR_OK);
  EXPECT_EQ(key_type, CKK_SHA_1_HMAC);
  EXPECT_TRUE(b[0] && b[1] && b[2]);
  EXPECT_FALSE(b[3]) << "an imported key cannot be local";
  EXPECT_FALSE(b[4]);
  std::vector<std::string> notes;
  Status not_exportable = CheckSecretKeyNotExportable(f, raw_session_, (*keys)[0], &notes);
  EXPECT_TRUE(not_exportable.ok()) << not_exportable.ToString();
  // Precisely how tpm2-pkcs11 differs from the specification (and from SoftHSM): the imported key
  // claims to be extractable and its sensitivity flag is editable, yet nothing returns its value.
  EXPECT_EQ(notes, (std::vector<std::string>{"reports CKA_EXTRACTABLE=TRUE",
                                             "CKA_SENSITIVE can be cleared by the PIN holder",
                                             "C_WrapKey is not supported"}));
  CK_ATTRIBUTE read_value{CKA_VALUE, nullptr, 0};
  EXPECT_EQ(f->C_GetAttributeValue(raw_session_, (*keys)[0], &read_value, 1), CKR_OK);
  EXPECT_EQ(read_value.ulValueLen, 0u) << "tpm2-pkcs11 answers CKR_OK with an empty value";
  // Typed to SHA-1: another hash is refused.
  CK_MECHANISM sha256{CKM_SHA256_HMAC, nullptr, 0};
  EXPECT_NE(f->C_SignInit(raw_session_, &sha256, (*keys)[0]), CKR_OK);
}

TEST_F(TotpTpmTest, RotationAndDestroyRemoveTheImportedKey) {
  ASSERT_TRUE(store_
                  ->EnrollTotp("c", Seed("12345678901234567890", TotpAlgorithm::kSha1, 8),
                               hsm::Activation::kCurrent)
                  .ok());
  auto v2 = store_->EnrollTotp("c", Seed("abcdefghijabcdefghij", TotpAlgorithm::kSha1, 8),
                               hsm::Activation::kPending);
  ASSERT_TRUE(v2.ok()) << v2.status().ToString();
  EXPECT_EQ(v2->version, 2u);
  EXPECT_EQ(Code(store_->Totp("c", UnixSeconds(59), "v1")), "94287082");
  ASSERT_TRUE(store_->Promote("c", "totp", 2).ok());
  EXPECT_EQ(Code(store_->Totp("c", UnixSeconds(59), "v2")),
            Oathtool(HexEncode(AsBytes(std::string_view("abcdefghijabcdefghij"))),
                     TotpAlgorithm::kSha1, 8, 30, 59));
  ASSERT_TRUE(store_->Destroy("c", "totp", 1).ok());
  ASSERT_NO_FATAL_FAILURE(OpenRaw());
  auto old_keys = raw_->FindByLabel(raw_session_, "cakewalk:seed:c:totp:v1", CKO_SECRET_KEY);
  ASSERT_TRUE(old_keys.ok());
  EXPECT_TRUE(old_keys->empty());
  CloseRaw();
  // And it stays gone for a fresh process.
  ASSERT_NO_FATAL_FAILURE(ReopenToken());
  auto versions = store_->List();
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->size(), 1u);
  EXPECT_EQ((*versions)[0].version, 2u);
}

// Watches every process's command line and environment while it runs.
class ProcWatcher {
 public:
  explicit ProcWatcher(std::vector<std::string> needles) : needles_(std::move(needles)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~ProcWatcher() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::vector<std::string> hits() {
    std::lock_guard lock(mu_);
    return hits_;
  }
  std::set<std::string> programs() {
    std::lock_guard lock(mu_);
    return programs_;
  }

 private:
  static std::string Slurp(const std::string& path) {
    std::string out;
    FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) return out;
    char buf[8192];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    std::fclose(f);
    return out;
  }
  void Run() {
    const std::string self = std::to_string(getpid());
    while (!stop_) {
      DIR* proc = opendir("/proc");
      if (proc == nullptr) return;
      while (dirent* e = readdir(proc)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9' || self == e->d_name) continue;
        const std::string base = std::string("/proc/") + e->d_name;
        const std::string cmdline = Slurp(base + "/cmdline");
        if (cmdline.empty()) continue;
        const std::string environ_text = Slurp(base + "/environ");
        std::lock_guard lock(mu_);
        std::string argv0 = cmdline.substr(0, cmdline.find('\0'));
        programs_.insert(argv0.substr(argv0.rfind('/') + 1));
        for (const std::string& needle : needles_) {
          for (auto& hit : FindCanaryIn(needle, cmdline, base + "/cmdline (" + argv0 + ")")) {
            hits_.push_back(hit);
          }
          for (auto& hit : FindCanaryIn(needle, environ_text, base + "/environ (" + argv0 + ")")) {
            hits_.push_back(hit);
          }
        }
      }
      closedir(proc);
    }
  }

  std::vector<std::string> needles_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::string> hits_;
  std::set<std::string> programs_;
};

TEST_F(TotpTpmTest, NoSecretOnAnyCommandLineInAnyEnvironmentOrFile) {
  // What tpm2_ptool itself would put on command lines: the PIN, and the seal object's auth value
  // derived from it (hex(SHA-256(PIN || salt))[:32], salt from the store).
  const std::string pin = tpm_->token().user_pin;
  ProgramResult salt = RunProgram({"sqlite3", (tpm_->store() / "tpm2_pkcs11.sqlite3").string(),
                                   "SELECT userauthsalt FROM sealobjects"});
  ASSERT_EQ(salt.exit_code, 0) << salt.err;
  while (!salt.out.empty() && salt.out.back() == '\n') salt.out.pop_back();
  ASSERT_FALSE(salt.out.empty());
  const std::string salted = pin + salt.out;
  std::uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(salted.data()), salted.size(), digest);
  const std::string seal_auth = HexEncode(digest).substr(0, 32);
  const std::string seed = MakeCanary("seed");  // 29 bytes, used as the seed itself

  // The helper's temporary files (TPM-wrapped blobs) go to TMPDIR: into the scanned folder.
  std::filesystem::create_directory(tpm_->dir() / "tmp");
  setenv("TMPDIR", (tpm_->dir() / "tmp").c_str(), 1);

  ProcWatcher watcher({pin, seal_auth, seed});
  auto enrolled = store_->EnrollTotp("jira-prod", Seed(seed, TotpAlgorithm::kSha256, 6),
                                     hsm::Activation::kCurrent);
  ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
  // A sealed value too: its keys are generated through the same helper.
  ASSERT_TRUE(store_->Put("jira-prod", "password", SecretBytes::CopyOf(MakeCanary("pw"))).ok());
  watcher.Stop();
  EXPECT_TRUE(watcher.hits().empty()) << ::testing::PrintToString(watcher.hits());
  // The watcher did see the helper's tools run (else it proves nothing).
  const std::set<std::string> programs = watcher.programs();
  EXPECT_TRUE(programs.count("tpm2_unseal") == 1 && programs.count("tpm2_import") == 1 &&
              programs.count("tpm2_create") == 1)
      << ::testing::PrintToString(programs);

  // The TOTP works, and the seed is in no file of the test folder (store, logs, TPM state).
  EXPECT_EQ(Code(store_->Totp("jira-prod", UnixSeconds(1700000000), "check")),
            Oathtool(HexEncode(AsBytes(seed)), TotpAlgorithm::kSha256, 6, 30, 1700000000));
  EXPECT_TRUE(FindCanaryInTree(seed, tpm_->dir()).empty())
      << ::testing::PrintToString(FindCanaryInTree(seed, tpm_->dir()));
  EXPECT_TRUE(FindCanaryInTree(seal_auth, tpm_->dir()).empty());
  // Nothing in the audit log either.
  EXPECT_TRUE(FindCanaryIn(seed, audit_.Text(), "audit log").empty());
  EXPECT_TRUE(FindCanaryIn(pin, audit_.Text(), "audit log").empty());
}

TEST_F(TotpTpmTest, AWrongPinFailsOnceAndNamesTheProblem) {
  // The right PIN's session ends first: the login state belongs to the whole process.
  store_.reset();
  ASSERT_TRUE(token_->Close().ok());
  hsm::internal::ResetPinLatchForTesting();
  auto wrong = hsm::Token::Open(*module_, tpm_->token().uri,
                                SecretBytes::CopyOf(std::string_view("not-the-pin")));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().reason(), hsm::kPinIncorrectReason) << wrong.status().ToString();
  hsm::internal::ResetPinLatchForTesting();
}

}  // namespace
}  // namespace cakewalk::testing
