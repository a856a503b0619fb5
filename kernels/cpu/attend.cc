#include "kernels/cpu/attend.h"

#include <algorithm>
#include <cmath>

namespace edgesplit::kernels {
namespace internal {

void SoftmaxValuesScalar(float* sc, int64_t len, float scale,
                         const float* values, int64_t d, float* out) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < len; ++j) {
    sc[j] *= scale;
    mx = std::max(mx, sc[j]);
  }
  float sum = 0.0f;
  for (int64_t j = 0; j < len; ++j) {
    sc[j] = std::exp(sc[j] - mx);
    sum += sc[j];
  }
  const float inv = 1.0f / sum;
  std::fill(out, out + d, 0.0f);
  for (int64_t j = 0; j < len; ++j) {
    const float p = sc[j] * inv;
    const float* vj = values + j * d;
    for (int64_t i = 0; i < d; ++i) out[i] += p * vj[i];
  }
}

}  // namespace internal

void SoftmaxValues(Isa isa, float* scores, int64_t len, float scale,
                   const float* values, int64_t d, float* out) {
#if EDGESPLIT_X86_KERNELS
  if (isa == Isa::kAvx512) {
    internal::SoftmaxValuesAvx512(scores, len, scale, values, d, out);
    return;
  }
  if (isa == Isa::kAvx2) {
    internal::SoftmaxValuesAvx2(scores, len, scale, values, d, out);
    return;
  }
#else
  (void)isa;
#endif
  internal::SoftmaxValuesScalar(scores, len, scale, values, d, out);
}

}  // namespace edgesplit::kernels
