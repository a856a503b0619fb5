// AVX-512 kernels (compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512vnni -mavx2 -mfma -mf16c; called only when the CPU has them):
// 512-bit float FMAs, and VNNI's int8 dot product (vpdpbusd) for the
// quantized blocks.
#include <immintrin.h>

#include "kernels/cpu/gemv_internal.h"
#include "kernels/cpu/quant_blocks.h"

namespace edgesplit::kernels::internal {
namespace {

constexpr int64_t kTile = 8;  // Weight rows per cache tile.
constexpr int64_t kPrefetchBytes = 2048;

// A tile of OW weight rows against R rows of x: OW * R accumulators, each
// loaded vector feeding R (or OW) FMAs, so batched rows stay compute-bound
// rather than load-bound.
template <int OW, int R>
inline void TileF32(const float* w, int64_t wstride, const float* x, int64_t in,
                    float* y, int64_t ldy) {
  __m512 acc[OW][R];
  for (int a = 0; a < OW; ++a) {
    for (int r = 0; r < R; ++r) acc[a][r] = _mm512_setzero_ps();
  }
  for (int64_t i = 0; i < in; i += 16) {
    const int64_t left = in - i;
    const __mmask16 m = left >= 16 ? 0xFFFF : (1u << left) - 1;
    __m512 xv[R];
    for (int r = 0; r < R; ++r)
      xv[r] = _mm512_maskz_loadu_ps(m, x + r * in + i);
    for (int a = 0; a < OW; ++a) {
      // Ahead of the hardware prefetcher, which stops at page boundaries.
      _mm_prefetch(
          reinterpret_cast<const char*>(w + a * wstride + i) + kPrefetchBytes,
          _MM_HINT_T0);
      const __m512 wv = _mm512_maskz_loadu_ps(m, w + a * wstride + i);
      for (int r = 0; r < R; ++r)
        acc[a][r] = _mm512_fmadd_ps(wv, xv[r], acc[a][r]);
    }
  }
  for (int a = 0; a < OW; ++a) {
    for (int r = 0; r < R; ++r)
      y[r * ldy + a] = _mm512_reduce_add_ps(acc[a][r]);
  }
}

template <int R>
inline void RowsF32(const float* w, int64_t wstride, int64_t n, const float* x,
                    int64_t in, float* y, int64_t ldy) {
  int64_t a = 0;
  for (; a + 4 <= n; a += 4)
    TileF32<4, R>(w + a * wstride, wstride, x, in, y + a, ldy);
  for (; a < n; ++a) TileF32<1, R>(w + a * wstride, wstride, x, in, y + a, ldy);
}

void GemvF32(const uint8_t* w, int64_t row_bytes, int64_t in, const void* x,
             int64_t rows, float* y, int64_t ldy, int64_t o0, int64_t o1) {
  const float* xf = static_cast<const float*>(x);
  const int64_t wstride = row_bytes / 4;
  // Tiles of kTile weight rows stay in L2 while every group of 4 rows of
  // x passes over them: W is read from memory once whatever `rows` is.
  for (int64_t t = o0; t < o1; t += kTile) {
    const int64_t n = (t + kTile < o1 ? t + kTile : o1) - t;
    const float* wt = reinterpret_cast<const float*>(w + t * row_bytes);
    for (int64_t r = 0; r < rows; r += 4) {
      const float* xr = xf + r * in;
      float* yt = y + r * ldy + t;
      switch (rows - r < 4 ? rows - r : 4) {
        case 4:
          RowsF32<4>(wt, wstride, n, xr, in, yt, ldy);
          break;
        case 3:
          RowsF32<3>(wt, wstride, n, xr, in, yt, ldy);
          break;
        case 2:
          RowsF32<2>(wt, wstride, n, xr, in, yt, ldy);
          break;
        default:
          RowsF32<1>(wt, wstride, n, xr, in, yt, ldy);
          break;
      }
    }
  }
}

inline __m256i LoadQ8(const BlockQ8_0& b) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
}

// acc + the 8 int32 partial sums of u8 [32] . s8 [32].
inline __m256i DotU8S8(__m256i acc, __m256i u, __m256i s) {
  return _mm256_dpbusd_epi32(acc, u, s);
}

inline float HSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

#include "kernels/cpu/gemv_quant_body.inc"  // NOLINT(build/include)

uint64_t SumU64(const uint64_t* p, int64_t n) {
  __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(),
                    _mm512_setzero_si512(), _mm512_setzero_si512()};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int k = 0; k < 4; ++k) {
      _mm_prefetch(
          reinterpret_cast<const char*>(p + i + 8 * k) + kPrefetchBytes,
          _MM_HINT_T0);
      acc[k] = _mm512_add_epi64(acc[k], _mm512_loadu_si512(p + i + 8 * k));
    }
  }
  uint64_t s = _mm512_reduce_add_epi64(_mm512_add_epi64(
      _mm512_add_epi64(acc[0], acc[1]), _mm512_add_epi64(acc[2], acc[3])));
  for (; i < n; ++i) s += p[i];
  return s;
}

}  // namespace

const GemvKernels kAvx512Kernels = {GemvF32,
                                    GemvQ<BlockQ8_0>,
                                    GemvQ<BlockQ4_0>,
                                    GemvQ<BlockQ4_K>,
                                    GemvQ<BlockQ6_K>,
                                    GemvF16,
                                    SumU64};

}  // namespace edgesplit::kernels::internal
