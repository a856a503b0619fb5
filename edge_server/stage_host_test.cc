#include "edge_server/stage_host.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_models.h"

namespace edgesplit {
namespace {

v1::Plan TwoStagePlan(const std::string& dir, bool u_shaped) {
  v1::Plan p;
  p.set_model_id("m");
  p.set_model_path(dir);
  p.set_u_shaped(u_shaped);
  auto* d = p.add_stages();
  d->set_node("device");
  d->set_first_block(0);
  d->set_last_block(1);
  auto* s = p.add_stages();
  s->set_node("s");
  s->set_first_block(1);
  s->set_last_block(4);
  return p;
}

TEST(StageHostTest, PlansLoadOnlyTheirStagesAndFollowTheHead) {
  const std::string dir = testing::TinyModel(Arch::kLlama);
  StageHostOptions o;
  o.node = "s";
  StageHost host(o);
  ASSERT_TRUE(host.ApplyPlans({TwoStagePlan(dir, false)}).ok());
  auto stage = host.Find("m", 1, 4);
  ASSERT_TRUE(stage.ok()) << stage.status();
  EXPECT_TRUE((*stage)->model->spec().head);
  EXPECT_EQ(host.Find("m", 0, 1).status().code(), absl::StatusCode::kNotFound);

  // Re-applying the same plan keeps the loaded stage.
  ASSERT_TRUE(host.ApplyPlans({TwoStagePlan(dir, false)}).ok());
  EXPECT_EQ(host.Find("m", 1, 4)->get(), stage->get());

  // The same blocks in a U-shaped plan: the head moved to the device, so
  // the stage is reloaded without it (a session opened before keeps the
  // old one).
  ASSERT_TRUE(host.ApplyPlans({TwoStagePlan(dir, true)}).ok());
  auto u = host.Find("m", 1, 4);
  ASSERT_TRUE(u.ok());
  EXPECT_FALSE((*u)->model->spec().head);
  EXPECT_TRUE((*stage)->model->spec().head);
  // The replaced stage is retired (its sessions move); the kept one not.
  EXPECT_TRUE((*stage)->retired);
  EXPECT_FALSE((*u)->retired);

  // A restarting controller's update (keep_unlisted) retires nothing.
  ASSERT_TRUE(host.ApplyPlans({}, /*retire_unlisted=*/false).ok());
  EXPECT_FALSE((*u)->retired);
  EXPECT_EQ(host.Find("m", 1, 4)->get(), u->get());

  // No plan names the node: nothing stays loaded.
  ASSERT_TRUE(host.ApplyPlans({}).ok());
  EXPECT_TRUE((*u)->retired);
  EXPECT_EQ(host.Find("m", 1, 4).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace edgesplit
