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

// Two blocks per 512-bit vpdpbusd: int32 lanes 0-7 hold block b's partial
// sums, 8-15 block b + 1's; the blocks' offsets (-8 * sum(x) for Q4_0's
// unsigned nibbles, -128 * sum(x) for Q8_0 codes biased to unsigned by
// flipping their sign bit) are seeded into lanes 0 and 8, so every block's
// integer dot product is exact, and one FMA per pair applies both scales.

// [a x 8, b x 8] as floats.
inline __m512 PairScale(float a, float b) {
  return _mm512_castpd_ps(
      _mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(a)),
                         _mm256_castps_pd(_mm256_set1_ps(b)), 1));
}

// int32 lane 0 = a, lane 8 = b, the rest 0.
inline __m512i PairSeed(int32_t a, int32_t b) {
  return _mm512_inserti32x4(_mm512_castsi128_si512(_mm_cvtsi32_si128(a)),
                            _mm_cvtsi32_si128(b), 2);
}

// Blocks b and b + 1 of x's row as one 512-bit vector.
inline __m512i LoadQ8Pair(const BlockQ8_0* xb) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(LoadQ8(xb[0])),
                            LoadQ8(xb[1]), 1);
}

template <typename Block, int R>
inline void DotQPairs(const Block* wb, const QuantizedRows& x, int64_t nb,
                      float* y, int64_t ldy) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  const __m512i low4 = _mm512_set1_epi8(15), bias = _mm512_set1_epi8(-128);
  constexpr bool kQ4 = sizeof(Block) == sizeof(BlockQ4_0);
  constexpr int32_t kOffset = kQ4 ? -8 : -128;
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    __m512i w;
    if constexpr (kQ4) {
      const __m256i t = _mm256_set_m128i(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb[b + 1].qs)),
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb[b].qs)));
      // 128-bit lanes [t0, t1, t0 >> 4, t1 >> 4] -> [t0, t0 >> 4, t1,
      // t1 >> 4]: each block's low nibbles (elements 0-15), then its high.
      const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(t),
                                              _mm256_srli_epi16(t, 4), 1);
      w = _mm512_and_si512(
          _mm512_shuffle_i64x2(both, both, _MM_SHUFFLE(3, 1, 2, 0)), low4);
    } else {
      w = _mm512_xor_si512(
          _mm512_inserti64x4(_mm512_castsi256_si512(LoadQ8(wb[b])),
                             LoadQ8(wb[b + 1]), 1),
          bias);  // w + 128 as unsigned bytes.
    }
    const float d0 = _cvtsh_ss(wb[b].d), d1 = _cvtsh_ss(wb[b + 1].d);
    for (int r = 0; r < R; ++r) {
      const int64_t xb = r * nb + b;
      const __m512i p = _mm512_dpbusd_epi32(
          PairSeed(kOffset * x.sum[xb], kOffset * x.sum[xb + 1]), w,
          LoadQ8Pair(x.q + xb));
      acc[r] = _mm512_fmadd_ps(PairScale(d0 * x.d[xb], d1 * x.d[xb + 1]),
                               _mm512_cvtepi32_ps(p), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    float s = _mm512_reduce_add_ps(acc[r]);
    if (b < nb) {  // An odd last block, on half a vector.
      const int64_t xb = r * nb + b;
      __m256i w;
      if constexpr (kQ4) {
        const __m128i t =
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb[b].qs));
        w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t),
                             _mm256_set1_epi8(15));
      } else {
        w = _mm256_xor_si256(LoadQ8(wb[b]), _mm256_set1_epi8(-128));
      }
      const __m256i p = _mm256_dpbusd_epi32(
          _mm256_setr_epi32(kOffset * x.sum[xb], 0, 0, 0, 0, 0, 0, 0), w,
          LoadQ8(x.q[xb]));
      s += _cvtsh_ss(wb[b].d) * x.d[xb] * HSum(_mm256_cvtepi32_ps(p));
    }
    y[r * ldy] = s;
  }
}

template <int R>
inline void DotQ(const BlockQ8_0* wb, const QuantizedRows& x, int64_t nb,
                 float* y, int64_t ldy) {
  DotQPairs<BlockQ8_0, R>(wb, x, nb, y, ldy);
}

template <int R>
inline void DotQ(const BlockQ4_0* wb, const QuantizedRows& x, int64_t nb,
                 float* y, int64_t ldy) {
  DotQPairs<BlockQ4_0, R>(wb, x, nb, y, ldy);
}

#define EDGESPLIT_GEMV_WIDE_Q8_Q4
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
