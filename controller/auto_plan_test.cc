// The controller's automatic plans: from measured profiles, re-planned on
// joins, deaths, suspicion and profile changes, with pinned stages kept.
#include "controller/auto_plan.h"

#include <cmath>
#include <fstream>
#include <set>

#include "controller/controller.h"
#include "controller/fake_clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;

v1::ComputeProfile Compute(double decode_ms) {
  v1::ComputeProfile c;
  c.set_model_id("stories");
  c.set_decode_ms_per_block(decode_ms);
  c.set_prefill_ms_per_token(decode_ms / 20);
  c.set_head_ms(decode_ms);
  return c;
}

class AutoPlanTest : public ::testing::Test {
 protected:
  void Start(const std::string& planner_yaml,
             const std::string& stages_yaml = "") {
    if (dir_.empty()) dir_ = testing::TempDir("auto_plan");
    model_ = testing::SharedDir() + "/models/stories260K";
    Write("plan.yaml", "model: {id: stories, path: " + model_ +
                           "}\nplanner:\n" + planner_yaml + stages_yaml);
    Write("controller.yaml",
          "listen: 127.0.0.1:0\ninsecure: true\nheartbeat_interval_ms: 100\n"
          "dead_after_missed: 3\nnodes:\n  - {name: a}\n  - {name: b}\n"
          "  - {name: c}\nplans: [plan.yaml]\n"
          "default_link: {mbit_s: 1000, rtt_ms: 1}\n"
          "suspect_reports_per_minute: 2\nstate_dir: state\n" +
              devices_yaml_);
    auto config = LoadControllerConfig(dir_ + "/controller.yaml");
    ASSERT_TRUE(config.ok()) << config.status();
    controller_ = std::make_unique<Controller>(*config, &clock_);
    ASSERT_TRUE(controller_->LoadState().ok());
    watch_ = controller_->Subscribe([this] { ++notified_; });
    auto r = controller_->ReloadPlans();
    ASSERT_EQ(r.errors_size(), 0) << r.errors(0);
  }
  void TearDown() override {
    if (controller_) controller_->Unsubscribe(watch_);
  }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name) << text;
  }
  void Register(const std::string& node, double decode_ms) {
    v1::RegisterNodeRequest r;
    r.set_node(node);
    r.set_address("127.0.0.1:7" + node);
    if (decode_ms > 0) *r.add_compute() = Compute(decode_ms);
    auto resp = controller_->RegisterNode(r);
    ASSERT_TRUE(resp.ok()) << resp.status();
    // The controller asks for the plan's model and the other nodes.
    ASSERT_EQ(resp->profile().models_size(), 1);
    EXPECT_EQ(resp->profile().models(0).model_path(), model_);
  }
  void Beat(const std::string& node) {
    v1::HeartbeatRequest r;
    r.set_node(node);
    ASSERT_TRUE(controller_->Heartbeat(r).ok());
  }
  absl::StatusOr<v1::OpenSessionResponse> Open(
      std::vector<std::string> suspects = {},
      const std::string& device = "device") {
    v1::OpenSessionRequest r;
    r.set_model_id("stories");
    r.set_device(device);
    for (auto& s : suspects) r.add_suspects(s);
    return controller_->OpenSession(r);
  }
  static std::vector<std::string> Nodes(const v1::OpenSessionResponse& s) {
    std::vector<std::string> out;
    for (const auto& hop : s.route()) out.push_back(hop.node());
    return out;
  }

  std::string dir_, model_;
  std::string devices_yaml_;  // A `devices:` section, if the test sets one.
  ManualClock clock_;
  std::unique_ptr<Controller> controller_;
  int watch_ = 0;
  int notified_ = 0;
};

constexpr char kLatency[] =
    "  objective: latency\n  prompt_tokens: 16\n  output_tokens: 16\n"
    "  min_device_blocks: 1\n  u_shaped: false\n";

TEST_F(AutoPlanTest, NoPlanUntilAServerHasProfiledTheModel) {
  Start(kLatency);
  Register("a", 0);
  auto s = Open();
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.status().message(), HasSubstr("profiled model \"stories\""));
  // The profile arrives with a heartbeat.
  v1::HeartbeatRequest beat;
  beat.set_node("a");
  *beat.add_compute() = Compute(1.0);
  auto resp = controller_->Heartbeat(beat);
  ASSERT_TRUE(resp.ok());
  EXPECT_NE(resp->profile_version(), 0u);
  s = Open();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(Nodes(*s), std::vector<std::string>{"a"});
  EXPECT_TRUE(s->plan().planned());
  EXPECT_GT(s->plan().predicted_latency_ms(), 0);
}

TEST_F(AutoPlanTest, PlanIsThePlannersOptimumAndFollowsDeathAndJoin) {
  Start(kLatency);
  Register("a", 1.0);
  Register("b", 50.0);  // Much slower: the planner avoids it.
  auto s = Open();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->device_last_block(), 1);  // min_device_blocks.
  EXPECT_EQ(Nodes(*s), std::vector<std::string>{"a"});
  const uint64_t v1 = controller_->plan_version();

  // a stops beating: the next session is planned around it.
  for (int i = 0; i < 5; ++i) {
    clock_.Advance(absl::Milliseconds(100));
    Beat("b");
  }
  EXPECT_GT(controller_->plan_version(), v1);
  EXPECT_GT(notified_, 0);
  s = Open();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(Nodes(*s), std::vector<std::string>{"b"});
  EXPECT_EQ(s->route(0).first_block(), 1);
  EXPECT_EQ(s->route(0).last_block(), 5);

  // c joins, faster than b.
  Register("c", 2.0);
  s = Open();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(Nodes(*s), std::vector<std::string>{"c"});
}

TEST_F(AutoPlanTest, SmallProfileChangesDoNotMoveThePlan) {
  Start(kLatency);
  Register("a", 1.0);
  Register("b", 1.05);
  auto s = Open();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(Nodes(*s), std::vector<std::string>{"a"});
  const uint64_t version = controller_->plan_version();
  auto report = [&](double decode_ms) {
    v1::HeartbeatRequest beat;
    beat.set_node("b");
    *beat.add_compute() = Compute(decode_ms);
    ASSERT_TRUE(controller_->Heartbeat(beat).ok());
  };
  // b is now 3% faster than a: within the 10% hysteresis, a stays.
  report(0.97);
  EXPECT_EQ(controller_->plan_version(), version);
  s = Open();
  EXPECT_EQ(Nodes(*s), std::vector<std::string>{"a"});
  // Twice as fast: worth moving.
  report(0.5);
  EXPECT_GT(controller_->plan_version(), version);
  s = Open();
  EXPECT_EQ(Nodes(*s), std::vector<std::string>{"b"});
}

TEST_F(AutoPlanTest, SuspectsAreAvoidedUntilTheyBeatAgain) {
  Start(kLatency);
  Register("a", 1.0);
  Register("b", 3.0);
  auto s = Open();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(Nodes(*s), std::vector<std::string>{"a"});
  // A device could not reach a: plan without it, though a's last beat is
  // recent.
  s = Open({"a"});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(Nodes(*s), std::vector<std::string>{"b"});
  clock_.Advance(absl::Milliseconds(50));
  Beat("a");  // It was a blip: a is back.
  s = Open();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(Nodes(*s), std::vector<std::string>{"a"});
}

TEST_F(AutoPlanTest, SuspectReportsAreRateLimitedPerDevice) {
  Start(kLatency);
  Register("a", 1.0);
  Register("b", 3.0);
  auto route_after = [&](std::vector<std::string> suspects,
                         const std::string& device) {
    clock_.Advance(absl::Milliseconds(10));
    Beat("a");  // a is healthy all along.
    Beat("b");
    clock_.Advance(absl::Milliseconds(10));
    auto s = Open(std::move(suspects), device);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? Nodes(*s) : std::vector<std::string>{};
  };
  const std::vector<std::string> without_a = {"b"}, with_a = {"a"};
  // Two reports a minute count (this config); the third is ignored.
  EXPECT_EQ(route_after({"a"}, "d"), without_a);
  EXPECT_EQ(route_after({"a"}, "d"), without_a);
  EXPECT_EQ(route_after({"a"}, "d"), with_a);
  // Per device: another one still counts.
  EXPECT_EQ(route_after({"a"}, "e"), without_a);
  // A minute later d counts again.
  clock_.Advance(absl::Minutes(1));
  EXPECT_EQ(route_after({"a"}, "d"), without_a);
}

TEST_F(AutoPlanTest, TrainingJobsBelongToTheirDevices) {
  Start(kLatency);
  Register("a", 1.0);
  auto open = [&](const std::string& device, const std::string& job,
                  std::vector<std::string> members = {},
                  const std::string& model = "stories") {
    v1::OpenSessionRequest r;
    r.set_model_id(model);
    r.set_device(device);
    r.set_training_job(job);
    for (const std::string& m : members) r.add_job_members(m);
    return controller_->OpenSession(r).status();
  };
  ASSERT_TRUE(open("d", "j", {"e"}).ok());  // d creates j, naming e.
  EXPECT_TRUE(open("d", "j").ok());
  EXPECT_TRUE(open("e", "j").ok());
  absl::Status s = open("mallory", "j", {"mallory"});
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("belongs to other devices"));
  EXPECT_THAT(std::string(open("d", "j", {}, "other").message()),
              HasSubstr("is of model stories"));
  // Averaging rounds: members only.
  EXPECT_TRUE(controller_->CheckJobMember("j", "e").ok());
  EXPECT_EQ(controller_->CheckJobMember("j", "mallory").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(controller_->CheckJobMember("nope", "d").code(),
            absl::StatusCode::kNotFound);
  // Inference sessions are not jobs.
  EXPECT_TRUE(open("mallory", "").ok());

  // A restarted controller (state_dir kept) still knows j's owners: the
  // first device to ask after the restart cannot claim it.
  controller_->Unsubscribe(watch_);
  controller_.reset();
  Start(kLatency);
  Register("a", 1.0);
  EXPECT_THAT(std::string(open("mallory", "j", {"mallory"}).message()),
              HasSubstr("belongs to other devices"));
  EXPECT_TRUE(open("e", "j").ok());
  EXPECT_TRUE(controller_->CheckJobMember("j", "d").ok());
  // A damaged state file stops the controller with the file named.
  Write("state/jobs.json", "{\"version\": 1, \"jobs\": {\"j\": 5}}");
  auto config = LoadControllerConfig(dir_ + "/controller.yaml");
  ASSERT_TRUE(config.ok());
  Controller broken(*config, &clock_);
  EXPECT_THAT(std::string(broken.LoadState().message()),
              HasSubstr("state/jobs.json: field \"jobs.j\""));
}

TEST_F(AutoPlanTest, DevicesUseOnlyTheModelsAndAdaptersTheyAreAllowed) {
  devices_yaml_ =
      "devices:\n"
      "  - {name: d, models: [stories], adapters: [poems]}\n"
      "  - {name: e, models: [other]}\n"
      "  - {name: any, models: [\"*\"]}\n"
      "revoked_tokens: [0badc0ffee]\n";
  Start(kLatency);
  Register("a", 1.0);
  auto open = [&](const std::string& device, const std::string& adapter) {
    v1::OpenSessionRequest r;
    r.set_model_id("stories");
    r.set_device(device);
    r.set_adapter(adapter);
    return controller_->OpenSession(r).status();
  };
  EXPECT_TRUE(open("d", "").ok());
  EXPECT_TRUE(open("d", "poems").ok());
  EXPECT_THAT(std::string(open("d", "secrets").message()),
              HasSubstr("may not use adapter \"secrets\""));
  EXPECT_THAT(std::string(open("e", "").message()),
              HasSubstr("may not use model \"stories\""));
  EXPECT_TRUE(open("any", "whatever").ok());
  absl::Status s = open("stranger", "");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(s.message()), HasSubstr("not in the controller's"));
  // Errors in the section name the field.
  YamlReader r("c.yaml");
  ControllerConfig c;
  EXPECT_THAT(std::string(ParseDeviceAccess(
                              r, *r.Parse("devices:\n  - {name: x}\n"), &c)
                              .message()),
              HasSubstr("devices[0].models"));
  EXPECT_THAT(
      std::string(
          ParseDeviceAccess(r, *r.Parse("revoked_tokens: 5\n"), &c).message()),
      HasSubstr("revoked_tokens"));
  // Devices with a revoked token are refused; others, and certificates
  // (no token id), are not.
  Peer token{true, DeviceIdentity("c", "d"), "0badc0ffee"};
  absl::Status revoked = controller_->CheckToken(token);
  EXPECT_EQ(revoked.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(revoked.message()),
              HasSubstr("device token 0badc0ffee of device d is revoked"));
  token.token_id = "5ca1ab1e";
  EXPECT_TRUE(controller_->CheckToken(token).ok());
  token.token_id.clear();
  EXPECT_TRUE(controller_->CheckToken(token).ok());
}

// A fresh cluster whose plan pins only the device's stage: feasible before
// any device has reported its speed (it was "no feasible plan" until a
// session opened, and none could open).
TEST_F(AutoPlanTest, APlanPinningOnlyTheDeviceWorksBeforeItsProfile) {
  Start(kLatency, "stages:\n  - {node: device, blocks: [0, 2]}\n");
  Register("a", 1.0);
  auto s = Open();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->device_first_block(), 0);
  EXPECT_EQ(s->device_last_block(), 2);
  ASSERT_EQ(Nodes(*s), (std::vector<std::string>{"a"}));
  EXPECT_EQ(s->route(0).first_block(), 2);
}

// Sessions a vanished device never closed are forgotten after the TTL.
TEST_F(AutoPlanTest, UnclosedSessionRecordsExpire) {
  Start(kLatency);
  Register("a", 1.0);
  auto first = Open();
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(Open().ok());
  EXPECT_EQ(controller_->open_sessions(), 2);
  clock_.Advance(absl::Hours(23));
  Beat("a");
  ASSERT_TRUE(Open().ok());
  EXPECT_EQ(controller_->open_sessions(), 3);  // Not yet a day old.
  clock_.Advance(absl::Hours(2));
  Beat("a");
  ASSERT_TRUE(Open().ok());
  EXPECT_EQ(controller_->open_sessions(), 2);  // The first two are gone.
  EXPECT_EQ(controller_->CloseSession(first->session_id()).code(),
            absl::StatusCode::kNotFound);
}

TEST_F(AutoPlanTest, PinnedStagesStayWhereTheYamlPutsThem) {
  Start(kLatency, "stages:\n  - {node: b, blocks: [3, 5]}\n");
  Register("a", 1.0);
  Register("b", 50.0);
  auto s = Open();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(Nodes(*s), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(s->route(0).first_block(), 1);
  EXPECT_EQ(s->route(1).first_block(), 3);
  EXPECT_EQ(s->route(1).last_block(), 5);
}

// A stage pinned with its own weight type: the controller asks that node
// to measure the type too, and prices the stage at that type's speed once
// it has it (until then at the node's own).
TEST_F(AutoPlanTest, PinnedWeightTypesArePricedAtTheirMeasuredSpeed) {
  Start(kLatency, "stages:\n  - {node: b, blocks: [3, 5], weights: q4_0}\n");
  Register("a", 1.0);
  v1::RegisterNodeRequest r;
  r.set_node("b");
  r.set_address("127.0.0.1:7b");
  *r.add_compute() = Compute(50.0);
  auto resp = controller_->RegisterNode(r);
  ASSERT_TRUE(resp.ok()) << resp.status();
  ASSERT_EQ(resp->profile().models_size(), 1);
  ASSERT_EQ(resp->profile().models(0).weights_size(), 1);
  EXPECT_EQ(resp->profile().models(0).weights(0), "q4_0");
  auto s = Open();
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->plan().stages_size(), 3);
  EXPECT_EQ(s->plan().stages(2).weights(), "q4_0");
  const double before = s->plan().predicted_latency_ms();
  v1::HeartbeatRequest beat;
  beat.set_node("b");
  v1::ComputeProfile fast = Compute(5.0);
  fast.set_weights("q4_0");
  *beat.add_compute() = fast;
  ASSERT_TRUE(controller_->Heartbeat(beat).ok());
  s = Open();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_LT(s->plan().predicted_latency_ms(), before * 0.8)
      << before << " -> " << s->plan().predicted_latency_ms();
  // A profile of an unknown type is refused.
  v1::ComputeProfile bad = Compute(5.0);
  bad.set_weights("q9_9");
  *beat.mutable_compute(0) = bad;
  EXPECT_EQ(controller_->Heartbeat(beat).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(AutoPlanTest, InfeasibleConstraintIsReportedWithTheFile) {
  Start("  min_device_blocks: 5\n");
  Register("a", 1.0);
  auto s = Open();
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.status().message(), HasSubstr("plan.yaml"));
  EXPECT_THAT(s.status().message(), HasSubstr("min_device_blocks=5"));
  const v1::ClusterStatus status = controller_->ClusterStatus();
  ASSERT_EQ(status.planner_errors_size(), 1);
  EXPECT_THAT(status.planner_errors(0), HasSubstr("min_device_blocks=5"));
}

TEST_F(AutoPlanTest, DeviceProfileAndLinksMoveTheHead) {
  Start(
      "  objective: latency\n  prompt_tokens: 16\n  output_tokens: 16\n"
      "  u_shaped: auto\n");
  Register("a", 1.0);
  auto s = Open();
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->plan().u_shaped());
  // The device reports a fast compute and a link whose downlink is so slow
  // that 2 KiB of logits per token cost more than the head does locally.
  v1::OpenSessionRequest r;
  r.set_model_id("stories");
  *r.mutable_profile()->add_compute() = Compute(1.0);
  v1::LinkProfile* l = r.mutable_profile()->add_links();
  l->set_peer("a");
  l->set_rtt_ms(1);
  l->set_up_bytes_per_s(10e6);
  l->set_down_bytes_per_s(20e3);
  s = controller_->OpenSession(r);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->plan().u_shaped());
  // What cluster status shows is what was reported.
  const v1::ClusterStatus status = controller_->ClusterStatus();
  const v1::NodeStatus& device = status.nodes(status.nodes_size() - 1);
  EXPECT_EQ(device.node(), "device");
  ASSERT_EQ(device.links_size(), 1);
  EXPECT_EQ(device.links(0).down_bytes_per_s(), 20e3);
  EXPECT_TRUE(status.plans(0).planned());
}

TEST_F(AutoPlanTest, ADeviceProfileMayArriveWithTheClose) {
  Start("  objective: latency\n  u_shaped: auto\n");
  Register("a", 1.0);
  auto s = Open();
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->plan().u_shaped());
  v1::CloseSessionRequest close;
  close.set_session_id(s->session_id());
  *close.mutable_profile()->add_compute() = Compute(1.0);
  v1::LinkProfile* l = close.mutable_profile()->add_links();
  l->set_peer("a");
  l->set_rtt_ms(1);
  l->set_up_bytes_per_s(10e6);
  l->set_down_bytes_per_s(20e3);
  ASSERT_TRUE(controller_->CloseSession(close).ok());
  // The next session, even from another process, is planned with it.
  s = Open();
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->plan().u_shaped());
  // A bad profile is refused and the session stays open.
  v1::CloseSessionRequest bad;
  bad.set_session_id(s->session_id());
  bad.mutable_profile()->set_memory_bytes(-1);
  EXPECT_EQ(controller_->CloseSession(bad).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(controller_->open_sessions(), 1);
}

TEST_F(AutoPlanTest, BadProfilesAreRejectedAndPlanningGoesOn) {
  Start(kLatency);
  Register("a", 1.0);
  const uint64_t version = controller_->plan_version();
  v1::HeartbeatRequest beat;
  beat.set_node("a");
  *beat.add_compute() = Compute(std::nan(""));
  auto r = controller_->Heartbeat(beat);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("decode_ms_per_block"));
  beat.clear_compute();
  v1::LinkProfile* l = beat.add_links();
  l->set_peer("b");
  l->set_up_bytes_per_s(-5);
  l->set_down_bytes_per_s(1);
  r = controller_->Heartbeat(beat);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("link profile to \"b\""));
  v1::OpenSessionRequest open;
  open.set_model_id("stories");
  *open.mutable_profile()->add_compute() = Compute(-1);
  EXPECT_EQ(controller_->OpenSession(open).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Nothing was stored: the plan is what it was, and sessions open.
  EXPECT_EQ(controller_->plan_version(), version);
  EXPECT_TRUE(Open().ok());
  // Refused profiles still count as beats: a node whose measurements are
  // broken stays alive (3 beats of 100 ms make a node dead otherwise).
  for (int i = 0; i < 6; ++i) {
    clock_.Advance(absl::Milliseconds(100));
    EXPECT_FALSE(controller_->Heartbeat(beat).ok());
  }
  EXPECT_TRUE(Open().ok());
}

ModelConfig SmallLlama() {
  ModelConfig model;
  model.num_layers = 4;
  model.hidden_size = 64;
  model.vocab_size = 512;
  model.num_heads = 8;
  model.num_kv_heads = 8;
  model.head_dim = 8;
  model.intermediate_size = 128;
  model.hidden_act = "silu";
  return model;
}

PlanConfig AutomaticSpec() {
  PlanConfig spec;
  spec.model_id = "m";
  spec.automatic = true;
  return spec;
}

TEST(AutoPlanBridgeTest, ManyServersArePlannedOverTheFastest) {
  const ModelConfig model = SmallLlama();
  PlanConfig spec = AutomaticSpec();
  spec.stages.push_back({"slowest", 3, 4, 0});  // Pinned: always kept.
  std::vector<NodeView> servers;
  for (int i = 0; i < 30; ++i) {
    servers.push_back({"s" + std::to_string(i), 0, true, Compute(1.0 + i), {}});
  }
  servers.push_back({"slowest", 0, true, Compute(100), {}});
  NodeView device{kDeviceNode, 0, false, {}, {}};
  auto p = BuildProblem(spec, model, servers, device, DefaultLink{});
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->nodes.size(), kMaxPlannedServers + 1);  // + the device.
  std::set<std::string> names;
  for (const auto& n : p->nodes) names.insert(n.name);
  EXPECT_TRUE(names.count("slowest"));
  EXPECT_TRUE(names.count("s0"));
  EXPECT_FALSE(names.count("s29"));
  // Pinned plans over so many servers are refused as too large for the
  // exact range DP; without pins the set DP solves them.
  EXPECT_EQ(planner::Solve(*p).status().code(),
            absl::StatusCode::kResourceExhausted);
  spec.stages.clear();
  p = BuildProblem(spec, model, servers, device, DefaultLink{});
  ASSERT_TRUE(p.ok());
  auto solved = planner::Solve(*p);
  EXPECT_TRUE(solved.ok()) << solved.status();
}

TEST(AutoPlanBridgeTest, MeasuredLinksWinOverDefaults) {
  const ModelConfig model = SmallLlama();
  PlanConfig spec = AutomaticSpec();
  NodeView a{"a", 0, true, Compute(1.0), {}};
  v1::LinkProfile l;
  l.set_peer("b");
  l.set_rtt_ms(7);
  l.set_up_bytes_per_s(1e6);
  l.set_down_bytes_per_s(2e6);
  a.links.push_back(l);
  NodeView b{"b", 0, true, Compute(1.0), {}};
  NodeView c{"c", 0, false, {}, {}};  // Unprofiled: not planned on.
  NodeView device{kDeviceNode, 0, false, {}, {}};
  auto p = BuildProblem(spec, model, {a, b, c}, device, DefaultLink{});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->nodes.size(), 3u);
  bool ab = false, ba = false;
  for (const planner::LinkSpec& link : p->links) {
    if (link.from == "a" && link.to == "b") {
      ab = true;
      EXPECT_EQ(link.bytes_per_s, 1e6);
      EXPECT_EQ(link.rtt_ms, 7);
    }
    if (link.from == "b" && link.to == "a") {
      ba = true;
      EXPECT_EQ(link.bytes_per_s, 2e6);
    }
    if (link.from == "device") {
      EXPECT_EQ(link.bytes_per_s, DefaultLink{}.bytes_per_s);
    }
  }
  EXPECT_TRUE(ab && ba);
  // Without a device profile the device keeps exactly its minimum.
  EXPECT_EQ(p->constraints.max_device_blocks, p->constraints.min_device_blocks);
  // A device's one measured link stands for its links to every server.
  v1::LinkProfile radio;
  radio.set_peer("a");
  radio.set_rtt_ms(40);
  radio.set_up_bytes_per_s(1e5);
  radio.set_down_bytes_per_s(4e5);
  device.links.push_back(radio);
  p = BuildProblem(spec, model, {a, b, c}, device, DefaultLink{});
  ASSERT_TRUE(p.ok());
  for (const planner::LinkSpec& link : p->links) {
    if (link.from == "device") {
      EXPECT_EQ(link.bytes_per_s, 1e5);
      EXPECT_EQ(link.rtt_ms, 40);
    }
    if (link.to == "device") {
      EXPECT_EQ(link.bytes_per_s, 4e5);
    }
  }
  // Without a device profile the device keeps exactly its minimum.
  EXPECT_EQ(p->constraints.max_device_blocks, p->constraints.min_device_blocks);
}

}  // namespace
}  // namespace edgesplit
