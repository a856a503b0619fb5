// AVX2 dequantization of Q8_0, Q4_0, Q4_K and Q6_K rows, in either layout,
// for prefill's dequantize-into-GEMM (runtime's QuantizedGemm runs it on
// one thread between two GEMMs). The AVX-512 variant uses it too.
//
// The scalar DequantizeRow of each type defines the values and these equal
// it bit for bit: the same int-to-float conversions and products in the
// same order, scales widened by the same Fp16BitsToFp32, and no FMA
// contraction (this file is compiled with -ffp-contract=off).
// Interleaved rows (gemv.h's kInterleaved16: one row's code bytes lie 4 at
// a time, 64 bytes apart) are put back in GGUF's blocks 16 rows at a time
// by 8x8 transposes of 32-bit words, then dequantized as rows are (4-byte
// gathers per row instead measured 1.3-2.4x slower on this machine).
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <vector>

#include "kernels/cpu/gemv.h"
#include "kernels/cpu/gemv_internal.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/scalar_codecs.h"

namespace edgesplit::kernels::internal {
namespace {

// 8 weights a * float(codes) (- m): codes are 8 int32 lanes.
inline void Store8(float* y, __m256i codes, float a) {
  _mm256_storeu_ps(y,
                   _mm256_mul_ps(_mm256_set1_ps(a), _mm256_cvtepi32_ps(codes)));
}
inline void Store8(float* y, __m256i codes, float a, float m) {
  _mm256_storeu_ps(y, _mm256_sub_ps(_mm256_mul_ps(_mm256_set1_ps(a),
                                                  _mm256_cvtepi32_ps(codes)),
                                    _mm256_set1_ps(m)));
}

// Bytes 0-7 and 8-15 of v, widened to int32 lanes.
inline __m256i Low8s(__m128i v) { return _mm256_cvtepi8_epi32(v); }
inline __m256i High8s(__m128i v) {
  return _mm256_cvtepi8_epi32(_mm_srli_si128(v, 8));
}
inline __m256i Low8u(__m128i v) { return _mm256_cvtepu8_epi32(v); }
inline __m256i High8u(__m128i v) {
  return _mm256_cvtepu8_epi32(_mm_srli_si128(v, 8));
}

// Q8_0: 32 codes times d.
inline void BlockQ8(__m256i q, float d, float* y) {
  const __m128i lo = _mm256_castsi256_si128(q);
  const __m128i hi = _mm256_extracti128_si256(q, 1);
  Store8(y, Low8s(lo), d);
  Store8(y + 8, High8s(lo), d);
  Store8(y + 16, Low8s(hi), d);
  Store8(y + 24, High8s(hi), d);
}

// Q4_0: 16 code bytes, low nibbles first, then high, each minus 8, times d.
// The scalar form converts (nibble - 8) and multiplies: so does this.
inline void BlockQ4(__m128i q, float d, float* y) {
  const __m256i nibble = _mm256_set1_epi32(15), eight = _mm256_set1_epi32(8);
  const __m256i b[2] = {Low8u(q), High8u(q)};
  for (int i = 0; i < 2; ++i) {
    Store8(y + 8 * i, _mm256_sub_epi32(_mm256_and_si256(b[i], nibble), eight),
           d);
    Store8(y + 16 + 8 * i, _mm256_sub_epi32(_mm256_srli_epi32(b[i], 4), eight),
           d);
  }
}

// Q4_K sub-blocks j and j + 1 from their 32 code bytes: d1 * low - m1,
// then d2 * high - m2.
inline void PairQ4K(__m256i q, const uint8_t* scales, int j, float d,
                    float dmin, float* y) {
  int sc, m;
  Q4KScaleMin(scales, j, &sc, &m);
  const float d1 = d * sc, m1 = dmin * m;
  Q4KScaleMin(scales, j + 1, &sc, &m);
  const float d2 = d * sc, m2 = dmin * m;
  const __m256i nibble = _mm256_set1_epi32(15);
  const __m128i half[2] = {_mm256_castsi256_si128(q),
                           _mm256_extracti128_si256(q, 1)};
  for (int i = 0; i < 4; ++i) {
    const __m256i b = i % 2 == 0 ? Low8u(half[i / 2]) : High8u(half[i / 2]);
    Store8(y + 8 * i, _mm256_and_si256(b, nibble), d1, m1);
    Store8(y + 32 + 8 * i, _mm256_srli_epi32(b, 4), d2, m2);
  }
}

inline __m256i Load32(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}
inline __m128i Load16(const void* p) {
  return _mm_loadu_si128(static_cast<const __m128i*>(p));
}

void RowQ8_0(const BlockQ8_0* x, int64_t nb, float* y) {
  for (int64_t b = 0; b < nb; ++b, y += kBlockSize) {
    BlockQ8(Load32(x[b].qs), Fp16BitsToFp32(x[b].d), y);
  }
}

void RowQ4_0(const BlockQ4_0* x, int64_t nb, float* y) {
  for (int64_t b = 0; b < nb; ++b, y += kBlockSize) {
    BlockQ4(Load16(x[b].qs), Fp16BitsToFp32(x[b].d), y);
  }
}

void RowQ4_K(const BlockQ4_K* x, int64_t nb, float* y) {
  for (int64_t b = 0; b < nb; ++b) {
    const float d = Fp16BitsToFp32(x[b].d);
    const float dmin = Fp16BitsToFp32(x[b].dmin);
    for (int j = 0; j < 8; j += 2, y += 64) {
      PairQ4K(Load32(x[b].qs + 16 * j), x[b].scales, j, d, dmin, y);
    }
  }
}

// Q6_K, as DequantizeRowQ6_K: per half, weights l, l + 32, l + 64, l + 96
// from ql[l] and ql[l + 32]'s nibbles and qh[l]'s bit pairs, minus 32,
// times (d * scale of their 16).
void RowQ6_K(const BlockQ6_K* x, int64_t nb, float* y) {
  const __m256i low4 = _mm256_set1_epi32(15), two = _mm256_set1_epi32(3),
                off = _mm256_set1_epi32(32);
  for (int64_t b = 0; b < nb; ++b) {
    const float d = Fp16BitsToFp32(x[b].d);
    for (int half = 0; half < 2; ++half, y += 128) {
      const uint8_t* ql = x[b].ql + 64 * half;
      const uint8_t* qh = x[b].qh + 32 * half;
      const int8_t* sc = x[b].scales + 8 * half;
      for (int l = 0; l < 32; l += 8) {
        const int is = l / 16;
        const __m256i a = _mm256_cvtepu8_epi32(
            _mm_loadl_epi64(reinterpret_cast<const __m128i*>(ql + l)));
        const __m256i c = _mm256_cvtepu8_epi32(
            _mm_loadl_epi64(reinterpret_cast<const __m128i*>(ql + l + 32)));
        const __m256i h = _mm256_cvtepu8_epi32(
            _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qh + l)));
        auto code = [&](__m256i lo4, int shift) {
          const __m256i hi2 =
              _mm256_and_si256(_mm256_srli_epi32(h, shift), two);
          return _mm256_sub_epi32(
              _mm256_or_si256(lo4, _mm256_slli_epi32(hi2, 4)), off);
        };
        Store8(y + l, code(_mm256_and_si256(a, low4), 0), d * sc[is]);
        Store8(y + l + 32, code(_mm256_and_si256(c, low4), 2), d * sc[is + 2]);
        Store8(y + l + 64, code(_mm256_srli_epi32(a, 4), 4), d * sc[is + 4]);
        Store8(y + l + 96, code(_mm256_srli_epi32(c, 4), 6), d * sc[is + 6]);
      }
    }
  }
}

// Dwords r..r+7 of 8 chunks (chunk j at src + 64 j, row r's dword at
// + 4 r), i.e. 32 bytes of each of 8 rows, stored at dst + r * stride: an
// 8x8 transpose of 32-bit words.
inline void Untangle8(const uint8_t* src, uint8_t* dst, int64_t stride) {
  __m256i c[8], t[8], u[8];
  for (int j = 0; j < 8; ++j) c[j] = Load32(src + 64 * j);
  for (int j = 0; j < 8; j += 2) {
    t[j] = _mm256_unpacklo_epi32(c[j], c[j + 1]);
    t[j + 1] = _mm256_unpackhi_epi32(c[j], c[j + 1]);
  }
  // u[4 q + i]: rows i (low 128 bits) and i + 4 (high), chunks 4q..4q+3.
  for (int q = 0; q < 2; ++q) {
    u[4 * q] = _mm256_unpacklo_epi64(t[4 * q], t[4 * q + 2]);
    u[4 * q + 1] = _mm256_unpackhi_epi64(t[4 * q], t[4 * q + 2]);
    u[4 * q + 2] = _mm256_unpacklo_epi64(t[4 * q + 1], t[4 * q + 3]);
    u[4 * q + 3] = _mm256_unpackhi_epi64(t[4 * q + 1], t[4 * q + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i * stride),
                        _mm256_permute2x128_si256(u[i], u[4 + i], 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (i + 4) * stride),
                        _mm256_permute2x128_si256(u[i], u[4 + i], 0x31));
  }
}

// Four chunks likewise: 16 bytes of each of 8 rows.
inline void Untangle4(const uint8_t* src, uint8_t* dst, int64_t stride) {
  __m256i c[4], t[4];
  for (int j = 0; j < 4; ++j) c[j] = Load32(src + 64 * j);
  t[0] = _mm256_unpacklo_epi32(c[0], c[1]);
  t[1] = _mm256_unpackhi_epi32(c[0], c[1]);
  t[2] = _mm256_unpacklo_epi32(c[2], c[3]);
  t[3] = _mm256_unpackhi_epi32(c[2], c[3]);
  const __m256i u[4] = {
      _mm256_unpacklo_epi64(t[0], t[2]), _mm256_unpackhi_epi64(t[0], t[2]),
      _mm256_unpacklo_epi64(t[1], t[3]), _mm256_unpackhi_epi64(t[1], t[3])};
  for (int i = 0; i < 4; ++i) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i * stride),
                     _mm256_castsi256_si128(u[i]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (i + 4) * stride),
                     _mm256_extracti128_si256(u[i], 1));
  }
}

// All 16 rows' bytes of `chunks` interleaved chunks (a multiple of 4)
// starting at src, row r's at dst + r * stride.
inline void Untangle(const uint8_t* src, int chunks, uint8_t* dst,
                     int64_t stride) {
  for (int c = 0; c < chunks; c += 8) {
    for (int half = 0; half < 2; ++half) {
      const uint8_t* from = src + 64 * c + 32 * half;
      uint8_t* to = dst + 4 * c + 8 * half * stride;
      chunks - c >= 8 ? Untangle8(from, to, stride)
                      : Untangle4(from, to, stride);
    }
  }
}

// One group block's 16 rows back as GGUF's blocks, row l's at r[l * n].
void Ungroup(const BlockQ8_0x16& g, BlockQ8_0* r, int64_t n) {
  for (int l = 0; l < 16; ++l) r[l * n].d = g.d[l];
  Untangle(reinterpret_cast<const uint8_t*>(g.qs), 8,
           reinterpret_cast<uint8_t*>(r->qs), n * sizeof(BlockQ8_0));
}

void Ungroup(const BlockQ4_0x16& g, BlockQ4_0* r, int64_t n) {
  for (int l = 0; l < 16; ++l) r[l * n].d = g.d[l];
  Untangle(g.qs, 4, r->qs, n * sizeof(BlockQ4_0));
}

void Ungroup(const BlockQ4_Kx16& g, BlockQ4_K* r, int64_t n) {
  for (int l = 0; l < 16; ++l) {
    r[l * n].d = g.d[l];
    r[l * n].dmin = g.dmin[l];
    for (int i = 0; i < 12; ++i) r[l * n].scales[i] = g.scales[i][l];
  }
  Untangle(g.qs[0], 32, r->qs, n * sizeof(BlockQ4_K));
}

void Ungroup(const BlockQ6_Kx16& g, BlockQ6_K* r, int64_t n) {
  for (int l = 0; l < 16; ++l) {
    r[l * n].d = g.d[l];
    for (int i = 0; i < 16; ++i) r[l * n].scales[i] = g.scales[i][l];
  }
  Untangle(g.ql[0], 32, r->ql, n * sizeof(BlockQ6_K));
  Untangle(g.qh[0], 16, r->qh, n * sizeof(BlockQ6_K));
}

template <typename Block>
void Rows(void (*row)(const Block*, int64_t, float*), const uint8_t* w,
          int64_t row_bytes, int64_t in, int64_t o0, int64_t o1, float* out) {
  const int64_t nb = row_bytes / static_cast<int64_t>(sizeof(Block));
  for (int64_t o = o0; o < o1; ++o, out += in) {
    row(reinterpret_cast<const Block*>(w + o * row_bytes), nb, out);
  }
}

// Interleaved rows [o0, o1): each group put back in the row layout (in
// cache: 16 rows), then its rows dequantized as the row layout's. (Group
// block by group block instead, the 16 output rows written at once were
// one L1 set apart when rows are 4096 wide, and ran at a third of this.)
template <typename Group, typename Block>
void Groups(void (*row)(const Block*, int64_t, float*), const uint8_t* w,
            int64_t row_bytes, int64_t in, int64_t o0, int64_t o1, float* out) {
  const int64_t nb = row_bytes / static_cast<int64_t>(sizeof(Block));
  std::vector<Block> rows(static_cast<size_t>(16 * nb));
  for (int64_t g = o0 / 16; g * 16 < o1; ++g) {
    const auto* group = reinterpret_cast<const Group*>(w + g * 16 * row_bytes);
    for (int64_t b = 0; b < nb; ++b) Ungroup(group[b], rows.data() + b, nb);
    const int64_t first = std::max<int64_t>(o0, g * 16);
    const int64_t last = std::min<int64_t>(o1, g * 16 + 16);
    for (int64_t o = first; o < last; ++o) {
      row(rows.data() + (o - g * 16) * nb, nb, out + (o - o0) * in);
    }
  }
}

}  // namespace

bool DequantizeRowsAvx2(WeightType type, WeightLayout layout, const uint8_t* w,
                        int64_t row_bytes, int64_t in, int64_t o0, int64_t o1,
                        float* out) {
  const bool rows = layout == WeightLayout::kRows;
  switch (type) {
    case WeightType::kQ8_0:
      rows ? Rows(RowQ8_0, w, row_bytes, in, o0, o1, out)
           : Groups<BlockQ8_0x16>(RowQ8_0, w, row_bytes, in, o0, o1, out);
      return true;
    case WeightType::kQ4_0:
      rows ? Rows(RowQ4_0, w, row_bytes, in, o0, o1, out)
           : Groups<BlockQ4_0x16>(RowQ4_0, w, row_bytes, in, o0, o1, out);
      return true;
    case WeightType::kQ4_K:
      rows ? Rows(RowQ4_K, w, row_bytes, in, o0, o1, out)
           : Groups<BlockQ4_Kx16>(RowQ4_K, w, row_bytes, in, o0, o1, out);
      return true;
    case WeightType::kQ6_K:
      rows ? Rows(RowQ6_K, w, row_bytes, in, o0, o1, out)
           : Groups<BlockQ6_Kx16>(RowQ6_K, w, row_bytes, in, o0, o1, out);
      return true;
    case WeightType::kF32:
    case WeightType::kF16:
      break;
  }
  return false;
}

}  // namespace edgesplit::kernels::internal
