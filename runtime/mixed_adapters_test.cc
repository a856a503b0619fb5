// Sessions of different LoRA adapters (and none) in one batch: each
// sequence's logits equal the same sequence run alone with its adapter, on
// the fused decode path and the ATen path, split or whole, for adapters of
// different ranks, targets and blocks.
#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/generator.h"
#include "runtime/lora.h"
#include "testing/local_pipeline_peer.h"
#include "testing/test_models.h"

namespace edgesplit {
namespace {

using ::edgesplit::testing::LocalPipelinePeer;
using ::edgesplit::testing::TinyModel;
using ::testing::HasSubstr;

class MixedAdaptersTest : public ::testing::TestWithParam<Arch> {
 protected:
  void SetUp() override {
    auto store = ModelStore::Open(TinyModel(GetParam()));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    const bool llama = GetParam() == Arch::kLlama;
    const int64_t n = store_->config().num_layers;
    // Three adapters that differ in rank, targets and blocks.
    LoraConfig a;
    a.r = 4, a.alpha = 8;
    a.target_modules = llama ? std::vector<std::string>{"q_proj", "v_proj"}
                             : std::vector<std::string>{"c_attn"};
    LoraConfig b;
    b.r = 16, b.alpha = 16;
    b.target_modules =
        llama ? std::vector<std::string>{"q_proj",   "k_proj",    "v_proj",
                                         "o_proj",   "gate_proj", "up_proj",
                                         "down_proj"}
              : std::vector<std::string>{"c_attn", "c_proj", "c_fc"};
    LoraConfig c;
    c.r = 2, c.alpha = 4, c.use_rslora = true;
    c.target_modules = llama ? std::vector<std::string>{"down_proj"}
                             : std::vector<std::string>{"c_fc"};
    adapters_.push_back(Make(a, {0, n}, 1, "a"));
    adapters_.push_back(Make(b, {0, n}, 2, "b"));
    adapters_.push_back(Make(c, {n - 1, n}, 3, "c"));  // Last block only.
  }
  std::shared_ptr<LoraAdapter> Make(const LoraConfig& config, BlockRange blocks,
                                    uint64_t seed, std::string name) {
    auto a = LoraAdapter::Create(store_->config(), config, blocks, seed,
                                 std::move(name), /*zero_b=*/false);
    EXPECT_TRUE(a.ok()) << a.status();
    return std::shared_ptr<LoraAdapter>(std::move(*a));
  }
  std::unique_ptr<LocalPipeline> Pipeline(std::vector<int64_t> cuts,
                                          bool decode_kernels) {
    StageOptions o;
    o.decode_kernels = decode_kernels;
    auto p = LocalPipeline::Load(*store_, cuts, o);
    EXPECT_TRUE(p.ok()) << p.status();
    for (const auto& a : adapters_) EXPECT_TRUE((*p)->AttachAdapter(a).ok());
    return std::move(*p);
  }

  std::unique_ptr<ModelStore> store_;
  std::vector<std::shared_ptr<LoraAdapter>> adapters_;
};

// Prompts of different lengths, then decode steps, for sequences using
// a, none, b, a, c: batched (split at `cuts`) against each alone (whole).
void ExpectMixedEqualsAlone(LocalPipeline& mixed, LocalPipeline& whole,
                            int64_t prompt_scale) {
  const std::vector<std::string> names = {"a", "", "b", "a", "c"};
  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 0; i < names.size(); ++i) {
    std::vector<int32_t> p;
    for (int64_t t = 0; t < prompt_scale * static_cast<int64_t>(i + 2); ++t) {
      p.push_back(static_cast<int32_t>((37 * t + 11 * i + 5) % 500));
    }
    prompts.push_back(p);
  }
  std::vector<std::unique_ptr<LocalPipeline::Sequence>> batch, alone;
  std::vector<LocalPipeline::Sequence*> ptrs;
  for (const std::string& n : names) {
    batch.push_back(mixed.NewSequence(nullptr, n));
    alone.push_back(whole.NewSequence(nullptr, n));
    ptrs.push_back(batch.back().get());
  }
  std::vector<std::vector<int32_t>> step = prompts;
  for (int s = 0; s < 4; ++s) {
    auto got = LocalPipelinePeer::Step(mixed, ptrs, step);
    ASSERT_TRUE(got.ok()) << got.status();
    for (size_t i = 0; i < names.size(); ++i) {
      auto want = alone[i]->Forward(step[i]);
      ASSERT_TRUE(want.ok()) << want.status();
      at::Tensor w = at::tensor(*want);
      const double diff = (got->select(0, i) - w).abs().max().item<double>();
      EXPECT_LE(diff, 1e-5) << "sequence " << i << " (adapter \"" << names[i]
                            << "\"), step " << s;
      if (s == 0 && !names[i].empty()) {
        // The adapter changes this sequence's logits (else equality above
        // would say nothing about applying it).
        auto base = whole.NewSequence(nullptr, "")->Forward(step[i]);
        ASSERT_TRUE(base.ok());
        EXPECT_GT((w - at::tensor(*base)).abs().max().item<double>(), 1e-4)
            << names[i];
      }
      // Decode: each sequence's greedy token, one row per sequence.
      step[i] = {static_cast<int32_t>(w.argmax().item<int64_t>())};
    }
  }
}

TEST_P(MixedAdaptersTest, MixedBatchEqualsEachSessionAloneOnTheFusedPath) {
  // Decode steps of five rows and prompts within kGemvMaxRows: fused.
  auto mixed = Pipeline({2}, /*decode_kernels=*/true);
  auto whole = Pipeline({}, /*decode_kernels=*/true);
  ExpectMixedEqualsAlone(*mixed, *whole, 1);
}

TEST_P(MixedAdaptersTest, MixedBatchEqualsEachSessionAloneOnTheAtenPath) {
  // Long prompts (over kGemvMaxRows rows) and the ATen reference path.
  auto mixed = Pipeline({1, 3}, /*decode_kernels=*/false);
  auto whole = Pipeline({}, /*decode_kernels=*/true);
  ExpectMixedEqualsAlone(*mixed, *whole, 5);
}

TEST_P(MixedAdaptersTest, AdaptersThatDoNotFitAreRefusedAndNothingAdvances) {
  ModelConfig other = store_->config();
  other.hidden_size *= 2;
  other.head_dim *= 2;
  LoraConfig config;
  config.r = 4;
  config.target_modules = adapters_[0]->config().target_modules;
  auto wrong = LoraAdapter::Create(other, config, {0, 1}, 1, "wrong", false);
  ASSERT_TRUE(wrong.ok());
  StageSpec spec;
  spec.blocks = {0, store_->config().num_layers};
  spec.embedding = spec.head = true;
  auto stage = StageModel::Load(*store_, spec);
  ASSERT_TRUE(stage.ok()) << stage.status();
  auto c1 = (*stage)->NewCache(nullptr), c2 = (*stage)->NewCache(nullptr);
  StageInput in;
  in.sequences = {{c1.get(), 2}, {c2.get(), 1}};
  in.tokens = at::tensor(std::vector<int64_t>{1, 2, 3}, at::kLong);
  in.sequence_adapters = {adapters_[0].get(), wrong->get()};
  auto s = (*stage)->Forward(in).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("\"wrong\" does not fit module"));
  EXPECT_EQ(c1->length(), 0);
  EXPECT_EQ(c2->length(), 0);
  in.sequence_adapters = {adapters_[0].get()};  // One for two sequences.
  EXPECT_EQ((*stage)->Forward(in).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*stage)->AttachAdapter(adapters_[1]).ok());
  in.sequence_adapters = {adapters_[0].get(), nullptr};
  in.adapter = "b";  // And one for all: which?
  EXPECT_EQ((*stage)->Forward(in).status().code(),
            absl::StatusCode::kInvalidArgument);
  in.adapter.clear();
  EXPECT_TRUE((*stage)->Forward(in).ok());
  EXPECT_EQ(c1->length(), 2);
}

INSTANTIATE_TEST_SUITE_P(Archs, MixedAdaptersTest,
                         ::testing::Values(Arch::kGpt2, Arch::kLlama),
                         [](const auto& info) {
                           return std::string(ArchName(info.param));
                         });

}  // namespace
}  // namespace edgesplit
