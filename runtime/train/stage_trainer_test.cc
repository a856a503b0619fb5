#include "runtime/train/stage_trainer.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model_store.h"
#include "runtime/train/checkpoints.h"
#include "runtime/train/pipeline_schedule.h"
#include "testing/run_schedule.h"
#include "testing/test_models.h"

namespace edgesplit {
namespace {

// Every linear module of every block.
LoraConfig AllLinears(Arch arch) {
  LoraConfig c;
  c.r = 4;
  c.alpha = 8;
  c.target_modules = arch == Arch::kGpt2
                         ? std::vector<std::string>{"c_attn", "c_proj", "c_fc"}
                         : std::vector<std::string>{
                               "q_proj",    "k_proj",  "v_proj",   "o_proj",
                               "gate_proj", "up_proj", "down_proj"};
  return c;
}

struct Chain {
  std::vector<std::unique_ptr<StageModel>> stages;
  std::vector<std::shared_ptr<LoraAdapter>> slices;
  std::vector<std::unique_ptr<StageTrainer>> trainers;
};

// Stages with `specs`, each training its slice of one adapter (the same
// initial values for every chain: same seed).
Chain MakeChain(const ModelStore& store, Arch arch,
                const std::vector<StageSpec>& specs) {
  Chain c;
  const ModelConfig& config = store.config();
  auto adapter = LoraAdapter::Create(config, AllLinears(arch),
                                     {0, config.num_layers}, /*seed=*/5, "a",
                                     /*zero_b=*/false);
  EXPECT_TRUE(adapter.ok()) << adapter.status();
  for (const StageSpec& spec : specs) {
    auto stage = StageModel::Load(store, spec);
    EXPECT_TRUE(stage.ok()) << stage.status();
    std::shared_ptr<LoraAdapter> slice = (*adapter)->Slice(config, spec.blocks);
    EXPECT_TRUE((*stage)->AttachAdapter(slice).ok());
    auto trainer = StageTrainer::Create(stage->get(), slice);
    EXPECT_TRUE(trainer.ok()) << trainer.status();
    c.stages.push_back(*std::move(stage));
    c.slices.push_back(slice);
    c.trainers.push_back(*std::move(trainer));
  }
  return c;
}

// One micro-batch through the chain: forward stage by stage, the loss on
// the last, gradients back. Returns the loss.
double TrainMicroBatch(Chain& c, uint64_t id, const at::Tensor& tokens,
                       const at::Tensor& labels) {
  at::Tensor h;
  const size_t n = c.trainers.size();
  for (size_t i = 0; i + 1 < n; ++i) {
    StageInput in;
    if (i == 0) {
      in.tokens = tokens;
    } else {
      in.hidden = h;
    }
    auto out = c.trainers[i]->Forward(id, in);
    EXPECT_TRUE(out.ok()) << out.status();
    h = *out;
  }
  StageInput last;
  if (n == 1) {
    last.tokens = tokens;
  } else {
    last.hidden = h;
  }
  at::Tensor grad;
  auto loss = c.trainers.back()->ForwardBackwardLoss(id, last, labels, &grad);
  EXPECT_TRUE(loss.ok()) << loss.status();
  for (size_t i = n - 1; i-- > 0;) {
    auto g = c.trainers[i]->Backward(id, grad);
    EXPECT_TRUE(g.ok()) << g.status();
    grad = *g;
  }
  return *loss;
}

void Step(Chain& c, const AdamWOptions& o, int64_t step) {
  double sq = 0;
  for (auto& t : c.trainers) sq += t->GradSquaredNorm();
  const double norm = std::sqrt(sq);
  const double scale = o.max_grad_norm > 0 && norm > o.max_grad_norm
                           ? o.max_grad_norm / norm
                           : 1.0;
  for (auto& t : c.trainers) t->Step(o, step, scale);
}

std::map<std::string, at::Tensor> Grads(const Chain& c) {
  std::map<std::string, at::Tensor> all;
  for (const auto& t : c.trainers) {
    for (auto& [k, v] : t->Gradients()) all[k] = v.clone();
  }
  return all;
}

class SplitTrainingTest
    : public ::testing::TestWithParam<std::tuple<Arch, bool>> {};

TEST_P(SplitTrainingTest, SplitStepsEqualTheWholeModelsSteps) {
  const auto [arch, u_shaped] = GetParam();
  auto store = ModelStore::Open(testing::TinyModel(arch));
  ASSERT_TRUE(store.ok());
  const int64_t n = (*store)->config().num_layers;
  ASSERT_GE(n, 4);
  Chain whole = MakeChain(**store, arch, {{{0, n}, true, true}});
  // Device [0,1) -> server [1,3) -> server [3,n) + head, or U-shaped:
  // device [0,1) -> server [1,n) -> device head.
  std::vector<StageSpec> specs =
      u_shaped ? std::vector<StageSpec>{{{0, 1}, true, false},
                                        {{1, n}, false, false},
                                        {{n, n}, false, true}}
               : std::vector<StageSpec>{{{0, 1}, true, false},
                                        {{1, 3}, false, false},
                                        {{3, n}, false, true}};
  Chain split = MakeChain(**store, arch, specs);

  const int64_t vocab = (*store)->config().vocab_size;
  at::manual_seed(11);
  AdamWOptions o;
  o.lr = 1e-2;
  o.warmup_steps = 2;
  o.total_steps = 6;
  o.max_grad_norm = 0.5;  // Small enough to clip: the global norm matters.
  for (int64_t step = 0; step < 6; ++step) {
    // Two micro-batches of different lengths, gradients accumulated.
    for (uint64_t mb = 0; mb < 2; ++mb) {
      const int64_t len = 7 + 3 * mb;
      at::Tensor ids = at::randint(vocab, {len + 1}, at::kLong);
      at::Tensor tokens = ids.slice(0, 0, len);
      at::Tensor labels = ids.slice(0, 1, len + 1).clone();
      labels[0] = -100;  // Ignored positions count nowhere.
      const double a = TrainMicroBatch(whole, mb, tokens, labels);
      const double b = TrainMicroBatch(split, mb, tokens, labels);
      EXPECT_NEAR(a, b, 1e-5) << "step " << step;
    }
    const auto ga = Grads(whole), gb = Grads(split);
    ASSERT_EQ(ga.size(), gb.size());
    ASSERT_FALSE(ga.empty());
    for (const auto& [name, g] : ga) {
      ASSERT_TRUE(gb.count(name)) << name;
      EXPECT_LE((g - gb.at(name)).abs().max().item<double>(), 1e-5) << name;
    }
    Step(whole, o, step);
    Step(split, o, step);
  }
  // After the updates the adapters are the same, factor by factor.
  int compared = 0;
  for (const auto& [module, f] : whole.slices[0]->modules()) {
    for (const auto& slice : split.slices) {
      const LoraFactors* g = slice->Find(module);
      if (g == nullptr) continue;
      EXPECT_LE((f.a - g->a).abs().max().item<double>(), 1e-5) << module;
      EXPECT_LE((f.b - g->b).abs().max().item<double>(), 1e-5) << module;
      ++compared;
    }
  }
  EXPECT_EQ(compared, static_cast<int>(whole.slices[0]->modules().size()));
  EXPECT_EQ(whole.trainers[0]->pending(), 0);
}

INSTANTIATE_TEST_SUITE_P(
    BothArchitectures, SplitTrainingTest,
    ::testing::Combine(::testing::Values(Arch::kGpt2, Arch::kLlama),
                       ::testing::Bool()),
    [](const auto& info) {
      return std::string(ArchName(std::get<0>(info.param))) +
             (std::get<1>(info.param) ? "_u_shaped" : "_three_stages");
    });

TEST(PipelineScheduleTest, OneFOneBIsCompleteBoundedAndDeadlockFree) {
  for (int p = 1; p <= 5; ++p) {
    for (int m = 1; m <= 9; ++m) {
      const auto schedule = OneFOneBSchedule(p, m);
      ASSERT_EQ(schedule.size(), static_cast<size_t>(p));
      for (int s = 0; s < p; ++s) {
        // Every micro-batch forward then backward, once each.
        std::vector<int> f(m, 0), b(m, 0);
        int in_flight = 0, peak = 0;
        for (const PipelineOp& op : schedule[s]) {
          (op.forward ? f : b)[op.micro_batch]++;
          if (!op.forward) {
            EXPECT_EQ(f[op.micro_batch], 1);
          }
          in_flight += op.forward ? 1 : -1;
          peak = std::max(peak, in_flight);
        }
        EXPECT_EQ(f, std::vector<int>(m, 1));
        EXPECT_EQ(b, std::vector<int>(m, 1));
        // 1F1B's memory bound: at most p - s activations held.
        EXPECT_LE(peak, std::min(p - s, m)) << "p=" << p << " m=" << m;
      }
      int ops = 0;
      ASSERT_TRUE(testing::RunSchedule(schedule, [&](int, const PipelineOp&) {
                    ++ops;
                    return absl::OkStatus();
                  }).ok());
      EXPECT_EQ(ops, 2 * p * m);
    }
  }
  // A schedule that waits for itself is reported, not hung.
  std::vector<std::vector<PipelineOp>> bad = {{{false, 0}, {true, 0}}};
  EXPECT_EQ(testing::RunSchedule(
                bad, [](int, const PipelineOp&) { return absl::OkStatus(); })
                .code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(PipelineScheduleTest, OneFOneBTrainingEqualsMicroBatchesOneByOne) {
  auto store = ModelStore::Open(testing::TinyModel(Arch::kLlama));
  ASSERT_TRUE(store.ok());
  const int64_t n = (*store)->config().num_layers;
  const std::vector<StageSpec> specs = {
      {{0, 1}, true, false}, {{1, 3}, false, false}, {{3, n}, false, true}};
  Chain sequential = MakeChain(**store, Arch::kLlama, specs);
  Chain piped = MakeChain(**store, Arch::kLlama, specs);
  const int m = 4, p = 3;
  at::manual_seed(21);
  std::vector<at::Tensor> tokens, labels;
  for (int i = 0; i < m; ++i) {
    at::Tensor ids =
        at::randint((*store)->config().vocab_size, {9 + i}, at::kLong);
    tokens.push_back(ids.slice(0, 0, 8 + i));
    labels.push_back(ids.slice(0, 1, 9 + i));
  }
  double loss_sequential = 0;
  for (int i = 0; i < m; ++i) {
    loss_sequential += TrainMicroBatch(sequential, i, tokens[i], labels[i]);
  }
  // The same micro-batches in 1F1B order: activations and gradients travel
  // between the stages as they would between hops.
  std::map<std::pair<int, int>, at::Tensor> activation, gradient;
  double loss_piped = 0;
  absl::Status s = testing::RunSchedule(
      OneFOneBSchedule(p, m),
      [&](int stage, const PipelineOp& op) -> absl::Status {
        StageTrainer& t = *piped.trainers[stage];
        const int mb = op.micro_batch;
        if (op.forward && stage == p - 1) {
          // The last stage computes the loss and its backward at
          // once; its backward op then only releases the gradient.
          StageInput in;
          in.hidden = activation.at({stage - 1, mb});
          at::Tensor g;
          auto loss = t.ForwardBackwardLoss(mb, in, labels[mb], &g);
          if (!loss.ok()) return loss.status();
          loss_piped += *loss;
          gradient[{stage, mb}] = g;
          return absl::OkStatus();
        }
        if (op.forward) {
          StageInput in;
          if (stage == 0) {
            in.tokens = tokens[mb];
          } else {
            in.hidden = activation.at({stage - 1, mb});
          }
          auto out = t.Forward(mb, in);
          if (!out.ok()) return out.status();
          activation[{stage, mb}] = *out;
          return absl::OkStatus();
        }
        if (stage == p - 1) return absl::OkStatus();
        auto g = t.Backward(mb, gradient.at({stage + 1, mb}));
        if (!g.ok()) return g.status();
        gradient[{stage, mb}] = *g;
        return absl::OkStatus();
      });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_NEAR(loss_piped, loss_sequential, 1e-5);
  const auto ga = Grads(sequential), gb = Grads(piped);
  ASSERT_EQ(ga.size(), gb.size());
  for (const auto& [name, g] : ga) {
    EXPECT_LE((g - gb.at(name)).abs().max().item<double>(), 1e-5) << name;
  }
}

TEST(LoraTrainerTest, TrainingLowersTheLossAndBadGradientsAreRefused) {
  auto store = ModelStore::Open(testing::TinyModel(Arch::kLlama));
  ASSERT_TRUE(store.ok());
  const int64_t n = (*store)->config().num_layers;
  Chain c = MakeChain(**store, Arch::kLlama, {{{0, n}, true, true}});
  at::manual_seed(3);
  at::Tensor ids = at::randint((*store)->config().vocab_size, {17}, at::kLong);
  at::Tensor tokens = ids.slice(0, 0, 16), labels = ids.slice(0, 1, 17);
  AdamWOptions o;
  o.lr = 1e-2;
  double first = 0, last = 0;
  for (int64_t step = 0; step < 20; ++step) {
    const double loss = TrainMicroBatch(c, 0, tokens, labels);
    if (step == 0) first = loss;
    last = loss;
    Step(c, o, step);
  }
  EXPECT_LT(last, first - 0.5);  // It starts memorising the sequence.

  // A gradient of the wrong shape is an error, not a crash.
  Chain two = MakeChain(**store, Arch::kLlama,
                        {{{0, 1}, true, false}, {{1, n}, false, true}});
  StageInput in;
  in.tokens = tokens;
  ASSERT_TRUE(two.trainers[0]->Forward(7, in).ok());
  EXPECT_EQ(two.trainers[0]->Backward(7, at::zeros({3, 3})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(two.trainers[0]->Backward(8, at::zeros({3, 3})).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(two.trainers[0]->Forward(9, StageInput{}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LoraTrainerTest, ScheduleWarmsUpThenDecays) {
  AdamWOptions o;
  o.lr = 1.0;
  o.warmup_steps = 4;
  o.total_steps = 14;
  EXPECT_DOUBLE_EQ(o.LearningRate(0), 0.25);
  EXPECT_DOUBLE_EQ(o.LearningRate(3), 1.0);
  EXPECT_NEAR(o.LearningRate(9), 0.5, 1e-12);  // Half-way down the cosine.
  EXPECT_NEAR(o.LearningRate(14), 0.0, 1e-12);
}

TEST(LoraTrainerTest, RecomputeGivesTheSameGradients) {
  auto store = ModelStore::Open(testing::TinyModel(Arch::kLlama));
  ASSERT_TRUE(store.ok());
  const int64_t n = (*store)->config().num_layers;
  // Two stages each way; the second trainer of `again` recomputes.
  Chain keep = MakeChain(**store, Arch::kLlama,
                         {{{0, 2}, true, false}, {{2, n}, false, true}});
  Chain again = MakeChain(**store, Arch::kLlama,
                          {{{0, 2}, true, false}, {{2, n}, false, true}});
  for (auto* c : {&again}) {
    auto t = StageTrainer::Create(c->stages[0].get(), c->slices[0],
                                  {/*recompute=*/true});
    ASSERT_TRUE(t.ok());
    c->trainers[0] = *std::move(t);
    auto h = StageTrainer::Create(c->stages[1].get(), c->slices[1],
                                  {/*recompute=*/true});
    ASSERT_TRUE(h.ok());
    c->trainers[1] = *std::move(h);
  }
  at::manual_seed(2);
  const int64_t vocab = (*store)->config().vocab_size;
  for (uint64_t mb = 0; mb < 3; ++mb) {
    at::Tensor ids = at::randint(vocab, {12}, at::kLong);
    const double a =
        TrainMicroBatch(keep, mb, ids.slice(0, 0, 11), ids.slice(0, 1, 12));
    const double b =
        TrainMicroBatch(again, mb, ids.slice(0, 0, 11), ids.slice(0, 1, 12));
    EXPECT_NEAR(a, b, 1e-6);
  }
  const auto ga = Grads(keep), gb = Grads(again);
  ASSERT_EQ(ga.size(), gb.size());
  for (const auto& [name, g] : ga) {
    EXPECT_LE((g - gb.at(name)).abs().max().item<double>(), 1e-6) << name;
  }
}

TEST(LoraTrainerTest, CheckpointsRoundTripAndCorruptOnesAreRefused) {
  auto store = ModelStore::Open(testing::TinyModel(Arch::kGpt2));
  ASSERT_TRUE(store.ok());
  const int64_t n = (*store)->config().num_layers;
  Chain c = MakeChain(**store, Arch::kGpt2, {{{0, n}, true, true}});
  at::manual_seed(3);
  at::Tensor ids = at::randint((*store)->config().vocab_size, {10}, at::kLong);
  TrainMicroBatch(c, 0, ids.slice(0, 0, 9), ids.slice(0, 1, 10));
  AdamWOptions o;
  o.lr = 1e-2;
  c.trainers[0]->Step(o, 0, 1.0);
  const std::string dir = testing::TempDir("trainer_state");
  const std::string path = dir + "/state.safetensors";
  const auto saved = c.trainers[0]->State();
  ASSERT_TRUE(SaveTrainerState(path, saved, 1).ok());
  auto loaded = LoadTrainerState(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->step, 1);
  // Another step moves the factors; restoring brings them (and the
  // moments) back exactly.
  TrainMicroBatch(c, 1, ids.slice(0, 0, 9), ids.slice(0, 1, 10));
  c.trainers[0]->Step(o, 1, 1.0);
  ASSERT_TRUE(c.trainers[0]->SetState(loaded->state).ok());
  for (const auto& [name, s] : c.trainers[0]->State()) {
    EXPECT_TRUE(at::equal(s.value, saved.at(name).value)) << name;
    EXPECT_TRUE(at::equal(s.v, saved.at(name).v)) << name;
  }
  // A checkpoint directory keeps the newest two and restores any of them,
  // or (update 0) the factors the trainer started from.
  TrainerCheckpoints dir_ckpts(dir + "/ckpts", 2);
  for (uint64_t s : {1, 2, 3}) {
    ASSERT_TRUE(dir_ckpts.Save(*c.trainers[0], s).ok());
  }
  EXPECT_EQ(dir_ckpts.Steps(), (std::vector<uint64_t>{2, 3}));
  ASSERT_TRUE(dir_ckpts.Restore(0, c.trainers[0].get()).ok());
  EXPECT_FALSE(at::equal(c.trainers[0]->State().begin()->second.value,
                         saved.begin()->second.value) &&
               at::equal(c.trainers[0]->State().rbegin()->second.value,
                         saved.rbegin()->second.value));
  EXPECT_EQ(dir_ckpts.Restore(1, c.trainers[0].get()).code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(dir_ckpts.Restore(3, c.trainers[0].get()).ok());
  // A torn newest checkpoint is not offered: resume falls back to the one
  // before; the next save replaces it and keeps two good ones.
  std::filesystem::resize_file(dir_ckpts.Path(3), 100);
  EXPECT_EQ(dir_ckpts.Steps(), (std::vector<uint64_t>{2}));
  std::filesystem::copy_file(dir_ckpts.Path(2), dir_ckpts.Path(4));
  EXPECT_EQ(dir_ckpts.Steps(), (std::vector<uint64_t>{2}));  // Claims 2.
  ASSERT_TRUE(dir_ckpts.Save(*c.trainers[0], 5).ok());
  EXPECT_EQ(dir_ckpts.Steps(), (std::vector<uint64_t>{2, 5}));
  EXPECT_FALSE(std::filesystem::exists(dir_ckpts.Path(3)));
  EXPECT_FALSE(std::filesystem::exists(dir_ckpts.Path(4)));
  // A checkpoint of another shape, or a truncated file, is refused with
  // the file named.
  auto wrong = loaded->state;
  wrong.begin()->second.m = at::zeros({1, 1});
  EXPECT_FALSE(c.trainers[0]->SetState(wrong).ok());
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << "\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":";
  }
  auto corrupt = LoadTrainerState(path);
  EXPECT_FALSE(corrupt.ok());
  EXPECT_THAT(corrupt.status().message(), ::testing::HasSubstr(path));
}

}  // namespace
}  // namespace edgesplit
