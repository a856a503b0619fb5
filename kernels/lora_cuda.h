// CUDA twin of the mixed-adapter LoRA kernel (cpu/lora_sgmv.h): the same
// segments, with x, y, the factors and `scratch` in device memory.
//   shrink: one warp per (row, rank index): lanes stride over `in`.
//   expand: one thread per (row, output column), adding
//           scaling * sum_k low[row, k] B[o, k] to y.
// One launch per phase for the whole batch, however many adapters it
// mixes (the segment table travels as a kernel argument). Only the float
// summation order differs from the CPU kernel (tests bound the difference).
//
// Always declared: without CUDA, or on a machine without a usable device,
// it returns FAILED_PRECONDITION (CudaDeviceAvailable() says up front).
// Asynchronous on `stream`; OK means the launches were accepted.
#ifndef EDGESPLIT_KERNELS_LORA_CUDA_H_
#define EDGESPLIT_KERNELS_LORA_CUDA_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cpu/lora_sgmv.h"

struct CUstream_st;

namespace edgesplit::kernels {

// Segments per call (one kernel argument holds them all).
inline constexpr int64_t kLoraCudaMaxSegments = 32;
// Rank per segment (bounds the expand's per-thread loop).
inline constexpr int64_t kLoraCudaMaxRank = 128;
// Rows over all segments (the expand's grid height).
inline constexpr int64_t kLoraCudaMaxRows = 65535;

// Floats of device scratch a call with these segments needs.
int64_t LoraSgmvCudaScratch(const LoraSegment* segments, int64_t count);

// As LoraSgmv; `segments` is a host array whose a / b point to device
// memory. INVALID_ARGUMENT for too many segments, a rank outside
// [1, kLoraCudaMaxRank], negative sizes or null pointers.
absl::Status LoraSgmvCuda(const LoraSegment* segments, int64_t count,
                          const float* x, int64_t in, int64_t out, float* y,
                          float* scratch, CUstream_st* stream = nullptr);

}  // namespace edgesplit::kernels

#endif  // EDGESPLIT_KERNELS_LORA_CUDA_H_
