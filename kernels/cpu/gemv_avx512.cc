// AVX-512 kernels (compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512vnni -mavx2 -mfma -mf16c; called only when the CPU has them):
// 512-bit float FMAs, and VNNI's int8 dot product (vpdpbusd) for the
// quantized blocks.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/gemv_internal.h"
#include "kernels/cpu/quant_blocks.h"

namespace edgesplit::kernels::internal {
namespace {

constexpr int64_t kTile = 8;  // Weight rows per cache tile.
constexpr int64_t kPrefetchBytes = 2048;

// 16 weights as floats: float32 as stored, or half widened (F16C). The
// masked form reads only the lanes in `m`.
inline __m512 LoadW(const float* w) { return _mm512_loadu_ps(w); }
inline __m512 LoadW(const uint16_t* w) {
  return _mm512_cvtph_ps(
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
}
inline __m512 LoadW(const float* w, __mmask16 m) {
  return _mm512_maskz_loadu_ps(m, w);
}
inline __m512 LoadW(const uint16_t* w, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w));
}

// One 16-weight step of a tile: OW weight vectors against R x vectors (the
// tail step masked). Kept apart from the loop so the accumulators stay in
// registers: with the loop, masks and reductions in one body GCC 12 stored
// every accumulator to the stack on every step.
template <int OW, int R, bool kMasked, typename W>
inline __attribute__((always_inline)) void StepF(const W* w, int64_t wstride,
                                                 const float* x, int64_t in,
                                                 int64_t i, __mmask16 m,
                                                 __m512 (&acc)[OW][R]) {
  __m512 xv[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    xv[r] = kMasked ? _mm512_maskz_loadu_ps(m, x + r * in + i)
                    : _mm512_loadu_ps(x + r * in + i);
  }
#pragma GCC unroll 8
  for (int a = 0; a < OW; ++a) {
    const W* wa = w + a * wstride + i;
    // Ahead of the hardware prefetcher, which stops at page boundaries;
    // once per 64-byte line (a half step covers 32 bytes).
    if (!kMasked && (sizeof(W) == 4 || (i & 31) == 0)) {
      _mm_prefetch(reinterpret_cast<const char*>(wa) + kPrefetchBytes,
                   _MM_HINT_T0);
    }
    const __m512 wv = kMasked ? LoadW(wa, m) : LoadW(wa);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
      acc[a][r] = _mm512_fmadd_ps(wv, xv[r], acc[a][r]);
  }
}

// A tile of OW weight rows (float32 or half) against R rows of x: OW * R
// accumulators, each loaded vector feeding R (or OW) FMAs, so batched rows
// stay compute-bound rather than load-bound.
template <int OW, int R, typename W>
inline void TileF(const W* w, int64_t wstride, const float* x, int64_t in,
                  float* y, int64_t ldy) {
  __m512 acc[OW][R];
#pragma GCC unroll 8
  for (int a = 0; a < OW; ++a) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[a][r] = _mm512_setzero_ps();
  }
  int64_t i = 0;
  for (; i + 16 <= in; i += 16) {
    StepF<OW, R, false>(w, wstride, x, in, i, 0xFFFF, acc);
  }
  if (i < in) {
    StepF<OW, R, true>(w, wstride, x, in, i,
                       static_cast<__mmask16>((1u << (in - i)) - 1), acc);
  }
  for (int a = 0; a < OW; ++a) {
    for (int r = 0; r < R; ++r)
      y[r * ldy + a] = _mm512_reduce_add_ps(acc[a][r]);
  }
}

template <int R, typename W>
inline void RowsF(const W* w, int64_t wstride, int64_t n, const float* x,
                  int64_t in, float* y, int64_t ldy) {
  int64_t a = 0;
  for (; a + 4 <= n; a += 4)
    TileF<4, R>(w + a * wstride, wstride, x, in, y + a, ldy);
  for (; a < n; ++a) TileF<1, R>(w + a * wstride, wstride, x, in, y + a, ldy);
}

// Float32 (W = float) or half (W = uint16_t) weights. Tiles of kTile
// weight rows stay in L2 while every group of 4 rows of x passes over
// them: W is read from memory once whatever `rows` is.
template <typename W>
void GemvF(const uint8_t* w, int64_t row_bytes, int64_t in, const void* x,
           int64_t rows, float* y, int64_t ldy, int64_t o0, int64_t o1) {
  const float* xf = static_cast<const float*>(x);
  const int64_t wstride = row_bytes / static_cast<int64_t>(sizeof(W));
  for (int64_t t = o0; t < o1; t += kTile) {
    const int64_t n = (t + kTile < o1 ? t + kTile : o1) - t;
    const W* wt = reinterpret_cast<const W*>(w + t * row_bytes);
    for (int64_t r = 0; r < rows; r += 4) {
      const float* xr = xf + r * in;
      float* yt = y + r * ldy + t;
      switch (rows - r < 4 ? rows - r : 4) {
        case 4:
          RowsF<4>(wt, wstride, n, xr, in, yt, ldy);
          break;
        case 3:
          RowsF<3>(wt, wstride, n, xr, in, yt, ldy);
          break;
        case 2:
          RowsF<2>(wt, wstride, n, xr, in, yt, ldy);
          break;
        default:
          RowsF<1>(wt, wstride, n, xr, in, yt, ldy);
          break;
      }
    }
  }
}

inline __m256i LoadQ8(const BlockQ8_0& b) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
}

inline float HSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// [a x 8, b x 8] as floats.
inline __m512 PairScale(float a, float b) {
  return _mm512_castpd_ps(
      _mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(a)),
                         _mm256_castps_pd(_mm256_set1_ps(b)), 1));
}

// Blocks b and b + 1 of a weight row as the unsigned operand of vpdpbusd.
template <typename Block>
inline __m512i WeightPair(const Block* wb) {
  if constexpr (sizeof(Block) == sizeof(BlockQ4_0)) {
    const __m256i t = _mm256_set_m128i(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb[1].qs)),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb[0].qs)));
    // 128-bit lanes [t0, t1, t0 >> 4, t1 >> 4] -> [t0, t0 >> 4, t1,
    // t1 >> 4]: each block's low nibbles (elements 0-15), then its high.
    const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(t),
                                            _mm256_srli_epi16(t, 4), 1);
    return _mm512_and_si512(
        _mm512_shuffle_i64x2(both, both, _MM_SHUFFLE(3, 1, 2, 0)),
        _mm512_set1_epi8(15));
  } else {
    return _mm512_xor_si512(
        _mm512_inserti64x4(_mm512_castsi256_si512(LoadQ8(wb[0])), LoadQ8(wb[1]),
                           1),
        _mm512_set1_epi8(-128));  // w + 128 as unsigned bytes.
  }
}

// An odd last block b of a weight row against block b of x, on half a
// vector: its share of the dot product.
template <typename Block>
inline float OddBlock(const Block& wb, const QuantizedRows& x, int64_t xb) {
  constexpr bool kQ4 = sizeof(Block) == sizeof(BlockQ4_0);
  constexpr int32_t kOffset = kQ4 ? -8 : -128;
  __m256i w;
  if constexpr (kQ4) {
    const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb.qs));
    w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t),
                         _mm256_set1_epi8(15));
  } else {
    w = _mm256_xor_si256(LoadQ8(wb), _mm256_set1_epi8(-128));
  }
  const __m256i p = _mm256_dpbusd_epi32(
      _mm256_setr_epi32(kOffset * x.sum[xb], 0, 0, 0, 0, 0, 0, 0), w,
      LoadQ8(x.q[xb]));
  return _cvtsh_ss(wb.d) * x.d[xb] * HSum(_mm256_cvtepi32_ps(p));
}

// A Q8_0 or Q4_0 weight row against R rows of x, two blocks per 512-bit
// vpdpbusd: int32 lanes 0-7 hold block b's partial sums, 8-15 block
// b + 1's, each seeded with its offset (XPair::seed) so every block's
// integer dot product is exact, and one FMA per pair applies both blocks'
// scales. Each weight pair is decoded once for the R rows. One weight row
// at a time (TileQ2 pairs them only for long rows against 4 rows of x,
// see Rows): measured here, two interleaved weight streams made the
// single-row GEMV slower and erratic. Every row's arithmetic is the same
// whatever R is, so a batched row equals the row alone.
template <int R, typename Block>
inline void TileQ(const Block* wb, const QuantizedRows& x, int64_t nb, float* y,
                  int64_t ldy) {
  const int64_t np = nb / 2;
  __m512 acc[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t p = 0; p < np; ++p) {
    const __m512i wv = WeightPair(wb + 2 * p);
    const __m512 dw =
        PairScale(_cvtsh_ss(wb[2 * p].d), _cvtsh_ss(wb[2 * p + 1].d));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const XPair& xp = x.pairs[r * np + p];
      const __m512i dot = _mm512_dpbusd_epi32(_mm512_load_si512(xp.seed), wv,
                                              _mm512_load_si512(xp.q));
      acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_load_ps(xp.d)),
                               _mm512_cvtepi32_ps(dot), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    float s = _mm512_reduce_add_ps(acc[r]);
    if (2 * np < nb) s += OddBlock(wb[2 * np], x, r * nb + 2 * np);
    y[r * ldy] = s;
  }
}

// Two weight rows (wb and wc) of TileQ against R rows of
// x, each x pair loaded once for both: with many rows of x the single-row
// tile loaded x's 192-byte pairs once per weight row, and those loads, not
// the integer products, bounded a batched step. Each row's arithmetic is
// TileQ's, in the same order, so both results equal TileQ's bit for bit.
template <int R, typename Block>
inline void TileQ2(const Block* wb, const Block* wc, const QuantizedRows& x,
                   int64_t nb, float* y, int64_t ldy) {
  const int64_t np = nb / 2;
  __m512 acc[2][R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    acc[0][r] = _mm512_setzero_ps();
    acc[1][r] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < np; ++p) {
    const __m512i wv0 = WeightPair(wb + 2 * p);
    const __m512i wv1 = WeightPair(wc + 2 * p);
    const __m512 dw0 =
        PairScale(_cvtsh_ss(wb[2 * p].d), _cvtsh_ss(wb[2 * p + 1].d));
    const __m512 dw1 =
        PairScale(_cvtsh_ss(wc[2 * p].d), _cvtsh_ss(wc[2 * p + 1].d));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const XPair& xp = x.pairs[r * np + p];
      const __m512i seed = _mm512_load_si512(xp.seed);
      const __m512i xq = _mm512_load_si512(xp.q);
      const __m512 dx = _mm512_load_ps(xp.d);
      acc[0][r] = _mm512_fmadd_ps(
          _mm512_mul_ps(dw0, dx),
          _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(seed, wv0, xq)), acc[0][r]);
      acc[1][r] = _mm512_fmadd_ps(
          _mm512_mul_ps(dw1, dx),
          _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(seed, wv1, xq)), acc[1][r]);
    }
  }
  for (int a = 0; a < 2; ++a) {
    const Block* w = a == 0 ? wb : wc;
    for (int r = 0; r < R; ++r) {
      float s = _mm512_reduce_add_ps(acc[a][r]);
      if (2 * np < nb) s += OddBlock(w[2 * np], x, r * nb + 2 * np);
      y[r * ldy + a] = s;
    }
  }
}

// A Q4_K super-block's eight 6-bit scales (bytes 0-7) and mins (8-15)
// unpacked all at once from its 12 packed bytes (the layout Q4KScaleMin
// reads one at a time).
inline __m128i Q4KScalesMins(const uint8_t* packed) {
  uint32_t u[4];
  std::memcpy(u, packed, 12);
  constexpr uint32_t k6 = 0x3f3f3f3f, k4 = 0x0f0f0f0f, k2 = 0x03030303;
  u[3] = ((u[2] >> 4) & k4) | (((u[1] >> 6) & k2) << 4);  // mins 4-7
  const uint32_t mins_lo = u[1] & k6;                     // mins 0-3
  u[1] = (u[2] & k4) | (((u[0] >> 6) & k2) << 4);         // scales 4-7
  u[0] &= k6;                                             // scales 0-3
  u[2] = mins_lo;
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(u));
}

// Q4_K weights (OW rows: wb[0..OW)) against R rows of x, two 32-weight
// sub-blocks per 512-bit vpdpbusd: each 32 bytes of qs hold sub-blocks 2k
// (low nibbles) and 2k + 1 (high nibbles), multiplied unsigned with x's
// blocks as one XPair and scaled by [d * sc(2k) x 8, d * sc(2k + 1) x 8]
// times x's scales. The mins' share, dmin * m(j) * dx(j) * sum(x(j)), is
// one 8-wide FMA per super-block, subtracted at the end. OW = 2 loads each
// x pair once for two weight rows (see Rows). Every weight row's
// arithmetic is the same for any OW and R: a batched row equals the row
// alone.
template <int OW, int R>
inline void TileK(const BlockQ4_K* const (&wb)[OW], const QuantizedRows& x,
                  int64_t nb, float* y, int64_t ldy) {
  const int64_t np = nb / 2;
  __m512 acc[OW][R];
  __m256 mins[OW][R];
#pragma GCC unroll 8
  for (int a = 0; a < OW; ++a) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      acc[a][r] = _mm512_setzero_ps();
      mins[a][r] = _mm256_setzero_ps();
    }
  }
  const __m256i low4 = _mm256_set1_epi8(15);
  for (int64_t s = 0; s < nb / 8; ++s) {
    __m512 sc[OW];
#pragma GCC unroll 2
    for (int a = 0; a < OW; ++a) {
      const __m128i sm = Q4KScalesMins(wb[a][s].scales);
      sc[a] = _mm512_castps256_ps512(
          _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(wb[a][s].d)),
                        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sm))));
      const __m256 mv = _mm256_mul_ps(
          _mm256_set1_ps(_cvtsh_ss(wb[a][s].dmin)),
          _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8))));
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const int64_t b = r * nb + 8 * s;
        mins[a][r] = _mm256_fmadd_ps(
            mv,
            _mm256_mul_ps(_mm256_loadu_ps(x.d + b),
                          _mm256_cvtepi32_ps(_mm256_loadu_si256(
                              reinterpret_cast<const __m256i*>(x.sum + b)))),
            mins[a][r]);
      }
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      // [sc(2k) x 8, sc(2k + 1) x 8].
      const __m512i pick =
          _mm512_set_epi32(2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1,
                           2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k,
                           2 * k, 2 * k, 2 * k, 2 * k, 2 * k, 2 * k, 2 * k);
      __m512i w[OW];
      __m512 dw[OW];
#pragma GCC unroll 2
      for (int a = 0; a < OW; ++a) {
        const __m256i q = _mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(wb[a][s].qs) + k);
        w[a] = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_and_si256(q, low4)),
            _mm256_and_si256(_mm256_srli_epi16(q, 4), low4), 1);
        dw[a] = _mm512_permutexvar_ps(pick, sc[a]);
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const XPair& xp = x.pairs[r * np + 4 * s + k];
        const __m512i xq = _mm512_load_si512(xp.q);
        const __m512 dx = _mm512_load_ps(xp.d);
#pragma GCC unroll 2
        for (int a = 0; a < OW; ++a) {
          const __m512i dot =
              _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[a], xq);
          acc[a][r] = _mm512_fmadd_ps(_mm512_mul_ps(dw[a], dx),
                                      _mm512_cvtepi32_ps(dot), acc[a][r]);
        }
      }
    }
  }
  for (int a = 0; a < OW; ++a) {
    for (int r = 0; r < R; ++r) {
      y[r * ldy + a] = _mm512_reduce_add_ps(acc[a][r]) - HSum(mins[a][r]);
    }
  }
}

// Q6_K weights (OW rows) against R rows of x, two 32-weight blocks per
// 512-bit vpdpbusd: codes are used unsigned (w + 32, 0..63), assembled
// from ql and qh for blocks 2q and 2q + 1 at once; int32 lanes 0-3, 4-7,
// 8-11, 12-15 are the four 16-weight groups, scaled by [d * sc(g) x 4 ...]
// times x's scales. The offset, 32 * d * sc(g) * dx * (the group's code
// sum), is one 16-wide FMA per super-block, subtracted at the end. The
// same arithmetic for every OW and R: a batched row equals the row alone.
template <int OW, int R>
inline void TileK(const BlockQ6_K* const (&wb)[OW], const QuantizedRows& x,
                  int64_t nb, float* y, int64_t ldy) {
  const int64_t np = nb / 2;
  __m512 acc[OW][R], offset[OW][R];
#pragma GCC unroll 8
  for (int a = 0; a < OW; ++a) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[a][r] = offset[a][r] = _mm512_setzero_ps();
  }
  const __m512i low4 = _mm512_set1_epi8(15), two = _mm512_set1_epi8(3);
  // qh's bit pairs of blocks 2q, 2q + 1: shifts 0, 2 (first pair of a
  // half) and 4, 6 (second pair), per 256-bit lane.
  const __m512i shift01 =
      _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
  const __m512i shift23 =
      _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
  for (int64_t s = 0; s < nb / 8; ++s) {
    __m512 scv[OW];
#pragma GCC unroll 2
    for (int a = 0; a < OW; ++a) {
      scv[a] = _mm512_mul_ps(
          _mm512_set1_ps(_cvtsh_ss(wb[a][s].d)),
          _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
              reinterpret_cast<const __m128i*>(wb[a][s].scales)))));
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        offset[a][r] = _mm512_fmadd_ps(
            scv[a], _mm512_loadu_ps(x.half_dsum + 2 * (r * nb + 8 * s)),
            offset[a][r]);
      }
    }
#pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {
#pragma GCC unroll 2
      for (int pair = 0; pair < 2; ++pair) {
        const int g = 8 * half + 4 * pair;  // First of the 4 groups.
        const __m512i pick =
            _mm512_set_epi32(g + 3, g + 3, g + 3, g + 3, g + 2, g + 2, g + 2,
                             g + 2, g + 1, g + 1, g + 1, g + 1, g, g, g, g);
        __m512i u[OW];
        __m512 dw[OW];
#pragma GCC unroll 2
        for (int a = 0; a < OW; ++a) {
          const __m512i l = _mm512_loadu_si512(wb[a][s].ql + 64 * half);
          const __m256i h256 = _mm256_loadu_si256(
              reinterpret_cast<const __m256i*>(wb[a][s].qh + 32 * half));
          const __m512i h =
              _mm512_inserti64x4(_mm512_castsi256_si512(h256), h256, 1);
          const __m512i lo =
              _mm512_and_si512(pair == 0 ? l : _mm512_srli_epi16(l, 4), low4);
          const __m512i hi = _mm512_and_si512(
              _mm512_srlv_epi16(h, pair == 0 ? shift01 : shift23), two);
          u[a] = _mm512_or_si512(lo, _mm512_slli_epi16(hi, 4));
          dw[a] = _mm512_permutexvar_ps(pick, scv[a]);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const XPair& xp = x.pairs[r * np + 4 * s + 2 * half + pair];
          const __m512i xq = _mm512_load_si512(xp.q);
          const __m512 dx = _mm512_load_ps(xp.d);
#pragma GCC unroll 2
          for (int a = 0; a < OW; ++a) {
            const __m512i dot =
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[a], xq);
            acc[a][r] = _mm512_fmadd_ps(_mm512_mul_ps(dw[a], dx),
                                        _mm512_cvtepi32_ps(dot), acc[a][r]);
          }
        }
      }
    }
  }
  for (int a = 0; a < OW; ++a) {
    for (int r = 0; r < R; ++r) {
      y[r * ldy + a] = _mm512_reduce_add_ps(acc[a][r]) -
                       32.0f * _mm512_reduce_add_ps(offset[a][r]);
    }
  }
}

// Weight rows [0, n) of a tile against R rows of x, one row at a time.
template <typename Block, int R>
inline void Rows(const uint8_t* w, int64_t row_bytes, int64_t n,
                 const QuantizedRows& x, int64_t nb, float* y, int64_t ldy) {
  constexpr bool kK =
      sizeof(Block) == sizeof(BlockQ4_K) || sizeof(Block) == sizeof(BlockQ6_K);
  auto row = [&](int64_t a) {
    return reinterpret_cast<const Block*>(w + a * row_bytes);
  };
  int64_t a = 0;
  // Weight rows in pairs for a full group of long x rows only: a lone row
  // of x keeps one weight stream (two made it slower and erratic), and x
  // rows whose pairs stay in L1 ran 5-10% slower in pairs (2304 x 768);
  // 2048 x 8192 with 16 rows of x, Q4_0: 113 -> 170 G MAC/s.
  if (R == 4 && nb >= 64) {
    for (; a + 2 <= n; a += 2) {
      if constexpr (kK) {
        const Block* const pair[2] = {row(a), row(a + 1)};
        TileK<2, R>(pair, x, nb, y + a, ldy);
      } else {
        TileQ2<R>(row(a), row(a + 1), x, nb, y + a, ldy);
      }
    }
  }
  for (; a < n; ++a) {
    if constexpr (kK) {
      const Block* const one[1] = {row(a)};
      TileK<1, R>(one, x, nb, y + a, ldy);
    } else {
      TileQ<R>(row(a), x, nb, y + a, ldy);
    }
  }
}

// Quantized weights (x as XPairs): tiles of kTile weight rows
// stay in L1/L2 while every group of 4 rows of x passes over them.
template <typename Block>
void GemvQPairs(const uint8_t* w, int64_t row_bytes, int64_t in, const void* x,
                int64_t rows, float* y, int64_t ldy, int64_t o0, int64_t o1) {
  const int64_t nb = in / kBlockSize, np = nb / 2;
  const QuantizedRows& xq = *static_cast<const QuantizedRows*>(x);
  for (int64_t t = o0; t < o1; t += kTile) {
    const int64_t n = (t + kTile < o1 ? t + kTile : o1) - t;
    const uint8_t* wt = w + t * row_bytes;
    for (int64_t r = 0; r < rows; r += 4) {
      const QuantizedRows xr = {
          xq.q + r * nb, xq.d + r * nb, xq.sum + r * nb, xq.pairs + r * np,
          xq.half_dsum == nullptr ? nullptr : xq.half_dsum + 2 * r * nb};
      float* yt = y + r * ldy + t;
      switch (rows - r < 4 ? rows - r : 4) {
        case 4:
          Rows<Block, 4>(wt, row_bytes, n, xr, nb, yt, ldy);
          break;
        case 3:
          Rows<Block, 3>(wt, row_bytes, n, xr, nb, yt, ldy);
          break;
        case 2:
          Rows<Block, 2>(wt, row_bytes, n, xr, nb, yt, ldy);
          break;
        default:
          Rows<Block, 1>(wt, row_bytes, n, xr, nb, yt, ldy);
          break;
      }
    }
  }
}

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

// 12 independent accumulators: enough to cover the FMA latency (4 cycles)
// on two ports.
constexpr int kPeakAcc = 12;

int64_t PeakF32(int64_t iters, float* sink) {
  __m512 acc[kPeakAcc];
  for (int k = 0; k < kPeakAcc; ++k) acc[k] = _mm512_set1_ps(0.5f + k);
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(0.001f);
  for (int64_t i = 0; i < iters; ++i) {
    for (int k = 0; k < kPeakAcc; ++k) acc[k] = _mm512_fmadd_ps(acc[k], a, b);
  }
  __m512 s = acc[0];
  for (int k = 1; k < kPeakAcc; ++k) s = _mm512_add_ps(s, acc[k]);
  *sink += _mm512_reduce_add_ps(s);
  return iters * kPeakAcc * 16;
}

int64_t PeakI8(int64_t iters, float* sink) {
  __m512i acc[kPeakAcc];
  for (int k = 0; k < kPeakAcc; ++k) acc[k] = _mm512_set1_epi32(k);
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-5);
  for (int64_t i = 0; i < iters; ++i) {
    for (int k = 0; k < kPeakAcc; ++k) {
      acc[k] = _mm512_dpbusd_epi32(acc[k], a, b);
    }
  }
  __m512i s = acc[0];
  for (int k = 1; k < kPeakAcc; ++k) s = _mm512_add_epi32(s, acc[k]);
  *sink += static_cast<float>(_mm512_reduce_add_epi32(s));
  return iters * kPeakAcc * 64;
}

}  // namespace

const GemvKernels kAvx512Kernels = {GemvF<float>,
                                    GemvQPairs<BlockQ8_0>,
                                    GemvQPairs<BlockQ4_0>,
                                    GemvQPairs<BlockQ4_K>,
                                    GemvQPairs<BlockQ6_K>,
                                    GemvF<uint16_t>,
                                    SumU64,
                                    PeakF32,
                                    PeakI8};

}  // namespace edgesplit::kernels::internal
