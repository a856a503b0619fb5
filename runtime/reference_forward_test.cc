// The stage implementation against a naive, independent transcription of
// Hugging Face's GPT2LMHeadModel and LlamaForCausalLM forward passes (whole
// sequence, explicit causal mask, RoPE angles computed per position in
// double, K/V heads repeated as repeat_kv does). Catches a wrong Conv1D
// layout, q/k/v split, GQA head mapping, RoPE pairing or norm — which
// split-equals-whole tests cannot, since both sides share the code.
#include <ATen/ATen.h>

#include <cmath>

#include "gtest/gtest.h"
#include "runtime/generator.h"
#include "runtime/model_store.h"
#include "testing/test_models.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using ::edgesplit::testing::TinyModel;

at::Tensor CausalAttention(at::Tensor q, at::Tensor k, at::Tensor v) {
  // q [nh, T, d], k/v [nh, T, d].
  const int64_t T = q.size(1), d = q.size(2);
  at::Tensor scores = at::matmul(q, k.transpose(1, 2)) / std::sqrt(double(d));
  at::Tensor mask = at::ones({T, T}, at::kBool).triu(1);
  scores = scores.masked_fill(mask, -INFINITY);
  return at::matmul(at::softmax(scores, -1), v);
}

// [T, nh, d] with HF's rotate_half pairing: (i, i + d/2).
at::Tensor Rope(at::Tensor x, double theta) {
  const int64_t T = x.size(0), d = x.size(2), half = d / 2;
  at::Tensor out = x.clone();
  auto xa = x.accessor<float, 3>();
  auto oa = out.accessor<float, 3>();
  for (int64_t p = 0; p < T; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const double inv_freq = 1.0 / std::pow(theta, 2.0 * i / d);
      const double c = std::cos(p * inv_freq), s = std::sin(p * inv_freq);
      for (int64_t h = 0; h < x.size(1); ++h) {
        const double a = xa[p][h][i], b = xa[p][h][i + half];
        oa[p][h][i] = static_cast<float>(a * c - b * s);
        oa[p][h][i + half] = static_cast<float>(b * c + a * s);
      }
    }
  }
  return out;
}

at::Tensor ReferenceLogits(const ModelStore& store,
                           const std::vector<int64_t>& ids) {
  const ModelConfig& c = store.config();
  auto loaded =
      store.LoadStageWeights({{0, c.num_layers}, true, true}, at::kFloat);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  WeightMap& w = *loaded;
  const std::string p = store.gpt2_prefix();
  const int64_t T = ids.size(), H = c.hidden_size, nh = c.num_heads,
                nkv = c.num_kv_heads, d = c.head_dim;
  at::Tensor idx = at::tensor(ids, at::kLong);
  at::Tensor x;
  if (c.arch == Arch::kGpt2) {
    x = w[p + "wte.weight"].index_select(0, idx) +
        w[p + "wpe.weight"].narrow(0, 0, T);
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const std::string b = p + "h." + std::to_string(l) + ".";
      at::Tensor h = at::layer_norm(x, {H}, w[b + "ln_1.weight"],
                                    w[b + "ln_1.bias"], c.norm_eps);
      at::Tensor qkv = at::matmul(h, w[b + "attn.c_attn.weight"]) +
                       w[b + "attn.c_attn.bias"];
      auto parts = qkv.split(H, -1);
      auto heads = [&](at::Tensor t) {
        return t.reshape({T, nh, d}).permute({1, 0, 2});
      };
      at::Tensor o =
          CausalAttention(heads(parts[0]), heads(parts[1]), heads(parts[2]))
              .permute({1, 0, 2})
              .reshape({T, H});
      x = x + at::matmul(o, w[b + "attn.c_proj.weight"]) +
          w[b + "attn.c_proj.bias"];
      h = at::layer_norm(x, {H}, w[b + "ln_2.weight"], w[b + "ln_2.bias"],
                         c.norm_eps);
      // gelu_new, written out.
      at::Tensor f =
          at::matmul(h, w[b + "mlp.c_fc.weight"]) + w[b + "mlp.c_fc.bias"];
      f = 0.5 * f *
          (1.0 + at::tanh(std::sqrt(2.0 / M_PI) * (f + 0.044715 * f.pow(3))));
      x = x + at::matmul(f, w[b + "mlp.c_proj.weight"]) +
          w[b + "mlp.c_proj.bias"];
    }
    x = at::layer_norm(x, {H}, w[p + "ln_f.weight"], w[p + "ln_f.bias"],
                       c.norm_eps);
    return at::matmul(x, w[p + "wte.weight"].t());
  }
  auto rms = [&](at::Tensor t, at::Tensor g) {
    return g * (t / at::sqrt(t.pow(2).mean(-1, true) + c.norm_eps));
  };
  x = w["model.embed_tokens.weight"].index_select(0, idx);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string b = "model.layers." + std::to_string(l) + ".";
    at::Tensor h = rms(x, w[b + "input_layernorm.weight"]);
    at::Tensor q =
        at::matmul(h, w[b + "self_attn.q_proj.weight"].t()).reshape({T, nh, d});
    at::Tensor k = at::matmul(h, w[b + "self_attn.k_proj.weight"].t())
                       .reshape({T, nkv, d});
    at::Tensor v = at::matmul(h, w[b + "self_attn.v_proj.weight"].t())
                       .reshape({T, nkv, d});
    q = Rope(q, c.rope_theta).permute({1, 0, 2});
    k = Rope(k, c.rope_theta).permute({1, 0, 2});
    v = v.permute({1, 0, 2});
    // repeat_kv: KV head j serves query heads j*g .. j*g+g-1.
    k = k.repeat_interleave(nh / nkv, 0);
    v = v.repeat_interleave(nh / nkv, 0);
    at::Tensor o =
        CausalAttention(q, k, v).permute({1, 0, 2}).reshape({T, nh * d});
    x = x + at::matmul(o, w[b + "self_attn.o_proj.weight"].t());
    h = rms(x, w[b + "post_attention_layernorm.weight"]);
    at::Tensor g = at::matmul(h, w[b + "mlp.gate_proj.weight"].t());
    at::Tensor u = at::matmul(h, w[b + "mlp.up_proj.weight"].t());
    at::Tensor act = g * at::sigmoid(g) * u;
    x = x + at::matmul(act, w[b + "mlp.down_proj.weight"].t());
  }
  x = rms(x, w["model.norm.weight"]);
  at::Tensor head = c.tie_word_embeddings ? w["model.embed_tokens.weight"]
                                          : w["lm_head.weight"];
  return at::matmul(x, head.t());
}

void ExpectMatchesReference(const std::string& dir) {
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  std::vector<int64_t> ids;
  for (int i = 0; i < 12; ++i) {
    ids.push_back((i * 37 + 11) % (*store)->config().vocab_size);
  }
  at::Tensor want = ReferenceLogits(**store, ids);
  auto p = LocalPipeline::Load(**store, {1});
  ASSERT_TRUE(p.ok());
  auto got = (*p)->NewSequence()->ForwardAll(
      std::vector<int32_t>(ids.begin(), ids.end()));
  ASSERT_TRUE(got.ok()) << got.status();
  const double scale = want.abs().max().item<double>();
  EXPECT_LE((*got - want).abs().max().item<double>(), 1e-4 * (1 + scale))
      << dir;
}

TEST(ReferenceForwardTest, Gpt2) {
  ExpectMatchesReference(TinyModel(Arch::kGpt2));
}
TEST(ReferenceForwardTest, Llama) {
  ExpectMatchesReference(TinyModel(Arch::kLlama));
}
TEST(ReferenceForwardTest, RealModel) {
  ExpectMatchesReference(testing::SharedDir() + "/models/stories260K");
}

}  // namespace
}  // namespace edgesplit
