// CPU wire codecs for activations crossing the edge split: fp32 <-> fp16,
// fp32 <-> bf16, and symmetric per-token (per-row) int8 quantization.
//
// Int8 layout on the wire: a row-major [rows, cols] int8 matrix `q` plus one
// fp32 scale per row. For each row r:
//   scale_r = max_j |x_rj| / 127
//   q_rj    = clamp(round_half_away_from_zero(x_rj / scale_r), -127, 127)
//   x'_rj   = q_rj * scale_r
// A row whose scale is 0 (all zeros, or magnitudes so small that max/127
// underflows to 0) is stored as scale 0 and q = 0, and dequantizes to +0.
// Rows with inf or NaN are not meaningful activations but are handled without
// undefined behaviour: their scale is inf/NaN, q is 0 and they dequantize to
// NaN, so corruption shows downstream instead of silently becoming large
// finite values; other rows are unaffected. The one finite edge: within about
// an ulp of FLT_MAX, scale_r rounds up and 127 * scale_r overflows to +-inf
// (real activations are nowhere near).
//
// The CUDA path (quantize_cuda.h) produces bit-identical q, scales and x'
// (both use the scalar definitions in scalar_codecs.h); the one exception is
// the payload bits of NaN scales and NaN outputs, which are not specified.
//
// fp16/bf16 values travel as their raw bit patterns (uint16_t). Every
// function takes raw pointers and sizes; buffers must not overlap and must
// hold rows * cols (or n) elements. No allocation, no failure modes, safe to
// call concurrently on distinct buffers.
#ifndef EDGESPLIT_KERNELS_QUANTIZE_H_
#define EDGESPLIT_KERNELS_QUANTIZE_H_

#include <cstdint>

#include "kernels/scalar_codecs.h"

namespace edgesplit {

// x: [rows, cols] fp32, row-major. Writes q: [rows, cols] and scales: [rows].
// rows or cols may be 0 (with cols == 0, every scale is set to 0).
void QuantizeInt8PerToken(const float* x, int64_t rows, int64_t cols, int8_t* q,
                          float* scales);

// Inverse of QuantizeInt8PerToken: x[r, j] = q[r, j] * scales[r].
void DequantizeInt8PerToken(const int8_t* q, const float* scales, int64_t rows,
                            int64_t cols, float* x);

// Elementwise conversions of n values; see scalar_codecs.h for the exact
// rounding (nearest-even), overflow (to inf) and NaN (kept, quieted) rules.
void Fp32ToFp16(const float* src, int64_t n, uint16_t* dst);
void Fp16ToFp32(const uint16_t* src, int64_t n, float* dst);
void Fp32ToBf16(const float* src, int64_t n, uint16_t* dst);
void Bf16ToFp32(const uint16_t* src, int64_t n, float* dst);

}  // namespace edgesplit

#endif  // EDGESPLIT_KERNELS_QUANTIZE_H_
