// hsm: version numbers are never handed out twice, on SoftHSM (the counter of hsm/layout.h).
#include <gtest/gtest.h>

#include "hsm/key_pair.h"
#include "hsm/otpauth.h"
#include "tests/hsm/fixture.h"
#include "tests/rotation/version_counter_cases.h"

namespace cakewalk::testing {
namespace {

using namespace version_counter;

hsm::TotpSeed Seed() {
  hsm::TotpSeed seed;
  seed.key = SecretBytes::CopyOf(std::string_view("12345678901234567890"));
  return seed;
}

class VersionCounterTest : public TokenFixture {
 protected:
  std::pair<RawPkcs11*, CK_SESSION_HANDLE> Raw() {
    if (!raw_) OpenRaw();
    return {raw_.get(), raw_session_};
  }
};

TEST_F(VersionCounterTest, DestroyedHighestVersionIsNeverReused) {
  DestroyedHighestIsNeverReused(*store_, [&] { return Raw(); });
}

TEST_F(VersionCounterTest, EmptiedSecretKeepsCounting) {
  EmptiedSecretKeepsCounting(
      *store_, [&] { return Raw(); }, Seed());
}

TEST_F(VersionCounterTest, PendingVersionsCountToo) {
  ASSERT_TRUE(store_->Put("c", "password", Secret("one")).ok());
  auto staged = store_->PutPending("c", "password", Secret("two"));
  ASSERT_TRUE(staged.ok());
  // A rotation that gave up discards its staged version: the number stays used.
  ASSERT_TRUE(store_->Destroy("c", "password", staged->version).ok());
  auto next = store_->PutPending("c", "password", Secret("three"));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->version, 3u);
}

TEST_F(VersionCounterTest, TokensWithoutACounterStartFromTheirHighestRecord) {
  ASSERT_TRUE(store_->Put("c", "password", Secret("one")).ok());
  ASSERT_TRUE(store_->Put("c", "password", Secret("two")).ok());
  // A token written before the counter existed: records only.
  auto [raw, session] = Raw();
  RawDestroyAll(*raw, session, "cakewalk:last-version:c:password");
  ASSERT_TRUE(RawValues(*raw, session, "cakewalk:last-version:c:password").empty());
  auto v3 = store_->Put("c", "password", Secret("three"));
  ASSERT_TRUE(v3.ok()) << v3.status().ToString();
  EXPECT_EQ(v3->version, 3u);
  const auto counter = RawValues(*raw, session, "cakewalk:last-version:c:password");
  ASSERT_EQ(counter.size(), 1u);
  EXPECT_EQ(CounterLast(counter[0]), 3u);
}

TEST_F(VersionCounterTest, CrashLeftoverOfTwoCountersTheHighestWinsAndIsTidied) {
  ASSERT_TRUE(store_->Put("c", "password", Secret("one")).ok());
  auto [raw, session] = Raw();
  // A crash between creating the raised counter and destroying the old one leaves both.
  RawCreateData(
      *raw, session, "cakewalk:last-version:c:password",
      R"({"format":1,"kind":"last-version","connection":"c","name":"password","last":7})");
  ASSERT_EQ(RawValues(*raw, session, "cakewalk:last-version:c:password").size(), 2u);
  auto next = store_->Put("c", "password", Secret("two"));
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(next->version, 8u);
  const auto counter = RawValues(*raw, session, "cakewalk:last-version:c:password");
  ASSERT_EQ(counter.size(), 1u);
  EXPECT_EQ(CounterLast(counter[0]), 8u);
}

TEST_F(VersionCounterTest, AForeignOrMalformedCounterIsRefusedNotIgnored) {
  ASSERT_TRUE(store_->Put("c", "password", Secret("one")).ok());
  auto [raw, session] = Raw();
  RawDestroyAll(*raw, session, "cakewalk:last-version:c:password");
  // Another secret's counter relabelled by hand: ignoring it could hand out a used number.
  RawCreateData(*raw, session, "cakewalk:last-version:c:password",
                R"({"format":1,"kind":"last-version","connection":"c","name":"pat","last":9})");
  auto refused = store_->Put("c", "password", Secret("two"));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("cakewalk:last-version:c:password"), std::string::npos)
      << refused.status().message();
  EXPECT_NE(refused.status().message().find("pkcs11-tool"), std::string::npos);
  // Nothing was stored.
  auto list = store_->List();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 1u);
  // Listing and reading the secret still work.
  EXPECT_EQ(Open(store_->Unseal("c", "password", "t")), "one");
}

TEST_F(VersionCounterTest, KeyPairsCannotTakeTheCounterLabel) {
  auto refused =
      hsm::KeyPair::Generate(*token_, hsm::KeyType::kEcP256, "cakewalk:last-version:c:password");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("reserved"), std::string::npos);
}

}  // namespace
}  // namespace cakewalk::testing
