// LoRA adapters in Hugging Face PEFT's on-disk format:
//   adapter_config.json        {"peft_type": "LORA", "r", "lora_alpha",
//                               "target_modules", "lora_dropout",
//                               "fan_in_fan_out", "layers_to_transform", ...}
//   adapter_model.safetensors  "base_model.model.<module>.lora_A.weight" [r,
//   in]
//                              "base_model.model.<module>.lora_B.weight" [out,
//                              r]
// A linear module y = W x gets y += scaling * B (A x), scaling = alpha / r
// (alpha / sqrt(r) with use_rslora). PEFT stores A and B as nn.Linear
// weights for GPT-2's Conv1D too; fan_in_fan_out only changes how a merge
// transposes the delta, which the stage model handles.
#ifndef EDGESPLIT_RUNTIME_LORA_H_
#define EDGESPLIT_RUNTIME_LORA_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/adapter_name.h"
#include "runtime/model_config.h"

namespace edgesplit {

struct LoraConfig {
  int64_t r = 8;
  double alpha = 16;
  // Module short names ("q_proj", "c_attn") matched as PEFT does: equal to
  // the module path or a suffix after a '.'.
  std::vector<std::string> target_modules;
  double dropout = 0.0;  // Training only; inference ignores it.
  bool fan_in_fan_out = false;
  bool use_rslora = false;
  std::vector<int64_t> layers_to_transform;  // Empty: all layers.
  std::string base_model_name_or_path;

  double scaling() const;
  absl::Status Validate() const;
};

struct LoraFactors {
  at::Tensor a;  // [r, in_features]
  at::Tensor b;  // [out_features, r]
};

// An adapter: factors for some linear modules of some blocks. Immutable
// after construction except through mutable_factors() (training).
// Not thread-safe to mutate; concurrent reads are fine.
class LoraAdapter {
 public:
  // Reads a PEFT adapter directory and checks every factor's shape against
  // the model. Errors name the file and tensor.
  static absl::StatusOr<std::unique_ptr<LoraAdapter>> LoadPeft(
      const std::string& dir, const ModelConfig& model, std::string name);
  // A fresh adapter on `blocks` initialised as PEFT does: A ~ Kaiming
  // uniform (a = sqrt(5)), B = 0, so it starts as the base model.
  // `zero_b = false` draws B like A (for tests that need a non-trivial delta).
  // Each block draws from its own stream of `seed`, so creating blocks
  // [a, b) gives exactly those blocks of a whole-model adapter.
  static absl::StatusOr<std::unique_ptr<LoraAdapter>> Create(
      const ModelConfig& model, const LoraConfig& config, BlockRange blocks,
      uint64_t seed, std::string name, bool zero_b = true);

  // Writes adapter_config.json and adapter_model.safetensors (fp32).
  absl::Status SavePeft(const std::string& dir) const;

  const std::string& name() const { return name_; }
  const LoraConfig& config() const { return config_; }
  double scaling() const { return config_.scaling(); }
  // Keyed by PEFT module path ("model.layers.3.self_attn.q_proj").
  const std::map<std::string, LoraFactors>& modules() const { return modules_; }
  std::map<std::string, LoraFactors>& mutable_modules() { return modules_; }
  const LoraFactors* Find(const std::string& module) const;
  // The part of this adapter on `blocks` (a stage's shard); shares tensors.
  std::unique_ptr<LoraAdapter> Slice(const ModelConfig& model,
                                     BlockRange blocks) const;

 private:
  LoraAdapter(std::string name, LoraConfig config)
      : name_(std::move(name)), config_(std::move(config)) {}

  std::string name_;
  LoraConfig config_;
  std::map<std::string, LoraFactors> modules_;
};

// Whether PEFT's target_modules matching selects `module`.
bool LoraTargets(const LoraConfig& config, const std::string& module,
                 int64_t block);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_LORA_H_
