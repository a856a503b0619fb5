// Mutual TLS over real gRPC on loopback: who may connect, what each side
// learns of the other, CRLs, TLS versions, rotation without restart.
#include "security/tls.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/file_util.h"
#include "edgesplit/v1/stage.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "gtest/gtest.h"
#include "security/certs.h"
#include "security/grant.h"
#include "security/token.h"

namespace edgesplit {
namespace {

namespace gx = grpc::experimental;

// Answers Probe with the caller's identity as the transport saw it.
class WhoAmI final : public v1::StageService::CallbackService {
 public:
  explicit WhoAmI(const TransportSecurity* security) : security_(security) {}
  grpc::ServerUnaryReactor* Probe(grpc::CallbackServerContext* ctx,
                                  const v1::ProbeRequest*,
                                  v1::ProbeResponse* response) override {
    grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
    auto peer = security_->PeerOf(*ctx);
    if (!peer.ok()) {
      r->Finish(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                             std::string(peer.status().message())));
    } else {
      response->set_payload(peer->authenticated ? peer->identity.SpiffeId()
                                                : "anonymous");
      r->Finish(grpc::Status::OK);
    }
    return r;
  }

 private:
  const TransportSecurity* security_;
};

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat(
               "es_tls_", getpid(), "_",
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    ca_ = *CreateCa("lab", ValidFor(1));
    ASSERT_TRUE(WriteFileAtomically(dir_ + "/ca.pem", ca_.cert_pem).ok());
    Issue("node-server-a", NodeIdentity("lab", "server-a"));
    Issue("device-d1", DeviceIdentity("lab", "d1"));
    Issue("device-d2", DeviceIdentity("lab", "d2"));
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now()));
    std::filesystem::remove_all(dir_);
  }

  KeyAndCert Issue(const std::string& stem, const Identity& id,
                   std::optional<Validity> validity = std::nullopt) {
    KeyAndCert kc = *IssueCertificate(ca_, id, validity.value_or(ValidFor(1)));
    EXPECT_TRUE(
        WriteFileAtomically(dir_ + "/" + stem + ".key", kc.key_pem).ok());
    EXPECT_TRUE(
        WriteFileAtomically(dir_ + "/" + stem + ".pem", kc.cert_pem).ok());
    return kc;
  }
  TlsConfig Files(const std::string& stem) const {
    TlsConfig c;
    c.ca_file = dir_ + "/ca.pem";
    c.cert_file = dir_ + "/" + stem + ".pem";
    c.key_file = dir_ + "/" + stem + ".key";
    return c;
  }
  std::shared_ptr<const TransportSecurity> Security(const TlsConfig& c) {
    auto s = TransportSecurity::Create(c);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : nullptr;
  }
  void StartServer(TlsConfig config) {
    server_security_ = Security(config);
    service_ = std::make_unique<WhoAmI>(server_security_.get());
    auto creds = server_security_->ServerCredentials("127.0.0.1:0");
    ASSERT_TRUE(creds.ok()) << creds.status();
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", *creds, &port_);
    b.RegisterService(service_.get());
    server_ = b.BuildAndStart();
    ASSERT_TRUE(server_ && port_ > 0);
    address_ = absl::StrCat("127.0.0.1:", port_);
  }
  // Probe over a fresh channel; the payload is who the server saw.
  absl::StatusOr<std::string> Probe(
      std::shared_ptr<grpc::ChannelCredentials> creds,
      std::string* server_cert = nullptr) {
    grpc::ChannelArguments args;
    // A fresh connection per probe, not one shared from an earlier test.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetSslTargetNameOverride("server-a.node.lab");
    auto channel = grpc::CreateCustomChannel(address_, creds, args);
    return ProbeOn(channel, server_cert);
  }
  absl::StatusOr<std::string> ProbeOn(std::shared_ptr<grpc::Channel> channel,
                                      std::string* server_cert = nullptr) {
    auto stub = v1::StageService::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::ProbeRequest req;
    v1::ProbeResponse resp;
    grpc::Status s = stub->Probe(&ctx, req, &resp);
    if (!s.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                          s.error_message());
    }
    if (server_cert != nullptr) {
      auto pem = ctx.auth_context()->FindPropertyValues(
          GRPC_X509_PEM_CERT_PROPERTY_NAME);
      if (!pem.empty()) server_cert->assign(pem[0].data(), pem[0].size());
    }
    return resp.payload();
  }
  std::shared_ptr<grpc::ChannelCredentials> As(const std::string& stem) {
    auto creds =
        Security(Files(stem))
            ->ChannelCredentials(address_, NodeIdentity("lab", "server-a"));
    EXPECT_TRUE(creds.ok()) << creds.status();
    return *creds;
  }
  // Credentials around TransportSecurity's checks, for certificates it
  // would refuse to load (expired, foreign) or none at all.
  std::shared_ptr<grpc::ChannelCredentials> Raw(const KeyAndCert* client) {
    gx::TlsChannelCredentialsOptions o;
    std::vector<gx::IdentityKeyCertPair> pairs;
    if (client != nullptr) pairs.push_back({client->key_pem, client->cert_pem});
    o.set_certificate_provider(
        std::make_shared<gx::StaticDataCertificateProvider>(ca_.cert_pem,
                                                            pairs));
    o.watch_root_certs();
    if (client != nullptr) o.watch_identity_key_cert_pairs();
    o.set_check_call_host(false);
    o.set_certificate_verifier(std::make_shared<gx::NoOpCertificateVerifier>());
    return gx::TlsCredentials(o);
  }
  void ExpectStillServing() {
    auto ok = Probe(As("device-d2"));
    ASSERT_TRUE(ok.ok()) << ok.status();
    EXPECT_EQ(*ok, "spiffe://lab/device/d2");
  }

  std::string dir_;
  KeyAndCert ca_;
  std::shared_ptr<const TransportSecurity> server_security_;
  std::unique_ptr<WhoAmI> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
};

TEST_F(TlsTest, BothSidesLearnWhoTheOtherIs) {
  StartServer(Files("node-server-a"));
  std::string server_cert;
  auto who = Probe(As("device-d1"), &server_cert);
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(*who, "spiffe://lab/device/d1");
  EXPECT_EQ(*CertificateIdentity(server_cert), NodeIdentity("lab", "server-a"));
}

TEST_F(TlsTest, RefusesClientsWithoutACertificateOfThisCluster) {
  StartServer(Files("node-server-a"));
  // No client certificate.
  auto none = Probe(Raw(nullptr));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable)
      << none.status();
  // Another CA's certificate, same names.
  KeyAndCert other_ca = *CreateCa("lab", ValidFor(1));
  KeyAndCert foreign =
      *IssueCertificate(other_ca, DeviceIdentity("lab", "d1"), ValidFor(1));
  EXPECT_EQ(Probe(Raw(&foreign)).status().code(),
            absl::StatusCode::kUnavailable);
  // Expired.
  const absl::Time now = absl::Now();
  KeyAndCert expired =
      *IssueCertificate(ca_, DeviceIdentity("lab", "d1"),
                        Validity{now - absl::Hours(48), now - absl::Hours(1)});
  EXPECT_EQ(Probe(Raw(&expired)).status().code(),
            absl::StatusCode::kUnavailable);
  // Plaintext to a TLS server.
  EXPECT_EQ(Probe(grpc::InsecureChannelCredentials()).status().code(),
            absl::StatusCode::kUnavailable);
  // The control: the same path with a good certificate passes, and the
  // server kept serving through the refusals.
  KeyAndCert good =
      *IssueCertificate(ca_, DeviceIdentity("lab", "d3"), ValidFor(1));
  auto who = Probe(Raw(&good));
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(*who, "spiffe://lab/device/d3");
  ExpectStillServing();
}

TEST_F(TlsTest, RefusesAServerThatIsNotTheNodeExpected) {
  StartServer(Files("node-server-a"));
  auto device = Security(Files("device-d1"));
  EXPECT_EQ(device->refused_handshakes(), 0);
  auto creds =
      device->ChannelCredentials(address_, NodeIdentity("lab", "server-b"));
  ASSERT_TRUE(creds.ok());
  auto who = Probe(*creds);
  EXPECT_EQ(who.status().code(), absl::StatusCode::kUnavailable)
      << who.status();
  // Counted (edgesplit_tls_handshakes_refused_total) by the side that
  // refused.
  EXPECT_GE(device->refused_handshakes(), 1);
  EXPECT_EQ(server_security_->refused_handshakes(), 0);
  // A device's certificate cannot pose as a server either.
  server_->Shutdown(absl::ToChronoTime(absl::Now()));
  StartServer(Files("device-d2"));
  EXPECT_FALSE(Probe(As("device-d1")).ok());
}

TEST_F(TlsTest, RevokedCertificatesAreRefused) {
  const std::string crl_dir = dir_ + "/crl";
  std::filesystem::create_directories(crl_dir);
  KeyAndCert revoked = Issue("device-r", DeviceIdentity("lab", "r"));
  auto crl = CreateCrl(ca_, {revoked.cert_pem}, 7);
  ASSERT_TRUE(crl.ok()) << crl.status();
  ASSERT_TRUE(
      WriteFileAtomically(crl_dir + "/" + *CrlFileName(ca_.cert_pem), *crl)
          .ok());
  TlsConfig config = Files("node-server-a");
  config.crl_dir = crl_dir;
  StartServer(config);
  EXPECT_EQ(Probe(As("device-r")).status().code(),
            absl::StatusCode::kUnavailable);
  ExpectStillServing();  // d2 is not on the list.
}

// A raw OpenSSL client: does the server complete a handshake at this
// protocol version?
bool Handshake(int port, int max_version, const KeyAndCert& client) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  // Level 0 lets this client offer TLS 1.1 at all; the refusal is the
  // server's.
  SSL_CTX_set_security_level(ctx, 0);
  SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
  SSL_CTX_set_max_proto_version(ctx, max_version);
  BIO* kb = BIO_new_mem_buf(client.key_pem.data(), -1);
  BIO* cb = BIO_new_mem_buf(client.cert_pem.data(), -1);
  EVP_PKEY* key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
  X509* cert = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
  SSL_CTX_use_certificate(ctx, cert);
  SSL_CTX_use_PrivateKey(ctx, key);
  static const unsigned char kAlpn[] = {2, 'h', '2'};
  SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof(kAlpn));
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  ok = ok && SSL_connect(ssl) == 1;
  SSL_free(ssl);
  close(fd);
  X509_free(cert);
  EVP_PKEY_free(key);
  BIO_free(kb);
  BIO_free(cb);
  SSL_CTX_free(ctx);
  ERR_clear_error();
  return ok;
}

TEST_F(TlsTest, TlsOlderThan12IsRefused) {
  StartServer(Files("node-server-a"));
  KeyAndCert d =
      *IssueCertificate(ca_, DeviceIdentity("lab", "raw"), ValidFor(1));
  EXPECT_FALSE(Handshake(port_, TLS1_1_VERSION, d));
  EXPECT_TRUE(Handshake(port_, TLS1_2_VERSION, d));  // The control.
  EXPECT_TRUE(Handshake(port_, TLS1_3_VERSION, d));
  ExpectStillServing();
}

TEST_F(TlsTest, RotatedCertificatesServeNewConnectionsWithoutRestart) {
  TlsConfig config = Files("node-server-a");
  config.reload_interval = absl::Seconds(1);
  StartServer(config);
  auto old_channel = *Security(Files("device-d1"))
                          ->Dial(address_, NodeIdentity("lab", "server-a"));
  std::string before;
  ASSERT_TRUE(ProbeOn(old_channel, &before).ok());

  Issue("node-server-a", NodeIdentity("lab", "server-a"));  // New key, serial.
  absl::SleepFor(absl::Milliseconds(2500));
  std::string after;
  auto who = Probe(As("device-d1"), &after);
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_NE(*CertificateSerial(after), *CertificateSerial(before));
  // The open connection keeps working on its old handshake.
  std::string still;
  ASSERT_TRUE(ProbeOn(old_channel, &still).ok());
  EXPECT_EQ(*CertificateSerial(still), *CertificateSerial(before));
}

TEST_F(TlsTest, LoadRefusesBadFilesNamingThem) {
  TlsConfig c = Files("device-d1");
  c.key_file = dir_ + "/node-server-a.key";  // Not d1's key.
  auto s = TransportSecurity::Create(c);
  EXPECT_NE(s.status().message().find("does not match"), std::string::npos)
      << s.status();
  EXPECT_NE(s.status().message().find("device-d1.pem"), std::string::npos);
  c = Files("missing");
  s = TransportSecurity::Create(c);
  EXPECT_NE(s.status().message().find("missing.pem"), std::string::npos)
      << s.status();
  TlsConfig empty;
  EXPECT_NE(empty.Validate("x.yaml").message().find("field \"tls\""),
            std::string::npos);
}

TEST_F(TlsTest, DeviceTokensStandInForClientCertificatesWhereAllowed) {
  auto signer = *GrantSigner::FromPem(NewGrantKeyPair()->private_pem, "k");
  auto token_file = [&](const std::string& stem, const GrantSigner& by,
                        const std::string& cluster) {
    const std::string file = dir_ + "/" + stem + ".token";
    EXPECT_TRUE(WriteFileAtomically(
                    file, *IssueDeviceToken(by, cluster, stem, absl::Hours(1),
                                            absl::Now()))
                    .ok());
    TlsConfig c;
    c.ca_file = dir_ + "/ca.pem";
    c.token_file = file;
    return c;
  };
  const TlsConfig phone = token_file("phone", *signer, "lab");
  auto phone_creds = [&] {
    return *Security(phone)->ChannelCredentials(
        address_, NodeIdentity("lab", "server-a"));
  };
  EXPECT_EQ(Security(phone)->identity(), DeviceIdentity("lab", "phone"));

  // A server that requires certificates refuses the token's handshake.
  StartServer(Files("node-server-a"));
  EXPECT_EQ(Probe(phone_creds()).status().code(),
            absl::StatusCode::kUnavailable);
  server_->Shutdown(absl::ToChronoTime(absl::Now()));

  TlsConfig config = Files("node-server-a");
  config.device_tokens = true;
  StartServer(config);
  // Before the controller's key arrives no token passes.
  EXPECT_THAT(std::string(Probe(phone_creds()).status().message()),
              ::testing::HasSubstr("no controller key"));
  ASSERT_TRUE(
      server_security_->tokens()->SetPublicKey(signer->public_key()).ok());
  auto who = Probe(phone_creds());
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(*who, "spiffe://lab/device/phone");
  // Neither certificate nor token: the handshake passes, the call not.
  EXPECT_EQ(Probe(Raw(nullptr)).status().code(),
            absl::StatusCode::kUnauthenticated);
  // Another controller's token.
  auto other = *GrantSigner::FromPem(NewGrantKeyPair()->private_pem, "k2");
  auto forged =
      Security(token_file("eve", *other, "lab"))
          ->ChannelCredentials(address_, NodeIdentity("lab", "server-a"));
  EXPECT_EQ(Probe(*forged).status().code(), absl::StatusCode::kUnauthenticated);
  // Certificates still count, and a foreign CA's is still refused.
  ExpectStillServing();
  KeyAndCert other_ca = *CreateCa("lab", ValidFor(1));
  KeyAndCert foreign =
      *IssueCertificate(other_ca, DeviceIdentity("lab", "d1"), ValidFor(1));
  EXPECT_EQ(Probe(Raw(&foreign)).status().code(),
            absl::StatusCode::kUnavailable);

  // A token of another cluster does not load; nor does a token with a
  // certificate, or a token that would serve.
  auto prod = TransportSecurity::Create(token_file("p", *signer, "prod"));
  EXPECT_THAT(std::string(prod.status().message()),
              ::testing::HasSubstr("p.token: a token of cluster prod"));
  TlsConfig both = phone;
  both.cert_file = dir_ + "/device-d1.pem";
  EXPECT_THAT(std::string(both.Validate("d.yaml").message()),
              ::testing::HasSubstr("tls.token"));
  EXPECT_FALSE(Security(phone)->ServerCredentials("127.0.0.1:0").ok());
}

TEST(InsecureTest, OnlyOnLoopback) {
  auto s = InsecureLoopback();
  EXPECT_TRUE(s->ServerCredentials("127.0.0.1:0").ok());
  EXPECT_TRUE(s->ServerCredentials("[::1]:7").ok());
  EXPECT_TRUE(
      s->ChannelCredentials("localhost:7", NodeIdentity("c", "a")).ok());
  auto refused = s->ServerCredentials("0.0.0.0:50051");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("0.0.0.0:50051"),
            std::string::npos);
  EXPECT_FALSE(
      s->ChannelCredentials("10.1.2.3:50061", NodeIdentity("c", "a")).ok());
  EXPECT_FALSE(
      s->ChannelCredentials("dns:///edge-1:50061", NodeIdentity("c", "a"))
          .ok());
  EXPECT_TRUE(IsLoopbackAddress("127.8.9.1:5"));
  EXPECT_TRUE(IsLoopbackAddress("unix:/tmp/s"));
  EXPECT_FALSE(IsLoopbackAddress("128.0.0.1:5"));
  EXPECT_FALSE(IsLoopbackAddress("[::2]:5"));
}

TEST(TlsConfigTest, YamlPathsAreRelativeToTheFile) {
  YamlReader r("/etc/edgesplit/server.yaml");
  auto root =
      r.Parse("tls: {ca: ca.pem, cert: /abs/n.pem, key: k.key, reload_s: 3}\n");
  ASSERT_TRUE(root.ok());
  auto c = ParseTlsConfig(r, *root);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->ca_file, "/etc/edgesplit/ca.pem");
  EXPECT_EQ(c->cert_file, "/abs/n.pem");
  EXPECT_EQ(c->key_file, "/etc/edgesplit/k.key");
  EXPECT_EQ(c->reload_interval, absl::Seconds(3));
  EXPECT_FALSE(c->insecure);
  root = r.Parse("insecure: true\ntls: {ca: ca.pem}\n");
  c = ParseTlsConfig(r, *root);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->Validate("s.yaml").message().find("choose one"),
            std::string::npos);
}

}  // namespace
}  // namespace edgesplit
