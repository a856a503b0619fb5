// The softmax-and-values half of attention for one query head: the part of
// a decode step whose cost grows with the context (a session at 1,000
// tokens reads as many cached values per token as gpt2-small has weights
// in a layer's MLP), with run-time dispatch like the GEMV kernels.
//
// Thread-safety: pure functions of their arguments; callers on different
// threads must pass disjoint `scores` and `out`.
#ifndef EDGESPLIT_KERNELS_CPU_ATTEND_H_
#define EDGESPLIT_KERNELS_CPU_ATTEND_H_

#include <cstdint>

#include "kernels/cpu/isa.h"

namespace edgesplit::kernels {

// p = softmax(scale * scores[0, len)), then out[i] = sum_j p_j *
// values[j * d + i] for i in [0, d). `scores` is overwritten (len >= 1).
// The scalar form is the reference (libm expf, products summed in key
// order); the AVX2 and AVX-512 forms evaluate exp by a degree-7 polynomial
// after an exact range reduction (within 2.5 ulps of expf; AVX2 gives 0
// below -87, where expf is under 1.7e-38) and sum with FMAs in another
// order: each output within ~1e-6 of the sum of |p_j v_ji| of the exact
// result. A NaN score, or all scores -inf, gives NaN on every level.
void SoftmaxValues(Isa isa, float* scores, int64_t len, float scale,
                   const float* values, int64_t d, float* out);

namespace internal {
void SoftmaxValuesScalar(float* scores, int64_t len, float scale,
                         const float* values, int64_t d, float* out);
void SoftmaxValuesAvx2(float* scores, int64_t len, float scale,
                       const float* values, int64_t d, float* out);
void SoftmaxValuesAvx512(float* scores, int64_t len, float scale,
                         const float* values, int64_t d, float* out);
}  // namespace internal

}  // namespace edgesplit::kernels

#endif  // EDGESPLIT_KERNELS_CPU_ATTEND_H_
