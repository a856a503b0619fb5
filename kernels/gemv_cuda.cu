// CUDA GEMV and block dequantization (see gemv_cuda.h). Host-side checks
// and status mapping live in gemv_cuda.cc; this file includes no absl.
//
// GEMV: one warp per output row, four per block; a row of x at a time
// (x's rows stay in L1/L2 while the warp's weight row is reread from L2 for
// each, so W comes from memory once). f32/f16: lanes stride over the
// elements (coalesced). Block types: x's rows are first quantized to Q8_0
// by QuantizeXKernel (one thread per 32-block, the CPU's scalar code), then
// lanes stride over 32-weight blocks and multiply in integers per block.
// Dequantization: one thread per weight, the CPU's expressions with
// explicitly rounded multiplies (__fmul_rn / __fsub_rn: no FMA contraction),
// so the floats are bit-identical to cpu/quant_blocks.cc.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/gemv_cuda_launch.h"
#include "kernels/scalar_codecs.h"

namespace edgesplit::kernels_internal {
namespace {

// kernels::WeightType values (quant_blocks.h, which nvcc does not parse).
enum Type { kF32 = 0, kQ8_0 = 1, kQ4_0 = 2, kQ4_K = 3, kQ6_K = 4, kF16 = 5 };

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;
constexpr int kMaxRows = 64;  // gemv_cuda.h's kGemvCudaMaxRows.

struct Q8 {  // BlockQ8_0.
  uint16_t d;
  int8_t qs[32];
};
struct Q4 {  // BlockQ4_0.
  uint16_t d;
  uint8_t qs[16];
};
struct Q4K {  // BlockQ4_K.
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qs[128];
};
struct Q6K {  // BlockQ6_K.
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
};

__device__ __forceinline__ float Half(uint16_t h) {
  return edgesplit::Fp16BitsToFp32(h);
}

__device__ __forceinline__ void ScaleMinK4(const uint8_t* q, int j, int* sc,
                                           int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// x's 32-blocks as Q8_0 (the CPU's QuantizeRowQ8_0 and PrepareInput):
// codes, the scale widened from fp16, and the sum of the codes.
__global__ void QuantizeXKernel(const float* __restrict__ x, int64_t blocks,
                                Q8* __restrict__ q, float* __restrict__ d,
                                int* __restrict__ sum) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= blocks) return;
  const float* xb = x + b * 32;
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = fmaxf(amax, fabsf(xb[j]));
  const float scale = __fdiv_rn(amax, 127.0f);
  const float id = scale != 0.0f ? __fdiv_rn(1.0f, scale) : 0.0f;
  q[b].d = edgesplit::Fp32ToFp16Bits(scale);
  int s = 0;
  for (int j = 0; j < 32; ++j) {
    const float v = roundf(__fmul_rn(xb[j], id));
    // The CPU's ToInt: finite and in range, else 0.
    const int c = isfinite(v) && fabsf(v) < 1e6f ? static_cast<int>(v) : 0;
    q[b].qs[j] = static_cast<int8_t>(c);
    s += static_cast<int8_t>(c);
  }
  d[b] = Half(q[b].d);
  sum[b] = s;
}

// One block of the weight row against one Q8_0 block of x: the float
// contribution, as the CPU scalar kernels compute it per block.
__device__ __forceinline__ float BlockDot(int type, const uint8_t* row,
                                          int64_t b, const Q8& xq, float xd,
                                          int xsum) {
  switch (type) {
    case kQ8_0: {
      const Q8& w = reinterpret_cast<const Q8*>(row)[b];
      int s = 0;
      for (int j = 0; j < 32; ++j) s += w.qs[j] * xq.qs[j];
      return Half(w.d) * xd * static_cast<float>(s);
    }
    case kQ4_0: {
      const Q4& w = reinterpret_cast<const Q4*>(row)[b];
      int s = 0;
      for (int j = 0; j < 16; ++j) {
        s += ((w.qs[j] & 15) - 8) * xq.qs[j] +
             ((w.qs[j] >> 4) - 8) * xq.qs[j + 16];
      }
      return Half(w.d) * xd * static_cast<float>(s);
    }
    case kQ4_K: {
      const Q4K& w = reinterpret_cast<const Q4K*>(row)[b / 8];
      const int j = static_cast<int>(b % 8);
      const uint8_t* q = w.qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      int s = 0;
      for (int l = 0; l < 32; ++l) s += ((q[l] >> shift) & 15) * xq.qs[l];
      int sc, m;
      ScaleMinK4(w.scales, j, &sc, &m);
      return xd * (Half(w.d) * sc * static_cast<float>(s) -
                   Half(w.dmin) * m * static_cast<float>(xsum));
    }
    case kQ6_K: {
      const Q6K& w = reinterpret_cast<const Q6K*>(row)[b / 8];
      const int c = static_cast<int>(b % 8), half = c / 4, part = c % 4;
      const uint8_t* ql = w.ql + 64 * half + 32 * (part % 2);
      const uint8_t* qh = w.qh + 32 * half;
      const int8_t* sc = w.scales + 8 * half + 2 * part;
      int s[2] = {0, 0};
      for (int l = 0; l < 32; ++l) {
        const int lo = part < 2 ? ql[l] & 0xF : ql[l] >> 4;
        const int q = (lo | (((qh[l] >> (2 * part)) & 3) << 4)) - 32;
        s[l / 16] += q * xq.qs[l];
      }
      return xd * Half(w.d) *
             (sc[0] * static_cast<float>(s[0]) +
              sc[1] * static_cast<float>(s[1]));
    }
  }
  return 0.0f;
}

__device__ __forceinline__ int64_t RowBytes(int type, int64_t in) {
  switch (type) {
    case kF32:
      return in * 4;
    case kF16:
      return in * 2;
    case kQ8_0:
      return in / 32 * 34;
    case kQ4_0:
      return in / 32 * 18;
    case kQ4_K:
      return in / 256 * 144;
    case kQ6_K:
      return in / 256 * 210;
  }
  return 0;
}

__global__ void __launch_bounds__(kWarp* kWarpsPerBlock)
    GemvKernel(int type, const uint8_t* __restrict__ w, int64_t out, int64_t in,
               const float* __restrict__ x, const Q8* __restrict__ xq,
               const float* __restrict__ xd, const int* __restrict__ xsum,
               int64_t rows, float* __restrict__ y) {
  const int lane = threadIdx.x % kWarp;
  const int64_t o =
      blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + threadIdx.x / kWarp;
  if (o >= out) return;  // Whole warps leave together.
  const uint8_t* row = w + o * RowBytes(type, in);
  const int64_t nb = in / 32;
  for (int64_t r = 0; r < rows; ++r) {
    float acc = 0.0f;
    if (type == kF32) {
      const float* wr = reinterpret_cast<const float*>(row);
      for (int64_t i = lane; i < in; i += kWarp) acc += wr[i] * x[r * in + i];
    } else if (type == kF16) {
      const uint16_t* wr = reinterpret_cast<const uint16_t*>(row);
      for (int64_t i = lane; i < in; i += kWarp) {
        acc += Half(wr[i]) * x[r * in + i];
      }
    } else {
      for (int64_t b = lane; b < nb; b += kWarp) {
        const int64_t xb = r * nb + b;
        acc += BlockDot(type, row, b, xq[xb], xd[xb], xsum[xb]);
      }
    }
    acc = WarpSum(acc);
    if (lane == 0) y[r * out + o] = acc;
  }
}

// One thread per weight: bit-identical to cpu/quant_blocks.cc.
__global__ void DequantizeKernel(int type, const uint8_t* __restrict__ w,
                                 int64_t n, int64_t in,
                                 float* __restrict__ out) {
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k >= n * in) return;
  const int64_t o = k / in, i = k % in;
  const uint8_t* row = w + o * RowBytes(type, in);
  float v = 0.0f;
  switch (type) {
    case kF32:
      v = reinterpret_cast<const float*>(row)[i];
      break;
    case kF16:
      v = Half(reinterpret_cast<const uint16_t*>(row)[i]);
      break;
    case kQ8_0: {
      const Q8& b = reinterpret_cast<const Q8*>(row)[i / 32];
      v = __fmul_rn(static_cast<float>(b.qs[i % 32]), Half(b.d));
      break;
    }
    case kQ4_0: {
      const Q4& b = reinterpret_cast<const Q4*>(row)[i / 32];
      const int j = static_cast<int>(i % 32);
      const int q = j < 16 ? (b.qs[j] & 15) - 8 : (b.qs[j - 16] >> 4) - 8;
      v = __fmul_rn(static_cast<float>(q), Half(b.d));
      break;
    }
    case kQ4_K: {
      const Q4K& b = reinterpret_cast<const Q4K*>(row)[i / 256];
      const int e = static_cast<int>(i % 256), j = e / 32, l = e % 32;
      int sc, m;
      ScaleMinK4(b.scales, j, &sc, &m);
      const uint8_t q = b.qs[32 * (j / 2) + l];
      const int code = j % 2 == 0 ? q & 0xF : q >> 4;
      const float d1 = __fmul_rn(Half(b.d), static_cast<float>(sc));
      const float m1 = __fmul_rn(Half(b.dmin), static_cast<float>(m));
      v = __fsub_rn(__fmul_rn(d1, static_cast<float>(code)), m1);
      break;
    }
    case kQ6_K: {
      const Q6K& b = reinterpret_cast<const Q6K*>(row)[i / 256];
      const int e = static_cast<int>(i % 256), half = e / 128, r = e % 128,
                part = r / 32, l = r % 32;
      const uint8_t* ql = b.ql + 64 * half;
      const uint8_t* qh = b.qh + 32 * half;
      const int byte = ql[l + 32 * (part % 2)];
      const int nib = part < 2 ? byte & 0xF : byte >> 4;
      const int q = (nib | (((qh[l] >> (2 * part)) & 3) << 4)) - 32;
      const int8_t sc = b.scales[8 * half + l / 16 + 2 * part];
      v = __fmul_rn(__fmul_rn(Half(b.d), static_cast<float>(sc)),
                    static_cast<float>(q));
      break;
    }
  }
  out[k] = v;
}

}  // namespace

int LaunchGemv(int type, const void* w, int64_t out, int64_t in, const float* x,
               int64_t rows, float* y, CUstream_st* stream) {
  if (rows > kMaxRows) return static_cast<int>(cudaErrorInvalidValue);
  Q8* xq = nullptr;
  float* xd = nullptr;
  int* xsum = nullptr;
  const bool blocks = type != kF32 && type != kF16;
  const int64_t nblocks = rows * (in / 32);
  cudaError_t err = cudaSuccess;
  if (blocks) {
    // Stream-ordered scratch for x's blocks, freed after the GEMV.
    err = cudaMallocAsync(reinterpret_cast<void**>(&xq),
                          nblocks * (sizeof(Q8) + sizeof(float) + sizeof(int)),
                          stream);
    if (err != cudaSuccess) return static_cast<int>(err);
    xd = reinterpret_cast<float*>(xq + nblocks);
    xsum = reinterpret_cast<int*>(xd + nblocks);
    QuantizeXKernel<<<static_cast<unsigned>((nblocks + 127) / 128), 128, 0,
                      stream>>>(x, nblocks, xq, xd, xsum);
  }
  const unsigned grid =
      static_cast<unsigned>((out + kWarpsPerBlock - 1) / kWarpsPerBlock);
  GemvKernel<<<grid, kWarp * kWarpsPerBlock, 0, stream>>>(
      type, static_cast<const uint8_t*>(w), out, in, x, xq, xd, xsum, rows, y);
  err = cudaGetLastError();
  if (blocks) {
    const cudaError_t freed = cudaFreeAsync(xq, stream);
    if (err == cudaSuccess) err = freed;
  }
  return static_cast<int>(err);
}

int LaunchDequantizeRows(int type, const void* w, int64_t n, int64_t in,
                         float* out, CUstream_st* stream) {
  const int64_t total = n * in;
  const int64_t grid = (total + 255) / 256;
  if (grid > 0x7fffffff) return static_cast<int>(cudaErrorInvalidValue);
  DequantizeKernel<<<static_cast<unsigned>(grid), 256, 0, stream>>>(
      type, static_cast<const uint8_t*>(w), n, in, out);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace edgesplit::kernels_internal
