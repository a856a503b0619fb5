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

// F16 weights: 16 halves widened per step (F16C), float FMAs; x is float.
template <int R>
inline void DotF16(const uint16_t* w, const float* x, int64_t in, float* y,
                   int64_t ldy) {
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= in; i += 16) {
    const __m256 w0 = _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)));
    const __m256 w1 = _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i + 8)));
    for (int r = 0; r < R; ++r) {
      acc[r][0] =
          _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + r * in + i), acc[r][0]);
      acc[r][1] =
          _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + r * in + i + 8), acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    float s = HSum(_mm256_add_ps(acc[r][0], acc[r][1]));
    for (int64_t j = i; j < in; ++j) s += _cvtsh_ss(w[j]) * x[r * in + j];
    y[r * ldy] = s;
  }
}

void GemvF16(const uint8_t* w, int64_t row_bytes, int64_t in, const void* x,
             int64_t rows, float* y, int64_t ldy, int64_t o0, int64_t o1) {
  const float* xf = static_cast<const float*>(x);
  for (int64_t t = o0; t < o1; t += kTile) {
    const int64_t te = t + kTile < o1 ? t + kTile : o1;
    for (int64_t r = 0; r < rows; r += 4) {
      for (int64_t o = t; o < te; ++o) {
        const auto* wr = reinterpret_cast<const uint16_t*>(w + o * row_bytes);
        float* yo = y + r * ldy + o;
        switch (rows - r < 4 ? rows - r : 4) {
          case 4:
            DotF16<4>(wr, xf + r * in, in, yo, ldy);
            break;
          case 3:
            DotF16<3>(wr, xf + r * in, in, yo, ldy);
            break;
          case 2:
            DotF16<2>(wr, xf + r * in, in, yo, ldy);
            break;
          default:
            DotF16<1>(wr, xf + r * in, in, yo, ldy);
            break;
        }
      }
    }
  }
}

// Q8_0 weights: the unsigned operand is |w|, with w's sign moved onto x.
// No saturation on the AVX2 path: |w|, |x| <= 127 keeps pair sums <= 32258.
template <int R>
inline void DotQ(const BlockQ8_0* wb, const QuantizedRows& x, int64_t nb,
                 float* y, int64_t ldy) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i qw = LoadQ8(wb[b]);
    const __m256i aw = _mm256_sign_epi8(qw, qw);
    const float dw = _cvtsh_ss(wb[b].d);
    for (int r = 0; r < R; ++r) {
      const int64_t xb = r * nb + b;
      const __m256i sx = _mm256_sign_epi8(LoadQ8(x.q[xb]), qw);
      const __m256i p = DotU8S8(_mm256_setzero_si256(), aw, sx);
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d[xb]),
                               _mm256_cvtepi32_ps(p), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) y[r * ldy] = HSum(acc[r]);
}

// Q4_0 weights: the nibbles (0..15) are the unsigned operand as stored, and
// the -8 offset is applied once per block as -8 * sum(x) (exact integers),
// seeded into the first lane of the dot product's accumulator.
template <int R>
inline void DotQ(const BlockQ4_0* wb, const QuantizedRows& x, int64_t nb,
                 float* y, int64_t ldy) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(15);
  for (int64_t b = 0; b < nb; ++b) {
    const __m128i t =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb[b].qs));
    // Low nibbles are elements 0..15, high nibbles 16..31.
    const __m256i nib =
        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), low4);
    const float dw = _cvtsh_ss(wb[b].d);
    for (int r = 0; r < R; ++r) {
      const int64_t xb = r * nb + b;
      const __m256i p =
          DotU8S8(_mm256_setr_epi32(-8 * x.sum[xb], 0, 0, 0, 0, 0, 0, 0), nib,
                  LoadQ8(x.q[xb]));
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d[xb]),
                               _mm256_cvtepi32_ps(p), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) y[r * ldy] = HSum(acc[r]);
}

// Q4_K weights: each 32 bytes of qs hold two sub-blocks (low and high
// nibbles), each multiplied unsigned with its x block and scaled by
// d * sc * dx; the mins' share, dmin * m * dx * sum(x), is summed apart.
template <int R>
inline void DotQ(const BlockQ4_K* wb, const QuantizedRows& x, int64_t nb,
                 float* y, int64_t ldy) {
  __m256 acc[R];
  float mins[R];
  for (int r = 0; r < R; ++r) {
    acc[r] = _mm256_setzero_ps();
    mins[r] = 0.0f;
  }
  const __m256i low4 = _mm256_set1_epi8(15);
  for (int64_t s = 0; s < nb / 8; ++s) {
    const float d = _cvtsh_ss(wb[s].d), dmin = _cvtsh_ss(wb[s].dmin);
    int sc[8], m[8];
    for (int j = 0; j < 8; ++j) Q4KScaleMin(wb[s].scales, j, &sc[j], &m[j]);
    for (int k = 0; k < 4; ++k) {
      const __m256i q =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb[s].qs) + k);
      const __m256i lo = _mm256_and_si256(q, low4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
      const float d0 = d * sc[2 * k], d1 = d * sc[2 * k + 1];
      for (int r = 0; r < R; ++r) {
        const int64_t b = r * nb + 8 * s + 2 * k;
        const __m256i p0 = DotU8S8(_mm256_setzero_si256(), lo, LoadQ8(x.q[b]));
        const __m256i p1 =
            DotU8S8(_mm256_setzero_si256(), hi, LoadQ8(x.q[b + 1]));
        acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d0 * x.d[b]),
                                 _mm256_cvtepi32_ps(p0), acc[r]);
        acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d1 * x.d[b + 1]),
                                 _mm256_cvtepi32_ps(p1), acc[r]);
        mins[r] += dmin * (m[2 * k] * x.d[b] * static_cast<float>(x.sum[b]) +
                           m[2 * k + 1] * x.d[b + 1] *
                               static_cast<float>(x.sum[b + 1]));
      }
    }
  }
  for (int r = 0; r < R; ++r) y[r * ldy] = HSum(acc[r]) - mins[r];
}

// Q6_K weights: the 6-bit codes of a 32-weight block are assembled from ql
// and qh, centred to -32..31 and multiplied as Q8_0's (|w| unsigned, sign
// on x); the block's two 16-weight scales land on lanes 0-3 and 4-7.
template <int R>
inline void DotQ(const BlockQ6_K* wb, const QuantizedRows& x, int64_t nb,
                 float* y, int64_t ldy) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(15), two = _mm256_set1_epi8(3);
  const __m256i c32 = _mm256_set1_epi8(32);
  for (int64_t s = 0; s < nb / 8; ++s) {
    const float d = _cvtsh_ss(wb[s].d);
    for (int half = 0; half < 2; ++half) {
      const __m256i* ql =
          reinterpret_cast<const __m256i*>(wb[s].ql + 64 * half);
      const __m256i ql0 = _mm256_loadu_si256(ql);
      const __m256i ql1 = _mm256_loadu_si256(ql + 1);
      const __m256i qh = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(wb[s].qh + 32 * half));
      for (int part = 0; part < 4; ++part) {
        const __m256i l = part % 2 == 0 ? ql0 : ql1;
        const __m256i lo =
            _mm256_and_si256(part < 2 ? l : _mm256_srli_epi16(l, 4), low4);
        const __m256i h =
            _mm256_and_si256(_mm256_srli_epi16(qh, 2 * part), two);
        const __m256i wv =
            _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(h, 4)), c32);
        const __m256i aw = _mm256_sign_epi8(wv, wv);
        const int8_t* sc = wb[s].scales + 8 * half + 2 * part;
        const __m256 scv =
            _mm256_set_m128(_mm_set1_ps(d * sc[1]), _mm_set1_ps(d * sc[0]));
        for (int r = 0; r < R; ++r) {
          const int64_t b = r * nb + 8 * s + 4 * half + part;
          const __m256i sx = _mm256_sign_epi8(LoadQ8(x.q[b]), wv);
          const __m256i p = DotU8S8(_mm256_setzero_si256(), aw, sx);
          acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(scv, _mm256_set1_ps(x.d[b])),
                                   _mm256_cvtepi32_ps(p), acc[r]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r) y[r * ldy] = HSum(acc[r]);
}

template <typename Block>
void GemvQ(const uint8_t* w, int64_t row_bytes, int64_t in, const void* x,
           int64_t rows, float* y, int64_t ldy, int64_t o0, int64_t o1) {
  const int64_t nb = in / kBlockSize;
  const QuantizedRows& xq = *static_cast<const QuantizedRows*>(x);
  for (int64_t t = o0; t < o1; t += kTile) {
    const int64_t te = t + kTile < o1 ? t + kTile : o1;
    for (int64_t r = 0; r < rows; r += 4) {
      const QuantizedRows xr = {xq.q + r * nb, xq.d + r * nb, xq.sum + r * nb};
      for (int64_t o = t; o < te; ++o) {
        const Block* wb = reinterpret_cast<const Block*>(w + o * row_bytes);
        float* yo = y + r * ldy + o;
        switch (rows - r < 4 ? rows - r : 4) {
          case 4:
            DotQ<4>(wb, xr, nb, yo, ldy);
            break;
          case 3:
            DotQ<3>(wb, xr, nb, yo, ldy);
            break;
          case 2:
            DotQ<2>(wb, xr, nb, yo, ldy);
            break;
          default:
            DotQ<1>(wb, xr, nb, yo, ldy);
            break;
        }
      }
    }
  }
}

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

constexpr int kPeakAcc = 12;  // Covers the FMA latency on two ports.

int64_t PeakF32(int64_t iters, float* sink) {
  __m256 acc[kPeakAcc];
  for (int k = 0; k < kPeakAcc; ++k) acc[k] = _mm256_set1_ps(0.5f + k);
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(0.001f);
  for (int64_t i = 0; i < iters; ++i) {
    for (int k = 0; k < kPeakAcc; ++k) acc[k] = _mm256_fmadd_ps(acc[k], a, b);
  }
  __m256 s = acc[0];
  for (int k = 1; k < kPeakAcc; ++k) s = _mm256_add_ps(s, acc[k]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  for (float v : lanes) *sink += v;
  return iters * kPeakAcc * 8;
}

// The AVX2 int8 product of the quantized kernels: vpmaddubsw (u8 x s8 into
// 16-bit pairs), vpmaddwd by ones into int32, then an add.
int64_t PeakI8(int64_t iters, float* sink) {
  __m256i acc[kPeakAcc];
  for (int k = 0; k < kPeakAcc; ++k) acc[k] = _mm256_set1_epi32(k);
  const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-5),
                ones = _mm256_set1_epi16(1);
  for (int64_t i = 0; i < iters; ++i) {
    for (int k = 0; k < kPeakAcc; ++k) {
      acc[k] = _mm256_add_epi32(
          acc[k], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
    }
  }
  __m256i s = acc[0];
  for (int k = 1; k < kPeakAcc; ++k) s = _mm256_add_epi32(s, acc[k]);
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  for (int32_t v : lanes) *sink += static_cast<float>(v);
  return iters * kPeakAcc * 32;
}

}  // namespace

const GemvKernels kAvx2Kernels = {
    GemvF32,          GemvQ<BlockQ8_0>, GemvQ<BlockQ4_0>,
    GemvQ<BlockQ4_K>, GemvQ<BlockQ6_K>, GemvF16,
    SumU64,           PeakF32,          PeakI8};

}  // namespace edgesplit::kernels::internal
