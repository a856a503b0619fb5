// CUDA twins of the decode GEMV (cpu/gemv.h) and of the block
// dequantization used for prefill, on device pointers, for the same weight
// bytes (f32, f16, GGUF Q8_0 / Q4_0 / Q4_K / Q6_K rows): a GPU server can
// hold exactly the blocks a CPU device holds.
//
//   GemvCuda: y [rows, out] = x [rows, in] W^T, reading W from memory once
//     for all rows. As on the CPU, the block types first quantize each row
//     of x to Q8_0 (the same scalar code, so the same codes and scales) and
//     multiply in integers (4 codes per __dp4a); each lane scales its part
//     of a block's integer sum, so only the float summation order differs
//     from the CPU kernels (tests bound the difference like the CPU
//     variants').
//   DequantizeRowsCuda: rows [0, n) of W as float, bit-identical to
//     kernels::DequantizeRows (no contraction into FMAs).
//
// Always declared: without CUDA, or on a machine without a usable device,
// they return FAILED_PRECONDITION (CudaDeviceAvailable() says up front).
// Asynchronous on `stream` (nullptr: the legacy default stream): OK means
// the launch was accepted. Thread-safe.
#ifndef EDGESPLIT_KERNELS_GEMV_CUDA_H_
#define EDGESPLIT_KERNELS_GEMV_CUDA_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cpu/quant_blocks.h"

struct CUstream_st;

namespace edgesplit::kernels {

// `w`: out rows of RowBytes(type, in) bytes, 4-byte aligned (cudaMalloc's
// are); `x`, `y` float. `rows` up to kGemvCudaMaxRows; `in` must suit the
// type (CheckCols). INVALID_ARGUMENT otherwise.
inline constexpr int64_t kGemvCudaMaxRows = 64;
//
// `scratch`: device memory of GemvCudaScratchBytes (4-byte aligned) that
// the call may use until its stream passes it, or nullptr to have each call
// allocate and free it on the stream (cudaMallocAsync). A caller that runs
// many products keeps one scratch per stream.
absl::Status GemvCuda(WeightType type, const void* w, int64_t out, int64_t in,
                      const float* x, int64_t rows, float* y,
                      CUstream_st* stream = nullptr, void* scratch = nullptr);
// Bytes of scratch GemvCuda needs for `rows` rows of `in` (0 for float
// weights, which need none).
int64_t GemvCudaScratchBytes(WeightType type, int64_t rows, int64_t in);

// out [n, in] floats from the first n rows of `w`.
absl::Status DequantizeRowsCuda(WeightType type, const void* w, int64_t n,
                                int64_t in, float* out,
                                CUstream_st* stream = nullptr);

}  // namespace edgesplit::kernels

#endif  // EDGESPLIT_KERNELS_GEMV_CUDA_H_
