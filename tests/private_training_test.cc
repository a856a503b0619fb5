// Private split fine-tuning end to end (U-shaped; device block frozen, or
// trained under DP-SGD):
// what the first server receives -- activations and the gradients of the
// device's loss -- is noised, never the rows the device computed; a
// window's activations are released once and resent on later uses; the
// run reports the epsilon it was calibrated for and spent; settings that
// cannot be honoured are refused.
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/synchronization/mutex.h"
#include "device_agent/cli/commands.h"
#include "edgesplit/device_agent.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "privacy/row_noise.h"
#include "proto/tensor_codec.h"
#include "runtime/lora.h"
#include "runtime/model_store.h"
#include "runtime/stage_model.h"
#include "testing/cluster.h"
#include "testing/test_models.h"
#include "tests/split_util.h"

namespace edgesplit {
namespace {

using ::edgesplit::testing::Cluster;
using ::edgesplit::testing::ClusterOptions;
using ::edgesplit::testing::ClusterPlan;
using ::testing::HasSubstr;

using Rows = std::vector<std::vector<float>>;

std::string RealModel() { return testing::SharedDir() + "/models/stories260K"; }

Rows ToRows(const v1::Tensor& t) {
  auto m = wire::Decode(t, 0, "tapped");
  EXPECT_TRUE(m.ok()) << m.status();
  Rows out;
  for (int64_t i = 0; m.ok() && i < m->size(0); ++i) {
    at::Tensor r = (*m)[i].contiguous();
    out.emplace_back(r.data_ptr<float>(), r.data_ptr<float>() + r.numel());
  }
  return out;
}

// What server "a" received from the device: training forwards' rows by
// micro-batch, and backwards' gradient rows.
struct Received {
  absl::Mutex mu;
  std::vector<Rows> train_forwards ABSL_GUARDED_BY(mu);
  std::vector<Rows> eval_forwards ABSL_GUARDED_BY(mu);
  std::vector<Rows> gradients ABSL_GUARDED_BY(mu);
};

class PrivateTrainingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    received_ = new Received();
    ClusterOptions o;
    o.tls = false;
    o.request_tap = [](const std::string& node, const v1::StageRequest& r) {
      if (node != "a") return;
      absl::MutexLock lock(&received_->mu);
      if (r.has_forward() && r.forward().has_hidden()) {
        (r.forward().train() ? received_->train_forwards
                             : received_->eval_forwards)
            .push_back(ToRows(r.forward().hidden()));
      } else if (r.has_backward() && r.backward().has_grad_output()) {
        received_->gradients.push_back(ToRows(r.backward().grad_output()));
      }
    };
    std::vector<ClusterPlan> plans = {
        {"real-u",
         RealModel(),
         true,
         {{"device", 0, 1}, {"a", 1, 3}, {"b", 3, 5}}},
        {"real-2way", RealModel(), false, {{"device", 0, 1}, {"a", 1, 5}}},
        {"real-floor",
         RealModel(),
         true,
         {{"device", 0, 1}, {"a", 1, 5}},
         {},
         {},
         "privacy: {max_epsilon: 4}\n"},
    };
    auto c = Cluster::Start(testing::TempDir("private_train"), plans, o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = c->release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete received_;
  }

  static std::unique_ptr<DeviceAgent> Agent() {
    DeviceAgentOptions o;
    o.controller = cluster_->controller_address();
    o.insecure = true;
    auto a = DeviceAgent::Connect(o);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? std::move(*a) : nullptr;
  }

  static TrainingOptions Private(const std::string& job) {
    TrainingOptions t;
    t.job_id = job;
    t.u_shaped = true;
    t.first_trained_block = 1;  // The device's block [0, 1) stays frozen.
    t.rank = 4;
    t.lr = 1e-3;
    t.privacy.epsilon = 8;
    t.privacy.delta = 1e-5;
    t.privacy.clip = 3.0;
    t.privacy.grad_clip = 0.01;
    return t;
  }

  static Cluster* cluster_;
  static Received* received_;
};
Cluster* PrivateTrainingTest::cluster_ = nullptr;
Received* PrivateTrainingTest::received_ = nullptr;

TEST_F(PrivateTrainingTest, TheServerReceivesOnlyNoisedRowsAndEpsilonIsKept) {
  auto agent = Agent();
  auto trainer = agent->StartTraining("real-u", Private("private-job"));
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto ids = (*trainer)->Tokenize(
      "Once upon a time, there was a little girl named Lily. She loved to "
      "play outside in the park with her friends and her dog.");
  ASSERT_TRUE(ids.ok());
  ASSERT_GE(ids->size(), 34u);
  const std::vector<int32_t> w0(ids->begin(), ids->begin() + 17);
  const std::vector<int32_t> w1(ids->begin() + 17, ids->begin() + 34);
  TrainingRunOptions run;
  run.batches = {{w0}, {w1}};
  run.steps = 3;  // w0 is used twice, w1 once.
  run.eval_windows = {w1};
  run.eval_every = 3;  // Before the first update and after the last.
  run.checkpoint_every = 0;
  {
    absl::MutexLock lock(&received_->mu);
    received_->train_forwards.clear();
    received_->eval_forwards.clear();
    received_->gradients.clear();
  }
  // Step and Evaluate alone would release without a calibration.
  EXPECT_EQ((*trainer)->Step({w0}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  std::vector<double> eval_eps;
  TrainingRunCallbacks cb;
  cb.on_eval = [&](int64_t, double) {
    eval_eps.push_back((*trainer)->privacy_epsilon_spent());
  };
  auto result = (*trainer)->Run(run, cb);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->step, 3);
  // Calibrated for the most exposed window: w0, 16 activation rows once
  // plus 16 gradient rows per use (2 uses + 1 replay allowance).
  EXPECT_LE(result->privacy_epsilon, 8);
  EXPECT_GT(result->privacy_epsilon, 7.99);
  auto sigma = privacy::RowNoiseForEpsilon(8, 1e-5, 16 * (1 + 3));
  ASSERT_TRUE(sigma.ok());
  EXPECT_NEAR(result->noise_multiplier, *sigma, 1e-9);
  // Spent: w0's 16 + 2 x 16 rows.
  auto spent = privacy::RowsEpsilon(48, *sigma, 1e-5);
  ASSERT_TRUE(spent.ok());
  EXPECT_NEAR(result->privacy_epsilon_spent, *spent, 1e-9);
  EXPECT_LT(result->privacy_epsilon_spent, result->privacy_epsilon);
  EXPECT_EQ(eval_eps.size(), 2u);  // Before the first update, after the last.
  EXPECT_GT(eval_eps[0], 0);

  absl::MutexLock lock(&received_->mu);
  ASSERT_EQ(received_->train_forwards.size(), 3u);
  ASSERT_EQ(received_->eval_forwards.size(), 2u);
  ASSERT_EQ(received_->gradients.size(), 3u);
  // w0's activations: released once, the same rows on its second use.
  EXPECT_EQ(received_->train_forwards[0], received_->train_forwards[2]);
  // w1's: the evaluation's release is the training's.
  EXPECT_EQ(received_->eval_forwards[0], received_->train_forwards[1]);
  EXPECT_EQ(received_->eval_forwards[1], received_->train_forwards[1]);
  // None is what the device computed; the noise has the calibrated scale.
  for (const auto& [window, got] :
       {std::pair{w0, received_->train_forwards[0]},
        std::pair{w1, received_->train_forwards[1]}}) {
    const Rows raw = testing::DeviceStageRows(RealModel(), 1, window);
    ASSERT_EQ(got.size(), raw.size());
    for (size_t i = 0; i < got.size(); ++i) {
      for (size_t j = 0; j < got[i].size(); ++j) {
        ASSERT_NE(got[i][j], raw[i][j]) << "row " << i << " left unnoised";
      }
    }
  }
  // Gradients: clipped to 0.01, so what arrives is almost all noise of
  // stddev sigma x 0.01; the two uses of w0 are separate releases.
  double sq = 0, n = 0;
  for (const Rows& g : received_->gradients) {
    for (const auto& row : g) {
      for (float x : row) {
        sq += double{x} * x;
        n += 1;
      }
    }
  }
  EXPECT_NEAR(std::sqrt(sq / n), *sigma * 0.01, 0.1 * *sigma * 0.01);
  EXPECT_NE(received_->gradients[0], received_->gradients[2]);

  // One private run per trainer: a second would spend again uncounted.
  TrainingRunOptions more = run;
  more.steps = 4;
  EXPECT_THAT(std::string((*trainer)->Run(more).status().message()),
              HasSubstr("one private run per training session"));
}

// The device's factors after a Run of `t` (one update, one averaging
// round) on real-2way, by PEFT module name, and the servers' too.
std::map<std::string, at::Tensor> Trained(DeviceAgent& agent,
                                          const TrainingOptions& t,
                                          const std::vector<int32_t>& window,
                                          TrainingRunResult* result) {
  std::map<std::string, at::Tensor> out;
  auto trainer = agent.StartTraining("real-2way", t);
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  if (!trainer.ok()) return out;
  TrainingRunOptions run;
  run.batches = {{window}};
  run.steps = 1;
  auto r = (*trainer)->Run(run);
  EXPECT_TRUE(r.ok()) << r.status();
  if (r.ok()) *result = *r;
  const std::string dir = testing::TempDir("avg_" + t.job_id);
  EXPECT_TRUE((*trainer)->Export(dir).ok());
  auto store = ModelStore::Open(RealModel());
  auto adapter = LoraAdapter::LoadPeft(dir, (*store)->config(), "x");
  EXPECT_TRUE(adapter.ok()) << adapter.status();
  if (!adapter.ok()) return out;
  for (const auto& [name, f] : (*adapter)->modules()) {
    out[name + ".A"] = f.a;
    out[name + ".B"] = f.b;
  }
  return out;
}

TEST_F(PrivateTrainingTest, AveragingUploadsAreClippedAndNoisedPerDevice) {
  auto agent = Agent();
  auto ids = agent->StartTraining("real-2way", [] {
    TrainingOptions t;
    t.job_id = "tokenizer-only";
    return t;
  }());
  ASSERT_TRUE(ids.ok());
  auto window = (*ids)->Tokenize("Once upon a time, there was a little girl.");
  ASSERT_TRUE(window.ok());
  TrainingOptions t;
  t.mode = "sfl";
  t.devices = 1;
  t.average_every = 1;
  t.rank = 4;
  t.seed = 5;
  t.lr = 1e-3;
  t.job_id = "avg-plain";
  TrainingRunResult plain_result, noisy_result;
  auto plain = Trained(*agent, t, *window, &plain_result);
  t.job_id = "avg-private";
  t.averaging_privacy.epsilon = 8;
  t.averaging_privacy.clip = 0.5;  // Above the update's norm: not clipped.
  auto noisy = Trained(*agent, t, *window, &noisy_result);
  ASSERT_EQ(plain.size(), noisy.size());
  ASSERT_FALSE(plain.empty());
  // One round sent (an allowance of one more, for a replay).
  EXPECT_EQ(noisy_result.private_rounds, 1);
  auto sigma = privacy::RowNoiseForEpsilon(8, 1e-5, 2);
  ASSERT_TRUE(sigma.ok());
  EXPECT_NEAR(noisy_result.averaging_noise_multiplier, *sigma, 1e-9);
  EXPECT_LE(noisy_result.averaging_epsilon, 8);
  // The servers' factors are the same update in both runs; the device's
  // block 0 factors differ by the upload's noise, of stddev sigma x clip.
  double sq = 0, n = 0;
  for (const auto& [name, want] : plain) {
    const at::Tensor diff = noisy[name] - want;
    if (name.find("layers.0.") == std::string::npos) {
      EXPECT_LT(diff.abs().max().item<double>(), 1e-6) << name;
      continue;
    }
    sq += diff.pow(2).sum().item<double>();
    n += diff.numel();
  }
  ASSERT_GT(n, 1000);
  EXPECT_NEAR(std::sqrt(sq / n), *sigma * 0.5, 0.05 * *sigma * 0.5);
}

// DP-SGD lets private training train the device's block: its activations
// are computed afresh from private factors, so each send is a new release;
// the run's charge composes the cut's and DP-SGD's.
TEST_F(PrivateTrainingTest, DeviceBlocksTrainUnderDpSgdWithFreshReleases) {
  DeviceAgentOptions ao;
  ao.controller = cluster_->controller_address();
  ao.insecure = true;
  ao.privacy_budget_file = testing::TempDir("dp_budget") + "/budget.json";
  ao.privacy_budget_epsilon = 1000;
  auto agent = DeviceAgent::Connect(ao);
  ASSERT_TRUE(agent.ok()) << agent.status();
  TrainingOptions t = Private("dp-sgd-job");
  t.first_trained_block = 0;  // The device's block trains.
  t.device_privacy.epsilon = 8;
  t.device_privacy.clip = 0.05;
  auto trainer = (*agent)->StartTraining("real-u", t);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto ids = (*trainer)->Tokenize(
      "Once upon a time, there was a little girl named Lily. She loved to "
      "play outside in the park with her friends and her dog.");
  ASSERT_TRUE(ids.ok());
  const std::vector<int32_t> w0(ids->begin(), ids->begin() + 17);
  const std::vector<int32_t> w1(ids->begin() + 17, ids->begin() + 34);
  TrainingRunOptions run;
  run.batches = {{w0}, {w1}};
  run.steps = 3;  // w0 is used twice, w1 once.
  run.eval_windows = {w1};
  run.eval_every = 3;  // Before the first update and after the last.
  run.checkpoint_every = 0;
  {
    absl::MutexLock lock(&received_->mu);
    received_->train_forwards.clear();
    received_->eval_forwards.clear();
    received_->gradients.clear();
  }
  auto result = (*trainer)->Run(run);
  ASSERT_TRUE(result.ok()) << result.status();
  // DP-SGD: w0's 2 uses + 1 replay allowance.
  auto dp_sigma = privacy::RowNoiseForEpsilon(8, 1e-5, 3);
  ASSERT_TRUE(dp_sigma.ok());
  EXPECT_NEAR(result->device_noise_multiplier, *dp_sigma, 1e-9);
  EXPECT_LE(result->device_epsilon, 8);
  EXPECT_EQ(result->device_examples, 3);
  // The cut, fresh releases: w1 (16 rows) sends 1 + 1 replay training
  // forwards and 2 + 1 evaluations, and 2 gradient releases: 16 x 7 rows.
  auto cut_sigma = privacy::RowNoiseForEpsilon(8, 1e-5, 16 * 7);
  ASSERT_TRUE(cut_sigma.ok());
  EXPECT_NEAR(result->noise_multiplier, *cut_sigma, 1e-9);
  // One charge: both mechanisms composed.
  auto rdp = privacy::RowsRdp(16 * 7, *cut_sigma, privacy::DefaultOrders());
  auto more = privacy::RowsRdp(3, *dp_sigma, privacy::DefaultOrders());
  ASSERT_TRUE(rdp.ok() && more.ok());
  for (size_t i = 0; i < rdp->size(); ++i) (*rdp)[i] += (*more)[i];
  auto total = privacy::EpsilonFromRdp(privacy::DefaultOrders(), *rdp, 1e-5);
  ASSERT_TRUE(total.ok());
  EXPECT_NEAR(result->budget_epsilon_spent, total->epsilon, 1e-9);
  EXPECT_GT(total->epsilon, 8);

  absl::MutexLock lock(&received_->mu);
  ASSERT_EQ(received_->train_forwards.size(), 3u);
  ASSERT_EQ(received_->eval_forwards.size(), 2u);
  // Every send is a fresh release: w0's two uses differ, as do w1's
  // training send and evaluations.
  EXPECT_NE(received_->train_forwards[0], received_->train_forwards[2]);
  EXPECT_NE(received_->eval_forwards[0], received_->train_forwards[1]);
  EXPECT_NE(received_->eval_forwards[0], received_->eval_forwards[1]);
  const Rows raw = testing::DeviceStageRows(RealModel(), 1, w0);
  const Rows& got = received_->train_forwards[0];
  ASSERT_EQ(got.size(), raw.size());
  for (size_t i = 0; i < got.size(); ++i) {
    for (size_t j = 0; j < got[i].size(); ++j) {
      ASSERT_NE(got[i][j], raw[i][j]) << "row " << i << " left unnoised";
    }
  }
}

// `train --mode sfl` reports its averaging rounds and how many averaged
// this device's factors (all, alone in its job).
TEST_F(PrivateTrainingTest, TheCliReportsItsAveragingRounds) {
  const std::string tmp = testing::TempDir("sfl_cli");
  {
    std::ofstream text(tmp + "/text.txt");
    for (int i = 0; i < 8; ++i) {
      text << "Once upon a time, there was a little girl named Lily. " << i
           << "\n";
    }
  }
  std::ostringstream out, err;
  const int code = cli::Run({"train",
                             "--controller",
                             cluster_->controller_address(),
                             "--insecure",
                             "--model-id",
                             "real-2way",
                             "--data",
                             tmp + "/text.txt",
                             "--checkpoint-dir",
                             tmp + "/ckpt",
                             "--job",
                             "cli-sfl",
                             "--seq-len",
                             "16",
                             "--batch-tokens",
                             "32",
                             "--steps",
                             "4",
                             "--eval-every",
                             "0",
                             "--mode",
                             "sfl",
                             "--average-every",
                             "2"},
                            out, err);
  ASSERT_EQ(code, 0) << err.str();
  EXPECT_THAT(out.str(),
              HasSubstr("averaging: 2 rounds, this device's factors in 2"));
}

TEST_F(PrivateTrainingTest, TheCliTrainsPrivatelyAndReportsEachEpsilon) {
  const std::string tmp = testing::TempDir("private_cli");
  {
    std::ofstream text(tmp + "/text.txt");
    for (int i = 0; i < 8; ++i) {
      text << "Once upon a time, there was a little girl named Lily. She "
              "loved to play outside in the park with her friends. "
           << i << "\n";
    }
  }
  std::ostringstream out, err;
  const int code = cli::Run({"train",
                             "--controller",
                             cluster_->controller_address(),
                             "--insecure",
                             "--model-id",
                             "real-u",
                             "--data",
                             tmp + "/text.txt",
                             "--checkpoint-dir",
                             tmp + "/ckpt",
                             "--job",
                             "cli-private",
                             "--seq-len",
                             "16",
                             "--batch-tokens",
                             "32",
                             "--steps",
                             "2",
                             "--eval-every",
                             "0",
                             "--u-shaped",
                             "--privacy-epsilon",
                             "8",
                             "--privacy-clip",
                             "3",
                             "--privacy-grad-clip",
                             "0.01",
                             "--device-privacy-epsilon",
                             "8",
                             "--device-privacy-clip",
                             "0.05",
                             "--privacy-budget",
                             tmp + "/budget.json",
                             "--privacy-budget-epsilon",
                             "1000"},
                            out, err);
  ASSERT_EQ(code, 0) << err.str();
  EXPECT_THAT(out.str(), HasSubstr("device privacy (DP-SGD): epsilon"));
  EXPECT_THAT(out.str(), HasSubstr("privacy: epsilon"));
  EXPECT_THAT(out.str(), HasSubstr("privacy budget: epsilon"));
}

TEST_F(PrivateTrainingTest, SettingsThatCannotBeHonouredAreRefused) {
  auto agent = Agent();
  TrainingOptions t = Private("refused");
  t.u_shaped = false;
  auto r = agent->StartTraining("real-2way", t);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("labels"));
  t = Private("refused");
  t.first_trained_block = 0;  // The device's block would train.
  r = agent->StartTraining("real-u", t);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("frozen"));
  // The operator's floor: epsilon 8 is not private enough for real-floor.
  r = agent->StartTraining("real-floor", Private("floor-refused"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("requires privacy with epsilon <= 4"));
  t = Private("floor-ok");
  t.privacy.epsilon = 4;
  EXPECT_TRUE(agent->StartTraining("real-floor", t).ok());
  TrainingOptions sl;
  sl.job_id = "refused-sl";
  sl.averaging_privacy.epsilon = 8;
  sl.averaging_privacy.clip = 1;
  r = agent->StartTraining("real-2way", sl);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("averages nothing"));
  t = Private("refused");
  t.privacy.grad_clip = 0;
  r = agent->StartTraining("real-u", t);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("grad_clip 0"));
  // DP-SGD on a frozen device, and beside servers that learn from raw rows.
  t = Private("refused-dp-frozen");
  t.device_privacy.epsilon = 8;
  t.device_privacy.clip = 1;
  r = agent->StartTraining("real-u", t);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("are frozen"));
  TrainingOptions d;
  d.job_id = "refused-dp-raw";
  d.device_privacy.epsilon = 8;
  d.device_privacy.clip = 1;
  r = agent->StartTraining("real-2way", d);
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("needs cut privacy too"));
  d.device_privacy.clip = 0;
  r = agent->StartTraining("real-2way", d);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace edgesplit
