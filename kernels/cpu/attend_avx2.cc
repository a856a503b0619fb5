// AVX2 softmax-and-values (compiled with -mavx2 -mfma; called only when
// the CPU has them): AVX-512's algorithm on 8 lanes.
#include <immintrin.h>

#include <cmath>

#include "kernels/cpu/attend.h"

namespace edgesplit::kernels::internal {
namespace {

// exp(x) for x <= 0 as in attend_avx512.cc, with 2^n built in the exponent
// bits: below -87 (where expf leaves the normal range) the result is 0, a
// difference from expf of under 1.2e-38 in a softmax weight.
inline __m256 Exp(__m256 x) {
  const __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
  // NaN stays NaN (max returns its second operand on NaN).
  x = _mm256_max_ps(_mm256_set1_ps(-87.0f), x);
  const __m256 n =
      _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  // n >= -126 here: 2^n is a normal float.
  const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  return _mm256_andnot_ps(tiny, _mm256_mul_ps(p, scale));
}

// Lanes [0, n) of 8 set, the rest clear.
inline __m256i Tail(int64_t n) {
  const int k = n >= 8 ? 8 : static_cast<int>(n);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

inline float HMax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

inline float HSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

}  // namespace

void SoftmaxValuesAvx2(float* sc, int64_t len, float scale, const float* values,
                       int64_t d, float* out) {
  const __m256 vscale = _mm256_set1_ps(scale);
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  __m256 vmax = ninf;
  for (int64_t j = 0; j < len; j += 8) {
    const __m256i m = Tail(len - j);
    const __m256 s = _mm256_mul_ps(_mm256_maskload_ps(sc + j, m), vscale);
    _mm256_maskstore_ps(sc + j, m, s);
    vmax =
        _mm256_max_ps(vmax, _mm256_blendv_ps(ninf, s, _mm256_castsi256_ps(m)));
  }
  const __m256 mx = _mm256_set1_ps(HMax(vmax));
  __m256 vsum = _mm256_setzero_ps();
  for (int64_t j = 0; j < len; j += 8) {
    const __m256i m = Tail(len - j);
    const __m256 e =
        _mm256_and_ps(Exp(_mm256_sub_ps(_mm256_maskload_ps(sc + j, m), mx)),
                      _mm256_castsi256_ps(m));
    _mm256_maskstore_ps(sc + j, m, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  const float inv = 1.0f / HSum(vsum);
  // out = sum_j p_j v_j, 8 outputs per accumulator, four at a time.
  for (int64_t i = 0; i < d; i += 32) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps(), _mm256_setzero_ps()};
    __m256i m[4];
    for (int k = 0; k < 4; ++k) m[k] = Tail(d - i - 8 * k);
    for (int64_t j = 0; j < len; ++j) {
      const __m256 p = _mm256_set1_ps(sc[j] * inv);
      const float* vj = values + j * d + i;
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        acc[k] =
            _mm256_fmadd_ps(p, _mm256_maskload_ps(vj + 8 * k, m[k]), acc[k]);
      }
    }
    for (int k = 0; k < 4; ++k) {
      _mm256_maskstore_ps(out + i + 8 * k, m[k], acc[k]);
    }
  }
}

}  // namespace edgesplit::kernels::internal
