// DP-SGD of the device's factors inside a split step (SplitTrainer with a
// privacy::DpSgd): what the device's optimizer takes is the mean of each
// window's own gradient, clipped, plus noise -- checked against the
// gradients of a trainer without DP-SGD on a loopback cluster. And the
// settings whose guarantee would not hold are refused.
#include <algorithm>
#include <cmath>

#include "device_agent/split_trainer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "privacy/dp_sgd.h"
#include "privacy/training_privatizer.h"
#include "runtime/model_store.h"
#include "testing/cluster.h"
#include "testing/test_models.h"
#include "tests/training_util.h"

namespace edgesplit {
namespace {

using ::edgesplit::testing::Cluster;
using ::edgesplit::testing::ClusterPlan;
using ::edgesplit::testing::RandomWindows;
using ::edgesplit::testing::Route;
using ::testing::HasSubstr;

std::string Key(const at::Tensor& w) {
  const at::Tensor ids = w.to(at::kLong).contiguous();
  return privacy::TrainingPrivatizer::Key(
      {ids.data_ptr<int64_t>(), static_cast<size_t>(ids.numel())});
}

std::vector<float> Sorted(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v;
}

double Norm(const std::vector<float>& v) {
  double sq = 0;
  for (float x : v) sq += double{x} * x;
  return std::sqrt(sq);
}

class DpSgdSplitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TinyModel(Arch::kGpt2);
    auto store = ModelStore::Open(dir_);
    ASSERT_TRUE(store.ok());
    store_ = std::move(*store);
    n_ = store_->config().num_layers;
    plan_ = {"m", dir_, false, {{"device", 0, 1}, {"a", 1, n_}}};
    auto c = Cluster::Start(testing::TempDir("dp_sgd_split"), {plan_});
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
    stubs_ = std::make_unique<StageStubCache>(
        64 << 20, cluster_->DeviceSecurity("device"));
  }

  // Only the device's block trains (the servers are frozen), lr 0 so the
  // factors stay put between steps.
  absl::StatusOr<std::unique_ptr<SplitTrainer>> Open(const std::string& session,
                                                     privacy::DpSgd* dp,
                                                     int64_t last = 1) {
    locals_.push_back(*StageModel::Load(*store_, {{0, 1}, true, false}));
    SplitTrainerOptions so;
    so.session_id = session;
    so.model_id = "m";
    so.spec = testing::Spec(Arch::kGpt2, "dp-" + session, n_);
    so.spec.set_last_trained_block(last);
    so.spec.mutable_optimizer()->set_lr(0);
    so.route = Route(*cluster_, plan_);
    so.grant = cluster_->Grant(so.session_id, so.model_id, so.route, so.codec,
                               false, so.spec.job_id());
    so.dp_sgd = dp;
    return SplitTrainer::Open(
        locals_.back().get(), nullptr,
        *stubs_->Get(so.route[0].address(), so.route[0].node()), so);
  }

  std::string dir_;
  std::unique_ptr<ModelStore> store_;
  int64_t n_ = 0;
  ClusterPlan plan_;
  std::unique_ptr<Cluster> cluster_;
  std::unique_ptr<StageStubCache> stubs_;
  std::vector<std::unique_ptr<StageModel>> locals_;
};

TEST_F(DpSgdSplitTest, TheUpdateIsTheMeanOfEachWindowsClippedGradient) {
  const auto windows = RandomWindows(store_->config().vocab_size, 2, 3);
  // The truth: a plain trainer's accumulated device gradients of w0 alone.
  auto plain = Open("plain", nullptr);
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE((*plain)->ForwardBackward({windows[0]}).ok());
  AdapterTensors factors, grads;
  ASSERT_TRUE((*plain)->Export(&factors, &grads).ok());
  std::vector<float> truth;
  for (const auto& [name, g] : grads) {
    if (name.find(".h.0.") == std::string::npos) continue;  // Servers'.
    const at::Tensor c = g.contiguous();
    truth.insert(truth.end(), c.data_ptr<float>(),
                 c.data_ptr<float>() + c.numel());
  }
  ASSERT_GT(truth.size(), 100u);

  // Each window alone, unclipped and (almost) without noise.
  const double quiet = 1e-9;
  privacy::DpSgd loose(1e6, privacy::NoiseSource::Seeded(1));
  ASSERT_TRUE(
      loose.Calibrate(quiet / 1e6, {{Key(windows[0]), 1}, {Key(windows[1]), 1}})
          .ok());
  auto t = Open("loose", &loose);
  ASSERT_TRUE(t.ok()) << t.status();
  std::vector<std::vector<float>> own;
  for (const at::Tensor& w : windows) {
    ASSERT_TRUE((*t)->ForwardBackward({w}).ok());
    ASSERT_TRUE((*t)->ApplyStep(false).ok());
    own.push_back(loose.last_release());
  }
  // The same values as the plain trainer's (the layouts differ in order).
  ASSERT_EQ(own[0].size(), truth.size());
  const std::vector<float> a = Sorted(own[0]), b = Sorted(truth);
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-6);

  // Both in one step, clipped below either's norm: the mean of the two
  // gradients each scaled to the clip.
  const double clip = 0.5 * std::min(Norm(own[0]), Norm(own[1]));
  privacy::DpSgd tight(clip, privacy::NoiseSource::Seeded(2));
  ASSERT_TRUE(
      tight.Calibrate(quiet, {{Key(windows[0]), 1}, {Key(windows[1]), 1}})
          .ok());
  auto both = Open("tight", &tight);
  ASSERT_TRUE(both.ok()) << both.status();
  ASSERT_TRUE((*both)->ForwardBackward(windows).ok());
  ASSERT_TRUE((*both)->ApplyStep(false).ok());
  const std::vector<float>& got = tight.last_release();
  ASSERT_EQ(got.size(), own[0].size());
  const double s0 = clip / Norm(own[0]), s1 = clip / Norm(own[1]);
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], 0.5 * (s0 * own[0][i] + s1 * own[1][i]), 1e-6) << i;
  }
  EXPECT_EQ(tight.clipped(), 2);
  // Each window had one use: a second step with them is refused.
  ASSERT_EQ((*both)->ForwardBackward(windows).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(DpSgdSplitTest, RefusesWhereTheGuaranteeWouldNotHold) {
  privacy::DpSgd dp(1.0, privacy::NoiseSource::Seeded(1));
  // The servers' blocks train from this device's raw activations.
  auto t = Open("servers-train", &dp, n_);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(t.status().message()),
              HasSubstr("needs cut privacy too"));
  // Nothing of the device's trains.
  locals_.push_back(*StageModel::Load(*store_, {{0, 1}, true, false}));
  SplitTrainerOptions so;
  so.session_id = "frozen";
  so.model_id = "m";
  so.spec = testing::Spec(Arch::kGpt2, "dp-frozen", n_);
  so.spec.set_first_trained_block(1);
  so.spec.set_last_trained_block(n_);
  so.route = Route(*cluster_, plan_);
  so.grant = cluster_->Grant(so.session_id, so.model_id, so.route, so.codec,
                             false, so.spec.job_id());
  so.dp_sgd = &dp;
  t = SplitTrainer::Open(
      locals_.back().get(), nullptr,
      *stubs_->Get(so.route[0].address(), so.route[0].node()), so);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("are frozen"));
}

}  // namespace
}  // namespace edgesplit
