// The decode path (fused step over raw buffers, GEMV kernels) against the
// ATen-only path it replaces (StageOptions::decode_kernels = false): same
// logits within 1e-5 and the same greedy tokens, for single and batched
// decode, mixed prefill/decode batches, split stages and both
// architectures.
#include <ATen/ATen.h>

#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/compute_pool.h"
#include "runtime/generator.h"
#include "runtime/model_store.h"
#include "runtime/stage_model.h"
#include "testing/test_models.h"

namespace edgesplit {
namespace {

constexpr double kTol = 1e-5;

class FusedDecodeTest : public ::testing::TestWithParam<Arch> {
 protected:
  void SetUp() override {
    auto store = ModelStore::Open(testing::TinyModel(GetParam()));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }
  std::unique_ptr<LocalPipeline> Load(std::vector<int64_t> cuts, bool kernels) {
    StageOptions o;
    o.decode_kernels = kernels;
    auto p = LocalPipeline::Load(*store_, cuts, o);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }
  std::unique_ptr<ModelStore> store_;
};

// Runs `steps` batched steps of `lens[i]` new tokens per sequence through
// every stage of `p`, returning each step's logits (every row).
std::vector<at::Tensor> RunBatches(
    const LocalPipeline& p, const std::vector<std::vector<int64_t>>& lens,
    int64_t vocab) {
  const size_t nseq = lens.front().size();
  std::vector<std::vector<std::unique_ptr<SequenceKvCache>>> caches(
      p.stages().size());
  for (size_t s = 0; s < p.stages().size(); ++s) {
    for (size_t i = 0; i < nseq; ++i) {
      caches[s].push_back(p.stages()[s]->NewCache(nullptr));
    }
  }
  std::mt19937 rng(11);
  std::vector<at::Tensor> out;
  for (const std::vector<int64_t>& step : lens) {
    int64_t total = 0;
    for (int64_t n : step) total += n;
    std::vector<int64_t> ids(total);
    for (auto& t : ids) t = static_cast<int64_t>(rng() % vocab);
    at::Tensor x;
    for (size_t s = 0; s < p.stages().size(); ++s) {
      StageInput in;
      for (size_t i = 0; i < nseq; ++i) {
        in.sequences.push_back({caches[s][i].get(), step[i]});
      }
      if (s == 0) {
        in.tokens = at::tensor(ids);
      } else {
        in.hidden = x;
      }
      auto r = p.stages()[s]->Forward(in);
      EXPECT_TRUE(r.ok()) << r.status();
      if (!r.ok()) return out;
      x = *r;
    }
    out.push_back(x);
  }
  return out;
}

TEST_P(FusedDecodeTest, DecodePathEqualsAtenPath) {
  const int64_t vocab = store_->config().vocab_size;
  // Prefill of mixed lengths (one batch of 12 rows, fused), then decode
  // steps of one token per sequence, then a mixed step.
  std::vector<std::vector<int64_t>> lens = {{5, 1, 6}};
  for (int i = 0; i < 10; ++i) lens.push_back({1, 1, 1});
  lens.push_back({3, 1, 2});
  lens.push_back({1, 1, 1});
  auto ref = Load({}, /*kernels=*/false);
  const auto want = RunBatches(*ref, lens, vocab);
  for (const std::vector<int64_t>& cuts :
       {std::vector<int64_t>{}, std::vector<int64_t>{1, 3}}) {
    auto fast = Load(cuts, /*kernels=*/true);
    const auto got = RunBatches(*fast, lens, vocab);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_LT((got[i] - want[i]).abs().max().item<double>(), kTol)
          << "step " << i << " cuts " << cuts.size();
      EXPECT_TRUE(at::equal(got[i].argmax(-1), want[i].argmax(-1)));
    }
  }
}

// Long prompts (more rows than the fused path takes) and adapters go the
// ATen way; the result is the same whichever path a step took.
TEST_P(FusedDecodeTest, LongPrefillThenFusedDecodeEqualsAten) {
  const int64_t vocab = store_->config().vocab_size;
  std::vector<std::vector<int64_t>> lens = {{40, 33}};
  for (int i = 0; i < 5; ++i) lens.push_back({1, 1});
  auto ref = Load({}, false);
  auto fast = Load({2}, true);
  const auto want = RunBatches(*ref, lens, vocab);
  const auto got = RunBatches(*fast, lens, vocab);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_LT((got[i] - want[i]).abs().max().item<double>(), kTol) << i;
  }
}

// Sequences and KV heads attend on the kernel threads; the result must not
// depend on how many there are (each pair owns its cache rows and heads).
TEST_P(FusedDecodeTest, SameBitsOnAnyNumberOfKernelThreads) {
  const int64_t vocab = store_->config().vocab_size;
  std::vector<std::vector<int64_t>> lens = {{7, 2, 4, 1, 3}};
  for (int i = 0; i < 6; ++i) lens.push_back({1, 1, 1, 1, 1});
  auto fast = Load({}, true);
  kernels::SetKernelThreads(1);
  const auto one = RunBatches(*fast, lens, vocab);
  kernels::SetKernelThreads(3);
  const auto three = RunBatches(*fast, lens, vocab);
  kernels::SetKernelThreads(1);
  ASSERT_EQ(one.size(), three.size());
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_TRUE(at::equal(one[i], three[i])) << "step " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(BothArchitectures, FusedDecodeTest,
                         ::testing::Values(Arch::kGpt2, Arch::kLlama),
                         [](const auto& info) {
                           return std::string(ArchName(info.param));
                         });

}  // namespace
}  // namespace edgesplit
