// CUDA versions of the per-token int8 codec in quantize.h, on device
// pointers. They produce the same bits as the CPU functions (same scalar
// code, scalar_codecs.h), so a tensor quantized on a GPU stage can be
// dequantized on a CPU-only edge device and vice versa.
//
// Always declared, so callers need no #if: in a build without CUDA, or on a
// machine without a usable device, they return FAILED_PRECONDITION. Check
// CudaDeviceAvailable() (cuda_device.h) to pick the path up front.
#ifndef EDGESPLIT_KERNELS_QUANTIZE_CUDA_H_
#define EDGESPLIT_KERNELS_QUANTIZE_CUDA_H_

#include <cstdint>

#include "absl/status/status.h"

// cudaStream_t is `CUstream_st*`; forward-declaring the struct keeps CUDA
// headers out of this interface while still accepting a cudaStream_t (e.g.
// at::cuda::getCurrentCUDAStream().stream()) without a cast.
struct CUstream_st;

namespace edgesplit {

// Device-pointer QuantizeInt8PerToken: x [rows, cols] fp32 -> q [rows, cols]
// int8 and scales [rows] fp32, all in device memory (or managed memory).
// Enqueued on `stream` (nullptr: the legacy default stream) and returns
// without waiting: OK means the launch was accepted; a fault while the kernel
// runs surfaces at the caller's next synchronisation. INVALID_ARGUMENT for
// negative sizes or null pointers with a non-empty matrix.
absl::Status QuantizeInt8PerTokenCuda(const float* x, int64_t rows,
                                      int64_t cols, int8_t* q, float* scales,
                                      CUstream_st* stream = nullptr);

// Device-pointer DequantizeInt8PerToken: x[r, j] = q[r, j] * scales[r].
// Same stream and error semantics as above.
absl::Status DequantizeInt8PerTokenCuda(const int8_t* q, const float* scales,
                                        int64_t rows, int64_t cols, float* x,
                                        CUstream_st* stream = nullptr);

}  // namespace edgesplit

#endif  // EDGESPLIT_KERNELS_QUANTIZE_CUDA_H_
