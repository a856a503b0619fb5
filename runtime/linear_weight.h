// A linear layer's weight [out, in] as the stage computes with it: a float
// tensor (at::linear for prefill, the GEMV kernels for decode) or GGUF
// blocks (kernels/cpu/quant_blocks.h: GEMV over the blocks for decode,
// dequantized slices through GEMM for prefill).
//
// Decode rows go through kernels::Gemv, which streams the weights at the
// read bandwidth; at::linear sends one row through OpenBLAS's packed sgemm
// at ~40% of it (bench/decode_bench measures both). Under autograd the
// forward takes the same path (so numbers never depend on whether a
// backward follows) and the backward computes grad_x = grad_y W, through
// quantized weights too, dequantizing slices on the fly (QLoRA); the
// weights themselves never receive gradients.
#ifndef EDGESPLIT_RUNTIME_LINEAR_WEIGHT_H_
#define EDGESPLIT_RUNTIME_LINEAR_WEIGHT_H_

#include <ATen/ATen.h>

#include <string>

#include "absl/status/statusor.h"
#include "kernels/cpu/gemv.h"
#include "kernels/cpu/quant_blocks.h"

namespace edgesplit {

// Up to this many rows a float32 product goes through the GEMV kernels:
// they read the weights once for all rows (bench/decode_bench's batched
// rows show where GEMM starts to win).
inline constexpr int64_t kGemvMaxRows = 32;

struct LinearWeight {
  kernels::WeightType type = kernels::WeightType::kF32;
  int64_t out = 0, in = 0;
  // kF32: [out, in] in the stage dtype, contiguous. Quantized: undefined.
  at::Tensor dense;
  // Quantized: uint8 [out * RowBytes(type, in)] in `layout`. kF32:
  // undefined.
  at::Tensor blocks;
  kernels::WeightLayout layout = kernels::WeightLayout::kRows;

  int64_t Bytes() const;
  // The weight as the GEMV kernels read it (float32 or blocks).
  kernels::WeightView View() const;
  // The weight as a float32 [out, in] tensor (a view of `dense` when the
  // stage computes in float32, else a new tensor).
  at::Tensor Dense() const;
};

// Makes the weight from `w` [out, in] (any floating dtype). Quantized types
// need a float32 stage dtype. A weight whose `in` is not a multiple of 256
// falls back from Q4_K to Q4_0 and from Q6_K to Q8_0 (as llama.cpp does);
// one whose `in` is not a multiple of 32 stays unquantized (type kF32).
// Non-finite weights are refused for quantization, with an error naming `name`.
absl::StatusOr<LinearWeight> MakeLinearWeight(const at::Tensor& w,
                                              kernels::WeightType type,
                                              const std::string& name);

// Rearranges a quantized weight's blocks (kRows) into the layout the
// active GEMV kernels run fastest (kernels::PreferredLayout), in a new
// tensor; Bytes() is unchanged. Stages do this once at load; writers of
// files (model quantize) keep the row layout.
void PackForDecode(LinearWeight* w);

// y = x W^T (+ bias): x [rows, in] in the stage dtype; y [rows, out].
// `use_kernels` false keeps to ATen ops (the reference path tests and
// benchmarks compare with; quantized weights are then dequantized).
at::Tensor LinearForward(const LinearWeight& w, const at::Tensor& x,
                         const at::Tensor& bias, bool use_kernels = true);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_LINEAR_WEIGHT_H_
