#include "runtime/stage_model.h"

#include <ATen/ATen.h>

#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/generator.h"
#include "runtime/model_store.h"
#include "testing/local_pipeline_peer.h"
#include "testing/test_models.h"

namespace edgesplit {
namespace {

using ::edgesplit::testing::TinyModel;
using ::testing::HasSubstr;

constexpr double kTol = 1e-5;

double MaxDiff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a - b).abs().max().item<double>();
}

std::vector<int32_t> RandomTokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

int32_t Argmax(const at::Tensor& row) {
  return static_cast<int32_t>(row.argmax().item<int64_t>());
}

class StageModelTest : public ::testing::TestWithParam<Arch> {
 protected:
  void SetUp() override {
    auto store = ModelStore::Open(TinyModel(GetParam()));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }
  std::unique_ptr<LocalPipeline> Pipeline(std::vector<int64_t> cuts) {
    auto p = LocalPipeline::Load(*store_, cuts);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }
  std::unique_ptr<ModelStore> store_;
};

// Prefill and 32 greedy decode steps: every split gives the whole model's
// logits (bit-identical in practice; the bound is the 1e-5).
TEST_P(StageModelTest, SplitEqualsWhole) {
  auto whole = Pipeline({});
  const int64_t n = store_->config().num_layers;
  ASSERT_EQ(n, 4);
  std::vector<std::unique_ptr<LocalPipeline>> splits;
  splits.push_back(Pipeline({2}));     // 2-way.
  splits.push_back(Pipeline({1, 3}));  // 3-way.
  splits.push_back(Pipeline({1, 2, 3}));
  auto ref = whole->NewSequence();
  std::vector<std::unique_ptr<LocalPipeline::Sequence>> seqs;
  for (auto& s : splits) seqs.push_back(s->NewSequence());

  auto prompt = RandomTokens(7, store_->config().vocab_size, 1);
  auto ref_logits = ref->ForwardAll(prompt);
  ASSERT_TRUE(ref_logits.ok()) << ref_logits.status();
  for (auto& s : seqs) {
    auto l = s->ForwardAll(prompt);
    ASSERT_TRUE(l.ok()) << l.status();
    EXPECT_LE(MaxDiff(*l, *ref_logits), kTol);
  }
  int32_t next = Argmax((*ref_logits)[-1]);
  for (int step = 0; step < 32; ++step) {
    auto r = ref->ForwardAll({&next, 1});
    ASSERT_TRUE(r.ok()) << r.status();
    for (auto& s : seqs) {
      auto l = s->ForwardAll({&next, 1});
      ASSERT_TRUE(l.ok()) << l.status();
      EXPECT_LE(MaxDiff(*l, *r), kTol) << "decode step " << step;
    }
    next = Argmax((*r)[0]);
  }
}

// Decoding through the KV cache equals recomputing the whole sequence.
TEST_P(StageModelTest, KvCachedDecodeEqualsRecompute) {
  auto p = Pipeline({2});
  auto cached = p->NewSequence();
  std::vector<int32_t> tokens = RandomTokens(5, store_->config().vocab_size, 2);
  auto l = cached->ForwardAll(tokens);
  ASSERT_TRUE(l.ok());
  int32_t next = Argmax((*l)[-1]);
  for (int step = 0; step < 32; ++step) {
    tokens.push_back(next);
    auto step_logits = cached->ForwardAll({&next, 1});
    ASSERT_TRUE(step_logits.ok()) << step_logits.status();
    auto fresh = p->NewSequence();
    auto full = fresh->ForwardAll(tokens);
    ASSERT_TRUE(full.ok());
    EXPECT_LE(MaxDiff((*step_logits)[0], (*full)[-1]), kTol) << "step " << step;
    next = Argmax((*step_logits)[0]);
  }
  EXPECT_EQ(cached->length(), static_cast<int64_t>(tokens.size()));
}

// A ragged batch (different lengths and positions) equals each sequence
// run alone, for prefill and for batched decode steps.
TEST_P(StageModelTest, RaggedBatchEqualsSingleSequences) {
  auto p = Pipeline({1, 3});
  const int vocab = store_->config().vocab_size;
  std::vector<std::vector<int32_t>> prompts = {RandomTokens(3, vocab, 3),
                                               RandomTokens(9, vocab, 4),
                                               RandomTokens(1, vocab, 5)};
  std::vector<std::unique_ptr<LocalPipeline::Sequence>> batched, single;
  std::vector<LocalPipeline::Sequence*> ptrs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    batched.push_back(p->NewSequence());
    single.push_back(p->NewSequence());
    ptrs.push_back(batched.back().get());
  }
  auto out = testing::LocalPipelinePeer::Step(*p, ptrs, prompts);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(0), 3);
  std::vector<std::vector<int32_t>> next(3);
  for (int i = 0; i < 3; ++i) {
    auto alone = single[i]->ForwardAll(prompts[i]);
    ASSERT_TRUE(alone.ok());
    EXPECT_LE(MaxDiff((*out)[i], (*alone)[-1]), kTol) << "sequence " << i;
    next[i] = {Argmax((*out)[i])};
  }
  for (int step = 0; step < 8; ++step) {
    auto o = testing::LocalPipelinePeer::Step(*p, ptrs, next);
    ASSERT_TRUE(o.ok()) << o.status();
    for (int i = 0; i < 3; ++i) {
      auto alone = single[i]->ForwardAll(next[i]);
      ASSERT_TRUE(alone.ok());
      EXPECT_LE(MaxDiff((*o)[i], (*alone)[0]), kTol)
          << "sequence " << i << " step " << step;
      next[i] = {Argmax((*o)[i])};
    }
  }
}

TEST_P(StageModelTest, KvBudgetExhaustedChangesNothing) {
  auto p = Pipeline({2});
  const ModelConfig& c = store_->config();
  // Room for one sequence's first allocation (16 tokens in every block of
  // both stages), not two.
  const int64_t per_seq = 16 * c.num_layers * c.KvBytesPerToken(4);
  KvBudget budget(per_seq + per_seq / 2);
  auto a = p->NewSequence(&budget);
  auto b = p->NewSequence(&budget);
  auto prompt = RandomTokens(4, c.vocab_size, 6);
  ASSERT_TRUE(a->Forward(prompt).ok());
  EXPECT_EQ(budget.used(), per_seq);
  auto failed = b->Forward(prompt);
  ASSERT_EQ(failed.status().code(), absl::StatusCode::kResourceExhausted)
      << failed.status();
  EXPECT_THAT(failed.status().message(), HasSubstr("KV cache budget"));
  // No stage advanced. (Capacity the first stage already grew stays charged
  // to `b` until it ends; its next step reuses it.)
  EXPECT_EQ(b->length(), 0);
  EXPECT_LT(budget.used(), 2 * per_seq);
  EXPECT_TRUE(b->Forward(prompt).status().code() ==
              absl::StatusCode::kResourceExhausted);
  // Freeing a sequence returns its memory; the other can proceed.
  a.reset();
  ASSERT_TRUE(b->Forward(prompt).ok());
  EXPECT_EQ(b->length(), 4);
  EXPECT_EQ(budget.used(), per_seq);
  b.reset();
  EXPECT_EQ(budget.used(), 0);
}

TEST_P(StageModelTest, ContextOverflowIsOutOfRange) {
  auto p = Pipeline({});
  auto s = p->NewSequence();
  const int64_t ctx = store_->config().max_positions;
  auto too_long = RandomTokens(ctx + 1, store_->config().vocab_size, 7);
  EXPECT_EQ(s->Forward(too_long).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(s->length(), 0);
}

TEST_P(StageModelTest, InvalidInputIsRejected) {
  const ModelConfig& c = store_->config();
  StageSpec spec{{2, 4}, false, true};
  auto stage = StageModel::Load(*store_, spec);
  ASSERT_TRUE(stage.ok()) << stage.status();
  auto cache = (*stage)->NewCache(nullptr);
  StageInput in;
  in.sequences = {{cache.get(), 3}};
  in.hidden = at::zeros({3, c.hidden_size + 1});
  auto r = (*stage)->Forward(in);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("hidden states of shape"));
  in.hidden = at::zeros({2, c.hidden_size});
  EXPECT_EQ((*stage)->Forward(in).status().code(),
            absl::StatusCode::kInvalidArgument);
  in.hidden = at::zeros({3, c.hidden_size});
  in.adapter = "nope";
  EXPECT_EQ((*stage)->Forward(in).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cache->length(), 0);
  in.adapter = "";
  in.sequences = {{cache.get(), 2}, {cache.get(), 1}};
  EXPECT_THAT((*stage)->Forward(in).status().message(),
              HasSubstr("appears twice"));

  auto first = StageModel::Load(*store_, StageSpec{{0, 2}, true, false});
  ASSERT_TRUE(first.ok());
  auto c2 = (*first)->NewCache(nullptr);
  StageInput t;
  t.sequences = {{c2.get(), 2}};
  t.tokens = at::tensor(std::vector<int64_t>{1, c.vocab_size}, at::kLong);
  r = (*first)->Forward(t);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("outside the vocabulary"));
  // A cache from another stage (different block count) is refused.
  t.tokens = at::tensor(std::vector<int64_t>{1, 2}, at::kLong);
  auto other = (*stage)->NewCache(nullptr);
  StageSpec one{{0, 1}, true, false};
  auto s1 = StageModel::Load(*store_, one);
  ASSERT_TRUE(s1.ok());
  t.sequences = {{other.get(), 2}};
  EXPECT_THAT((*s1)->Forward(t).status().message(), HasSubstr("another stage"));
  StageSpec bad{{3, 9}, false, false};
  EXPECT_THAT(StageModel::Load(*store_, bad).status().message(),
              HasSubstr("outside the model's 4 blocks"));
}

INSTANTIATE_TEST_SUITE_P(Archs, StageModelTest,
                         ::testing::Values(Arch::kGpt2, Arch::kLlama),
                         [](const auto& info) {
                           return std::string(ArchName(info.param));
                         });

}  // namespace
}  // namespace edgesplit
