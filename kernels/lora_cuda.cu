// CUDA mixed-adapter LoRA (see lora_cuda.h). Host-side checks and status
// mapping live in lora_cuda.cc; this file includes no absl.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/lora_cuda_launch.h"

namespace edgesplit::kernels_internal {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;
constexpr int kMaxSegments = 32;  // lora_cuda.h's kLoraCudaMaxSegments.

// The batch's segments with prefix sums: low_at[s] is where segment s's
// [rows, rank] shrink results start in the scratch (and the index of its
// first shrink item), row_at[s] the segment's first row among all
// segments' rows (the expand's row index). Passed by value (~2 KiB).
struct Table {
  LoraSeg seg[kMaxSegments];
  int64_t low_at[kMaxSegments + 1];
  int64_t row_at[kMaxSegments + 1];
  int count;
};

__device__ int SegmentOf(const int64_t* prefix, int count, int64_t i) {
  int s = 0;
  while (s + 1 < count && prefix[s + 1] <= i) ++s;
  return s;
}

// One warp per (segment row, rank index): low = x[row] . A[k].
__global__ void ShrinkKernel(Table t, const float* __restrict__ x, int64_t in,
                             float* __restrict__ low) {
  const int64_t item =
      static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (item >= t.low_at[t.count]) return;
  const int s = SegmentOf(t.low_at, t.count, item);
  const LoraSeg& g = t.seg[s];
  const int64_t local = item - t.low_at[s];
  const int64_t row = local / g.rank, k = local % g.rank;
  const float* xr = x + (g.row_begin + row) * in;
  const float* ak = g.a + k * in;
  float sum = 0.0f;
  for (int64_t j = lane; j < in; j += kWarp) sum += xr[j] * ak[j];
  for (int off = kWarp / 2; off > 0; off /= 2) {
    sum += __shfl_down_sync(0xffffffffu, sum, off);
  }
  if (lane == 0) low[item] = sum;
}

// One thread per (segment row, output column): y += scaling * low . B[o].
__global__ void ExpandKernel(Table t, const float* __restrict__ low,
                             int64_t out, float* __restrict__ y) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t g_row = blockIdx.y;
  if (o >= out || g_row >= t.row_at[t.count]) return;
  const int s = SegmentOf(t.row_at, t.count, g_row);
  const LoraSeg& g = t.seg[s];
  const int64_t row = g_row - t.row_at[s];
  const float* lr = low + t.low_at[s] + row * g.rank;
  const float* bo = g.b + o * g.rank;
  float d = 0.0f;
  for (int64_t k = 0; k < g.rank; ++k) d += lr[k] * bo[k];
  y[(g.row_begin + row) * out + o] += g.scaling * d;
}

}  // namespace

int LaunchLoraSgmv(const LoraSeg* segments, int count, const float* x,
                   int64_t in, int64_t out, float* y, float* scratch,
                   CUstream_st* stream) {
  Table t{};
  t.count = count;
  for (int s = 0; s < count; ++s) {
    t.seg[s] = segments[s];
    t.low_at[s + 1] = t.low_at[s] + segments[s].rows * segments[s].rank;
    t.row_at[s + 1] = t.row_at[s] + segments[s].rows;
  }
  const int64_t items = t.low_at[count], rows = t.row_at[count];
  if (items == 0) return cudaSuccess;
  ShrinkKernel<<<static_cast<unsigned>((items + kWarpsPerBlock - 1) /
                                       kWarpsPerBlock),
                 kWarp * kWarpsPerBlock, 0, stream>>>(t, x, in, scratch);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  const dim3 grid(static_cast<unsigned>((out + 255) / 256),
                  static_cast<unsigned>(rows));
  ExpandKernel<<<grid, 256, 0, stream>>>(t, scratch, out, y);
  return cudaGetLastError();
}

}  // namespace edgesplit::kernels_internal
