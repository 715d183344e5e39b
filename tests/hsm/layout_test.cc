#include "hsm/layout.h"

#include <gtest/gtest.h>

#include "hsm/ck.h"

namespace cakewalk::hsm::internal {
namespace {

TEST(LayoutTest, RecordLabelsRoundTrip) {
  const std::string label = RecordLabel("jira-prod", "password", 12, RecordState::kPending);
  EXPECT_EQ(label, "cakewalk:secret:jira-prod:password:v12:pending");
  auto parts = ParseRecordLabel(label);
  ASSERT_TRUE(parts.has_value());
  EXPECT_EQ(parts->connection, "jira-prod");
  EXPECT_EQ(parts->name, "password");
  EXPECT_EQ(parts->version, 12u);
  EXPECT_EQ(parts->state, RecordState::kPending);
  EXPECT_EQ(SeedLabel("jira-prod", "totp", 3), "cakewalk:seed:jira-prod:totp:v3");
  EXPECT_EQ(SealAad("c", "n", 7), "cakewalk:v1:c:n:7");
}

TEST(LayoutTest, ForeignLabelsAreNotRecords) {
  for (std::string_view label :
       {"cakewalk:secret:a:b:v1", "cakewalk:secret:a:b:v0:current", "cakewalk:secret:a:b:1:current",
        "cakewalk:secret:a:b:v1:active", "cakewalk:secret:a b:c:v1:current",
        "cakewalk:secret:a:b:c:v1:current", "other:secret:a:b:v1:current",
        "cakewalk:secret:a:b:v01:current", "cakewalk:secret:a:b:v99999999999:current"}) {
    EXPECT_FALSE(ParseRecordLabel(label).has_value()) << label;
  }
}

TEST(LayoutTest, NamesAreConservative) {
  EXPECT_TRUE(ValidateName("connection", "jira-prod_2.eu").ok());
  EXPECT_FALSE(ValidateName("connection", "").ok());
  EXPECT_FALSE(ValidateName("connection", std::string(65, 'a')).ok());
  auto colon = ValidateName("connection", "a:b");
  ASSERT_FALSE(colon.ok());
  EXPECT_NE(colon.message().find("position 2"), std::string::npos);
  EXPECT_FALSE(ValidateName("connection", "a/b").ok());
  EXPECT_FALSE(ValidateName("connection", "ä").ok());
}

TEST(CkrStatusTest, MapsReturnValuesToCodes) {
  EXPECT_TRUE(CkrStatus(CKR_OK, "C_Sign").ok());
  auto pin = CkrStatus(CKR_PIN_INCORRECT, "C_Login");
  EXPECT_EQ(pin.code(), Code::kFailedPrecondition);
  EXPECT_NE(pin.message().find("C_Login failed: CKR_PIN_INCORRECT (0xa0)"), std::string::npos);
  for (CK_RV rv :
       {CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, CKR_SESSION_HANDLE_INVALID, CKR_DEVICE_ERROR}) {
    auto s = CkrStatus(rv, "C_Sign");
    EXPECT_EQ(s.code(), Code::kUnavailable) << s.message();
    EXPECT_TRUE(s.retryable());
    EXPECT_EQ(s.reason(), "token_unavailable");
    EXPECT_TRUE(IsSessionLoss(rv));
  }
  for (CK_RV rv : {CKR_MECHANISM_INVALID, CKR_KEY_SIZE_RANGE, CKR_KEY_TYPE_INCONSISTENT}) {
    EXPECT_EQ(CkrStatus(rv, "C_SignInit").code(), Code::kFailedPrecondition);
  }
  auto general = CkrStatus(CKR_GENERAL_ERROR, "C_Decrypt");
  EXPECT_EQ(general.code(), Code::kInternal);
  EXPECT_NE(general.message().find("CKR_GENERAL_ERROR (0x5)"), std::string::npos);
  auto odd = CkrStatus(0x1234, "C_Foo");
  EXPECT_EQ(odd.code(), Code::kInternal);
  EXPECT_NE(odd.message().find("0x1234"), std::string::npos);
  auto vendor = CkrStatus(CKR_VENDOR_DEFINED | 7, "C_Foo");
  EXPECT_NE(vendor.message().find("CKR_VENDOR_DEFINED (0x80000007)"), std::string::npos);
}

}  // namespace
}  // namespace cakewalk::hsm::internal
