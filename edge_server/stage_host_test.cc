#include "edge_server/stage_host.h"

#include "absl/strings/str_cat.h"
#include "edge_server/training_job.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_models.h"
#include "testing/test_paths.h"

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

StageHostOptions OnNodeS() {
  StageHostOptions o;
  o.node = "s";  // The server TwoStagePlan puts blocks [1, 4) on.
  return o;
}

TEST(StageHostTest, PlansLoadOnlyTheirStagesAndFollowTheHead) {
  const std::string dir = testing::TinyModel(Arch::kLlama);
  StageHost host(OnNodeS());
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

// Gives every copy the same directory and counts the asks (the seam a
// ClusterModelSource fills on a server).
class FakeCopies : public ModelCopySource {
 public:
  explicit FakeCopies(std::string dir) : dir_(std::move(dir)) {}
  absl::StatusOr<std::string> Materialize(const std::string& model_id,
                                          const std::string& name) override {
    asked.push_back(model_id + "/" + name);
    if (name == "missing") return absl::NotFoundError("not registered");
    return dir_;
  }
  std::vector<std::string> asked;

 private:
  const std::string dir_;
};

TEST(StageHostTest, PlansNamingACopyLoadItAndReloadWhenItChanges) {
  const std::string dir = testing::TinyModel(Arch::kLlama);
  v1::Plan plan = TwoStagePlan("/controller/only", false);
  plan.set_model_copy("v1");
  {
    // Without a source: refused, saying what the server needs.
    StageHost bare(OnNodeS());
    absl::Status s = bare.ApplyPlans({plan});
    EXPECT_THAT(s.message(), ::testing::HasSubstr("model_dir"));
    EXPECT_THAT(s.message(), ::testing::HasSubstr("\"v1\""));
  }
  FakeCopies copies(dir);
  StageHostOptions o = OnNodeS();
  o.model_copies = &copies;
  StageHost host(o);
  // Two stages here (one as another node's standby): the copy is asked
  // for once.
  plan.mutable_stages(1)->set_last_block(2);
  auto* other = plan.add_stages();
  other->set_node("t");
  other->set_first_block(2);
  other->set_last_block(4);
  other->add_standby("s");
  ASSERT_TRUE(host.ApplyPlans({plan}).ok());
  EXPECT_EQ(copies.asked, std::vector<std::string>{"m/v1"});
  ASSERT_TRUE(host.Find("m", 2, 4).ok());
  plan.mutable_stages()->RemoveLast();
  plan.mutable_stages(1)->set_last_block(4);
  copies.asked.clear();
  ASSERT_TRUE(host.ApplyPlans({plan}).ok());
  EXPECT_EQ(copies.asked, std::vector<std::string>{"m/v1"});
  auto v1 = host.Find("m", 1, 4);
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ((*v1)->model_copy, "v1");
  // Unchanged: kept, not asked again.
  ASSERT_TRUE(host.ApplyPlans({plan}).ok());
  EXPECT_EQ(copies.asked.size(), 1u);
  EXPECT_EQ(host.Find("m", 1, 4)->get(), v1->get());
  // A new version of the copy: reloaded from it, the old stage retired.
  plan.set_model_copy("v2");
  ASSERT_TRUE(host.ApplyPlans({plan}).ok());
  EXPECT_EQ(copies.asked.back(), "m/v2");
  auto v2 = host.Find("m", 1, 4);
  ASSERT_TRUE(v2.ok());
  EXPECT_NE(v2->get(), v1->get());
  EXPECT_TRUE((*v1)->retired);
  // A copy that cannot be had: the stage fails, naming why.
  plan.set_model_copy("missing");
  absl::Status s = host.ApplyPlans({plan});
  EXPECT_THAT(s.message(), ::testing::HasSubstr("not registered"));
}

// A plan giving the device zero blocks: the server's stage starts at
// block 0 and embeds (token ids come to it); the same blocks after a
// device block would not.
TEST(StageHostTest, AStageFromBlockZeroEmbeds) {
  const std::string dir = testing::TinyModel(Arch::kLlama);
  StageHost host(OnNodeS());
  v1::Plan plan = TwoStagePlan(dir, false);
  plan.mutable_stages(0)->set_last_block(0);
  plan.mutable_stages(1)->set_first_block(0);
  ASSERT_TRUE(host.ApplyPlans({plan, TwoStagePlan(dir, false)}).ok());
  auto whole = host.Find("m", 0, 4);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_TRUE((*whole)->model->spec().embedding);
  EXPECT_TRUE((*whole)->model->spec().head);
  EXPECT_FALSE((*host.Find("m", 1, 4))->model->spec().embedding);
}

// A server full of jobs nobody uses (junk ids, finished runs) makes room
// for a new one; jobs held by sessions are never forgotten.
TEST(TrainingJobsTest, IdleJobsWhoseStateIsSafeMakeRoom) {
  const std::string dir = testing::TinyModel(Arch::kLlama);
  StageHost host(OnNodeS());
  ASSERT_TRUE(host.ApplyPlans({TwoStagePlan(dir, false)}).ok());
  auto stage = host.Find("m", 1, 4);
  ASSERT_TRUE(stage.ok()) << stage.status();
  TrainingJobs jobs(testing::TempDir("jobs_room"));
  auto spec = [](const std::string& id) {
    v1::TrainingSpec s;
    s.set_job_id(id);
    s.set_rank(2);
    s.set_alpha(4);
    s.add_target_modules("q_proj");
    s.set_first_trained_block(1);
    s.set_last_trained_block(4);
    s.set_seed(1);
    s.set_devices(1);
    s.mutable_optimizer()->set_lr(1e-3);
    s.mutable_optimizer()->set_beta1(0.9);
    s.mutable_optimizer()->set_beta2(0.999);
    s.mutable_optimizer()->set_eps(1e-8);
    return s;
  };
  std::vector<std::shared_ptr<TrainingJob>> held;
  for (size_t i = 0; i < kMaxTrainingJobs; ++i) {
    auto j = jobs.Get(spec(absl::StrCat("junk", i)), "m", *stage);
    ASSERT_TRUE(j.ok()) << j.status();
    if (i % 2 == 0) held.push_back(*j);  // Half are in use.
  }
  // Full: the new job takes the place of an idle one.
  auto fresh = jobs.Get(spec("fresh"), "m", *stage);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  held.push_back(*fresh);
  // Only held jobs left: the next is refused, naming why.
  for (size_t i = 0; i < kMaxTrainingJobs / 2; ++i) {
    auto j = jobs.Get(spec(absl::StrCat("more", i)), "m", *stage);
    if (!j.ok()) break;
    held.push_back(*j);
  }
  auto refused = jobs.Get(spec("one-too-many"), "m", *stage);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  // A held job is still the same object (never forgotten).
  auto again = jobs.Get(spec("junk0"), "m", *stage);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->get(), held.front().get());
}

}  // namespace
}  // namespace edgesplit
