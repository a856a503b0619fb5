// The cluster over mutual TLS: who may do what, refusals with a clear
// status while the daemons keep serving, and certificate rotation under
// running sessions. (Every other cluster test runs over TLS too; this one
// tries what should fail.)
#include <filesystem>
#include <fstream>
#include <future>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "edgesplit/device_agent.h"
#include "edgesplit/v1/controller.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/grpc_status.h"
#include "proto/protocol.h"
#include "proto/stage_stream.h"
#include "security/certs.h"
#include "security/grant.h"
#include "testing/cluster.h"
#include "testing/test_models.h"
#include "testing/test_paths.h"
#include "tests/split_util.h"

namespace edgesplit {
namespace {

using testing::Cluster;
using testing::ClusterPlan;
using ::testing::HasSubstr;

class SecureClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new std::string(testing::TinyModel(Arch::kGpt2));
    auto c = Cluster::Start(
        testing::TempDir("secure"),
        {{"m", *model_, false, {{"device", 0, 1}, {"a", 1, 2}, {"b", 2, 4}}}});
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = c->release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete model_;
  }

  std::unique_ptr<DeviceAgent> Agent(const std::string& name) {
    DeviceAgentOptions o;
    o.controller = cluster_->controller_address();
    o.device_name = name;
    o.report_profile = false;
    cluster_->SecureDevice(name, &o);
    auto a = DeviceAgent::Connect(o);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? std::move(*a) : nullptr;
  }
  // The controller's stub as `stem`'s holder.
  std::unique_ptr<v1::ControllerService::Stub> Controller(
      const std::string& stem) {
    return v1::ControllerService::NewStub(
        cluster_->Dial(stem, cluster_->controller_address()));
  }
  static grpc::ClientContext* Ctx(grpc::ClientContext* ctx) {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    return ctx;
  }
  // The cluster still routes and generates, equal to the whole model.
  void ExpectServing() {
    auto agent = Agent("device");
    ASSERT_NE(agent, nullptr);
    auto s = agent->OpenSession("m");
    ASSERT_TRUE(s.ok()) << s.status();
    auto got = (*s)->Generate("hello", testing::GreedyTokens(6));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->tokens,
              *testing::MonolithicGreedy(*model_, "hello", 6, false));
  }

  // Opens a session stream to `node` as `stem`'s holder with `open`;
  // returns how the server answered the open.
  absl::Status OpenAs(const std::string& stem, const std::string& node,
                      const v1::OpenSession& open) {
    auto stub = v1::StageService::NewStub(
        cluster_->Dial(stem, cluster_->server(node)->address(), node));
    auto stream =
        StageStream::Start(stub.get(), absl::Now() + absl::Seconds(10), node,
                           cluster_->server(node)->address());
    v1::StageRequest req;
    *req.mutable_open() = open;
    std::promise<absl::Status> done;
    stream->Send(req, [&](absl::StatusOr<v1::StageResponse> r) {
      done.set_value(r.status());
    });
    absl::Status s = done.get_future().get();
    stream->Close();
    return s;
  }
  // A real route and grant from the controller, as device "device".
  v1::OpenSessionResponse RouteFromController() {
    cluster_->DeviceSecurity("device");
    v1::OpenSessionRequest req;
    req.set_model_id("m");
    req.set_codec(v1::CODEC_FP32);
    v1::OpenSessionResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(
        Controller("device-device")->OpenSession(Ctx(&ctx), req, &resp).ok());
    return resp;
  }
  static v1::OpenSession OpenFor(const v1::OpenSessionResponse& r) {
    v1::OpenSession o;
    o.set_protocol_version(kProtocolVersion);
    o.set_session_id(r.session_id());
    o.set_model_id("m");
    o.set_codec(v1::CODEC_FP32);
    *o.mutable_route() = r.route();
    *o.mutable_grant() = r.grant();
    return o;
  }

  static Cluster* cluster_;
  static std::string* model_;
};
Cluster* SecureClusterTest::cluster_ = nullptr;
std::string* SecureClusterTest::model_ = nullptr;

TEST_F(SecureClusterTest, NodesSpeakOnlyForThemselves) {
  auto as_a = Controller("node-a");
  v1::RegisterNodeRequest reg;
  reg.set_node("b");  // a's certificate, b's name.
  reg.set_address("127.0.0.1:1");
  v1::RegisterNodeResponse reg_resp;
  grpc::ClientContext c1;
  grpc::Status s = as_a->RegisterNode(Ctx(&c1), reg, &reg_resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("node a, not node b"));

  v1::HeartbeatRequest beat;
  beat.set_node("b");  // Keeping another node "alive".
  v1::HeartbeatResponse beat_resp;
  grpc::ClientContext c2;
  EXPECT_EQ(as_a->Heartbeat(Ctx(&c2), beat, &beat_resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  // Another node's plans are not a's to watch.
  grpc::ClientContext c3;
  v1::WatchPlanRequest watch;
  watch.set_node("b");
  auto reader = as_a->WatchPlan(Ctx(&c3), watch);
  v1::PlanUpdate update;
  EXPECT_FALSE(reader->Read(&update));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);

  // Devices are not nodes.
  cluster_->DeviceSecurity("mallory");
  auto as_device = Controller("device-mallory");
  reg.set_node("mallory");
  grpc::ClientContext c4;
  EXPECT_EQ(as_device->RegisterNode(Ctx(&c4), reg, &reg_resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // b's real registration stands: b still serves its blocks.
  ExpectServing();
}

TEST_F(SecureClusterTest, OnlyAdminsReloadPlansAndOnlyDevicesOpenSessions) {
  cluster_->DeviceSecurity("device");
  v1::ReloadPlansResponse reload;
  grpc::ClientContext c1;
  grpc::Status s =
      Controller("device-device")
          ->ReloadPlans(Ctx(&c1), v1::ReloadPlansRequest(), &reload);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("may not reload plans"));
  grpc::ClientContext c2;
  EXPECT_TRUE(Controller("admin-operator")
                  ->ReloadPlans(Ctx(&c2), v1::ReloadPlansRequest(), &reload)
                  .ok());

  v1::OpenSessionRequest open;
  open.set_model_id("m");
  v1::OpenSessionResponse route;
  grpc::ClientContext c3;
  EXPECT_EQ(
      Controller("node-a")->OpenSession(Ctx(&c3), open, &route).error_code(),
      grpc::StatusCode::PERMISSION_DENIED);
  // A device's averaging contribution must carry its own name.
  v1::AverageAdaptersRequest avg;
  avg.set_job_id("j");
  avg.set_device("someone-else");
  avg.set_devices(2);
  v1::AverageAdaptersResponse avg_resp;
  grpc::ClientContext c4;
  EXPECT_EQ(Controller("device-device")
                ->AverageAdapters(Ctx(&c4), avg, &avg_resp)
                .error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(SecureClusterTest, DevicesWithoutAValidCertificateAreRefused) {
  // A certificate of another CA, named like a real device.
  const std::string dir = testing::TempDir("foreign");
  ClusterCertsSpec spec;
  spec.cluster = "test";
  spec.devices = {"device"};
  spec.overwrite = true;
  ASSERT_TRUE(WriteClusterCerts(spec, dir).ok());
  DeviceAgentOptions o;
  o.controller = cluster_->controller_address();
  o.tls = {dir + "/ca.pem", dir + "/device-device.pem",
           dir + "/device-device.key"};
  o.report_profile = false;
  auto agent = DeviceAgent::Connect(o);  // Loads: the files agree.
  ASSERT_TRUE(agent.ok()) << agent.status();
  auto s = (*agent)->OpenSession("m");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable) << s.status();
  EXPECT_THAT(std::string(s.status().message()),
              HasSubstr("TLS handshake failed"));

  // An expired one of the right CA is refused when loaded, naming it.
  KeyAndCert ca{*ReadFile(cluster_->certs_dir() + "/ca.key"),
                *ReadFile(cluster_->certs_dir() + "/ca.pem")};
  const absl::Time now = absl::Now();
  KeyAndCert old =
      *IssueCertificate(ca, DeviceIdentity("test", "old"),
                        {now - absl::Hours(48), now - absl::Hours(1)});
  ASSERT_TRUE(WriteFileAtomically(dir + "/old.pem", old.cert_pem).ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/old.key", old.key_pem).ok());
  o.tls = {cluster_->certs_dir() + "/ca.pem", dir + "/old.pem",
           dir + "/old.key"};
  auto expired = DeviceAgent::Connect(o);
  EXPECT_THAT(expired.status().message(), HasSubstr("expired"));
  EXPECT_THAT(expired.status().message(), HasSubstr("old.pem"));

  // A node's certificate is not a device's.
  o.tls = {cluster_->certs_dir() + "/ca.pem",
           cluster_->certs_dir() + "/node-a.pem",
           cluster_->certs_dir() + "/node-a.key"};
  EXPECT_THAT(DeviceAgent::Connect(o).status().message(),
              HasSubstr("not of a device"));
  // Plaintext to the TLS cluster.
  DeviceAgentOptions plain;
  plain.controller = cluster_->controller_address();
  plain.insecure = true;
  plain.report_profile = false;
  auto p = DeviceAgent::Connect(plain);
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE((*p)->OpenSession("m").ok());
  ExpectServing();
}

TEST_F(SecureClusterTest, HopsOpenOnlyWhatTheControllerGranted) {
  const v1::OpenSessionResponse r = RouteFromController();
  ASSERT_FALSE(r.grant().signature().empty());
  // The control: exactly what was granted opens (through a and b).
  EXPECT_TRUE(OpenAs("device-device", "a", OpenFor(r)).ok());

  // No grant at all.
  v1::OpenSession open = OpenFor(r);
  open.clear_grant();
  absl::Status s = OpenAs("device-device", "a", open);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("no route grant"));
  // Forged: a grant of the same content signed by another key.
  auto forger = GrantSigner::FromPem(NewGrantKeyPair()->private_pem, "forger");
  v1::RouteGrant content;
  ASSERT_TRUE(content.ParseFromString(r.grant().grant()));
  open = OpenFor(r);
  *open.mutable_grant() = *(*forger)->Sign(content);
  s = OpenAs("device-device", "a", open);
  EXPECT_THAT(std::string(s.message()), HasSubstr("does not verify")) << s;
  // The route edited after signing: b's hop sent elsewhere.
  open = OpenFor(r);
  open.mutable_route(1)->set_address(cluster_->server("a")->address());
  s = OpenAs("device-device", "a", open);
  EXPECT_THAT(std::string(s.message()), HasSubstr("route[1]")) << s;
  // A hop not in the grant appended.
  open = OpenFor(r);
  *open.add_route() = r.route(1);
  s = OpenAs("device-device", "a", open);
  EXPECT_THAT(std::string(s.message()), HasSubstr("not a suffix")) << s;
  // Expired (signed with the controller's own key, an hour ago).
  auto signer = GrantSigner::FromPemFile(cluster_->certs_dir() + "/grant.key");
  content.set_expires_unix_ms(absl::ToUnixMillis(absl::Now() - absl::Hours(1)));
  open = OpenFor(r);
  *open.mutable_grant() = *(*signer)->Sign(content);
  s = OpenAs("device-device", "a", open);
  EXPECT_THAT(std::string(s.message()), HasSubstr("expired")) << s;
  // Someone else using the device's grant: another device, or node b at
  // the first hop.
  cluster_->DeviceSecurity("eve");
  s = OpenAs("device-eve", "a", OpenFor(r));
  EXPECT_THAT(std::string(s.message()), HasSubstr("only device device")) << s;
  s = OpenAs("node-b", "a", OpenFor(r));
  EXPECT_THAT(std::string(s.message()), HasSubstr("only device device")) << s;
  // The device skipping a to open b's part directly.
  open = OpenFor(r);
  open.mutable_route()->DeleteSubrange(0, 1);
  s = OpenAs("device-device", "b", open);
  EXPECT_THAT(std::string(s.message()), HasSubstr("only node a")) << s;
  ExpectServing();
}

TEST_F(SecureClusterTest, TrainingJobsBelongToTheirDevices) {
  TrainingOptions o;
  o.job_id = "mine";
  o.rank = 4;
  o.job_members = {"friend"};
  auto owner = Agent("device");
  auto t = owner->StartTraining("m", o);
  ASSERT_TRUE(t.ok()) << t.status();
  // Another device may not join it, export it or roll it back: the
  // controller grants it no session of the job.
  auto mallory = Agent("mallory");
  o.job_members = {"mallory"};  // Naming itself does not help.
  auto joined = mallory->StartTraining("m", o);
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kPermissionDenied)
      << joined.status();
  EXPECT_THAT(std::string(joined.status().message()),
              HasSubstr("belongs to other devices"));
  EXPECT_FALSE(mallory
                   ->ExportAdapter("m", "mine", testing::TempDir("mallory"),
                                   testing::TempDir("mallory-out"))
                   .ok());
  // Nor join its averaging rounds.
  v1::AverageAdaptersRequest avg;
  avg.set_job_id("mine");
  avg.set_device("mallory");
  avg.set_devices(2);
  v1::AverageAdaptersResponse avg_resp;
  grpc::ClientContext ctx;
  grpc::Status g =
      Controller("device-mallory")->AverageAdapters(Ctx(&ctx), avg, &avg_resp);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(g.error_message(), HasSubstr("not a member"));
  // The member the owner named may.
  o.job_members.clear();
  auto pal_agent = Agent("friend");
  auto pal = pal_agent->StartTraining("m", o);
  EXPECT_TRUE(pal.ok()) << pal.status();
}

TEST_F(SecureClusterTest, RotationServesNewSessionsWhileOpenOnesFinish) {
  auto agent = Agent("device");
  ASSERT_NE(agent, nullptr);
  auto running = agent->OpenSession("m");
  ASSERT_TRUE(running.ok()) << running.status();
  const auto want = *testing::MonolithicGreedy(*model_, "once", 12, false);
  auto first = (*running)->Generate("once", testing::GreedyTokens(6));
  ASSERT_TRUE(first.ok()) << first.status();

  // b's certificate and key are replaced on disk (same name, new key).
  const std::string stem = cluster_->certs_dir() + "/node-b";
  const std::string before = *CertificateSerial(*ReadFile(stem + ".pem"));
  ASSERT_TRUE(IssueIntoDir(cluster_->certs_dir(), NodeIdentity("test", "b"), 1,
                           /*overwrite=*/true)
                  .ok());
  const std::string after = *CertificateSerial(*ReadFile(stem + ".pem"));
  ASSERT_NE(before, after);
  absl::SleepFor(absl::Milliseconds(2500));  // reload_s is 1 in tests.

  // A new connection to b meets the new certificate.
  auto stub = v1::StageService::NewStub(
      cluster_->Dial("device-device", cluster_->server("b")->address(), "b"));
  grpc::ClientContext ctx;
  v1::ProbeRequest probe;
  v1::ProbeResponse pong;
  ASSERT_TRUE(stub->Probe(Ctx(&ctx), probe, &pong).ok());
  auto pem =
      ctx.auth_context()->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  ASSERT_EQ(pem.size(), 1u);
  EXPECT_EQ(*CertificateSerial(std::string(pem[0].data(), pem[0].size())),
            after);

  // The session opened before the rotation keeps its streams (and their
  // handshakes) and generates on, equal to the whole model.
  auto rest = (*running)->Generate("once", testing::GreedyTokens(12));
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(rest->tokens, want);
  ExpectServing();  // And new sessions open.
}

}  // namespace
}  // namespace edgesplit

namespace edgesplit {
namespace {

// One device cannot hold all of a server's sessions: beyond its
// max_sessions_per_device its streams are refused, other devices' not.
TEST(AdmissionTest, ADeviceGetsAtMostItsShareOfAServersSessions) {
  const std::string model = testing::TinyModel(Arch::kGpt2);
  testing::ClusterOptions options;
  options.admission.max_sessions_per_device = 2;
  options.admission.max_sessions = 3;
  auto cluster = Cluster::Start(
      testing::TempDir("admission"),
      {{"m", model, false, {{"device", 0, 1}, {"a", 1, 4}}}}, options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  EdgeServer* a = (*cluster)->server("a");
  // Opens a stream as `device` (its first request not sent yet: holding
  // it open is enough) and reports how the server answered.
  struct Held {
    std::unique_ptr<grpc::ClientContext> ctx;
    std::unique_ptr<v1::StageService::Stub> stub;
    std::unique_ptr<
        grpc::ClientReaderWriter<v1::StageRequest, v1::StageResponse>>
        stream;
  };
  std::vector<Held> held;
  auto hold = [&](const std::string& device) {
    (*cluster)->DeviceSecurity(device);
    Held h;
    h.ctx = std::make_unique<grpc::ClientContext>();
    h.ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    h.stub = v1::StageService::NewStub(
        (*cluster)->Dial("device-" + device, a->address(), "a"));
    h.stream = h.stub->Session(h.ctx.get());
    held.push_back(std::move(h));
  };
  auto wait_open = [&](int n) {
    for (absl::Time until = absl::Now() + absl::Seconds(10);
         a->open_sessions() < n && absl::Now() < until;) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    return a->open_sessions();
  };
  hold("p");
  hold("p");
  EXPECT_EQ(wait_open(2), 2);
  hold("p");  // A third from p: refused.
  v1::StageResponse r;
  EXPECT_FALSE(held.back().stream->Read(&r));
  grpc::Status refused = held.back().stream->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("max_sessions_per_device"));
  held.pop_back();
  hold("q");  // Another device: admitted, up to the server's total.
  EXPECT_EQ(wait_open(3), 3);
  hold("q");
  EXPECT_FALSE(held.back().stream->Read(&r));
  refused = held.back().stream->Finish();
  EXPECT_THAT(refused.error_message(), HasSubstr("max_sessions"));
  held.pop_back();
  // Closing one of p's lets p open again.
  held.front().ctx->TryCancel();
  held.erase(held.begin());
  for (absl::Time until = absl::Now() + absl::Seconds(10);
       a->open_sessions() > 2 && absl::Now() < until;) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  hold("p");
  EXPECT_EQ(wait_open(3), 3);
  for (Held& h : held) h.ctx->TryCancel();
}

// max_concurrent_streams bounds what one connection may open at once: a
// second call on the connection waits until the first stream ends.
TEST(AdmissionTest, ConcurrentStreamsPerConnectionAreBounded) {
  const std::string model = testing::TinyModel(Arch::kLlama);
  testing::ClusterOptions options;
  options.admission.max_concurrent_streams = 1;
  auto cluster = Cluster::Start(
      testing::TempDir("streams"),
      {{"m", model, false, {{"device", 0, 1}, {"a", 1, 4}}}}, options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  EdgeServer* a = (*cluster)->server("a");
  (*cluster)->DeviceSecurity("p");
  auto stub = v1::StageService::NewStub(
      (*cluster)->Dial("device-p", a->address(), "a"));
  auto handshake = [&](absl::Duration wait) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + wait));
    v1::HandshakeRequest req;
    v1::HandshakeResponse resp;
    return stub->Handshake(&ctx, req, &resp).error_code();
  };
  ASSERT_EQ(handshake(absl::Seconds(10)), grpc::StatusCode::OK);
  grpc::ClientContext held;
  held.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  auto stream = stub->Session(&held);
  for (absl::Time until = absl::Now() + absl::Seconds(10);
       a->open_sessions() < 1 && absl::Now() < until;) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(a->open_sessions(), 1);
  EXPECT_EQ(handshake(absl::Milliseconds(500)),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  held.TryCancel();
  EXPECT_EQ(handshake(absl::Seconds(10)), grpc::StatusCode::OK);
}

// A client that does not read its answers cannot make a server hold them:
// past max_unsent_bytes the server stops reading that stream until they
// drain, and once the client reads again every answer arrives, in order
// (the burst of requests buffered meanwhile is read as it is answered, not
// refused for exceeding the session's pending limit).
TEST(AdmissionTest, UnreadAnswersPauseTheStreamAndNothingIsLost) {
  const std::string model = testing::TinyModel(Arch::kLlama);
  testing::ClusterOptions options;
  options.admission.max_unsent_bytes = 4096;
  auto cluster = Cluster::Start(
      testing::TempDir("unsent"),
      {{"m", model, false, {{"device", 0, 1}, {"a", 1, 4}}}}, options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  EdgeServer* a = (*cluster)->server("a");
  auto device = (*cluster)->DeviceSecurity("p");
  // The client's window stays at 64 KiB (no bandwidth probing growing it),
  // so unread answers back up into the server.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
  auto channel =
      device->Dial(a->address(), NodeIdentity(device->cluster(), "a"), args);
  ASSERT_TRUE(channel.ok()) << channel.status();
  auto stub = v1::StageService::NewStub(*channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto stream = stub->Session(&ctx);
  v1::Hop hop;
  hop.set_node("a");
  hop.set_first_block(1);
  hop.set_last_block(4);
  v1::StageRequest open =
      OpenRequest("unread", "m", v1::CODEC_FP32, {hop}, false);
  *open.mutable_open()->mutable_grant() = (*cluster)->Grant(open.open(), "p");
  ASSERT_TRUE(stream->Write(open));
  v1::StageResponse r;
  ASSERT_TRUE(stream->Read(&r));
  ASSERT_TRUE(r.has_opened()) << r.DebugString();
  // 32 forwards of 16 rows, each answered with 16 x 512 logits (32 KiB),
  // paced so the server keeps up: unread, 1 MiB of answers.
  constexpr int kSteps = 32;
  std::thread writer([&] {
    for (int i = 0; i < kSteps; ++i) {
      v1::StageRequest f;
      f.mutable_forward()->set_step(i);
      EXPECT_TRUE(wire::Encode(at::randn({16, 64}), v1::CODEC_FP32,
                               f.mutable_forward()->mutable_hidden())
                      .ok());
      if (!stream->Write(f)) return;
      absl::SleepFor(absl::Milliseconds(20));
    }
    stream->WritesDone();
  });
  // Long enough for the writer to be done or stuck behind the paused reads.
  absl::SleepFor(absl::Seconds(2));
  const int64_t answer = 16 * 512 * 4;
  // Unpaused the server would hold ~1 MiB less what the transport buffers
  // (the client's window); paused, the limit plus what requests already
  // read add (at most a session's pending forwards and the one computing).
  EXPECT_LE(a->service().peak_unsent_bytes(), 4096 + 9 * (answer + 1024));
  EXPECT_GT(a->service().peak_unsent_bytes(), 0);
  for (int i = 0; i < kSteps; ++i) {
    if (!stream->Read(&r)) {
      writer.join();
      FAIL() << "answer " << i << ": " << stream->Finish().error_message();
    }
    ASSERT_TRUE(r.has_forward()) << i;
    EXPECT_EQ(r.forward().step(), static_cast<uint64_t>(i));
  }
  writer.join();
  EXPECT_FALSE(stream->Read(&r));
  grpc::Status done = stream->Finish();
  EXPECT_TRUE(done.ok()) << done.error_message();
  EXPECT_EQ(a->service().unsent_bytes(), 0);
}

// Devices without certificates authenticate with bearer tokens where the
// daemons accept them; the controller's devices: list still decides what
// each may use.
TEST(DeviceTokenClusterTest, TokensStandInForCertificatesWithinTheirRights) {
  const std::string model = testing::TinyModel(Arch::kGpt2);
  testing::ClusterOptions options;
  options.device_tokens = true;
  options.controller_yaml =
      "devices:\n"
      "  - {name: phone, models: [m]}\n"
      "  - {name: tablet, models: [other]}\n";
  auto cluster = Cluster::Start(
      testing::TempDir("tokens"),
      {{"m", model, false, {{"device", 0, 1}, {"a", 1, 2}, {"b", 2, 4}}}},
      options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto connect = [&](const std::string& name,
                     absl::Duration ttl = absl::Hours(1)) {
    DeviceAgentOptions o;
    o.controller = (*cluster)->controller_address();
    o.report_profile = false;
    (*cluster)->TokenDevice(name, &o, ttl);
    auto agent = DeviceAgent::Connect(o);
    EXPECT_TRUE(agent.ok()) << agent.status();
    return agent.ok() ? std::move(*agent) : nullptr;
  };
  auto generate = [&](DeviceAgent* agent) -> absl::StatusOr<GenerationStats> {
    ES_ASSIGN_OR_RETURN(auto session, agent->OpenSession("m"));
    return session->Generate("hello", testing::GreedyTokens(6));
  };
  const std::vector<int32_t> whole =
      *testing::MonolithicGreedy(model, "hello", 6, false);

  // The phone's token takes it through the controller and both servers.
  auto phone = connect("phone");
  ASSERT_NE(phone, nullptr);
  auto got = generate(phone.get());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->tokens, whole);

  // A valid token for a model its device may not use.
  auto tablet = connect("tablet");
  ASSERT_NE(tablet, nullptr);
  absl::Status refused = tablet->OpenSession("m").status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied) << refused;
  EXPECT_THAT(std::string(refused.message()),
              HasSubstr("device \"tablet\" may not use model \"m\""));

  // An expired token.
  auto stale = connect("phone", absl::Seconds(1));
  ASSERT_NE(stale, nullptr);
  absl::SleepFor(absl::Milliseconds(1500));
  refused = stale->OpenSession("m").status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnauthenticated) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("expired"));

  // Straight to a server with a good token but no grant: the token says
  // who the device is, not what it may open.
  DeviceAgentOptions o;
  (*cluster)->TokenDevice("phone", &o);
  TlsConfig tls;
  tls.ca_file = o.tls.ca_file;
  tls.token_file = o.tls.token_file;
  auto security = *TransportSecurity::Create(tls);
  EdgeServer* a = (*cluster)->server("a");
  auto stub = v1::StageService::NewStub(
      *security->Dial(a->address(), NodeIdentity("test", "a")));
  auto stream = StageStream::Start(stub.get(), absl::Now() + absl::Seconds(10),
                                   "a", a->address());
  v1::StageRequest req;
  req.mutable_open()->set_protocol_version(kProtocolVersion);
  req.mutable_open()->set_session_id("s-no-grant");
  req.mutable_open()->set_model_id("m");
  v1::Hop* hop = req.mutable_open()->add_route();
  hop->set_node("a");
  hop->set_address(a->address());
  hop->set_first_block(1);
  hop->set_last_block(2);
  std::promise<absl::Status> done;
  stream->Send(req, [&](absl::StatusOr<v1::StageResponse> r) {
    done.set_value(r.status());
  });
  refused = done.get_future().get();
  stream->Close();
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied) << refused;

  // Through all of it the cluster kept serving.
  got = generate(phone.get());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->tokens, whole);
}

}  // namespace
}  // namespace edgesplit
