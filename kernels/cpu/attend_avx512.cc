// AVX-512 softmax-and-values (compiled with -mavx512f -mfma; called only
// when the CPU has them).
#include <immintrin.h>

#include <cmath>

#include "kernels/cpu/attend.h"

namespace edgesplit::kernels::internal {
namespace {

// exp(x) for x <= 0 (scores minus their maximum). x = n ln2 + r with n =
// round(x / ln2) and ln2 split in two so that r is exact to a float ulp;
// exp(r), |r| <= ln2 / 2, by its Taylor polynomial to degree 7 (relative
// error below 5e-9, under a float ulp); 2^n applied by vscalefps, which
// underflows to 0 as expf does. x is first raised to -104 (where expf is
// already 0): -inf and huge negative scores would otherwise make r
// inf - inf. NaN stays NaN (max returns its second operand on NaN).
inline __m512 Exp(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
  const __m512 n = _mm512_roundscale_ps(
      _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

inline __mmask16 Tail(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF)
                 : static_cast<__mmask16>((1u << n) - 1);
}

}  // namespace

void SoftmaxValuesAvx512(float* sc, int64_t len, float scale,
                         const float* values, int64_t d, float* out) {
  const __m512 vscale = _mm512_set1_ps(scale);
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  for (int64_t j = 0; j < len; j += 16) {
    const __mmask16 m = Tail(len - j);
    const __m512 s = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, sc + j), vscale);
    _mm512_mask_storeu_ps(sc + j, m, s);
    vmax = _mm512_mask_max_ps(vmax, m, vmax, s);
  }
  const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
  __m512 vsum = _mm512_setzero_ps();
  for (int64_t j = 0; j < len; j += 16) {
    const __mmask16 m = Tail(len - j);
    const __m512 e = Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, sc + j), mx));
    _mm512_mask_storeu_ps(sc + j, m, e);
    vsum = _mm512_mask_add_ps(vsum, m, vsum, e);
  }
  const float inv = 1.0f / _mm512_reduce_add_ps(vsum);
  // out = sum_j p_j v_j, 16 outputs per accumulator; four at a time (a
  // 64-wide head in registers), then the rest.
  for (int64_t i = 0; i < d; i += 64) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(),
                     _mm512_setzero_ps(), _mm512_setzero_ps()};
    __mmask16 m[4];
    for (int k = 0; k < 4; ++k)
      m[k] = i + 16 * k < d ? Tail(d - i - 16 * k) : 0;
    for (int64_t j = 0; j < len; ++j) {
      const __m512 p = _mm512_set1_ps(sc[j] * inv);
      const float* vj = values + j * d + i;
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        acc[k] = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(m[k], vj + 16 * k),
                                 acc[k]);
      }
    }
    for (int k = 0; k < 4; ++k)
      _mm512_mask_storeu_ps(out + i + 16 * k, m[k], acc[k]);
  }
}

}  // namespace edgesplit::kernels::internal
