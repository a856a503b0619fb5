#include "security/certs.h"

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>

#include "base/file_util.h"
#include "gtest/gtest.h"

namespace edgesplit {
namespace {

std::string TempDir(const std::string& name) {
  std::string dir = std::filesystem::temp_directory_path() /
                    ("es_certs_" + name + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(CertsTest, IssuedCertificatesNameTheirHolderAndVerify) {
  auto ca = CreateCa("lab", ValidFor(1));
  ASSERT_TRUE(ca.ok()) << ca.status();
  auto leaf =
      IssueCertificate(*ca, NodeIdentity("lab", "server-a"), ValidFor(1));
  ASSERT_TRUE(leaf.ok()) << leaf.status();
  auto id = CheckCertificate(ca->cert_pem, leaf->cert_pem, leaf->key_pem);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, NodeIdentity("lab", "server-a"));
  EXPECT_EQ(*CaCluster(ca->cert_pem), "lab");
  // Serials are random: two certificates for one identity differ.
  auto again =
      IssueCertificate(*ca, NodeIdentity("lab", "server-a"), ValidFor(1));
  ASSERT_TRUE(again.ok());
  EXPECT_NE(*CertificateSerial(leaf->cert_pem),
            *CertificateSerial(again->cert_pem));
}

TEST(CertsTest, CheckCertificateSaysWhatIsWrong) {
  auto ca = CreateCa("lab", ValidFor(1));
  auto other = CreateCa("lab", ValidFor(1));
  ASSERT_TRUE(ca.ok() && other.ok());
  auto a = IssueCertificate(*ca, DeviceIdentity("lab", "d"), ValidFor(1));
  auto b = IssueCertificate(*ca, DeviceIdentity("lab", "e"), ValidFor(1));
  auto foreign =
      IssueCertificate(*other, DeviceIdentity("lab", "d"), ValidFor(1));
  const absl::Time now = absl::Now();
  auto expired =
      IssueCertificate(*ca, DeviceIdentity("lab", "d"),
                       {now - absl::Hours(48), now - absl::Hours(24)});
  ASSERT_TRUE(a.ok() && b.ok() && foreign.ok() && expired.ok());

  auto s = CheckCertificate(ca->cert_pem, a->cert_pem, b->key_pem);
  EXPECT_NE(s.status().message().find("does not match"), std::string::npos)
      << s.status();
  s = CheckCertificate(ca->cert_pem, foreign->cert_pem, "");
  EXPECT_NE(s.status().message().find("does not verify"), std::string::npos)
      << s.status();
  s = CheckCertificate(ca->cert_pem, expired->cert_pem, "");
  EXPECT_NE(s.status().message().find("expired"), std::string::npos)
      << s.status();
  s = CheckCertificate(ca->cert_pem, "garbage", "");
  EXPECT_NE(s.status().message().find("not a PEM certificate"),
            std::string::npos);
  // A CA certificate has no spiffe:// ID: not an edgesplit identity.
  EXPECT_FALSE(CertificateIdentity(ca->cert_pem).ok());
}

TEST(CertsTest, ClusterDirectoryHasPrivateKeysAndRefusesToOverwrite) {
  const std::string dir = TempDir("init");
  ClusterCertsSpec spec;
  spec.cluster = "lab";
  spec.nodes = {"server-a", "server-b"};
  spec.devices = {"phone"};
  ASSERT_TRUE(WriteClusterCerts(spec, dir).ok());
  for (const char* stem : {"ca", "controller", "admin-operator",
                           "node-server-a", "node-server-b", "device-phone"}) {
    struct stat st;
    ASSERT_EQ(stat((dir + "/" + stem + ".key").c_str(), &st), 0) << stem;
    EXPECT_EQ(st.st_mode & 0077, 0u) << stem << ".key is readable by others";
    ASSERT_EQ(stat((dir + "/" + stem + ".pem").c_str(), &st), 0) << stem;
  }
  const std::string ca = *ReadFile(dir + "/ca.pem");
  auto id = CheckCertificate(ca, *ReadFile(dir + "/node-server-b.pem"),
                             *ReadFile(dir + "/node-server-b.key"));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, NodeIdentity("lab", "server-b"));

  absl::Status again = WriteClusterCerts(spec, dir);
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists) << again;
  EXPECT_EQ(*ReadFile(dir + "/ca.pem"), ca);  // Untouched.

  ASSERT_TRUE(
      IssueIntoDir(dir, DeviceIdentity("lab", "robot"), 30, false).ok());
  EXPECT_TRUE(CheckCertificate(ca, *ReadFile(dir + "/device-robot.pem"),
                               *ReadFile(dir + "/device-robot.key"))
                  .ok());
  absl::Status wrong =
      IssueIntoDir(dir, DeviceIdentity("other", "x"), 30, false);
  EXPECT_NE(wrong.message().find("not of \"other\""), std::string::npos)
      << wrong;

  spec.nodes = {"bad/name"};
  EXPECT_FALSE(WriteClusterCerts(spec, TempDir("bad")).ok());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace edgesplit
