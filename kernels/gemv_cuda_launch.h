// Internal: the boundary between the nvcc-compiled GEMV kernels
// (gemv_cuda.cu) and the host wrapper (gemv_cuda.cc), in plain C++ (no
// absl, no CUDA headers). Use gemv_cuda.h.
#ifndef EDGESPLIT_KERNELS_GEMV_CUDA_LAUNCH_H_
#define EDGESPLIT_KERNELS_GEMV_CUDA_LAUNCH_H_

#include <cstdint>

struct CUstream_st;

namespace edgesplit::kernels_internal {

// `type` is kernels::WeightType as int. Arguments are validated; the
// functions enqueue and return the cudaError_t as int (0: success).
// `scratch`: GemvCudaScratchBytes, or nullptr to allocate it on the stream.
int LaunchGemv(int type, const void* w, int64_t out, int64_t in, const float* x,
               int64_t rows, float* y, CUstream_st* stream, void* scratch);
int LaunchDequantizeRows(int type, const void* w, int64_t n, int64_t in,
                         float* out, CUstream_st* stream);

}  // namespace edgesplit::kernels_internal

#endif  // EDGESPLIT_KERNELS_GEMV_CUDA_LAUNCH_H_
