// Model hyper-parameters read from a Hugging Face config.json, for the two
// supported families: GPT-2 ("gpt2") and Llama ("llama", and "mistral" /
// "qwen2", which differ from it only in flags handled here).
#ifndef EDGESPLIT_RUNTIME_MODEL_CONFIG_H_
#define EDGESPLIT_RUNTIME_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace edgesplit {

enum class Arch { kGpt2, kLlama };

absl::string_view ArchName(Arch arch);  // "gpt2" / "llama"
absl::StatusOr<Arch> ParseArch(absl::string_view name);

struct ModelConfig {
  Arch arch = Arch::kLlama;
  std::string model_type;  // As written in config.json ("mistral", ...).
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;  // == num_heads without grouped-query attention.
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;
  int64_t max_positions = 0;
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;  // Llama family only.
  bool tie_word_embeddings = true;
  bool attention_bias = false;  // q/k/v biases (Qwen2; always for GPT-2).
  // o_proj bias: Llama's attention_bias covers it, Qwen2's doesn't.
  bool attention_output_bias = false;
  std::string hidden_act;     // "gelu_new" (GPT-2) or "silu" (Llama).
  int64_t bos_token_id = -1;  // -1: none.
  int64_t eos_token_id = -1;
  std::string torch_dtype;  // Informational: checkpoints carry their dtype.
  // "q8_0" / "q4_0" for a directory written by `edgesplit model quantize`
  // (config.json quantization_config {quant_method: "edgesplit", weights}):
  // its block linears are stored as GGUF blocks. "" otherwise.
  std::string quantized_weights;

  // Checks ranges and divisibility; messages name the config.json field.
  absl::Status Validate() const;

  // Parameters of one transformer block / of the embeddings / of the head.
  int64_t ParamsPerBlock() const;
  int64_t EmbeddingParams() const;  // Token (+ position) embeddings.
  int64_t HeadParams() const;       // Final norm + untied LM head.
  int64_t TotalParams() const;
  // K and V of every layer of one block, per cached token, at `elem_bytes`.
  int64_t KvBytesPerToken(int64_t elem_bytes) const {
    return 2 * num_kv_heads * head_dim * elem_bytes;
  }
};

// Parses config.json text; `source` names the file in errors.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text,
                                             absl::string_view source);
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path);
// Serialises in Hugging Face's field names for the config's architecture.
std::string ModelConfigToJson(const ModelConfig& config);

// A contiguous range of transformer blocks [first, last).
struct BlockRange {
  int64_t first = 0;
  int64_t last = 0;
  int64_t size() const { return last - first; }
  bool Contains(int64_t block) const { return block >= first && block < last; }
};

// What one pipeline stage holds: a block range, plus the embeddings when it
// is first and the final norm and LM head when it is last.
struct StageSpec {
  BlockRange blocks;
  bool embedding = false;
  bool head = false;
};

// Checks `spec` against `config` (range inside the model, non-empty stage).
absl::Status ValidateStageSpec(const ModelConfig& config,
                               const StageSpec& spec);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_MODEL_CONFIG_H_
