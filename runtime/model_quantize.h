// `edgesplit model quantize`: a model directory whose block linears (and an
// untied LM head) are stored as GGUF blocks (Q8_0, Q4_0, Q4_K or Q6_K), so
// a device or server loads and keeps 3.8x to 7x fewer bytes and never holds
// the float weights at all.
//
// Layout (documented in README): model.safetensors where each quantized
// weight "X.weight" of logical shape [out, in] is a U8 tensor
// [out, out-row bytes] holding the GGUF blocks row by row (GPT-2's Conv1D
// weights, [in, out] in the checkpoint, are stored as their transpose's
// rows), with header metadata "edgesplit.weights.X.weight" = its block
// type ("q8_0", "q4_0", "q4_k", "q6_k"); every other tensor unchanged;
// config.json with quantization_config {quant_method: "edgesplit",
// weights: ...}; the tokenizer files copied. A weight whose `in` the type's
// blocks do not divide falls back as MakeLinearWeight says.
#ifndef EDGESPLIT_RUNTIME_MODEL_QUANTIZE_H_
#define EDGESPLIT_RUNTIME_MODEL_QUANTIZE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/cpu/quant_blocks.h"

namespace edgesplit {

struct QuantizeOptions {
  std::string model_dir;
  std::string out_dir;  // Created; must not be model_dir.
  kernels::WeightType type = kernels::WeightType::kQ8_0;
};

struct QuantizeReport {
  int64_t bytes_before = 0;  // Tensor bytes of the source checkpoint.
  int64_t bytes_after = 0;
  int quantized = 0;  // Weights stored as blocks.
  int kept = 0;       // Tensors stored as they were.
};

absl::StatusOr<QuantizeReport> QuantizeModel(const QuantizeOptions& options);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_MODEL_QUANTIZE_H_
