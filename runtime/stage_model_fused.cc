// StageModel's fused path for decode-sized batches: the whole step on raw
// float buffers, one loop per operation (norms, RoPE, attention against the
// KV cache, SwiGLU/GELU), the linear layers through kernels::Gemv. It does
// what ForwardLocked does with ATen ops, without ~30 dispatches per block
// (a small model's decode step is otherwise mostly dispatch overhead), and
// with the same float32 arithmetic up to summation order (tests bound the
// difference at 1e-5).
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/attend.h"
#include "kernels/cpu/compute_pool.h"
#include "kernels/cpu/gemv.h"
#include "kernels/cpu/lora_sgmv.h"
#include "runtime/stage_model.h"

namespace edgesplit {
namespace {

using Linear = StageModel::Linear;

// y [rows, out] = x [rows, in] W^T + b, plus each adapter run's
// scaling * (x A^T) B^T on its rows (module `index` of the stage), added
// as the ATen path adds it: y + scaling * delta.
void Project(const Linear& l, const StageModel::AdapterRuns& runs, size_t index,
             const float* x, int64_t rows, float* y) {
  kernels::Gemv(l.w.View(), x, rows, y);
  const int64_t out = l.w.out;
  if (l.b.defined()) {
    const float* b = l.b.data_ptr<float>();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t o = 0; o < out; ++o) y[r * out + o] += b[o];
    }
  }
  thread_local std::vector<kernels::LoraSegment> segments;
  segments.clear();
  for (const StageModel::AdapterRun& run : runs) {
    const LoraFactors* f = run.factors[index];
    if (f == nullptr) continue;
    segments.push_back({run.begin, run.rows, f->a.data_ptr<float>(),
                        f->b.data_ptr<float>(), f->a.size(0),
                        static_cast<float>(run.adapter->scaling())});
  }
  kernels::LoraSgmv(segments.data(), static_cast<int64_t>(segments.size()), x,
                    l.w.in, out, y);
}

// As Hugging Face's LlamaRMSNorm in float32: w * (x * rsqrt(mean(x^2) + eps)).
void RmsNormRows(const float* x, const float* w, int64_t rows, int64_t n,
                 double eps, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float ss = 0.0f;
    for (int64_t i = 0; i < n; ++i) ss += xr[i] * xr[i];
    const float inv =
        1.0f / std::sqrt(ss / static_cast<float>(n) + static_cast<float>(eps));
    float* yr = y + r * n;
    for (int64_t i = 0; i < n; ++i) yr[i] = w[i] * (xr[i] * inv);
  }
}

void LayerNormRows(const float* x, const float* w, const float* b, int64_t rows,
                   int64_t n, double eps, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float mean = 0.0f;
    for (int64_t i = 0; i < n; ++i) mean += xr[i];
    mean /= static_cast<float>(n);
    float var = 0.0f;
    for (int64_t i = 0; i < n; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= static_cast<float>(n);
    const float inv = 1.0f / std::sqrt(var + static_cast<float>(eps));
    float* yr = y + r * n;
    for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - mean) * inv * w[i] + b[i];
  }
}

// rotate_half RoPE on `heads` heads of one row at position `pos`.
void Rope(float* x, int64_t heads, int64_t d, int64_t pos,
          const float* inv_freq) {
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float f = static_cast<float>(pos) * inv_freq[i];
    const float c = std::cos(f), s = std::sin(f);
    for (int64_t h = 0; h < heads; ++h) {
      float* xh = x + h * d;
      const float a = xh[i], b = xh[i + half];
      xh[i] = a * c - b * s;
      xh[i + half] = b * c + a * s;
    }
  }
}

// Causal attention of one sequence's n new rows (at positions past..past+n)
// for the query heads of one KV head: q [n, nh * d] (row stride qs) from
// query head `head0` on, `group` heads; keys and values [capacity, d] of
// that KV head; out [n, nh * d] (same heads). The scores of the group
// against the keys are a GEMV over the cached keys (the kernels' dot
// products, not a serial float reduction per key). Each call reads and
// writes only its own heads, so KV heads and sequences may run on
// different threads with the same result.
void AttendGroup(const float* q, int64_t qs, int64_t n, int64_t past,
                 const float* kg, const float* vg, int64_t head0, int64_t group,
                 int64_t nh, int64_t d, float* out,
                 std::vector<float>& scores) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const kernels::Isa isa = kernels::ActiveIsa();
  scores.resize(static_cast<size_t>(group * (past + n)));
  for (int64_t t = 0; t < n; ++t) {
    const int64_t len = past + t + 1;  // Keys this query sees.
    // The group's query heads are contiguous in q.
    const float* qg = q + t * qs + head0 * d;
    kernels::GemvOn(isa, {kernels::WeightType::kF32, kg, len, d}, qg, group,
                    scores.data(), 0, len);
    for (int64_t a = 0; a < group; ++a) {
      kernels::SoftmaxValues(isa, scores.data() + a * len, len, scale, vg, d,
                             out + t * nh * d + (head0 + a) * d);
    }
  }
}

// f(i) for i in [0, n), shared by the kernel threads when n is large
// enough to pay for the hand-off (a batch's activations: the scalar
// tanh/exp of 16 rows otherwise ran on one thread while the others waited).
template <typename F>
void Elementwise(int64_t n, F&& f) {
  constexpr int64_t kGrain = 8192;
  if (n < 2 * kGrain) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  kernels::ParallelFor(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) f(i);
  });
}

// One sequence's key and value storage of one layer: [nkv, capacity, d].
struct CacheRows {
  float* keys;
  float* values;
  int64_t capacity;
};

// Per-thread scratch reused across steps (no allocation per token once
// warm).
struct Scratch {
  std::vector<float> x, h, qkv, att, proj, mlp_a, mlp_b;
  std::vector<int64_t> first_row;  // Each sequence's first row in the batch.
  std::vector<CacheRows> caches;   // Each sequence's cache, this layer.
};

float* Sized(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

}  // namespace

bool StageModel::CanRunFused(const StageInput& in,
                             const AdapterRuns& runs) const {
  if (!options_.decode_kernels || options_.dtype != at::kFloat) return false;
  if (at::GradMode::is_enabled() && in.hidden.defined() &&
      in.hidden.requires_grad()) {
    return false;
  }
  // Inference adapters only: float, contiguous, nothing to differentiate.
  for (const AdapterRun& run : runs) {
    for (const LoraFactors* f : run.factors) {
      if (f == nullptr) continue;
      for (const at::Tensor* t : {&f->a, &f->b}) {
        if (t->scalar_type() != at::kFloat || !t->is_contiguous() ||
            t->requires_grad()) {
          return false;
        }
      }
    }
  }
  int64_t rows = 0;
  for (const SequenceSlice& s : in.sequences) rows += s.num_tokens;
  return rows <= kGemvMaxRows;
}

at::Tensor StageModel::ForwardFused(const StageInput& in,
                                    const AdapterRuns& runs) const {
  const ModelConfig& c = config_;
  const bool gpt2 = c.arch == Arch::kGpt2;
  const int64_t H = c.hidden_size, nh = c.num_heads, nkv = c.num_kv_heads,
                d = c.head_dim, I = c.intermediate_size;
  int64_t T = 0;
  for (const SequenceSlice& s : in.sequences) T += s.num_tokens;
  thread_local Scratch sc;
  float* x = Sized(sc.x, T * H);
  if (spec_.embedding) {
    at::Tensor ids = in.tokens.contiguous();
    const int64_t* id = ids.data_ptr<int64_t>();
    const float* wte = wte_.data_ptr<float>();
    int64_t row = 0;
    for (const SequenceSlice& s : in.sequences) {
      for (int64_t i = 0; i < s.num_tokens; ++i, ++row) {
        std::memcpy(x + row * H, wte + id[row] * H, H * sizeof(float));
        if (gpt2) {
          const float* pe =
              wpe_.data_ptr<float>() + (s.cache->length() + i) * H;
          for (int64_t j = 0; j < H; ++j) x[row * H + j] += pe[j];
        }
      }
    }
  } else {
    at::Tensor hidden = in.hidden.to(at::kFloat).contiguous();
    std::memcpy(x, hidden.data_ptr<float>(), T * H * sizeof(float));
  }
  const int64_t qkv_width = gpt2 ? 3 * H : (nh + 2 * nkv) * d;
  float* h = Sized(sc.h, T * H);
  float* qkv = Sized(sc.qkv, T * qkv_width);
  float* att = Sized(sc.att, T * nh * d);
  float* proj = Sized(sc.proj, T * H);
  float* ma = Sized(sc.mlp_a, T * (gpt2 ? 4 * H : I));
  float* mb = Sized(sc.mlp_b, T * (gpt2 ? 4 * H : I));
  const float* inv_freq =
      rope_inv_freq_.defined() ? rope_inv_freq_.data_ptr<float>() : nullptr;
  // Lambdas run on the kernel threads must reach this thread's scratch
  // through these references: `sc` there names the worker's own.
  std::vector<int64_t>& first_row = sc.first_row;
  std::vector<CacheRows>& caches = sc.caches;
  first_row.assign(in.sequences.size(), 0);
  caches.resize(in.sequences.size());
  for (size_t i = 1; i < first_row.size(); ++i) {
    first_row[i] = first_row[i - 1] + in.sequences[i - 1].num_tokens;
  }
  for (size_t li = 0; li < blocks_.size(); ++li) {
    const Block& b = blocks_[li];
    const auto& L = b.linears;
    auto project = [&](size_t i, const float* input, float* output) {
      Project(L[i], runs, li * L.size() + i, input, T, output);
    };
    float *q, *k, *v;
    if (gpt2) {
      LayerNormRows(x, b.norm1_w.data_ptr<float>(), b.norm1_b.data_ptr<float>(),
                    T, H, c.norm_eps, h);
      project(0, h, qkv);  // [T, 3H]: q | k | v per row.
      q = qkv, k = qkv + H, v = qkv + 2 * H;
    } else {
      RmsNormRows(x, b.norm1_w.data_ptr<float>(), T, H, c.norm_eps, h);
      // q, k and v as [T, width] blocks of one buffer.
      q = qkv, k = q + T * nh * d, v = k + T * nkv * d;
      project(0, h, q);
      project(1, h, k);
      project(2, h, v);
    }
    const int64_t q_stride = gpt2 ? 3 * H : nh * d;
    const int64_t kv_stride = gpt2 ? 3 * H : nkv * d;
    // Each sequence's new keys and values go into its cache (RoPE first),
    // then every (sequence, KV head) pair attends on the kernel threads:
    // each reads and writes only its own cache rows and heads, so the
    // result is the same on any number of threads, and one long session's
    // attention is shared too (its cache reads grow with the context).
    for (size_t i = 0; i < in.sequences.size(); ++i) {
      const SequenceSlice& s = in.sequences[i];
      const int64_t past = s.cache->length();
      float* kc = s.cache->key_storage(li).data_ptr<float>();
      float* vc = s.cache->value_storage(li).data_ptr<float>();
      const int64_t cap = s.cache->key_storage(li).size(1);
      caches[i] = {kc, vc, cap};
      for (int64_t t = 0; t < s.num_tokens; ++t) {
        const int64_t row = first_row[i] + t;
        float* qr = q + row * q_stride;
        float* kr = k + row * kv_stride;
        const float* vr = v + row * kv_stride;
        if (!gpt2) {
          Rope(qr, nh, d, past + t, inv_freq);
          Rope(kr, nkv, d, past + t, inv_freq);
        }
        for (int64_t g = 0; g < nkv; ++g) {
          std::memcpy(kc + (g * cap + past + t) * d, kr + g * d, d * 4);
          std::memcpy(vc + (g * cap + past + t) * d, vr + g * d, d * 4);
        }
      }
    }
    const int64_t items = static_cast<int64_t>(in.sequences.size()) * nkv;
    kernels::ParallelFor(items, 1, [&](int64_t i0, int64_t i1) {
      thread_local std::vector<float> scores;
      for (int64_t item = i0; item < i1; ++item) {
        const int64_t i = item / nkv, g = item % nkv;
        const SequenceSlice& s = in.sequences[i];
        const CacheRows& cr = caches[i];
        const int64_t row = first_row[i];
        AttendGroup(q + row * q_stride, q_stride, s.num_tokens,
                    s.cache->length(), cr.keys + g * cr.capacity * d,
                    cr.values + g * cr.capacity * d, g * (nh / nkv), nh / nkv,
                    nh, d, att + row * nh * d, scores);
      }
    });
    project(gpt2 ? 1 : 3, att, proj);
    for (int64_t i = 0; i < T * H; ++i) x[i] += proj[i];
    if (gpt2) {
      LayerNormRows(x, b.norm2_w.data_ptr<float>(), b.norm2_b.data_ptr<float>(),
                    T, H, c.norm_eps, h);
      project(2, h, ma);
      // GELU, tanh approximation (GPT-2's gelu_new): 0.5 z (1 + tanh(u))
      // is z * sigmoid(2u), one exp instead of a tanh (glibc's tanhf costs
      // three times its expf, and this loop was a sixth of a batch's step).
      const float k1 = 2.0f * std::sqrt(2.0f / static_cast<float>(M_PI));
      Elementwise(T * 4 * H, [&](int64_t i) {
        const float z = ma[i];
        ma[i] = z / (1.0f + std::exp(-k1 * (z + 0.044715f * z * z * z)));
      });
      project(3, ma, proj);
    } else {
      RmsNormRows(x, b.norm2_w.data_ptr<float>(), T, H, c.norm_eps, h);
      project(4, h, ma);
      project(5, h, mb);
      Elementwise(T * I, [&](int64_t i) {
        const float g = ma[i];
        ma[i] = g / (1.0f + std::exp(-g)) * mb[i];  // SiLU(gate) * up.
      });
      project(6, ma, proj);
    }
    for (int64_t i = 0; i < T * H; ++i) x[i] += proj[i];
  }
  if (!spec_.head) {
    at::Tensor out = at::empty({T, H}, at::kFloat);
    std::memcpy(out.data_ptr<float>(), x, T * H * sizeof(float));
    return out;
  }
  // Rows whose logits are wanted: every row, or each sequence's last.
  int64_t rows = T;
  if (in.last_token_only) {
    rows = 0;
    int64_t offset = 0;
    for (const SequenceSlice& s : in.sequences) {
      offset += s.num_tokens;
      std::memmove(x + rows * H, x + (offset - 1) * H, H * sizeof(float));
      ++rows;
    }
  }
  if (gpt2) {
    LayerNormRows(x, final_w_.data_ptr<float>(), final_b_.data_ptr<float>(),
                  rows, H, c.norm_eps, h);
  } else {
    RmsNormRows(x, final_w_.data_ptr<float>(), rows, H, c.norm_eps, h);
  }
  at::Tensor logits = at::empty({rows, head_.out}, at::kFloat);
  kernels::Gemv(head_.View(), h, rows, logits.data_ptr<float>());
  return logits;
}

}  // namespace edgesplit
