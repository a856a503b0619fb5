// `edgesplit model init`: writes a randomly initialised model in Hugging
// Face layout (config.json, generation_config.json, model.safetensors or
// shards + index, tokenizer files), so benchmarks and tests need no download.
#ifndef EDGESPLIT_RUNTIME_MODEL_INIT_H_
#define EDGESPLIT_RUNTIME_MODEL_INIT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/dtype.h"
#include "runtime/model_config.h"

namespace edgesplit {

struct ModelInitOptions {
  Arch arch = Arch::kLlama;
  std::string preset = "tiny";
  std::string out_dir;
  uint64_t seed = 0;
  DType dtype = DType::kF32;  // F32, F16 or BF16.
  // Split the weights into shards of at most this many bytes (with
  // model.safetensors.index.json); 0 writes one model.safetensors.
  int64_t max_shard_bytes = 0;
};

// Presets: gpt2 "tiny", "mini", "small" (124M); llama "tiny", "mini",
// "1b" (~1.1B). "mini" (hidden 256, 4 blocks) has every linear width a
// multiple of 256, so the K block formats cover it whole.
absl::StatusOr<ModelConfig> PresetConfig(Arch arch, absl::string_view preset);
std::vector<std::string> PresetNames(Arch arch);

// Writes the model; the directory is created if needed.
absl::Status InitModel(const ModelInitOptions& options);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_MODEL_INIT_H_
