// AVX-512 kernels for weights in WeightLayout::kInterleaved16 (gemv.h):
// each block of 16 rows is one vpdpbusd operand, so a block of x costs one
// scale FMA per 16 rows. Compiled with the AVX-512 flags of
// gemv_avx512.cc; called only when the CPU has them. Each computes
// exactly its scalar reference in gemv_scalar.cc (gemv_internal.h states
// the arithmetic).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/gemv_internal.h"
#include "kernels/cpu/quant_blocks.h"

namespace edgesplit::kernels::internal {
namespace {

// A group block's codes as the unsigned operand of vpdpbusd, chunk j of
// NC: Q4_0's low nibbles (chunks 0-3, against x's bytes 4j..) and high
// nibbles (4-7, against 16 + 4(j - 4)..), offset 8 taken off through x's
// code sum; Q8_0's codes + 128 (sign bit flipped), offset 128 likewise.
template <typename Group>
struct GroupCodes {
  static constexpr bool kQ4 = sizeof(Group) == sizeof(BlockQ4_0x16);
  static constexpr int32_t kOffset = kQ4 ? -8 : -128;
  static void Load(const Group& g, __m512i (&u)[8]) {
    if constexpr (kQ4) {
      const __m512i low = _mm512_set1_epi8(15);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m512i v = _mm512_loadu_si512(g.qs + 64 * j);
        u[j] = _mm512_and_si512(v, low);
        u[4 + j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
      }
    } else {
      const __m512i flip = _mm512_set1_epi8(-128);
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        u[j] = _mm512_xor_si512(_mm512_loadu_si512(g.qs + 64 * j), flip);
      }
    }
  }
  // x's 4 bytes that chunk j multiplies.
  static int32_t XPiece(const int8_t* xs, int j) {
    int32_t v;
    std::memcpy(&v, xs + (kQ4 && j >= 4 ? 16 + 4 * (j - 4) : 4 * j), 4);
    return v;
  }
};

// 16 interleaved rows (one group's blocks) against R rows of x: per block,
// the codes are made unsigned once for all R rows; each row then takes 8
// vpdpbusd (x's 4-byte pieces broadcast, two chains) and one scale FMA for
// 16 rows' blocks, where the row layout needs one per two blocks. Lanes
// outside `m` are not stored (a range that cuts a group).
template <int R, typename Group>
inline void TileGroup(const Group* g, int64_t nb, const QuantizedRows& x,
                      int64_t r0, float* y, int64_t ldy, __mmask16 m) {
  using Codes = GroupCodes<Group>;
  __m512 acc[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    __m512i u[8];
    Codes::Load(g[b], u);
    const __m512 dw = _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g[b].d)));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const int64_t xb = (r0 + r) * nb + b;
      const int8_t* xs = x.q[xb].qs;
      __m512i a0 = _mm512_set1_epi32(Codes::kOffset * x.sum[xb]);
      __m512i a1 = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int j = 0; j < 8; j += 2) {
        a0 = _mm512_dpbusd_epi32(a0, u[j],
                                 _mm512_set1_epi32(Codes::XPiece(xs, j)));
        a1 = _mm512_dpbusd_epi32(a1, u[j + 1],
                                 _mm512_set1_epi32(Codes::XPiece(xs, j + 1)));
      }
      acc[r] =
          _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(x.d[xb])),
                          _mm512_cvtepi32_ps(_mm512_add_epi32(a0, a1)), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_mask_storeu_ps(y + (r0 + r) * ldy, m, acc[r]);
  }
}

// The eight d * sc(j) and dmin * m(j) of a super-block's 16 rows, unpacked
// from the rows' packed scales bytes (each 16-byte vector one byte of
// every row) as Q4KScaleMin does one row at a time.
inline void Q4KGroupScales(const BlockQ4_Kx16& g, __m512 (&sc)[8],
                           __m512 (&mn)[8]) {
  __m128i q[12];
#pragma GCC unroll 12
  for (int i = 0; i < 12; ++i) {
    q[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(g.scales[i]));
  }
  const __m128i k63 = _mm_set1_epi8(63), k15 = _mm_set1_epi8(15),
                k3 = _mm_set1_epi8(3);
  // Bits 6-7 of each byte, moved to bits 4-5.
  auto top = [&](__m128i v) {
    return _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(v, 6), k3), 4);
  };
  const __m512 d = _mm512_cvtph_ps(
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.d)));
  const __m512 dmin = _mm512_cvtph_ps(
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.dmin)));
  auto widen = [](__m128i v) {
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v));
  };
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) {
    __m128i s8, m8;
    if (j < 4) {
      s8 = _mm_and_si128(q[j], k63);
      m8 = _mm_and_si128(q[j + 4], k63);
    } else {
      s8 = _mm_or_si128(_mm_and_si128(q[j + 4], k15), top(q[j - 4]));
      m8 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(q[j + 4], 4), k15),
                        top(q[j]));
    }
    sc[j] = _mm512_mul_ps(d, widen(s8));
    mn[j] = _mm512_mul_ps(dmin, widen(m8));
  }
}

// 16 interleaved Q4_K rows against R rows of x, TileGroup's way: per
// 32-weight sub-block, 8 vpdpbusd and one scale FMA per row of x for all
// 16 rows, and one FMA for the mins.
template <int R>
inline void TileKGroup(const BlockQ4_Kx16* g, int64_t nb,
                       const QuantizedRows& x, int64_t r0, float* y,
                       int64_t ldy, __mmask16 m) {
  __m512 acc[R], mins[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    acc[r] = _mm512_setzero_ps();
    mins[r] = _mm512_setzero_ps();
  }
  const __m512i low = _mm512_set1_epi8(15);
  for (int64_t s = 0; s < nb / 8; ++s) {
    // Two super-blocks ahead (4.5 KiB): measured, without it a row of x
    // against matrices streamed from memory ran at half the row layout's
    // speed when rows are 2048 wide.
    // (An address past the matrix's end is never formed as a pointer into
    // it: prefetching one is harmless, computing one would not be.)
    const uintptr_t ahead =
        reinterpret_cast<uintptr_t>(g + s) + 2 * sizeof(BlockQ4_Kx16);
#pragma GCC unroll 36
    for (int l = 0; l < 36; ++l) {
      _mm_prefetch(reinterpret_cast<const char*>(ahead + 64 * l), _MM_HINT_T0);
    }
    __m512 sc[8], mn[8];
    Q4KGroupScales(g[s], sc, mn);
    for (int j = 0; j < 8; ++j) {
      // Sub-blocks 2k and 2k + 1 share bytes: low nibbles, then high.
      __m512i u[8];
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        const __m512i v = _mm512_loadu_si512(g[s].qs[8 * (j / 2) + i]);
        u[i] = _mm512_and_si512(j % 2 == 0 ? v : _mm512_srli_epi16(v, 4), low);
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const int64_t xb = (r0 + r) * nb + 8 * s + j;
        const int8_t* xs = x.q[xb].qs;
        __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int i = 0; i < 8; i += 2) {
          int32_t p0, p1;
          std::memcpy(&p0, xs + 4 * i, 4);
          std::memcpy(&p1, xs + 4 * i + 4, 4);
          a0 = _mm512_dpbusd_epi32(a0, u[i], _mm512_set1_epi32(p0));
          a1 = _mm512_dpbusd_epi32(a1, u[i + 1], _mm512_set1_epi32(p1));
        }
        const float dx = x.d[xb];
        acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(sc[j], _mm512_set1_ps(dx)),
                                 _mm512_cvtepi32_ps(_mm512_add_epi32(a0, a1)),
                                 acc[r]);
        mins[r] = _mm512_fmadd_ps(
            mn[j], _mm512_set1_ps(dx * static_cast<float>(x.sum[xb])), mins[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_mask_storeu_ps(y + (r0 + r) * ldy, m,
                          _mm512_sub_ps(acc[r], mins[r]));
  }
}

// Sub-block j's codes (16 weights of 16 rows, 4 chunks) as vpdpbusd's
// unsigned operand: ql's nibble | qh's bit pair << 4, as
// GemvQ6_Kx16Scalar reads them.
inline void Q6KCodes(const BlockQ6_Kx16& g, int j, __m512i (&u)[4]) {
  const int h = j / 8, k = (j % 8) / 2, t = j % 2;
  const __m512i low = _mm512_set1_epi8(15), two = _mm512_set1_epi8(3);
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    __m512i lo = _mm512_loadu_si512(g.ql[16 * h + 8 * (k % 2) + 4 * t + i]);
    if (k >= 2) lo = _mm512_srli_epi16(lo, 4);
    const __m512i hi = _mm512_and_si512(
        _mm512_srli_epi16(_mm512_loadu_si512(g.qh[8 * h + 4 * t + i]), 2 * k),
        two);
    u[i] = _mm512_or_si512(_mm512_and_si512(lo, low), _mm512_slli_epi16(hi, 4));
  }
}

// 16 interleaved Q6_K rows against R rows of x: per 16-weight sub-block,
// 4 vpdpbusd and one scale FMA per row of x for all 16 rows, and one FMA
// for the offset of 32 (through x's half sums).
template <int R>
inline void TileQ6KGroup(const BlockQ6_Kx16* g, int64_t nb,
                         const QuantizedRows& x, int64_t r0, float* y,
                         int64_t ldy, __mmask16 m) {
  __m512 acc[R], offs[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    acc[r] = _mm512_setzero_ps();
    offs[r] = _mm512_setzero_ps();
  }
  for (int64_t s = 0; s < nb / 8; ++s) {
    // Two super-blocks ahead, as TileKGroup (and why).
    const uintptr_t ahead =
        reinterpret_cast<uintptr_t>(g + s) + 2 * sizeof(BlockQ6_Kx16);
#pragma GCC unroll 53
    for (int l = 0; l < 53; ++l) {
      _mm_prefetch(reinterpret_cast<const char*>(ahead + 64 * l), _MM_HINT_T0);
    }
    const __m512 d = _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g[s].d)));
    // Unrolled: each sub-block's nibble and bit-pair shifts are constants.
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) {
      __m512i u[4];
      Q6KCodes(g[s], j, u);
      const __m512 sc = _mm512_mul_ps(
          d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                 reinterpret_cast<const __m128i*>(g[s].scales[j])))));
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const int64_t xb = (r0 + r) * nb + 8 * s + j / 2;
        const int8_t* xs = x.q[xb].qs + 16 * (j % 2);
        int32_t p[4];
        std::memcpy(p, xs, 16);
        __m512i a0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[0],
                                         _mm512_set1_epi32(p[0]));
        __m512i a1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[1],
                                         _mm512_set1_epi32(p[1]));
        a0 = _mm512_dpbusd_epi32(a0, u[2], _mm512_set1_epi32(p[2]));
        a1 = _mm512_dpbusd_epi32(a1, u[3], _mm512_set1_epi32(p[3]));
        acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(sc, _mm512_set1_ps(x.d[xb])),
                                 _mm512_cvtepi32_ps(_mm512_add_epi32(a0, a1)),
                                 acc[r]);
        offs[r] = _mm512_fmadd_ps(
            sc, _mm512_set1_ps(x.half_dsum[2 * xb + j % 2]), offs[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_mask_storeu_ps(
        y + (r0 + r) * ldy, m,
        _mm512_sub_ps(acc[r], _mm512_mul_ps(_mm512_set1_ps(32.0f), offs[r])));
  }
}

// Group ranges of Tile (TileGroup or TileKGroup) over rows [o0, o1).
template <typename Group, typename Tiles>
void ForGroups(const uint8_t* w, int64_t row_bytes, int64_t o0, int64_t o1,
               Tiles tiles) {
  for (int64_t g = o0 / 16; g * 16 < o1; ++g) {
    const int64_t first = std::max<int64_t>(o0, g * 16) - g * 16;
    const int64_t last = std::min<int64_t>(o1, g * 16 + 16) - g * 16;
    const auto m =
        static_cast<__mmask16>(((1u << last) - 1) & ~((1u << first) - 1));
    tiles(reinterpret_cast<const Group*>(w + g * 16 * row_bytes), g * 16, m);
  }
}

// Every group of rows [o0, o1) against x's rows in tiles of kWide (when
// over 4), 4 and 1 rows: tile(R, group, nb, x, r0, y, ldy, mask) with R a
// std::integral_constant.
template <typename Group, int kWide, typename Tile>
void GemvTiles(const uint8_t* w, int64_t row_bytes, int64_t in, const void* x,
               int64_t rows, float* y, int64_t ldy, int64_t o0, int64_t o1,
               Tile tile) {
  const auto& xq = *static_cast<const QuantizedRows*>(x);
  const int64_t nb = in / kBlockSize;
  ForGroups<Group>(
      w, row_bytes, o0, o1,
      [&](const Group* group, int64_t first_row, __mmask16 m) {
        float* yg = y + first_row;
        int64_t r = 0;
        if constexpr (kWide > 4) {
          for (; r + kWide <= rows; r += kWide) {
            tile(std::integral_constant<int, kWide>(), group, nb, xq, r, yg,
                 ldy, m);
          }
        }
        for (; r + 4 <= rows; r += 4) {
          tile(std::integral_constant<int, 4>(), group, nb, xq, r, yg, ldy, m);
        }
        for (; r < rows; ++r) {
          tile(std::integral_constant<int, 1>(), group, nb, xq, r, yg, ldy, m);
        }
      });
}

}  // namespace

#define ES_GROUP_TILE(Tile)                                                    \
  [](auto R, const auto* g, int64_t nb, const auto& xq, int64_t r0, float* yg, \
     int64_t ldy,                                                              \
     __mmask16 m) { Tile<decltype(R)::value>(g, nb, xq, r0, yg, ldy, m); }

void GemvQ4_Kx16Avx512(const uint8_t* w, int64_t row_bytes, int64_t in,
                       const void* x, int64_t rows, float* y, int64_t ldy,
                       int64_t o0, int64_t o1) {
  GemvTiles<BlockQ4_Kx16, 4>(w, row_bytes, in, x, rows, y, ldy, o0, o1,
                             ES_GROUP_TILE(TileKGroup));
}

// Eight rows of x per pass: Q6_K's unpacking costs more than the other
// types', so it is shared by more rows.
void GemvQ6_Kx16Avx512(const uint8_t* w, int64_t row_bytes, int64_t in,
                       const void* x, int64_t rows, float* y, int64_t ldy,
                       int64_t o0, int64_t o1) {
  GemvTiles<BlockQ6_Kx16, 8>(w, row_bytes, in, x, rows, y, ldy, o0, o1,
                             ES_GROUP_TILE(TileQ6KGroup));
}

void GemvQ4_0x16Avx512(const uint8_t* w, int64_t row_bytes, int64_t in,
                       const void* x, int64_t rows, float* y, int64_t ldy,
                       int64_t o0, int64_t o1) {
  GemvTiles<BlockQ4_0x16, 4>(w, row_bytes, in, x, rows, y, ldy, o0, o1,
                             ES_GROUP_TILE(TileGroup));
}

void GemvQ8_0x16Avx512(const uint8_t* w, int64_t row_bytes, int64_t in,
                       const void* x, int64_t rows, float* y, int64_t ldy,
                       int64_t o0, int64_t o1) {
  GemvTiles<BlockQ8_0x16, 4>(w, row_bytes, in, x, rows, y, ldy, o0, o1,
                             ES_GROUP_TILE(TileGroup));
}

#undef ES_GROUP_TILE

}  // namespace edgesplit::kernels::internal
