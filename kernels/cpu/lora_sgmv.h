// The LoRA branch of a batch whose rows use different adapters (Punica's
// SGMV, "segmented gather matrix-vector"): the base projection y = x W^T is
// shared by every row, and each segment of consecutive rows (one sequence,
// or several that use the same adapter) then adds its own adapter's
// low-rank delta
//   y[rows] += scaling * (x[rows] A^T) B^T,   A [rank, in], B [out, rank],
// in two phases over all segments at once: shrink (x A^T, [rows, rank])
// and expand (low B^T, [rows, out]), each split into tasks over (segment,
// block of output rows) that the kernel pool shares. A decode batch of N
// sessions with N different adapters so reads each adapter's factors once,
// as the base weights are read once for all rows. Rows in no segment are
// left as they are (the base model).
//
// The delta is computed in full and then scaled and added, in that order,
// as the ATen reference path does (y + scaling * delta).
//
// Thread-safety: safe to call concurrently (see gemv.h).
#ifndef EDGESPLIT_KERNELS_CPU_LORA_SGMV_H_
#define EDGESPLIT_KERNELS_CPU_LORA_SGMV_H_

#include <cstdint>

namespace edgesplit::kernels {

// Rows [row_begin, row_begin + rows) of the batch, with one adapter's
// factors for this projection (row-major float32; the caller keeps them
// alive during the call).
struct LoraSegment {
  int64_t row_begin = 0;
  int64_t rows = 0;
  const float* a = nullptr;  // [rank, in]
  const float* b = nullptr;  // [out, rank]
  int64_t rank = 0;
  float scaling = 0.0f;
};

// y [*, out] += per segment as above; x [*, in]. Segments must not overlap
// and must lie within x's and y's rows (the caller's invariant: checked
// with assert only).
void LoraSgmv(const LoraSegment* segments, int64_t count, const float* x,
              int64_t in, int64_t out, float* y);

}  // namespace edgesplit::kernels

#endif  // EDGESPLIT_KERNELS_CPU_LORA_SGMV_H_
