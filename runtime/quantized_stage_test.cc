// Stages with quantized weights (q8_0, q4_0, q4_k, q6_k): split equals whole
// per weight type, decode equals the same computation one token at a time,
// gradients flow through the frozen quantized base (QLoRA), and the real
// model's perplexity bounds what quantization costs.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/file_util.h"
#include "gtest/gtest.h"
#include "kernels/cpu/gemv.h"
#include "kernels/cpu/quant_blocks.h"
#include "runtime/generator.h"
#include "runtime/linear_weight.h"
#include "runtime/lora.h"
#include "runtime/model_store.h"
#include "runtime/threading.h"
#include "testing/test_models.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using kernels::WeightType;

// The K formats need widths of 256: they run on the "mini" preset.
const std::string& Model(Arch arch, WeightType type) {
  return testing::TinyModel(
      arch, 0, kernels::BlockWeights(type) == 256 ? "mini" : "tiny");
}

StageOptions Quantized(WeightType t) {
  StageOptions o;
  o.weights = t;
  return o;
}

class QuantizedStageTest
    : public ::testing::TestWithParam<std::tuple<Arch, WeightType>> {};

// The same quantized weights in one stage or three give the same logits,
// prompt and decode, and the same greedy tokens.
TEST_P(QuantizedStageTest, SplitEqualsWholePerWeightType) {
  const auto [arch, type] = GetParam();
  auto store = ModelStore::Open(Model(arch, type));
  ASSERT_TRUE(store.ok());
  auto whole = LocalPipeline::Load(**store, {}, Quantized(type));
  auto split = LocalPipeline::Load(**store, {1, 3}, Quantized(type));
  ASSERT_TRUE(whole.ok()) << whole.status();
  ASSERT_TRUE(split.ok()) << split.status();
  auto a = (*whole)->NewSequence();
  auto b = (*split)->NewSequence();
  std::vector<int32_t> prompt = {5, 17, 99, 3, 250, 41, 7};
  auto la = a->Forward(prompt);
  auto lb = b->Forward(prompt);
  ASSERT_TRUE(la.ok() && lb.ok());
  for (int step = 0; step < 12; ++step) {
    ASSERT_EQ(la->size(), lb->size());
    for (size_t i = 0; i < la->size(); ++i) {
      ASSERT_NEAR((*la)[i], (*lb)[i], 1e-5) << "step " << step;
    }
    const int32_t ta = static_cast<int32_t>(
        std::max_element(la->begin(), la->end()) - la->begin());
    const int32_t tb = static_cast<int32_t>(
        std::max_element(lb->begin(), lb->end()) - lb->begin());
    ASSERT_EQ(ta, tb);
    la = a->Forward({&ta, 1});
    lb = b->Forward({&tb, 1});
    ASSERT_TRUE(la.ok() && lb.ok());
  }
}

// Quantization is an approximation, never silent: the stage holds fewer
// bytes, and its logits stay close to the float model's.
TEST_P(QuantizedStageTest, HoldsFewerBytesAndStaysCloseToFloat) {
  const auto [arch, type] = GetParam();
  auto store = ModelStore::Open(Model(arch, type));
  ASSERT_TRUE(store.ok());
  auto f32 = LocalPipeline::Load(**store, {});
  auto q = LocalPipeline::Load(**store, {}, Quantized(type));
  ASSERT_TRUE(f32.ok() && q.ok());
  EXPECT_LT((*q)->stages()[0]->WeightBytes(),
            (*f32)->stages()[0]->WeightBytes() * 0.8);
  std::vector<int32_t> prompt = {5, 17, 99, 3, 250, 41, 7};
  auto lf = (*f32)->NewSequence()->ForwardAll(prompt);
  auto lq = (*q)->NewSequence()->ForwardAll(prompt);
  ASSERT_TRUE(lf.ok() && lq.ok());
  const double rel = ((*lf - *lq).norm() / lf->norm()).item<double>();
  EXPECT_GT(rel, 0.0);  // It is quantized...
  // ...and close: measured 1% (q8_0), 4-5% (q6_k), 9-12% (q4_*).
  EXPECT_LT(rel, type == WeightType::kQ8_0   ? 0.02
                 : type == WeightType::kQ6_K ? 0.07
                                             : 0.2);
}

// An adapter applies unmerged over quantized weights (and changes the
// output); merging it into the blocks is refused, as is a non-float32
// compute dtype.
TEST_P(QuantizedStageTest, AdaptersApplyUnmergedAndMergingIsRefused) {
  const auto [arch, type] = GetParam();
  auto store = ModelStore::Open(Model(arch, type));
  ASSERT_TRUE(store.ok());
  auto q = LocalPipeline::Load(**store, {}, Quantized(type));
  ASSERT_TRUE(q.ok());
  const ModelConfig& c = (*store)->config();
  LoraConfig lc;
  lc.r = 4;
  lc.alpha = 8;
  lc.target_modules = arch == Arch::kLlama
                          ? std::vector<std::string>{"q_proj", "down_proj"}
                          : std::vector<std::string>{"c_attn", "c_proj"};
  auto adapter = LoraAdapter::Create(c, lc, {0, c.num_layers}, 5, "a",
                                     /*zero_b=*/false);
  ASSERT_TRUE(adapter.ok());
  ASSERT_TRUE((*q)->AttachAdapter(std::move(*adapter)).ok());
  std::vector<int32_t> prompt = {5, 17, 99, 3};
  auto base = (*q)->NewSequence()->Forward(prompt);
  auto tuned = (*q)->NewSequence(nullptr, "a")->Forward(prompt);
  ASSERT_TRUE(base.ok() && tuned.ok());
  EXPECT_NE(*base, *tuned);
  absl::Status merge = (*q)->stages()[0]->MergeAdapter("a");
  EXPECT_EQ(merge.code(), absl::StatusCode::kFailedPrecondition) << merge;
  StageOptions half;
  half.dtype = at::kBFloat16;
  half.weights = type;
  auto bad = LocalPipeline::Load(**store, {}, half);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(
    Types, QuantizedStageTest,
    ::testing::Combine(::testing::Values(Arch::kGpt2, Arch::kLlama),
                       ::testing::Values(WeightType::kQ8_0, WeightType::kQ4_0,
                                         WeightType::kQ4_K, WeightType::kQ6_K)),
    [](const auto& info) {
      return absl::StrCat(ArchName(std::get<0>(info.param)), "_",
                          kernels::WeightTypeName(std::get<1>(info.param)));
    });

// QLoRA's backward: grad_x = grad_y W through the blocks, equal to autograd
// through the dequantized weight, for decode-sized and prefill-sized x.
TEST(LinearWeightTest, GradientsFlowThroughQuantizedWeights) {
  at::manual_seed(3);
  at::Tensor w = at::randn({300, 96});
  for (WeightType t :
       {WeightType::kF32, WeightType::kQ8_0, WeightType::kQ4_0}) {
    auto lw = MakeLinearWeight(w, t, "w");
    ASSERT_TRUE(lw.ok());
    const at::Tensor dense = lw->Dense();
    for (int64_t rows : {3, 70}) {
      at::Tensor x = at::randn({rows, 96}).requires_grad_(true);
      at::Tensor r = at::randn({rows, 300});
      (LinearForward(*lw, x, {}) * r).sum().backward();
      at::Tensor want = at::mm(r, dense);
      EXPECT_LT((x.grad() - want).abs().max().item<double>(), 1e-4)
          << kernels::WeightTypeName(t) << " rows " << rows;
      // The forward is the no-grad forward, whatever autograd does.
      at::Tensor y1 = LinearForward(*lw, x, {});
      at::Tensor y2 = LinearForward(*lw, x.detach(), {});
      EXPECT_TRUE(at::equal(y1.detach(), y2));
    }
  }
}

// Packed for decode (16-row groups where the AVX-512 kernels run): the same
// weights (Dense, the ATen path's dequantized GEMM, gradients), and decode
// and prefill rows as the interleaved kernels compute them.
TEST(LinearWeightTest, PackedForDecodeHoldsTheSameWeights) {
  at::manual_seed(4);
  at::Tensor w = at::randn({304, 256});
  for (WeightType t : {WeightType::kQ8_0, WeightType::kQ4_0, WeightType::kQ4_K,
                       WeightType::kQ6_K}) {
    auto lw = MakeLinearWeight(w, t, "w");
    ASSERT_TRUE(lw.ok());
    ASSERT_EQ(lw->type, t);
    LinearWeight packed = *lw;
    PackForDecode(&packed);
    EXPECT_EQ(packed.layout, kernels::PreferredLayout(t, 304));
    if (kernels::ActiveIsa() == kernels::Isa::kAvx512) {
      EXPECT_EQ(packed.layout, kernels::WeightLayout::kInterleaved16);
    }
    EXPECT_EQ(packed.Bytes(), lw->Bytes());
    EXPECT_TRUE(at::equal(packed.Dense(), lw->Dense()));
    at::Tensor x = at::randn({70, 256});
    // The ATen reference path: GEMM over dequantized slices, the same for
    // both layouts.
    EXPECT_TRUE(at::equal(LinearForward(packed, x, {}, false),
                          LinearForward(*lw, x, {}, false)));
    // Decode (3 rows) and, with the AVX-512 kernels, prefill (70): the
    // interleaved kernels' rows.
    const bool any_rows = kernels::GemvForAnyRows(t);
    for (int64_t rows : {3, 70}) {
      if (rows > kGemvMaxRows && !any_rows) continue;
      at::Tensor xr = x.narrow(0, 0, rows).contiguous();
      at::Tensor y = LinearForward(packed, xr, {});
      at::Tensor want = at::empty({rows, 304});
      kernels::GemvOn(kernels::Isa::kScalar, packed.View(),
                      xr.data_ptr<float>(), rows, want.data_ptr<float>(), 0,
                      304);
      EXPECT_TRUE(at::equal(y, want)) << kernels::WeightTypeName(t) << rows;
      EXPECT_LT((y - LinearForward(*lw, xr, {})).abs().max().item<double>(),
                1e-3 * y.abs().max().item<double>());
    }
    // A prompt's row is the row decoded alone, bit for bit.
    if (any_rows) {
      EXPECT_TRUE(at::equal(LinearForward(packed, x, {}).narrow(0, 42, 1),
                            LinearForward(packed, x.narrow(0, 42, 1), {})));
    }
    at::Tensor x3 = x.narrow(0, 0, 3).contiguous();
    at::Tensor xg = x3.clone().requires_grad_(true);
    at::Tensor r = at::randn({3, 304});
    (LinearForward(packed, xg, {}) * r).sum().backward();
    EXPECT_LT((xg.grad() - at::mm(r, lw->Dense())).abs().max().item<double>(),
              1e-4);
  }
}

TEST(LinearWeightTest, NonFiniteWeightsAreRefusedNamingTheTensor) {
  at::Tensor w = at::ones({4, 32});
  w[1][3] = std::nanf("");
  auto lw = MakeLinearWeight(w, WeightType::kQ4_0, "layers.7.up.weight");
  ASSERT_FALSE(lw.ok());
  EXPECT_NE(lw.status().message().find("layers.7.up.weight"),
            std::string::npos);
  // A width the blocks do not divide stays float.
  auto odd = MakeLinearWeight(at::ones({4, 40}), WeightType::kQ8_0, "odd");
  ASSERT_TRUE(odd.ok());
  EXPECT_EQ(odd->type, WeightType::kF32);
}

// Half weights load as f16 (float32 compute, GEMV on the halves) and stay
// within half precision of float; a float16 compute dtype, which the CPU
// cannot run, is refused at load rather than failing at the first forward.
TEST(HalfWeightsTest, F16WeightsComputeInFloatAndF16ComputeIsRefused) {
  auto store = ModelStore::Open(testing::TinyModel(Arch::kLlama));
  ASSERT_TRUE(store.ok());
  auto f32 = LocalPipeline::Load(**store, {});
  auto f16 = LocalPipeline::Load(**store, {1}, Quantized(WeightType::kF16));
  ASSERT_TRUE(f32.ok() && f16.ok()) << f16.status();
  EXPECT_LT((*f16)->stages()[0]->WeightBytes(),
            (*f32)->stages()[0]->WeightBytes() * 0.8);
  std::vector<int32_t> prompt = {5, 17, 99, 3, 250, 41, 7};
  auto lf = (*f32)->NewSequence()->ForwardAll(prompt);
  auto lh = (*f16)->NewSequence()->ForwardAll(prompt);
  ASSERT_TRUE(lf.ok() && lh.ok());
  const double rel = ((*lf - *lh).norm() / lf->norm()).item<double>();
  EXPECT_GT(rel, 0.0);
  EXPECT_LT(rel, 2e-3);
  StageOptions half;
  half.dtype = at::kHalf;
  auto bad = LocalPipeline::Load(**store, {}, half);
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("float16"), std::string::npos);
}

// Perplexity of the real model on held-out stories, per weight type and
// compute dtype. The bound for q8_0 is the (+0.5%); the others are
// what was measured (see the closing note) plus margin. stories260K's
// widths (64, 172) hold no 256-weight super-block, so q4_k and q6_k fall
// back to q4_0 and q8_0 here (as llama.cpp does): their rows show that
// fallback; the K formats' own error is bounded in quant_kblocks_test.
TEST(QuantizedQualityTest, RealModelPerplexityPerWeightType) {
  const std::string dir = testing::SharedDir() + "/models/stories260K";
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  auto tok = (*store)->LoadTokenizer();
  auto text =
      ReadFile(testing::SharedDir() + "/data/tinystories_valid_sample.txt");
  ASSERT_TRUE(tok.ok() && text.ok());
  // Encoded line by line: the SentencePiece encoder's merge loop grows
  // with the length of one input.
  auto ids = std::make_unique<std::vector<int32_t>>();
  for (absl::string_view line :
       absl::StrSplit(absl::string_view(*text).substr(0, 20000), '\n')) {
    auto piece = (*tok)->Encode(line);
    ASSERT_TRUE(piece.ok());
    ids->insert(ids->end(), piece->begin(), piece->end());
  }
  SetComputeThreads(1);  // ATen's and OpenBLAS's pools would both spin.
  struct Variant {
    const char* name;
    StageOptions options;
    double max_increase;  // Relative perplexity increase allowed.
    double min_agreement;
  };
  auto with = [](at::ScalarType dtype, WeightType w) {
    StageOptions o;
    o.dtype = dtype;
    o.weights = w;
    return o;
  };
  const std::vector<Variant> variants = {
      {"f32", with(at::kFloat, WeightType::kF32), 0, 1},
      {"f16", with(at::kFloat, WeightType::kF16), 0.001, 0.99},
      {"bf16", with(at::kBFloat16, WeightType::kF32), 0.01, 0.95},
      {"q8_0", with(at::kFloat, WeightType::kQ8_0), 0.005, 0.95},
      {"q6_k", with(at::kFloat, WeightType::kQ6_K), 0.005, 0.95},
      {"q4_0", with(at::kFloat, WeightType::kQ4_0), 0.15, 0.8},
      {"q4_k", with(at::kFloat, WeightType::kQ4_K), 0.15, 0.8},
  };
  // Windows of 256 tokens take the prefill path (GEMM over dequantized
  // slices, float activations); windows of 32 the decode path (fused, GEMV
  // over the blocks with Q8_0 activations): both are measured and bounded.
  for (const int64_t window : {256, 32}) {
    auto perplexity = [&](const StageOptions& o, std::vector<int32_t>* greedy) {
      auto p = LocalPipeline::Load(**store, {}, o);
      EXPECT_TRUE(p.ok()) << p.status();
      double nll = 0;
      int64_t n = 0;
      for (size_t start = 0; start + window + 1 <= ids->size();
           start += window) {
        std::vector<int32_t> in(ids->begin() + start,
                                ids->begin() + start + window);
        auto logits = (*p)->NewSequence()->ForwardAll(in);
        EXPECT_TRUE(logits.ok());
        at::Tensor lp = at::log_softmax(logits->to(at::kFloat), -1);
        std::vector<int64_t> next(ids->begin() + start + 1,
                                  ids->begin() + start + window + 1);
        nll -= lp.gather(1, at::tensor(next).unsqueeze(1)).sum().item<double>();
        at::Tensor am = lp.argmax(-1).contiguous();
        greedy->insert(greedy->end(), am.data_ptr<int64_t>(),
                       am.data_ptr<int64_t>() + window);
        n += window;
      }
      return std::exp(nll / n);
    };
    std::vector<int32_t> g32;
    const double p32 = perplexity(variants[0].options, &g32);
    for (const Variant& v : variants) {
      std::vector<int32_t> g;
      const double p = perplexity(v.options, &g);
      int same = 0;
      for (size_t i = 0; i < g.size(); ++i) same += g[i] == g32[i];
      const double agree = static_cast<double>(same) / g.size();
      std::printf(
          "window %ld %-5s perplexity %.4f (%+.2f%%), greedy agreement "
          "%.1f%% over %zu tokens\n",
          static_cast<long>(window), v.name, p, 100 * (p / p32 - 1),
          100 * agree, g.size());
      EXPECT_LE(p / p32 - 1, v.max_increase) << v.name << " " << window;
      EXPECT_GE(agree, v.min_agreement) << v.name << " " << window;
    }
  }
}

}  // namespace
}  // namespace edgesplit
