#include "runtime/train/training_data.h"

#include <cmath>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model_store.h"
#include "runtime/train/stage_trainer.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;

std::string RealModel() { return testing::SharedDir() + "/models/stories260K"; }

std::unique_ptr<Tokenizer> RealTokenizer() {
  auto store = ModelStore::Open(RealModel());
  EXPECT_TRUE(store.ok()) << store.status();
  auto tok = (*store)->LoadTokenizer();
  EXPECT_TRUE(tok.ok()) << tok.status();
  return std::move(*tok);
}

TEST(TrainingDataTest, TextAndJsonlBecomeShuffledWindowsWithAHeldOutSplit) {
  const std::string dir = testing::TempDir("training_data");
  std::ofstream(dir + "/a.txt")
      << "Once upon a time there was a cat.\nIt liked milk.\n\n"
         "The dog ran in the park and played with a big red ball all day.\n\n\n"
         "Tom and Sue went to the sea.\n";
  auto tok = RealTokenizer();
  TrainingDataOptions o;
  o.sequence_tokens = 8;
  o.held_out_fraction = 0.25;
  o.seed = 1;
  auto data = LoadTrainingData(dir + "/a.txt", *tok, o);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->documents, 3);
  const size_t windows = data->train.size() + data->held_out.size();
  EXPECT_GE(windows, 4u);
  EXPECT_EQ(data->held_out.size(), static_cast<size_t>(0.25 * windows));
  int64_t labels = 0;
  for (const auto* split : {&data->train, &data->held_out}) {
    for (const auto& w : *split) {
      EXPECT_GE(w.size(), 2u);
      EXPECT_LE(w.size(), 9u);
      labels += static_cast<int64_t>(w.size()) - 1;
    }
  }
  // Every token but each document's first is a label exactly once.
  EXPECT_EQ(labels, data->tokens - data->documents);
  // The same seed, the same split.
  auto again = LoadTrainingData(dir + "/a.txt", *tok, o);
  EXPECT_EQ(again->train, data->train);

  std::ofstream(dir + "/b.jsonl") << "{\"text\": \"Once upon a time\"}\n\n"
                                  << "{\"text\": \"The end.\"}\n";
  auto jsonl = LoadTrainingData(dir + "/b.jsonl", *tok, o);
  ASSERT_TRUE(jsonl.ok()) << jsonl.status();
  EXPECT_EQ(jsonl->documents, 2);

  std::ofstream(dir + "/c.jsonl") << "{\"text\": \"ok\"}\n{\"txt\": 3}\n";
  auto bad = LoadTrainingData(dir + "/c.jsonl", *tok, o);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("c.jsonl:2"));
  std::ofstream(dir + "/d.jsonl") << "{\"text\": \n";
  EXPECT_THAT(LoadTrainingData(dir + "/d.jsonl", *tok, o).status().message(),
              HasSubstr("d.jsonl:1"));
  EXPECT_EQ(LoadTrainingData(dir + "/none.txt", *tok, o).status().code(),
            absl::StatusCode::kNotFound);
  std::ofstream(dir + "/e.txt") << "\n\n";
  EXPECT_THAT(LoadTrainingData(dir + "/e.txt", *tok, o).status().message(),
              HasSubstr("no text"));
}

TEST(TrainingDataTest, BatchesGroupSimilarLengthsWithinTheTokenBudget) {
  std::vector<std::vector<int32_t>> w;
  for (int n : {9, 3, 9, 5, 2, 9, 4}) w.push_back(std::vector<int32_t>(n, 1));
  const auto batches = BatchByLength(w, 16);
  size_t seen = 0;
  size_t previous_max = 0;
  for (const auto& b : batches) {
    int64_t tokens = 0;
    size_t lo = 1000, hi = 0;
    for (size_t i : b) {
      tokens += static_cast<int64_t>(w[i].size()) - 1;
      lo = std::min(lo, w[i].size());
      hi = std::max(hi, w[i].size());
    }
    EXPECT_LE(tokens, 16);
    EXPECT_GE(lo, previous_max);  // Sorted by length.
    previous_max = hi;
    seen += b.size();
  }
  EXPECT_EQ(seen, w.size());
}

double HeldOutLoss(StageTrainer& t,
                   const std::vector<std::vector<int32_t>>& windows,
                   uint64_t* id) {
  double sum = 0;
  for (const auto& w : windows) {
    StageInput in;
    in.tokens =
        at::tensor(std::vector<int64_t>(w.begin(), w.end() - 1), at::kLong);
    at::Tensor labels =
        at::tensor(std::vector<int64_t>(w.begin() + 1, w.end()), at::kLong);
    auto logits = t.Forward((*id)++, in);
    EXPECT_TRUE(logits.ok());
    sum += CausalLmLoss(*logits, labels)->item<double>();
  }
  t.ZeroGrad();
  return sum / windows.size();
}

// The real-model test, in one process: LoRA on Shakespeare (out of
// domain for a TinyStories model) lowers its held-out perplexity, and the
// adapter saved in PEFT format reproduces the trained model's logits.
TEST(TrainingDataTest, FineTuningTheRealModelLowersHeldOutPerplexity) {
  const std::string dir = testing::TempDir("finetune");
  {
    std::ifstream in(testing::SharedDir() + "/data/tinyshakespeare.txt");
    std::string text(60000, '\0');
    in.read(text.data(), text.size());
    text.resize(in.gcount());
    std::ofstream(dir + "/shakespeare.txt") << text;
  }
  auto store = ModelStore::Open(RealModel());
  ASSERT_TRUE(store.ok());
  auto tok = (*store)->LoadTokenizer();
  TrainingDataOptions o;
  o.sequence_tokens = 64;
  o.held_out_fraction = 0.1;
  auto data = LoadTrainingData(dir + "/shakespeare.txt", **tok, o);
  ASSERT_TRUE(data.ok()) << data.status();
  ASSERT_GE(data->held_out.size(), 16u);
  std::vector<std::vector<int32_t>> eval(data->held_out.begin(),
                                         data->held_out.begin() + 16);

  const ModelConfig& config = (*store)->config();
  const int64_t n = config.num_layers;
  auto stage = StageModel::Load(**store, {{0, n}, true, true});
  ASSERT_TRUE(stage.ok());
  LoraConfig lc;
  lc.r = 8;
  lc.alpha = 16;
  lc.target_modules = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                       "gate_proj", "up_proj", "down_proj"};
  std::shared_ptr<LoraAdapter> adapter =
      *LoraAdapter::Create(config, lc, {0, n}, /*seed=*/1, "shakespeare");
  ASSERT_TRUE((*stage)->AttachAdapter(adapter).ok());
  auto trainer = StageTrainer::Create(stage->get(), adapter);
  ASSERT_TRUE(trainer.ok());
  uint64_t id = 0;
  const double before = HeldOutLoss(**trainer, eval, &id);

  AdamWOptions opt;
  opt.lr = 1e-2;
  opt.warmup_steps = 5;
  opt.total_steps = 80;
  const auto batches = BatchByLength(data->train, 256);
  for (int64_t step = 0; step < opt.total_steps; ++step) {
    for (size_t i : batches[step % batches.size()]) {
      const auto& w = data->train[i];
      StageInput in;
      in.tokens =
          at::tensor(std::vector<int64_t>(w.begin(), w.end() - 1), at::kLong);
      at::Tensor labels =
          at::tensor(std::vector<int64_t>(w.begin() + 1, w.end()), at::kLong);
      ASSERT_TRUE(
          (*trainer)->ForwardBackwardLoss(id++, in, labels, nullptr).ok());
    }
    const double norm = std::sqrt((*trainer)->GradSquaredNorm());
    (*trainer)->Step(opt, step, norm > 1.0 ? 1.0 / norm : 1.0);
  }
  const double after = HeldOutLoss(**trainer, eval, &id);
  std::printf("held-out perplexity %.2f -> %.2f\n", std::exp(before),
              std::exp(after));
  EXPECT_LT(after, before - 0.1);

  // Saved as a PEFT adapter and loaded into a fresh stage, it computes
  // what the trained model computes.
  ASSERT_TRUE(adapter->SavePeft(dir + "/adapter").ok());
  auto loaded = LoraAdapter::LoadPeft(dir + "/adapter", config, "loaded");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto fresh = StageModel::Load(**store, {{0, n}, true, true});
  ASSERT_TRUE(
      (*fresh)
          ->AttachAdapter(std::shared_ptr<LoraAdapter>(std::move(*loaded)))
          .ok());
  const auto& w = eval[0];
  auto run = [&](const StageModel& s, const std::string& name) {
    auto cache = s.NewCache(nullptr);
    StageInput in;
    in.tokens =
        at::tensor(std::vector<int64_t>(w.begin(), w.end() - 1), at::kLong);
    in.sequences = {{cache.get(), static_cast<int64_t>(w.size()) - 1}};
    in.adapter = name;
    auto out = s.Forward(in);
    EXPECT_TRUE(out.ok()) << out.status();
    return out->detach();
  };
  const at::Tensor trained = run(**stage, "shakespeare");
  const at::Tensor reloaded = run(**fresh, "loaded");
  EXPECT_LE((trained - reloaded).abs().max().item<double>(), 1e-5);
}

}  // namespace
}  // namespace edgesplit
