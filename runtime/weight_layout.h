// Which checkpoint tensors (Hugging Face names and shapes) a stage needs.
// Shared by the loader (to read and validate exactly those), `model init`
// (to write them) and `model info` (to size blocks).
#ifndef EDGESPLIT_RUNTIME_WEIGHT_LAYOUT_H_
#define EDGESPLIT_RUNTIME_WEIGHT_LAYOUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/model_config.h"

namespace edgesplit {

// How a tensor is initialised by `model init`.
enum class WeightInit { kNormal, kOnes, kZeros };

struct WeightSpec {
  std::string name;  // Full checkpoint name, including any prefix.
  std::vector<int64_t> shape;
  WeightInit init = WeightInit::kNormal;
};

// `prefix` is prepended to GPT-2 names: "transformer." (what save_pretrained
// writes for GPT2LMHeadModel) or "" (the original hub checkpoints). Llama
// names always start with "model.".
std::vector<WeightSpec> BlockWeights(const ModelConfig& config, int64_t block,
                                     const std::string& gpt2_prefix);
std::vector<WeightSpec> EmbeddingWeights(const ModelConfig& config,
                                         const std::string& gpt2_prefix);
// Final norm, plus lm_head.weight when the head is untied.
std::vector<WeightSpec> HeadWeights(const ModelConfig& config,
                                    const std::string& gpt2_prefix);
// Everything a stage reads. A last stage with a tied head also needs the
// token embedding (the head's weight).
std::vector<WeightSpec> StageWeights(const ModelConfig& config,
                                     const StageSpec& spec,
                                     const std::string& gpt2_prefix);
// Name of the token embedding tensor.
std::string TokenEmbeddingName(const ModelConfig& config,
                               const std::string& gpt2_prefix);

}  // namespace edgesplit

namespace edgesplit {

// A linear projection inside a block, named as Hugging Face PEFT names
// modules: "model.layers.3.self_attn.q_proj" (Llama) or
// "transformer.h.3.attn.c_attn" (GPT-2, whatever the checkpoint's prefix).
struct LinearModule {
  std::string module;      // Full PEFT module path.
  std::string short_name;  // "q_proj", "c_attn", ... (target_modules).
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool conv1d = false;  // GPT-2 Conv1D: weight stored [in, out].
};

std::vector<LinearModule> BlockLinearModules(const ModelConfig& config,
                                             int64_t block);

// Checkpoint name of a block linear's weight: the module path under the
// checkpoint's GPT-2 prefix ("transformer." or ""), plus ".weight".
std::string LinearWeightName(const ModelConfig& config, const LinearModule& lm,
                             const std::string& gpt2_prefix);

// The weights of `spec` that are [out, in] matrices a stage may hold as
// blocks: its blocks' linears, and an untied head ("lm_head.weight").
std::vector<LinearModule> StageMatrixWeights(const ModelConfig& config,
                                             const StageSpec& spec);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_WEIGHT_LAYOUT_H_
