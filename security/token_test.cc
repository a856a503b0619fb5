#include "security/token.h"

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class TokenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    signer_ = *GrantSigner::FromPem(NewGrantKeyPair()->private_pem, "k");
    verifier_ = *GrantVerifier::FromPublicKey(signer_->public_key());
  }
  std::string Issue(const std::string& device = "phone",
                    absl::Duration ttl = absl::Hours(1)) {
    auto t = IssueDeviceToken(*signer_, "lab", device, ttl, now_);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.value_or("");
  }
  absl::Status Verify(const std::string& text) {
    return VerifyDeviceToken(*verifier_, text, "lab", now_).status();
  }

  const absl::Time now_ = absl::Now();
  std::unique_ptr<GrantSigner> signer_;
  std::unique_ptr<GrantVerifier> verifier_;
};

TEST_F(TokenTest, IssuedTokensVerifyAndNameTheirDevice) {
  const std::string text = Issue();
  EXPECT_TRUE(absl::StartsWith(text, kDeviceTokenPrefix));
  auto t = VerifyDeviceToken(*verifier_, text, "lab", now_);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->device(), "phone");
  EXPECT_EQ(t->cluster(), "lab");
  EXPECT_EQ(t->token_id().size(), 24u);
  EXPECT_EQ(t->expires_unix(), absl::ToUnixSeconds(now_ + absl::Hours(1)));
  // Unverified parsing reads the same, and ids differ between tokens.
  EXPECT_EQ(ParseDeviceToken(text)->token_id(), t->token_id());
  EXPECT_NE(ParseDeviceToken(Issue())->token_id(), t->token_id());
}

TEST_F(TokenTest, RefusesForgedAlteredExpiredAndForeignTokens) {
  const std::string text = Issue();
  // Another controller's key.
  auto other = *GrantSigner::FromPem(NewGrantKeyPair()->private_pem, "k2");
  const std::string foreign =
      *IssueDeviceToken(*other, "lab", "phone", absl::Hours(1), now_);
  EXPECT_THAT(std::string(Verify(foreign).message()),
              HasSubstr("does not verify"));
  // The payload changed after signing: another device's name.
  std::vector<std::string> parts =
      absl::StrSplit(text.substr(sizeof(kDeviceTokenPrefix) - 1), '.');
  v1::DeviceToken t = *ParseDeviceToken(text);
  t.set_device("admin");
  const std::string edited = absl::StrCat(
      kDeviceTokenPrefix, absl::WebSafeBase64Escape(t.SerializeAsString()), ".",
      parts[1]);
  EXPECT_EQ(Verify(edited).code(), absl::StatusCode::kUnauthenticated);
  // A route grant's signature over the same bytes is not a token's.
  std::string payload;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(parts[0], &payload));
  const std::string grant_sig =
      *signer_->SignBytes("edgesplit route grant v1\n", payload);
  EXPECT_EQ(Verify(absl::StrCat(kDeviceTokenPrefix, parts[0], ".",
                                absl::WebSafeBase64Escape(grant_sig)))
                .code(),
            absl::StatusCode::kUnauthenticated);
  // Expired, and of another cluster.
  EXPECT_THAT(std::string(VerifyDeviceToken(*verifier_, text, "lab",
                                            now_ + absl::Hours(2))
                              .status()
                              .message()),
              HasSubstr("expired"));
  EXPECT_THAT(
      std::string(
          VerifyDeviceToken(*verifier_, text, "prod", now_).status().message()),
      HasSubstr("for cluster lab, not prod"));
  // The control: the untouched token still verifies.
  EXPECT_TRUE(Verify(text).ok());
}

TEST_F(TokenTest, MalformedTokensAreRefusedWithoutEchoingThem) {
  for (const std::string& bad :
       {std::string(""), std::string("Bearer x"), std::string("esdt1."),
        std::string("esdt1.a.b.c"), std::string("esdt1.!!!.AAAA"),
        std::string("esdt1.AAAA.AAAA"), std::string(5000, 'a'),
        absl::StrCat("esdt1.", std::string(3000, 'A'), ".AAAA")}) {
    absl::Status s = Verify(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << bad;
    if (bad.size() > 8) {
      EXPECT_THAT(std::string(s.message()), Not(HasSubstr(bad))) << bad;
    }
  }
  EXPECT_FALSE(
      IssueDeviceToken(*signer_, "lab", "bad/name", absl::Hours(1), now_).ok());
  EXPECT_FALSE(
      IssueDeviceToken(*signer_, "lab", "phone", absl::ZeroDuration(), now_)
          .ok());
}

TEST_F(TokenTest, AuthorityWantsABearerHeaderAndAKey) {
  TokenAuthority authority("lab");
  const std::string text = Issue("robot");
  EXPECT_THAT(
      std::string(
          authority.Authenticate("Bearer " + text, now_).status().message()),
      HasSubstr("no controller key"));
  ASSERT_TRUE(authority.SetPublicKey(signer_->public_key()).ok());
  EXPECT_FALSE(authority.SetPublicKey("short").ok());  // Keeps the old key.
  auto peer = authority.Authenticate("Bearer " + text, now_);
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_TRUE(peer->authenticated);
  EXPECT_EQ(peer->identity, DeviceIdentity("lab", "robot"));
  EXPECT_EQ(peer->token_id, ParseDeviceToken(text)->token_id());
  EXPECT_THAT(
      std::string(authority.Authenticate(text, now_).status().message()),
      HasSubstr("Bearer"));
  EXPECT_THAT(std::string(authority.Authenticate("", now_).status().message()),
              HasSubstr("neither a client certificate nor a device token"));
  ASSERT_TRUE(authority.SetPublicKey("").ok());
  EXPECT_FALSE(authority.Authenticate("Bearer " + text, now_).ok());
}

}  // namespace
}  // namespace edgesplit
