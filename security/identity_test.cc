#include "security/identity.h"

#include "gtest/gtest.h"

namespace edgesplit {
namespace {

TEST(IdentityTest, SpiffeIdsRoundTrip) {
  for (const Identity& id :
       {ControllerIdentity("c1"), NodeIdentity("c1", "server-a"),
        DeviceIdentity("edge.lab", "phone_7"), AdminIdentity("c1", "ops")}) {
    auto parsed = ParseSpiffeId(id.SpiffeId());
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, id) << id.SpiffeId();
  }
  EXPECT_EQ(NodeIdentity("c1", "a").SpiffeId(), "spiffe://c1/node/a");
  EXPECT_EQ(ControllerIdentity("c1").SpiffeId(), "spiffe://c1/controller");
  EXPECT_EQ(DeviceIdentity("c1", "d").ToString(), "device d");
}

TEST(IdentityTest, MalformedIdsAreRefusedWithTheValue) {
  for (const char* bad :
       {"", "https://c1/node/a", "spiffe://c1", "spiffe://c1/node",
        "spiffe://c1/node/a/b", "spiffe://c1/robot/a", "spiffe:///node/a",
        "spiffe://c1/node/.hidden", "spiffe://c 1/node/a",
        "spiffe://c1/node/a%2fb", "spiffe://c1/controller/x"}) {
    auto id = ParseSpiffeId(bad);
    EXPECT_FALSE(id.ok()) << bad;
    EXPECT_NE(id.status().message().find(bad), std::string::npos)
        << id.status();
  }
  EXPECT_FALSE(CheckIdentityName("name", std::string(65, 'a')).ok());
  EXPECT_TRUE(CheckIdentityName("name", std::string(64, 'a')).ok());
}

TEST(IdentityTest, PeerChecks) {
  Peer anyone;  // Insecure mode: trusted.
  EXPECT_TRUE(CheckPeerIs(anyone, NodeIdentity("c", "a")).ok());
  Peer a{true, NodeIdentity("c", "a")};
  EXPECT_TRUE(CheckPeerIs(a, NodeIdentity("c", "a")).ok());
  absl::Status s = CheckPeerIs(a, NodeIdentity("c", "b"));
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("node a, not node b"), std::string::npos) << s;
  EXPECT_TRUE(CheckPeerKind(a, Identity::Kind::kNode, "register").ok());
  s = CheckPeerKind(a, Identity::Kind::kAdmin, "reload plans");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("may not reload plans"), std::string::npos) << s;
}

}  // namespace
}  // namespace edgesplit
