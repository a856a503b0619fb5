// Internal: the boundary between the nvcc-compiled GEMV kernels
// (gemv_cuda.cu) and the host wrapper (gemv_cuda.cc), in plain C++ (no
// absl, no CUDA headers). Use gemv_cuda.h.
#ifndef EDGESPLIT_KERNELS_GEMV_CUDA_LAUNCH_H_
#define EDGESPLIT_KERNELS_GEMV_CUDA_LAUNCH_H_

#include <cstdint>

struct CUstream_st;

namespace edgesplit::kernels_internal {

// Bytes of x's quantized blocks for the block types (0 for f32 = 0 and
// f16 = 5, which read x as it is): per 32-block the codes, the scale and
// the code sum, laid out in that order (GemvCudaScratchBytes).
inline int64_t GemvScratchBytes(int type, int64_t rows, int64_t in) {
  if (type == 0 || type == 5) return 0;
  return rows * (in / 32) * (32 + 4 + 4);
}

// `type` is kernels::WeightType as int. Arguments are validated; the
// functions enqueue and return the cudaError_t as int (0: success).
// `scratch`: GemvCudaScratchBytes, or nullptr to allocate it on the stream.
int LaunchGemv(int type, const void* w, int64_t out, int64_t in, const float* x,
               int64_t rows, float* y, CUstream_st* stream, void* scratch);
int LaunchDequantizeRows(int type, const void* w, int64_t n, int64_t in,
                         float* out, CUstream_st* stream);

}  // namespace edgesplit::kernels_internal

#endif  // EDGESPLIT_KERNELS_GEMV_CUDA_LAUNCH_H_
