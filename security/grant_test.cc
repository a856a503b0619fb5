#include "security/grant.h"

#include <random>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;

v1::Hop Hop(const std::string& node, const std::string& address, int a, int b) {
  v1::Hop h;
  h.set_node(node);
  h.set_address(address);
  h.set_first_block(a);
  h.set_last_block(b);
  return h;
}

class GrantTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pair = NewGrantKeyPair();
    ASSERT_TRUE(pair.ok()) << pair.status();
    signer_ = *GrantSigner::FromPem(pair->private_pem, "grant.key");
    verifier_ = *GrantVerifier::FromPublicKey(signer_->public_key());
    grant_.set_version(1);
    grant_.set_session_id("s1");
    grant_.set_device("phone");
    grant_.set_model_id("m");
    grant_.set_codec(v1::CODEC_FP16);
    *grant_.add_route() = Hop("a", "10.0.0.1:1", 1, 2);
    *grant_.add_route() = Hop("b", "10.0.0.2:1", 2, 4);
    grant_.set_expires_unix_ms(
        absl::ToUnixMillis(absl::Now() + absl::Minutes(1)));
  }
  // The OpenSession hop `at` receives.
  v1::OpenSession OpenAt(int at) const {
    v1::OpenSession o;
    o.set_session_id("s1");
    o.set_model_id("m");
    o.set_codec(v1::CODEC_FP16);
    for (int k = at; k < grant_.route_size(); ++k)
      *o.add_route() = grant_.route(k);
    return o;
  }
  absl::Status Check(const v1::OpenSession& open, const std::string& node,
                     const Peer& caller, int max_hops = kDefaultMaxRouteHops) {
    auto g = verifier_->Verify(*signer_->Sign(grant_));
    if (!g.ok()) return g.status();
    return CheckGrantForHop(*g, open, node, caller, absl::Now(), max_hops);
  }

  std::unique_ptr<GrantSigner> signer_;
  std::unique_ptr<GrantVerifier> verifier_;
  v1::RouteGrant grant_;
  const Peer device_{true, DeviceIdentity("c", "phone")};
  const Peer node_a_{true, NodeIdentity("c", "a")};
};

TEST_F(GrantTest, EachHopAcceptsWhatWasGranted) {
  EXPECT_TRUE(Check(OpenAt(0), "a", device_).ok())
      << Check(OpenAt(0), "a", device_);
  EXPECT_TRUE(Check(OpenAt(1), "b", node_a_).ok());
  EXPECT_TRUE(Check(OpenAt(1), "b", Peer{}).ok());  // Insecure: no names.
}

TEST_F(GrantTest, RefusesForgedAlteredAndForeignGrants) {
  v1::SignedGrant s = *signer_->Sign(grant_);
  v1::SignedGrant forged = s;
  forged.mutable_signature()->at(5) ^= 1;
  EXPECT_THAT(verifier_->Verify(forged).status().message(),
              HasSubstr("does not verify"));
  // The route edited after signing (one address changed).
  v1::RouteGrant edited = grant_;
  edited.mutable_route(1)->set_address("evil:1");
  v1::SignedGrant spliced = s;
  spliced.set_grant(edited.SerializeAsString());
  EXPECT_EQ(verifier_->Verify(spliced).status().code(),
            absl::StatusCode::kPermissionDenied);
  // Another controller's key.
  auto other = GrantSigner::FromPem(NewGrantKeyPair()->private_pem, "x");
  EXPECT_FALSE(verifier_->Verify(*(*other)->Sign(grant_)).ok());
  EXPECT_THAT(verifier_->Verify(v1::SignedGrant()).status().message(),
              HasSubstr("no route grant"));
  EXPECT_FALSE(GrantVerifier::FromPublicKey("short").ok());
  EXPECT_FALSE(GrantSigner::FromPem("not a key", "k.pem").ok());
}

TEST_F(GrantTest, RefusesOpensThatDifferFromTheGrant) {
  // A route edited on the wire (the grant itself intact).
  v1::OpenSession open = OpenAt(0);
  open.mutable_route(1)->set_address("10.9.9.9:1");
  EXPECT_THAT(Check(open, "a", device_).message(), HasSubstr("route[1]"));
  // A hop not in the grant appended.
  open = OpenAt(0);
  *open.add_route() = Hop("x", "10.0.0.3:1", 4, 5);
  EXPECT_THAT(Check(open, "a", device_).message(), HasSubstr("not a suffix"));
  // Another session, model or codec.
  open = OpenAt(0);
  open.set_session_id("s2");
  EXPECT_THAT(Check(open, "a", device_).message(),
              HasSubstr("opening session s2"));
  open = OpenAt(0);
  open.set_session_id("s1/3");  // One of the session's streams.
  EXPECT_TRUE(Check(open, "a", device_).ok());
  open.set_session_id("s10");
  EXPECT_THAT(Check(open, "a", device_).message(),
              HasSubstr("opening session s10"));
  open = OpenAt(0);
  open.set_codec(v1::CODEC_FP32);
  EXPECT_THAT(Check(open, "a", device_).message(),
              HasSubstr("session's codec is not"));
  // The wrong node, or the wrong caller at the right node.
  EXPECT_THAT(Check(OpenAt(0), "b", device_).message(), HasSubstr("this is b"));
  EXPECT_THAT(
      Check(OpenAt(0), "a", Peer{true, DeviceIdentity("c", "eve")}).message(),
      HasSubstr("only device phone"));
  EXPECT_THAT(Check(OpenAt(1), "b", device_).message(),
              HasSubstr("only node a"));
  // Expired, and too long.
  grant_.set_expires_unix_ms(
      absl::ToUnixMillis(absl::Now() - absl::Seconds(1)));
  EXPECT_THAT(Check(OpenAt(0), "a", device_).message(), HasSubstr("expired"));
  grant_.set_expires_unix_ms(
      absl::ToUnixMillis(absl::Now() + absl::Minutes(1)));
  EXPECT_THAT(Check(OpenAt(0), "a", device_, /*max_hops=*/1).message(),
              HasSubstr("exceeds the cap of 1"));
}

// Random corruption of a signed grant: never a crash, never accepted.
TEST_F(GrantTest, CorruptedBytesAreRefusedNotTrusted) {
  const v1::SignedGrant s = *signer_->Sign(grant_);
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    v1::SignedGrant m = s;
    std::string* target = i % 2 ? m.mutable_grant() : m.mutable_signature();
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips && !target->empty(); ++f) {
      (*target)[rng() % target->size()] ^= static_cast<char>(1 + rng() % 255);
    }
    if (rng() % 8 == 0) target->resize(rng() % (target->size() + 8));
    auto r = verifier_->Verify(m);
    if (m.grant() == s.grant() && m.signature() == s.signature()) continue;
    EXPECT_FALSE(r.ok()) << i;
  }
}

}  // namespace
}  // namespace edgesplit
