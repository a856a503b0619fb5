#include "controller/controller.h"

#include <filesystem>
#include <fstream>

#include "controller/fake_clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;

class ControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir("controller");
    const std::string model = testing::SharedDir() + "/models/stories260K";
    Write("plan.yaml", "model: {id: stories, path: " + model +
                           "}\nstages:\n"
                           "  - {node: device, blocks: [0, 1]}\n"
                           "  - {node: a, blocks: [1, 3]}\n"
                           "  - {node: b, blocks: [3, 5]}\n");
    Write("controller.yaml",
          "listen: 127.0.0.1:0\ninsecure: true\nheartbeat_interval_ms: 100\n"
          "dead_after_missed: 3\nnodes:\n  - {name: a, memory_mb: 64}\n"
          "  - {name: b, memory_mb: 64}\nplans: [plan.yaml]\n");
    auto config = LoadControllerConfig(dir_ + "/controller.yaml");
    ASSERT_TRUE(config.ok()) << config.status();
    controller_ = std::make_unique<Controller>(*config, &clock_);
    auto r = controller_->ReloadPlans();
    ASSERT_EQ(r.errors_size(), 0) << r.errors(0);
  }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name) << text;
  }
  void Register(const std::string& node) {
    v1::RegisterNodeRequest r;
    r.set_node(node);
    r.set_address("127.0.0.1:7" + node);
    ASSERT_TRUE(controller_->RegisterNode(r).ok());
  }
  absl::StatusOr<v1::OpenSessionResponse> Open() {
    v1::OpenSessionRequest r;
    r.set_model_id("stories");
    return controller_->OpenSession(r);
  }

  std::string dir_;
  ManualClock clock_;
  std::unique_ptr<Controller> controller_;
};

TEST_F(ControllerTest, RoutesSessionsThroughLiveNodes) {
  EXPECT_THAT(Open().status().message(), HasSubstr("\"a\" has not registered"));
  Register("a");
  Register("b");
  auto s = Open();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->device_first_block(), 0);
  EXPECT_EQ(s->device_last_block(), 1);
  ASSERT_EQ(s->route_size(), 2);
  EXPECT_EQ(s->route(1).node(), "b");
  EXPECT_EQ(s->route(1).address(), "127.0.0.1:7b");
  EXPECT_EQ(s->route(1).first_block(), 3);
  EXPECT_FALSE(s->session_id().empty());
  EXPECT_EQ(controller_->open_sessions(), 1);
  EXPECT_TRUE(controller_->CloseSession(s->session_id()).ok());
  EXPECT_EQ(controller_->CloseSession("nope").code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ControllerTest, NodesMissingBeatsAreDead) {
  Register("a");
  Register("b");
  clock_.Advance(absl::Milliseconds(250));
  v1::HeartbeatRequest hb;
  hb.set_node("a");
  ASSERT_TRUE(controller_->Heartbeat(hb).ok());
  clock_.Advance(absl::Milliseconds(100));  // b: 350 ms > 3 x 100 ms.
  auto s = Open();
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.status().message(), HasSubstr("node \"b\""));
  EXPECT_THAT(s.status().message(), HasSubstr("is dead"));
  hb.set_node("b");
  ASSERT_TRUE(controller_->Heartbeat(hb).ok());
  EXPECT_TRUE(Open().ok());
}

TEST_F(ControllerTest, UnknownNodesAreRejected) {
  v1::RegisterNodeRequest r;
  r.set_node("intruder");
  r.set_address("1.2.3.4:5");
  EXPECT_EQ(controller_->RegisterNode(r).status().code(),
            absl::StatusCode::kNotFound);
  v1::HeartbeatRequest hb;
  hb.set_node("intruder");
  EXPECT_EQ(controller_->Heartbeat(hb).status().code(),
            absl::StatusCode::kNotFound);
  v1::OpenSessionRequest o;
  o.set_model_id("unknown-model");
  EXPECT_EQ(controller_->OpenSession(o).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ControllerTest, ReloadKeepsRunningPlanWhenTheFileIsBroken) {
  int changes = 0;
  const int id = controller_->Subscribe([&] { ++changes; });
  const uint64_t v = controller_->plan_version();
  Write("plan.yaml", "model: {id: stories}\n");  // Broken.
  auto r = controller_->ReloadPlans();
  ASSERT_EQ(r.errors_size(), 1);
  EXPECT_THAT(r.errors(0), HasSubstr("plan.yaml"));
  EXPECT_THAT(r.errors(0), HasSubstr("\"path\""));
  EXPECT_EQ(controller_->plan_version(), v);
  EXPECT_TRUE(controller_->GetPlan("stories").ok());
  EXPECT_EQ(changes, 0);
  // A valid new split replaces it and watchers hear of it.
  const std::string model = testing::SharedDir() + "/models/stories260K";
  Write("plan.yaml", "model: {id: stories, path: " + model +
                         "}\nstages:\n  - {node: device, blocks: [0, 2]}\n"
                         "  - {node: a, blocks: [2, 5]}\n");
  r = controller_->ReloadPlans();
  EXPECT_EQ(r.errors_size(), 0);
  EXPECT_EQ(controller_->plan_version(), v + 1);
  EXPECT_EQ(changes, 1);
  EXPECT_EQ(controller_->PlansFor("a").plans_size(), 1);
  EXPECT_EQ(controller_->PlansFor("b").plans_size(), 0);
  controller_->Unsubscribe(id);
}

}  // namespace
}  // namespace edgesplit
