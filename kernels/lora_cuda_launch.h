// Internal: the boundary between the nvcc-compiled LoRA kernels
// (lora_cuda.cu) and the host wrapper (lora_cuda.cc), in plain C++ (no
// absl, no CUDA headers). Use lora_cuda.h.
#ifndef EDGESPLIT_KERNELS_LORA_CUDA_LAUNCH_H_
#define EDGESPLIT_KERNELS_LORA_CUDA_LAUNCH_H_

#include <cstdint>

struct CUstream_st;

namespace edgesplit::kernels_internal {

// kernels::LoraSegment's fields, repeated here for nvcc.
struct LoraSeg {
  int64_t row_begin, rows;
  const float* a;
  const float* b;
  int64_t rank;
  float scaling;
};

// Arguments are validated (count <= 32, ranks in [1, 128]); returns the
// cudaError_t as int (0: success).
int LaunchLoraSgmv(const LoraSeg* segments, int count, const float* x,
                   int64_t in, int64_t out, float* y, float* scratch,
                   CUstream_st* stream);

}  // namespace edgesplit::kernels_internal

#endif  // EDGESPLIT_KERNELS_LORA_CUDA_LAUNCH_H_
