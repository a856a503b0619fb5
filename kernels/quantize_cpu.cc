#include <cassert>
#include <cstring>

#include "kernels/quantize.h"

namespace edgesplit {
namespace {

// Row maximum of AbsBits(). An unsigned max reduction is exact, so the
// compiler may vectorise it freely (no -ffast-math needed, unlike a float max
// whose NaN semantics block reassociation).
uint32_t RowAbsMaxBits(const float* x, int64_t n) {
  uint32_t m = 0;
  for (int64_t j = 0; j < n; ++j) {
    const uint32_t b = AbsBits(x[j]);
    m = b > m ? b : m;
  }
  return m;
}

}  // namespace

void QuantizeInt8PerToken(const float* x, int64_t rows, int64_t cols, int8_t* q,
                          float* scales) {
  assert(rows >= 0 && cols >= 0);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    int8_t* qr = q + r * cols;
    const float scale = Int8ScaleFromAbsMaxBits(RowAbsMaxBits(xr, cols));
    scales[r] = scale;
    // Decided once per row so the inner loop stays branch-free (and
    // vectorises); it also keeps the division by zero out of it.
    if (scale == 0.0f) {
      if (cols > 0) std::memset(qr, 0, static_cast<size_t>(cols));
      continue;
    }
    for (int64_t j = 0; j < cols; ++j) qr[j] = QuantizeToInt8(xr[j], scale);
  }
}

void DequantizeInt8PerToken(const int8_t* q, const float* scales, int64_t rows,
                            int64_t cols, float* x) {
  assert(rows >= 0 && cols >= 0);
  for (int64_t r = 0; r < rows; ++r) {
    const int8_t* qr = q + r * cols;
    float* xr = x + r * cols;
    const float scale = scales[r];
    for (int64_t j = 0; j < cols; ++j) xr[j] = DequantizeInt8(qr[j], scale);
  }
}

void Fp32ToFp16(const float* src, int64_t n, uint16_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = Fp32ToFp16Bits(src[i]);
}

void Fp16ToFp32(const uint16_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = Fp16BitsToFp32(src[i]);
}

void Fp32ToBf16(const float* src, int64_t n, uint16_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = Fp32ToBf16Bits(src[i]);
}

void Bf16ToFp32(const uint16_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = Bf16BitsToFp32(src[i]);
}

}  // namespace edgesplit
