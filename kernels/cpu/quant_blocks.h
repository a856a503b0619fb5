// Weight block formats, byte-identical to GGUF's (ggml-common.h) so that
// quantized tensors move between edgesplit's safetensors and GGUF files
// unchanged:
//   Q8_0: 32 weights as {fp16 d; int8 qs[32]}            (34 bytes, 8.5 bpw)
//         x = qs[j] * d
//   Q4_0: 32 weights as {fp16 d; uint8 qs[16]}           (18 bytes, 4.5 bpw)
//         x[j] = ((qs[j] & 15) - 8) * d,  x[j + 16] = ((qs[j] >> 4) - 8) * d
// A matrix [rows, cols] is stored row by row, each row cols / 32 blocks;
// cols must be a multiple of 32.
//
// Quantization follows ggml's reference functions (quantize_row_q8_0_ref,
// quantize_row_q4_0_ref) exactly, including fp16 rounding of the scale
// (nearest-even), so a file written here matches one written by llama.cpp
// from the same fp32 values. Everything here is scalar C++: no dispatch,
// no allocation, safe to call concurrently on distinct buffers.
#ifndef EDGESPLIT_KERNELS_CPU_QUANT_BLOCKS_H_
#define EDGESPLIT_KERNELS_CPU_QUANT_BLOCKS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace edgesplit::kernels {

inline constexpr int64_t kBlockSize = 32;

struct BlockQ8_0 {
  uint16_t d;  // fp16 bits.
  int8_t qs[kBlockSize];
};
static_assert(sizeof(BlockQ8_0) == 34, "GGUF Q8_0 block is 34 bytes");

struct BlockQ4_0 {
  uint16_t d;  // fp16 bits.
  uint8_t qs[kBlockSize / 2];
};
static_assert(sizeof(BlockQ4_0) == 18, "GGUF Q4_0 block is 18 bytes");

// How a weight matrix is stored. kF32 is plain row-major float.
enum class WeightType { kF32 = 0, kQ8_0 = 1, kQ4_0 = 2 };

// "f32", "q8_0", "q4_0".
const char* WeightTypeName(WeightType type);
std::optional<WeightType> ParseWeightType(absl::string_view name);

// Bytes of one row of `cols` weights; cols must suit the type
// (CheckCols).
int64_t RowBytes(WeightType type, int64_t cols);
// Whether a row of `cols` weights can be stored as `type`.
bool CheckCols(WeightType type, int64_t cols);

// x: n floats, n a multiple of 32.
void QuantizeRowQ8_0(const float* x, int64_t n, BlockQ8_0* y);
void QuantizeRowQ4_0(const float* x, int64_t n, BlockQ4_0* y);
void DequantizeRowQ8_0(const BlockQ8_0* x, int64_t n, float* y);
void DequantizeRowQ4_0(const BlockQ4_0* x, int64_t n, float* y);

// Row-generic forms: `src` holds one row of `type` (kF32: n floats).
void QuantizeRow(WeightType type, const float* x, int64_t n, void* dst);
void DequantizeRow(WeightType type, const void* src, int64_t n, float* y);

}  // namespace edgesplit::kernels

#endif  // EDGESPLIT_KERNELS_CPU_QUANT_BLOCKS_H_
