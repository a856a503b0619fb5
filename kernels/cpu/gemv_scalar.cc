// Reference kernels: the plainest loops, in the order the SIMD variants
// are checked against (float sums sequential per output).
#include "kernels/cpu/gemv_internal.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/scalar_codecs.h"

namespace edgesplit::kernels::internal {
namespace {

void GemvF32(const uint8_t* w, int64_t row_bytes, int64_t in, const void* x,
             int64_t rows, float* y, int64_t ldy, int64_t o0, int64_t o1) {
  const float* xf = static_cast<const float*>(x);
  for (int64_t o = o0; o < o1; ++o) {
    const float* wr = reinterpret_cast<const float*>(w + o * row_bytes);
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = xf + r * in;
      float acc = 0.0f;
      for (int64_t i = 0; i < in; ++i) acc += wr[i] * xr[i];
      y[r * ldy + o] = acc;
    }
  }
}

int32_t DotQ8(const int8_t* a, const int8_t* b) {
  int32_t s = 0;
  for (int j = 0; j < kBlockSize; ++j) s += a[j] * b[j];
  return s;
}

int32_t DotQ4(const uint8_t* a, const int8_t* b) {
  int32_t s = 0;
  for (int j = 0; j < kBlockSize / 2; ++j) {
    s += ((a[j] & 15) - 8) * b[j] + ((a[j] >> 4) - 8) * b[j + kBlockSize / 2];
  }
  return s;
}

template <typename Block>
void GemvQ(const uint8_t* w, int64_t row_bytes, int64_t in, const void* x,
           int64_t rows, float* y, int64_t ldy, int64_t o0, int64_t o1) {
  const int64_t nb = in / kBlockSize;
  const QuantizedRows& xq = *static_cast<const QuantizedRows*>(x);
  for (int64_t o = o0; o < o1; ++o) {
    const Block* wb = reinterpret_cast<const Block*>(w + o * row_bytes);
    for (int64_t r = 0; r < rows; ++r) {
      const BlockQ8_0* xb = xq.q + r * nb;
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t s;
        if constexpr (sizeof(Block) == sizeof(BlockQ8_0)) {
          s = DotQ8(wb[b].qs, xb[b].qs);
        } else {
          s = DotQ4(wb[b].qs, xb[b].qs);
        }
        const float d = Fp16BitsToFp32(wb[b].d) * Fp16BitsToFp32(xb[b].d);
        acc += d * static_cast<float>(s);
      }
      y[r * ldy + o] = acc;
    }
  }
}

uint64_t SumU64(const uint64_t* p, int64_t n) {
  uint64_t s = 0;
  for (int64_t i = 0; i < n; ++i) s += p[i];
  return s;
}

}  // namespace

const GemvKernels kScalarKernels = {GemvF32, GemvQ<BlockQ8_0>, GemvQ<BlockQ4_0>,
                                    SumU64};

}  // namespace edgesplit::kernels::internal
