// AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c; called only
// when the CPU has them).
#include <immintrin.h>

#include "kernels/cpu/gemv_internal.h"
#include "kernels/cpu/quant_blocks.h"

namespace edgesplit::kernels::internal {
namespace {

constexpr int64_t kTile = 8;  // Weight rows per cache tile.

inline float HSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// R rows of x against one weight row, two accumulators per row.
template <int R>
inline void DotF32(const float* w, const float* x, int64_t in, float* y,
                   int64_t ldy) {
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= in; i += 16) {
    const __m256 w0 = _mm256_loadu_ps(w + i), w1 = _mm256_loadu_ps(w + i + 8);
    for (int r = 0; r < R; ++r) {
      acc[r][0] =
          _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + r * in + i), acc[r][0]);
      acc[r][1] =
          _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + r * in + i + 8), acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    float s = HSum(_mm256_add_ps(acc[r][0], acc[r][1]));
    for (int64_t j = i; j < in; ++j) s += w[j] * x[r * in + j];
    y[r * ldy] = s;
  }
}

void GemvF32(const uint8_t* w, int64_t row_bytes, int64_t in, const void* x,
             int64_t rows, float* y, int64_t ldy, int64_t o0, int64_t o1) {
  const float* xf = static_cast<const float*>(x);
  // Tiles of kTile weight rows stay in L2 while every group of 4 rows of
  // x passes over them: W is read from memory once whatever `rows` is.
  for (int64_t t = o0; t < o1; t += kTile) {
    const int64_t te = t + kTile < o1 ? t + kTile : o1;
    for (int64_t r = 0; r < rows; r += 4) {
      const float* xr = xf + r * in;
      for (int64_t o = t; o < te; ++o) {
        const float* wr = reinterpret_cast<const float*>(w + o * row_bytes);
        float* yo = y + r * ldy + o;
        switch (rows - r < 4 ? rows - r : 4) {
          case 4:
            DotF32<4>(wr, xr, in, yo, ldy);
            break;
          case 3:
            DotF32<3>(wr, xr, in, yo, ldy);
            break;
          case 2:
            DotF32<2>(wr, xr, in, yo, ldy);
            break;
          default:
            DotF32<1>(wr, xr, in, yo, ldy);
            break;
        }
      }
    }
  }
}

inline __m256i LoadQ8(const BlockQ8_0& b) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
}

// acc + the 8 int32 partial sums of u8 [32] . s8 [32].
inline __m256i DotU8S8(__m256i acc, __m256i u, __m256i s) {
  return _mm256_add_epi32(
      acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}

#include "kernels/cpu/gemv_quant_body.inc"  // NOLINT(build/include)

uint64_t SumU64(const uint64_t* p, int64_t n) {
  __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(),
                    _mm256_setzero_si256(), _mm256_setzero_si256()};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int k = 0; k < 4; ++k) {
      acc[k] = _mm256_add_epi64(
          acc[k],
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 4 * k)));
    }
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                     _mm256_add_epi64(_mm256_add_epi64(acc[0], acc[1]),
                                      _mm256_add_epi64(acc[2], acc[3])));
  uint64_t s = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < n; ++i) s += p[i];
  return s;
}

}  // namespace

const GemvKernels kAvx2Kernels = {GemvF32,
                                  GemvQ<BlockQ8_0>,
                                  GemvQ<BlockQ4_0>,
                                  GemvQ<BlockQ4_K>,
                                  GemvQ<BlockQ6_K>,
                                  GemvF16,
                                  SumU64};

}  // namespace edgesplit::kernels::internal
