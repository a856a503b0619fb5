// Internal: the boundary between the nvcc-compiled kernels
// (quantize_cuda.cu) and the host-compiler wrapper (quantize_cuda.cc). Plain
// C++ with no absl and no CUDA headers, so that nvcc never has to parse
// abseil and the wrapper owns all status handling. Use quantize_cuda.h.
#ifndef EDGESPLIT_KERNELS_QUANTIZE_CUDA_LAUNCH_H_
#define EDGESPLIT_KERNELS_QUANTIZE_CUDA_LAUNCH_H_

#include <cstdint>

struct CUstream_st;

namespace edgesplit {
namespace kernels_internal {

// Enqueue the kernels; arguments are already validated, rows > 0. Return the
// launch's cudaError_t as an int (0 == cudaSuccess).
int LaunchQuantizeInt8PerToken(const float* x, int64_t rows, int64_t cols,
                               int8_t* q, float* scales, CUstream_st* stream);
int LaunchDequantizeInt8PerToken(const int8_t* q, const float* scales,
                                 int64_t rows, int64_t cols, float* x,
                                 CUstream_st* stream);

}  // namespace kernels_internal
}  // namespace edgesplit

#endif  // EDGESPLIT_KERNELS_QUANTIZE_CUDA_LAUNCH_H_
