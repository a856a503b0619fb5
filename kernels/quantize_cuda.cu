// CUDA kernels for the per-token int8 codec. Host-side validation and status
// mapping live in quantize_cuda.cc; this file deliberately includes no absl.
//
// One block per row (grid-stride over rows when there are more rows than
// blocks): the threads stride over the row to find max |x|, a warp-shuffle
// tree plus one shared-memory hop reduces it, then the same threads quantize
// the row, which by then is hot in L1/L2. The reduction runs on the integer
// AbsBits() so its result does not depend on the tree's shape, and every
// per-element step is the shared scalar code, so the output is bit-identical
// to quantize_cpu.cc.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/quantize_cuda_launch.h"
#include "kernels/scalar_codecs.h"

namespace edgesplit {
namespace kernels_internal {
namespace {

constexpr int kWarpSize = 32;
constexpr int kMaxThreads = 256;
// Enough blocks to fill any current GPU many times over; more rows than this
// are handled by the grid-stride loop (gridDim.x itself caps at 2^31 - 1).
constexpr int64_t kMaxBlocks = 1 << 16;

__device__ __forceinline__ uint32_t WarpMax(uint32_t v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const uint32_t other = __shfl_xor_sync(0xffffffffu, v, offset);
    v = other > v ? other : v;
  }
  return v;
}

// Max over the block; every thread gets the result. blockDim.x must be a
// multiple of 32 (full-mask shuffles) and at most kMaxThreads.
__device__ __forceinline__ uint32_t BlockMax(uint32_t v, uint32_t* warp_max) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  v = WarpMax(v);
  if (lane == 0) warp_max[warp] = v;
  __syncthreads();
  // Each warp reduces the per-warp partials itself: no broadcast round trip.
  v = WarpMax(lane < num_warps ? warp_max[lane] : 0u);
  // warp_max is rewritten for the next row of the grid-stride loop.
  __syncthreads();
  return v;
}

__global__ void __launch_bounds__(kMaxThreads)
    QuantizeInt8PerTokenKernel(const float* __restrict__ x, int64_t rows,
                               int64_t cols, int8_t* __restrict__ q,
                               float* __restrict__ scales) {
  __shared__ uint32_t warp_max[kMaxThreads / kWarpSize];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    int8_t* qr = q + r * cols;
    uint32_t m = 0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const uint32_t b = AbsBits(xr[j]);
      m = b > m ? b : m;
    }
    const float scale = Int8ScaleFromAbsMaxBits(BlockMax(m, warp_max));
    if (threadIdx.x == 0) scales[r] = scale;
    // Block-uniform branch, mirroring the CPU path: a zero scale is never
    // divided by.
    if (scale == 0.0f) {
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) qr[j] = 0;
    } else {
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
        qr[j] = QuantizeToInt8(xr[j], scale);
      }
    }
  }
}

__global__ void __launch_bounds__(kMaxThreads)
    DequantizeInt8PerTokenKernel(const int8_t* __restrict__ q,
                                 const float* __restrict__ scales, int64_t rows,
                                 int64_t cols, float* __restrict__ x) {
  // Row-shaped like the quantize kernel so no thread needs a 64-bit divide
  // to find its row.
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float scale = scales[r];
    const int8_t* qr = q + r * cols;
    float* xr = x + r * cols;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      xr[j] = DequantizeInt8(qr[j], scale);
    }
  }
}

// A warp multiple in [32, kMaxThreads]: narrow rows don't park whole idle
// warps, wide rows get the full block.
int ThreadsForCols(int64_t cols) {
  const int64_t rounded = (cols + kWarpSize - 1) / kWarpSize * kWarpSize;
  return static_cast<int>(
      std::min<int64_t>(std::max<int64_t>(rounded, kWarpSize), kMaxThreads));
}

int BlocksForRows(int64_t rows) {
  return static_cast<int>(std::min<int64_t>(rows, kMaxBlocks));
}

}  // namespace

int LaunchQuantizeInt8PerToken(const float* x, int64_t rows, int64_t cols,
                               int8_t* q, float* scales, CUstream_st* stream) {
  QuantizeInt8PerTokenKernel<<<BlocksForRows(rows), ThreadsForCols(cols), 0,
                               stream>>>(x, rows, cols, q, scales);
  return static_cast<int>(cudaGetLastError());
}

int LaunchDequantizeInt8PerToken(const int8_t* q, const float* scales,
                                 int64_t rows, int64_t cols, float* x,
                                 CUstream_st* stream) {
  DequantizeInt8PerTokenKernel<<<BlocksForRows(rows), ThreadsForCols(cols), 0,
                                 stream>>>(q, scales, rows, cols, x);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace kernels_internal
}  // namespace edgesplit
