#include "runtime/stage_model.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/torch_util.h"
#include "runtime/weight_layout.h"

namespace edgesplit {
namespace {

using Linear = StageModel::Linear;
using Block = StageModel::Block;

at::Tensor LoraDelta(const LoraFactors& f, const at::Tensor& x) {
  return at::linear(at::linear(x, f.a.to(x.scalar_type())),
                    f.b.to(x.scalar_type()));
}

// y = x W^T + b, plus each adapter run's scaling * delta on its rows
// (module `index` of the stage). Out of place, so gradients flow through
// the training path's single run as through the mixed case.
at::Tensor ApplyLinear(const Linear& l, const at::Tensor& x,
                       const StageModel::AdapterRuns& runs, size_t index,
                       bool use_kernels) {
  at::Tensor y = LinearForward(l.w, x, l.b, use_kernels);
  std::vector<at::Tensor> pieces;
  int64_t done = 0;  // Rows of y already in `pieces`.
  for (const StageModel::AdapterRun& run : runs) {
    const LoraFactors* f = run.factors[index];
    if (f == nullptr) continue;
    const double scaling = run.adapter->scaling();
    if (run.rows == y.size(0)) {
      return at::add(y, LoraDelta(*f, x), scaling);  // One adapter for all.
    }
    if (run.begin > done) pieces.push_back(y.narrow(0, done, run.begin - done));
    pieces.push_back(at::add(y.narrow(0, run.begin, run.rows),
                             LoraDelta(*f, x.narrow(0, run.begin, run.rows)),
                             scaling));
    done = run.begin + run.rows;
  }
  if (pieces.empty()) return y;
  if (done < y.size(0)) pieces.push_back(y.narrow(0, done, y.size(0) - done));
  return at::cat(pieces, 0);
}

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& w, double eps) {
  // As Hugging Face's LlamaRMSNorm: statistics in float32.
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, true) + eps);
  return w * normed.to(x.scalar_type());
}

// rotate_half RoPE (Hugging Face convention): x [T, heads, d],
// cos/sin [T, 1, d].
at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos,
                     const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated =
      at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

// Causal attention of each sequence's new tokens against its cache.
// q [T, nh, d], k/v [T, nkv, d]; returns [T, nh * d].
at::Tensor Attention(const at::Tensor& q, const at::Tensor& k,
                     const at::Tensor& v,
                     const std::vector<SequenceSlice>& seqs, int64_t layer,
                     int64_t num_kv_heads) {
  const int64_t nh = q.size(1), d = q.size(2);
  const int64_t group = nh / num_kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<at::Tensor> outs;
  outs.reserve(seqs.size());
  int64_t offset = 0;
  for (const SequenceSlice& s : seqs) {
    const int64_t n = s.num_tokens;
    at::Tensor ks = k.narrow(0, offset, n).transpose(0, 1);  // [nkv, n, d]
    at::Tensor vs = v.narrow(0, offset, n).transpose(0, 1);
    auto [keys, values] = s.cache->Append(layer, ks, vs);  // [nkv, L, d]
    const int64_t total = keys.size(1), past = total - n;
    // Query head h uses KV head h / group (as Hugging Face's repeat_kv):
    // fold the group into the query rows instead of copying K and V.
    at::Tensor qs = q.narrow(0, offset, n)
                        .transpose(0, 1)  // [nh, n, d]
                        .reshape({num_kv_heads, group * n, d});
    at::Tensor scores = at::matmul(qs, keys.transpose(1, 2)) * scale;
    if (n > 1) {
      // Query i sits at position past + i and sees keys j <= past + i.
      at::Tensor mask = at::ones({n, total}, at::kBool).triu(past + 1);
      scores = scores.view({num_kv_heads, group, n, total})
                   .masked_fill(mask, -std::numeric_limits<double>::infinity())
                   .view({num_kv_heads, group * n, total});
    }
    // In float32 whatever the compute dtype, as Hugging Face does.
    at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
    at::Tensor o = at::matmul(probs, values)  // [nkv, group * n, d]
                       .view({nh, n, d})
                       .transpose(0, 1)
                       .reshape({n, nh * d});
    outs.push_back(std::move(o));
    offset += n;
  }
  return outs.size() == 1 ? outs[0] : at::cat(outs, 0);
}

bool NeedsGrad(const StageInput& input, const StageModel::AdapterRuns& runs) {
  if (!at::GradMode::is_enabled()) return false;
  if (input.hidden.defined() && input.hidden.requires_grad()) return true;
  for (const StageModel::AdapterRun& run : runs) {
    for (const LoraFactors* f : run.factors) {
      if (f != nullptr && (f->a.requires_grad() || f->b.requires_grad())) {
        return true;
      }
    }
  }
  return false;
}

absl::StatusOr<at::Tensor> Take(WeightMap& w, const std::string& name) {
  auto it = w.find(name);
  if (it == w.end()) {
    return absl::InternalError(
        absl::StrCat("weight \"", name, "\" not loaded"));
  }
  return it->second;
}

// The type the stage holds its linear weights in: as asked, else as the
// checkpoint stores them.
absl::StatusOr<kernels::WeightType> EffectiveWeights(
    const ModelConfig& c, const StageOptions& options) {
  kernels::WeightType t = kernels::WeightType::kF32;
  if (options.weights) {
    t = *options.weights;
  } else if (!c.quantized_weights.empty()) {
    t = *kernels::ParseWeightType(c.quantized_weights);  // Validated.
  }
  if (options.dtype == at::kHalf) {
    // Stages run on the CPU, where LibTorch 1.13 has no float16 GEMM: the
    // first forward would fail. Half weights compute in float32 instead.
    return absl::InvalidArgumentError(
        "float16 compute is not available on the CPU: use weights f16 (half "
        "weights, float32 compute) or dtype bf16");
  }
  if (t != kernels::WeightType::kF32 && options.dtype != at::kFloat) {
    return absl::InvalidArgumentError(
        absl::StrCat(kernels::WeightTypeName(t),
                     " weights compute in float32; the stage dtype is ",
                     c10::toString(options.dtype)));
  }
  return t;
}

// The weight `name` of the [out, in] matrix `lm` as `want`: from the
// checkpoint's blocks when it stores blocks (the store checked their
// shape; kept as stored unless `options.weights` asks for a type, so a GGUF
// file's mix of types stays as it is), else from its float tensor (GPT-2's
// Conv1D [in, out] transposed).
absl::StatusOr<LinearWeight> LoadRows(const ModelStore& store, WeightMap& w,
                                      const std::string& name,
                                      const LinearModule& lm,
                                      kernels::WeightType want,
                                      const StageOptions& options) {
  ES_ASSIGN_OR_RETURN(at::Tensor t, Take(w, name));
  if (t.scalar_type() != at::kByte) {
    return MakeLinearWeight(lm.conv1d ? t.t().contiguous() : t, want, name);
  }
  ES_ASSIGN_OR_RETURN(std::optional<kernels::WeightType> stored,
                      store.StoredBlocks(name));
  if (!stored) return absl::InternalError(name + ": bytes without a type");
  LinearWeight lw;
  lw.type = *stored;
  lw.out = lm.out_features;
  lw.in = lm.in_features;
  lw.blocks = t.contiguous();
  if (want == *stored || !options.weights) return lw;
  return MakeLinearWeight(lw.Dense(), want, name);
}

// The weight in the layout the decode kernels run fastest.
absl::StatusOr<LinearWeight> LoadLinear(const ModelStore& store, WeightMap& w,
                                        const std::string& name,
                                        const LinearModule& lm,
                                        kernels::WeightType want,
                                        const StageOptions& options) {
  ES_ASSIGN_OR_RETURN(LinearWeight lw,
                      LoadRows(store, w, name, lm, want, options));
  PackForDecode(&lw);
  return lw;
}

}  // namespace

absl::StatusOr<std::unique_ptr<StageModel>> StageModel::Load(
    const ModelStore& store, const StageSpec& spec,
    const StageOptions& options) {
  ES_ASSIGN_OR_RETURN(const kernels::WeightType weights,
                      EffectiveWeights(store.config(), options));
  ES_ASSIGN_OR_RETURN(
      WeightMap w,
      store.LoadStageWeights(spec, options.dtype, options.copy_weights));
  std::unique_ptr<StageModel> m(new StageModel());
  m->config_ = store.config();
  m->spec_ = spec;
  m->options_ = options;
  m->weights_ = weights;
  const ModelConfig& c = m->config_;
  const std::string& p = store.gpt2_prefix();
  const bool gpt2 = c.arch == Arch::kGpt2;
  auto status = TorchCall("StageModel::Load", [&]() -> absl::Status {
    if (spec.embedding) {
      ES_ASSIGN_OR_RETURN(m->wte_, Take(w, TokenEmbeddingName(c, p)));
      if (gpt2) {
        ES_ASSIGN_OR_RETURN(m->wpe_, Take(w, p + "wpe.weight"));
      }
    }
    if (spec.head) {
      ES_ASSIGN_OR_RETURN(
          m->final_w_, Take(w, gpt2 ? p + "ln_f.weight" : "model.norm.weight"));
      if (gpt2) {
        ES_ASSIGN_OR_RETURN(m->final_b_, Take(w, p + "ln_f.bias"));
      }
      const std::string head_name =
          c.tie_word_embeddings ? TokenEmbeddingName(c, p) : "lm_head.weight";
      const LinearModule head{"", "", c.hidden_size, c.vocab_size, false};
      // A tied head is made from the float embedding table: it takes the
      // stage's weight type (the checkpoint's, when nothing is asked).
      ES_ASSIGN_OR_RETURN(
          m->head_, LoadLinear(store, w, head_name, head, weights, options));
    }
    absl::MutexLock lock(&m->mu_);
    for (int64_t b = spec.blocks.first; b < spec.blocks.last; ++b) {
      Block block;
      block.index = b;
      const std::string bp = gpt2 ? absl::StrCat(p, "h.", b, ".")
                                  : absl::StrCat("model.layers.", b, ".");
      if (gpt2) {
        ES_ASSIGN_OR_RETURN(block.norm1_w, Take(w, bp + "ln_1.weight"));
        ES_ASSIGN_OR_RETURN(block.norm1_b, Take(w, bp + "ln_1.bias"));
        ES_ASSIGN_OR_RETURN(block.norm2_w, Take(w, bp + "ln_2.weight"));
        ES_ASSIGN_OR_RETURN(block.norm2_b, Take(w, bp + "ln_2.bias"));
      } else {
        ES_ASSIGN_OR_RETURN(block.norm1_w,
                            Take(w, bp + "input_layernorm.weight"));
        ES_ASSIGN_OR_RETURN(block.norm2_w,
                            Take(w, bp + "post_attention_layernorm.weight"));
      }
      for (const LinearModule& lm : BlockLinearModules(c, b)) {
        const std::string name = LinearWeightName(c, lm, p);
        Linear l;
        l.module = lm.module;
        // Nothing asked: a block linear stays as stored, a float one float
        // (a GGUF file's F16/F32 linears keep their precision; a quantized
        // directory stores floats only where its blocks cannot go).
        ES_ASSIGN_OR_RETURN(
            l.w, LoadLinear(store, w, name, lm,
                            options.weights.value_or(kernels::WeightType::kF32),
                            options));
        // "<module>.bias" beside "<module>.weight".
        const std::string bias =
            name.substr(0, name.size() - sizeof("weight") + 1) + "bias";
        if (w.count(bias) > 0) l.b = w[bias];
        block.linears.push_back(std::move(l));
      }
      m->blocks_.push_back(std::move(block));
    }
    if (!gpt2 && spec.blocks.size() > 0) {
      // HF: inv_freq = 1 / theta^(arange(0, d, 2) / d), in float32.
      const int64_t d = c.head_dim;
      m->rope_inv_freq_ =
          1.0 / at::pow(c.rope_theta,
                        at::arange(0, d, 2, at::kLong).to(at::kFloat) / d);
    }
    return absl::OkStatus();
  });
  ES_RETURN_IF_ERROR(status);
  return m;
}

std::unique_ptr<SequenceKvCache> StageModel::NewCache(KvBudget* budget) const {
  return std::make_unique<SequenceKvCache>(
      spec_.blocks.size(), config_.num_kv_heads, config_.head_dim,
      config_.max_positions, options_.dtype, budget);
}

absl::Status StageModel::ValidateInput(const StageInput& in) const {
  if (in.sequences.empty()) {
    return absl::InvalidArgumentError("batch has no sequences");
  }
  int64_t total = 0;
  std::set<const SequenceKvCache*> seen;
  for (const SequenceSlice& s : in.sequences) {
    if (s.cache == nullptr || s.num_tokens <= 0) {
      return absl::InvalidArgumentError(
          "every sequence needs a cache and at least one token");
    }
    if (s.cache->num_layers() != spec_.blocks.size() ||
        s.cache->num_kv_heads() != config_.num_kv_heads ||
        s.cache->head_dim() != config_.head_dim ||
        s.cache->dtype() != options_.dtype) {
      return absl::InvalidArgumentError("cache belongs to another stage");
    }
    if (s.num_tokens > s.cache->max_tokens()) {
      return absl::OutOfRangeError(
          absl::StrCat(s.num_tokens, " tokens exceed the model's context of ",
                       s.cache->max_tokens()));
    }
    if (!seen.insert(s.cache).second) {
      return absl::InvalidArgumentError("a sequence appears twice in a batch");
    }
    total += s.num_tokens;
  }
  if (spec_.embedding) {
    if (!in.tokens.defined() || in.tokens.dim() != 1 ||
        in.tokens.scalar_type() != at::kLong || in.tokens.size(0) != total) {
      return absl::InvalidArgumentError(absl::StrCat(
          "first stage expects int64 token ids of shape [", total, "]"));
    }
    if (in.tokens.min().item<int64_t>() < 0 ||
        in.tokens.max().item<int64_t>() >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id outside the vocabulary [0, ", config_.vocab_size, ")"));
    }
  } else {
    if (!in.hidden.defined() || in.hidden.dim() != 2 ||
        !at::isFloatingType(in.hidden.scalar_type()) ||
        in.hidden.size(0) != total ||
        in.hidden.size(1) != config_.hidden_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("stage expects floating hidden states of shape [", total,
                       ", ", config_.hidden_size, "]"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> StageModel::Forward(const StageInput& input) const {
  return TorchCall("StageModel::Forward", [&]() -> absl::StatusOr<at::Tensor> {
    ES_RETURN_IF_ERROR(ValidateInput(input));
    absl::ReaderMutexLock lock(&mu_);
    ES_ASSIGN_OR_RETURN(AdapterRuns runs, ResolveAdapters(input));
    // Reserve every cache first: a budget failure must change nothing.
    for (const SequenceSlice& s : input.sequences) {
      ES_RETURN_IF_ERROR(s.cache->Reserve(s.cache->length() + s.num_tokens));
    }
    // Without anything to differentiate, skip autograd's bookkeeping (a
    // measurable share of a small model's decode step).
    c10::InferenceMode no_autograd(!NeedsGrad(input, runs));
    at::Tensor out = CanRunFused(input, runs) ? ForwardFused(input, runs)
                                              : ForwardLocked(input, runs);
    for (const SequenceSlice& s : input.sequences)
      s.cache->Commit(s.num_tokens);
    return out;
  });
}

absl::StatusOr<StageModel::AdapterRuns> StageModel::ResolveAdapters(
    const StageInput& in) const {
  const LoraAdapter* all = nullptr;
  if (!in.adapter.empty()) {
    if (!in.sequence_adapters.empty()) {
      return absl::InvalidArgumentError(
          "a batch names one adapter for all and one per sequence");
    }
    auto it = adapters_.find(in.adapter);
    if (it == adapters_.end()) {
      return absl::NotFoundError(absl::StrCat(
          "adapter \"", in.adapter, "\" is not loaded on this stage"));
    }
    all = it->second.get();
  } else if (!in.sequence_adapters.empty() &&
             in.sequence_adapters.size() != in.sequences.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(in.sequence_adapters.size(), " sequence adapters for ",
                     in.sequences.size(), " sequences"));
  }
  AdapterRuns runs;
  int64_t row = 0;
  for (size_t i = 0; i < in.sequences.size(); ++i) {
    const LoraAdapter* a = all != nullptr ? all
                           : in.sequence_adapters.empty()
                               ? nullptr
                               : in.sequence_adapters[i];
    const int64_t n = in.sequences[i].num_tokens;
    if (a != nullptr && !runs.empty() && runs.back().adapter == a &&
        runs.back().begin + runs.back().rows == row) {
      runs.back().rows += n;  // Same adapter as the previous sequence.
    } else if (a != nullptr) {
      runs.push_back({row, n, a, {}});
    }
    row += n;
  }
  for (size_t r = 0; r < runs.size(); ++r) {
    AdapterRun& run = runs[r];
    // An adapter met before in this batch: its factors are resolved.
    for (size_t p = 0; p < r && run.factors.empty(); ++p) {
      if (runs[p].adapter == run.adapter) run.factors = runs[p].factors;
    }
    if (!run.factors.empty()) continue;
    for (const Block& b : blocks_) {
      for (const Linear& l : b.linears) {
        const LoraFactors* f = run.adapter->Find(l.module);
        if (f != nullptr &&
            (f->a.dim() != 2 || f->b.dim() != 2 || f->a.size(0) < 1 ||
             f->a.size(1) != l.w.in || f->b.size(0) != l.w.out ||
             f->b.size(1) != f->a.size(0) ||
             !at::isFloatingType(f->a.scalar_type()) ||
             !at::isFloatingType(f->b.scalar_type()))) {
          return absl::InvalidArgumentError(absl::StrCat(
              "adapter \"", run.adapter->name(), "\" does not fit module ",
              l.module, " [", l.w.out, ", ", l.w.in, "] of this stage"));
        }
        run.factors.push_back(f);
      }
    }
  }
  // An adapter with nothing on this stage's blocks changes none of its rows.
  runs.erase(
      std::remove_if(runs.begin(), runs.end(),
                     [](const AdapterRun& run) {
                       return std::all_of(
                           run.factors.begin(), run.factors.end(),
                           [](const LoraFactors* f) { return f == nullptr; });
                     }),
      runs.end());
  return runs;
}

at::Tensor StageModel::ForwardLocked(const StageInput& in,
                                     const AdapterRuns& runs) const {
  const ModelConfig& c = config_;
  const bool gpt2 = c.arch == Arch::kGpt2;
  const bool use_kernels = options_.decode_kernels;
  // Absolute position of every row.
  std::vector<int64_t> pos;
  for (const SequenceSlice& s : in.sequences) {
    for (int64_t i = 0; i < s.num_tokens; ++i) {
      pos.push_back(s.cache->length() + i);
    }
  }
  at::Tensor positions = at::tensor(pos, at::kLong);
  at::Tensor x;
  if (spec_.embedding) {
    x = at::embedding(wte_, in.tokens);
    if (gpt2) x = x + at::embedding(wpe_, positions);
  } else {
    x = in.hidden.to(options_.dtype);
  }
  at::Tensor cos, sin;
  if (!gpt2 && !blocks_.empty()) {
    // HF: freqs = position (float32) x inv_freq; emb = cat(freqs, freqs).
    at::Tensor freqs = at::outer(positions.to(at::kFloat), rope_inv_freq_);
    at::Tensor emb = at::cat({freqs, freqs}, -1);
    cos = emb.cos().to(options_.dtype).unsqueeze(1);
    sin = emb.sin().to(options_.dtype).unsqueeze(1);
  }
  const int64_t T = x.size(0), nh = c.num_heads, nkv = c.num_kv_heads,
                d = c.head_dim, H = c.hidden_size;
  for (size_t li = 0; li < blocks_.size(); ++li) {
    const Block& b = blocks_[li];
    const auto& L = b.linears;
    auto linear = [&](size_t i, const at::Tensor& input) {
      return ApplyLinear(L[i], input, runs, li * L.size() + i, use_kernels);
    };
    if (gpt2) {
      at::Tensor h = at::layer_norm(x, {H}, b.norm1_w, b.norm1_b, c.norm_eps);
      at::Tensor qkv = linear(0, h);
      at::Tensor q = qkv.narrow(1, 0, H).view({T, nh, d});
      at::Tensor k = qkv.narrow(1, H, H).view({T, nh, d});
      at::Tensor v = qkv.narrow(1, 2 * H, H).view({T, nh, d});
      at::Tensor a = Attention(q, k, v, in.sequences, li, nkv);
      x = x + linear(1, a);
      h = at::layer_norm(x, {H}, b.norm2_w, b.norm2_b, c.norm_eps);
      h = at::gelu(linear(2, h), "tanh");
      x = x + linear(3, h);
    } else {
      at::Tensor h = RmsNorm(x, b.norm1_w, c.norm_eps);
      at::Tensor q = linear(0, h).view({T, nh, d});
      at::Tensor k = linear(1, h).view({T, nkv, d});
      at::Tensor v = linear(2, h).view({T, nkv, d});
      q = ApplyRope(q, cos, sin);
      k = ApplyRope(k, cos, sin);
      at::Tensor a = Attention(q, k, v, in.sequences, li, nkv);
      x = x + linear(3, a);
      h = RmsNorm(x, b.norm2_w, c.norm_eps);
      at::Tensor g = at::silu(linear(4, h));
      x = x + linear(6, g * linear(5, h));
    }
  }
  if (!spec_.head) return x;
  if (in.last_token_only) {
    std::vector<int64_t> last;
    int64_t offset = 0;
    for (const SequenceSlice& s : in.sequences) {
      offset += s.num_tokens;
      last.push_back(offset - 1);
    }
    x = x.index_select(0, at::tensor(last, at::kLong));
  }
  x = gpt2 ? at::layer_norm(x, {H}, final_w_, final_b_, c.norm_eps)
           : RmsNorm(x, final_w_, c.norm_eps);
  return LinearForward(head_, x, at::Tensor(), use_kernels).to(at::kFloat);
}

absl::Status StageModel::AttachAdapter(std::shared_ptr<LoraAdapter> adapter) {
  if (adapter == nullptr || adapter->name().empty()) {
    return absl::InvalidArgumentError("adapter needs a name");
  }
  absl::MutexLock lock(&mu_);
  if (adapters_.count(adapter->name()) > 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("adapter \"", adapter->name(), "\" is already attached"));
  }
  adapters_[adapter->name()] = std::move(adapter);
  return absl::OkStatus();
}

absl::Status StageModel::DetachAdapter(const std::string& name) {
  absl::MutexLock lock(&mu_);
  if (adapters_.erase(name) == 0) {
    return absl::NotFoundError(
        absl::StrCat("adapter \"", name, "\" is not attached"));
  }
  return absl::OkStatus();
}

absl::Status StageModel::MergeAdapter(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = adapters_.find(name);
  if (it == adapters_.end()) {
    return absl::NotFoundError(
        absl::StrCat("adapter \"", name, "\" is not attached"));
  }
  const LoraAdapter& adapter = *it->second;
  if (weights_ != kernels::WeightType::kF32) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot merge adapter \"", name, "\" into ",
        kernels::WeightTypeName(weights_), " weights: apply it unmerged"));
  }
  // Compute every merged weight first and swap them in only when all
  // succeeded: a half-merged stage would apply the adapter twice.
  std::vector<std::pair<Linear*, at::Tensor>> merged;
  // mu_ is held: clang's analysis does not follow it into the lambda.
  ES_RETURN_IF_ERROR(TorchCall(
      "StageModel::MergeAdapter",
      [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
        for (Block& b : blocks_) {
          for (Linear& l : b.linears) {
            const LoraFactors* f = adapter.Find(l.module);
            if (f == nullptr) continue;
            at::Tensor delta =
                at::matmul(f->b, f->a) * adapter.scaling();  // [out, in]
            // Base weights may be a read-only mapping: merge into a new tensor.
            merged.emplace_back(
                &l, (l.w.Dense() + delta).to(options_.dtype).contiguous());
          }
        }
        return absl::OkStatus();
      }));
  for (auto& [linear, w] : merged) linear->w.dense = std::move(w);
  adapters_.erase(it);
  return absl::OkStatus();
}

int64_t StageModel::WeightBytes() const {
  absl::ReaderMutexLock lock(&mu_);
  int64_t bytes = 0;
  auto add = [&](const at::Tensor& t) {
    if (t.defined()) bytes += t.nbytes();
  };
  add(wte_);
  add(wpe_);
  add(final_w_);
  add(final_b_);
  // A tied head shares the embedding's float tensor; quantized, it is its
  // own copy.
  if (spec_.head && !(spec_.embedding && config_.tie_word_embeddings &&
                      head_.type == kernels::WeightType::kF32)) {
    bytes += head_.Bytes();
  }
  for (const Block& b : blocks_) {
    add(b.norm1_w);
    add(b.norm1_b);
    add(b.norm2_w);
    add(b.norm2_b);
    for (const Linear& l : b.linears) {
      bytes += l.w.Bytes();
      add(l.b);
    }
  }
  return bytes;
}

}  // namespace edgesplit
