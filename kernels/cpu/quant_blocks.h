// Weight block formats, byte-identical to GGUF's (ggml-common.h) so that
// quantized tensors move between edgesplit's safetensors and GGUF files
// unchanged:
//   Q8_0: 32 weights as {fp16 d; int8 qs[32]}            (34 bytes, 8.5 bpw)
//         x = qs[j] * d
//   Q4_0: 32 weights as {fp16 d; uint8 qs[16]}           (18 bytes, 4.5 bpw)
//         x[j] = ((qs[j] & 15) - 8) * d,  x[j + 16] = ((qs[j] >> 4) - 8) * d
//   Q4_K: 256 weights ("super-block") as {fp16 d, dmin; uint8 scales[12];
//         uint8 qs[128]}                                 (144 bytes, 4.5 bpw)
//         eight sub-blocks of 32 with 6-bit scale sc and min m packed in
//         `scales`; x = d * sc * q - dmin * m, q a nibble; qs[32k + l]
//         holds sub-block 2k's weight l (low) and 2k + 1's (high).
//   Q6_K: 256 weights as {uint8 ql[128]; uint8 qh[64]; int8 scales[16];
//         fp16 d}                                     (210 bytes, 6.5625 bpw)
//         x = d * scales[g] * (q - 32), q 6 bits (4 in ql, 2 in qh), one
//         int8 scale per 16 weights; layout as ggml's dequantize_row_q6_K.
// A matrix [rows, cols] is stored row by row, each row cols / 32 blocks
// (Q*_K: cols / 256 super-blocks); cols must be a multiple of that.
//
// Quantization follows ggml's reference functions (quantize_row_q8_0_ref,
// quantize_row_q4_0_ref; Q4_K: quantize_row_q4_K_ref's make_qkx2_quants
// search) including fp16 rounding of the scale (nearest-even), so Q8_0 and
// Q4_0 files match llama.cpp's from the same fp32 values (hand-computed
// blocks in the tests; Q4_K is not checked against a llama.cpp build). Q6_K is
// read from GGUF files; its quantizer here is a plain per-16 absmax one
// (not ggml's search), used by tests and `model quantize --type q6_k`.
// Everything here is scalar C++: no dispatch, no allocation, safe to call
// concurrently on distinct buffers.
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

// Block b of 16 consecutive Q4_0 rows, interleaved
// (WeightLayout::kInterleaved16 in gemv.h; never in files): the rows' scales,
// then their codes in four 64-byte chunks, chunk j holding bytes 4j..4j+3 of
// each row's qs in row order. A 512-bit vpdpbusd then multiplies 4 codes of all
// 16 rows by the same 4 bytes of x at once, each int32 lane summing one row's
// block.
struct BlockQ4_0x16 {
  uint16_t d[16];  // fp16 bits, row r's at d[r].
  uint8_t qs[256];
};
static_assert(sizeof(BlockQ4_0x16) == 16 * sizeof(BlockQ4_0),
              "16 interleaved rows take the bytes of 16 rows");

// The same for Q8_0: eight 64-byte chunks of codes.
struct BlockQ8_0x16 {
  uint16_t d[16];
  int8_t qs[512];
};
static_assert(sizeof(BlockQ8_0x16) == 16 * sizeof(BlockQ8_0),
              "16 interleaved rows take the bytes of 16 rows");

inline constexpr int64_t kSuperBlockSize = 256;

struct BlockQ4_K {
  uint16_t d;     // fp16 bits: scale of the sub-block scales.
  uint16_t dmin;  // fp16 bits: scale of the sub-block mins.
  uint8_t scales[12];
  uint8_t qs[kSuperBlockSize / 2];
};
static_assert(sizeof(BlockQ4_K) == 144, "GGUF Q4_K block is 144 bytes");

// Super-block s of 16 consecutive Q4_K rows, interleaved as BlockQ4_0x16
// is: scales[i][r] is byte i of row r's packed scales (so one 16-byte
// vector holds that byte of every row), qs[c][4r..4r+3] bytes 4c..4c+3 of
// row r's codes.
struct BlockQ4_Kx16 {
  uint16_t d[16];
  uint16_t dmin[16];
  uint8_t scales[12][16];
  uint8_t qs[32][64];
};
static_assert(sizeof(BlockQ4_Kx16) == 16 * sizeof(BlockQ4_K),
              "16 interleaved rows take the bytes of 16 rows");

struct BlockQ6_K {
  uint8_t ql[kSuperBlockSize / 2];
  uint8_t qh[kSuperBlockSize / 4];
  int8_t scales[kSuperBlockSize / 16];
  uint16_t d;  // fp16 bits.
};
static_assert(sizeof(BlockQ6_K) == 210, "GGUF Q6_K block is 210 bytes");

// Super-block s of 16 consecutive Q6_K rows, interleaved likewise:
// scales[i][r] is row r's scales[i], ql[c][4r..4r+3] bytes 4c..4c+3 of
// row r's ql, qh[c][4r..4r+3] those of its qh.
struct BlockQ6_Kx16 {
  uint16_t d[16];
  int8_t scales[16][16];
  uint8_t ql[32][64];
  uint8_t qh[16][64];
};
static_assert(sizeof(BlockQ6_Kx16) == 16 * sizeof(BlockQ6_K),
              "16 interleaved rows take the bytes of 16 rows");

// How a weight matrix is stored. kF32 is plain row-major float.
// kF16 is row-major IEEE half (computed in float32: half weights, float
// activations, as llama.cpp's F16 tensors on CPU).
enum class WeightType {
  kF32 = 0,
  kQ8_0 = 1,
  kQ4_0 = 2,
  kQ4_K = 3,
  kQ6_K = 4,
  kF16 = 5
};

// "f32", "q8_0", "q4_0", "q4_k", "q6_k", "f16".
const char* WeightTypeName(WeightType type);
std::optional<WeightType> ParseWeightType(absl::string_view name);
// "f32, f16, q8_0, q4_0, q4_k, q6_k": for error messages and help.
const char* WeightTypeList();
// Whether `type` is a block format whose GEMV quantizes x to Q8_0 (not
// kF32 or kF16).
bool IsBlockType(WeightType type);

// Bytes of one row of `cols` weights; cols must suit the type
// (CheckCols).
int64_t RowBytes(WeightType type, int64_t cols);
// Whether a row of `cols` weights can be stored as `type`.
bool CheckCols(WeightType type, int64_t cols);
// Weights per block of `type` (1 for kF32, 32, or 256 for the Q*_K).
int64_t BlockWeights(WeightType type);

// x: n floats, n a multiple of 32.
void QuantizeRowQ8_0(const float* x, int64_t n, BlockQ8_0* y);
void QuantizeRowQ4_0(const float* x, int64_t n, BlockQ4_0* y);
void DequantizeRowQ8_0(const BlockQ8_0* x, int64_t n, float* y);
void DequantizeRowQ4_0(const BlockQ4_0* x, int64_t n, float* y);
// n a multiple of 256 (quant_kblocks.cc).
void QuantizeRowQ4_K(const float* x, int64_t n, BlockQ4_K* y);
void QuantizeRowQ6_K(const float* x, int64_t n, BlockQ6_K* y);
void DequantizeRowQ4_K(const BlockQ4_K* x, int64_t n, float* y);
void DequantizeRowQ6_K(const BlockQ6_K* x, int64_t n, float* y);
// Sub-block j's (0..7) 6-bit scale and min from a Q4_K block's `scales`
// (inline: the GEMV kernels call it per super-block).
inline void Q4KScaleMin(const uint8_t* q, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Row-generic forms: `src` holds one row of `type` (kF32: n floats).
void QuantizeRow(WeightType type, const float* x, int64_t n, void* dst);
void DequantizeRow(WeightType type, const void* src, int64_t n, float* y);

}  // namespace edgesplit::kernels

#endif  // EDGESPLIT_KERNELS_CPU_QUANT_BLOCKS_H_
