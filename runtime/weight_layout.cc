#include "runtime/weight_layout.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace edgesplit {

std::vector<WeightSpec> BlockWeights(const ModelConfig& c, int64_t block,
                                     const std::string& gpt2_prefix) {
  const int64_t h = c.hidden_size, i = c.intermediate_size;
  std::vector<WeightSpec> w;
  if (c.arch == Arch::kGpt2) {
    const std::string p = absl::StrCat(gpt2_prefix, "h.", block, ".");
    // GPT-2's Conv1D stores weights as [in, out].
    w = {{p + "ln_1.weight", {h}, WeightInit::kOnes},
         {p + "ln_1.bias", {h}, WeightInit::kZeros},
         {p + "attn.c_attn.weight", {h, 3 * h}},
         {p + "attn.c_attn.bias", {3 * h}, WeightInit::kZeros},
         {p + "attn.c_proj.weight", {h, h}},
         {p + "attn.c_proj.bias", {h}, WeightInit::kZeros},
         {p + "ln_2.weight", {h}, WeightInit::kOnes},
         {p + "ln_2.bias", {h}, WeightInit::kZeros},
         {p + "mlp.c_fc.weight", {h, i}},
         {p + "mlp.c_fc.bias", {i}, WeightInit::kZeros},
         {p + "mlp.c_proj.weight", {i, h}},
         {p + "mlp.c_proj.bias", {h}, WeightInit::kZeros}};
    return w;
  }
  const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const std::string p = absl::StrCat("model.layers.", block, ".");
  w = {{p + "input_layernorm.weight", {h}, WeightInit::kOnes},
       {p + "self_attn.q_proj.weight", {q, h}},
       {p + "self_attn.k_proj.weight", {kv, h}},
       {p + "self_attn.v_proj.weight", {kv, h}},
       {p + "self_attn.o_proj.weight", {h, q}},
       {p + "post_attention_layernorm.weight", {h}, WeightInit::kOnes},
       {p + "mlp.gate_proj.weight", {i, h}},
       {p + "mlp.up_proj.weight", {i, h}},
       {p + "mlp.down_proj.weight", {h, i}}};
  if (c.attention_bias) {
    w.push_back({p + "self_attn.q_proj.bias", {q}, WeightInit::kZeros});
    w.push_back({p + "self_attn.k_proj.bias", {kv}, WeightInit::kZeros});
    w.push_back({p + "self_attn.v_proj.bias", {kv}, WeightInit::kZeros});
  }
  if (c.attention_output_bias) {
    w.push_back({p + "self_attn.o_proj.bias", {h}, WeightInit::kZeros});
  }
  return w;
}

std::string TokenEmbeddingName(const ModelConfig& c,
                               const std::string& gpt2_prefix) {
  return c.arch == Arch::kGpt2 ? gpt2_prefix + "wte.weight"
                               : "model.embed_tokens.weight";
}

std::vector<WeightSpec> EmbeddingWeights(const ModelConfig& c,
                                         const std::string& gpt2_prefix) {
  std::vector<WeightSpec> w = {
      {TokenEmbeddingName(c, gpt2_prefix), {c.vocab_size, c.hidden_size}}};
  if (c.arch == Arch::kGpt2) {
    w.push_back({gpt2_prefix + "wpe.weight", {c.max_positions, c.hidden_size}});
  }
  return w;
}

std::vector<WeightSpec> HeadWeights(const ModelConfig& c,
                                    const std::string& gpt2_prefix) {
  std::vector<WeightSpec> w;
  if (c.arch == Arch::kGpt2) {
    w = {{gpt2_prefix + "ln_f.weight", {c.hidden_size}, WeightInit::kOnes},
         {gpt2_prefix + "ln_f.bias", {c.hidden_size}, WeightInit::kZeros}};
  } else {
    w = {{"model.norm.weight", {c.hidden_size}, WeightInit::kOnes}};
  }
  if (!c.tie_word_embeddings) {
    w.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}});
  }
  return w;
}

std::vector<WeightSpec> StageWeights(const ModelConfig& c,
                                     const StageSpec& spec,
                                     const std::string& gpt2_prefix) {
  std::vector<WeightSpec> w;
  if (spec.embedding) w = EmbeddingWeights(c, gpt2_prefix);
  for (int64_t b = spec.blocks.first; b < spec.blocks.last; ++b) {
    auto block = BlockWeights(c, b, gpt2_prefix);
    w.insert(w.end(), block.begin(), block.end());
  }
  if (spec.head) {
    auto head = HeadWeights(c, gpt2_prefix);
    w.insert(w.end(), head.begin(), head.end());
    if (c.tie_word_embeddings && !spec.embedding) {
      w.push_back(
          {TokenEmbeddingName(c, gpt2_prefix), {c.vocab_size, c.hidden_size}});
    }
  }
  return w;
}

}  // namespace edgesplit

namespace edgesplit {

std::vector<LinearModule> BlockLinearModules(const ModelConfig& c,
                                             int64_t block) {
  const int64_t h = c.hidden_size, i = c.intermediate_size;
  if (c.arch == Arch::kGpt2) {
    const std::string p = absl::StrCat("transformer.h.", block, ".");
    return {{p + "attn.c_attn", "c_attn", h, 3 * h, true},
            {p + "attn.c_proj", "c_proj", h, h, true},
            {p + "mlp.c_fc", "c_fc", h, i, true},
            {p + "mlp.c_proj", "c_proj", i, h, true}};
  }
  const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const std::string p = absl::StrCat("model.layers.", block, ".");
  return {{p + "self_attn.q_proj", "q_proj", h, q, false},
          {p + "self_attn.k_proj", "k_proj", h, kv, false},
          {p + "self_attn.v_proj", "v_proj", h, kv, false},
          {p + "self_attn.o_proj", "o_proj", q, h, false},
          {p + "mlp.gate_proj", "gate_proj", h, i, false},
          {p + "mlp.up_proj", "up_proj", h, i, false},
          {p + "mlp.down_proj", "down_proj", i, h, false}};
}

std::string LinearWeightName(const ModelConfig& c, const LinearModule& lm,
                             const std::string& gpt2_prefix) {
  // PEFT names GPT-2 modules "transformer.h..." whatever the checkpoint's
  // own prefix is.
  constexpr absl::string_view kPeft = "transformer.";
  if (c.arch == Arch::kGpt2 && absl::StartsWith(lm.module, kPeft)) {
    return absl::StrCat(gpt2_prefix, lm.module.substr(kPeft.size()), ".weight");
  }
  return lm.module + ".weight";
}

std::vector<LinearModule> StageMatrixWeights(const ModelConfig& c,
                                             const StageSpec& spec) {
  std::vector<LinearModule> out;
  for (int64_t b = spec.blocks.first; b < spec.blocks.last; ++b) {
    for (LinearModule& lm : BlockLinearModules(c, b)) {
      out.push_back(std::move(lm));
    }
  }
  if (spec.head && !c.tie_word_embeddings) {
    out.push_back({"lm_head", "lm_head", c.hidden_size, c.vocab_size, false});
  }
  return out;
}

}  // namespace edgesplit
