// CUDA GEMV and block dequantization (see gemv_cuda.h). Host-side checks
// and status mapping live in gemv_cuda.cc; this file includes no absl.
//
// GEMV (GemvKernel): blocks of 8 warps, each warp on 2-4 consecutive output
// rows, for tiles of up to 16 rows of x, so W comes from memory once and a
// loaded word of x feeds several weight rows. Per weight type a Walk says
// how lanes share a row: 4 floats per lane, 8 lanes per Q8_0 block, 4 per
// Q4_0 block, 32 per K super-block, so a warp's loads are contiguous. Block
// types first quantize x's rows to Q8_0 (QuantizeXKernel: one warp per
// 32-block, the CPU's values) and multiply 4 codes per __dp4a. Tiles of
// more than 4 rows stage x in shared memory, kChunk columns at a time;
// smaller ones read it where it is. Measured choices: bench/cuda_bench.
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

// x's 32-blocks as Q8_0 (the CPU's QuantizeRowQ8_0 and PrepareInput), one
// warp per block, a lane per value: the codes (xq, [rows, in], so every 4
// codes are one aligned int), the scale widened from fp16 and the sum of
// the codes. The maximum and the sum are exact in any order, so the values
// equal the CPU's.
__global__ void QuantizeXKernel(const float* __restrict__ x, int64_t blocks,
                                int8_t* __restrict__ xq, float* __restrict__ d,
                                int* __restrict__ sum) {
  const int64_t b =
      (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (b >= blocks) return;  // Whole warps leave together.
  const float v = x[b * 32 + lane];
  float amax = fabsf(v);
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) {
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  }
  const float scale = __fdiv_rn(amax, 127.0f);
  const float id = scale != 0.0f ? __fdiv_rn(1.0f, scale) : 0.0f;
  const float r = roundf(__fmul_rn(v, id));
  // The CPU's ToInt: finite and in range, else 0.
  const int c = isfinite(r) && fabsf(r) < 1e6f ? static_cast<int>(r) : 0;
  const int8_t code = static_cast<int8_t>(c);
  xq[b * 32 + lane] = code;
  const int s = __reduce_add_sync(0xffffffffu, static_cast<int>(code));
  if (lane == 0) {
    d[b] = Half(edgesplit::Fp32ToFp16Bits(scale));
    sum[b] = s;
  }
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

// Weights through the read-only path; no evict-first hint, since a row's
// later tiles of x reread it from L2.
__device__ __forceinline__ uint16_t Load2(const uint8_t* p) {
  return __ldg(reinterpret_cast<const unsigned short*>(p));
}
// Four bytes at a 2-byte aligned address (GGUF blocks of 34, 18 and 210
// bytes keep only 2-byte alignment), as one int.
__device__ __forceinline__ int Load4(const uint8_t* p) {
  return static_cast<int>(Load2(p) |
                          (static_cast<uint32_t>(Load2(p + 2)) << 16));
}
__device__ __forceinline__ int LoadX4(const int8_t* p) {
  return *reinterpret_cast<const int*>(p);
}

// x as the kernels read it: float rows, or their Q8_0 codes ([rows, in],
// every 4 codes one aligned int), scales and code sums per 32-block.
struct XRows {
  const float* f;
  const int8_t* q;
  const float* d;
  const int* sum;
  int64_t in, nb;
};

// Per weight type, how a warp walks a weight row. A row is cut into units
// (4 floats, a 32-block, or a 256-weight super-block); kLanes lanes share a
// unit, each holding one word of it (Decode), so a warp's load instruction
// covers about 128 contiguous bytes. Fma adds to an accumulator a lane's
// word times the same positions of one row of x: integer dot products per
// 4 codes (__dp4a), scaled as the CPU scales a block's sum. Only the float
// summation order differs from the CPU kernels.
template <int kType, bool kVec = true>
struct Walk;

template <bool kVec>
struct Walk<kF32, kVec> {
  static constexpr int kLanes = 1;
  static constexpr int kPer = kVec ? 4 : 1;  // Elements per lane.
  static constexpr int kElems = kPer;        // Elements per unit.
  struct Word {
    float v[kPer];
  };
  __device__ static int64_t Units(const XRows& x) { return x.in / kPer; }
  __device__ static Word Decode(const uint8_t* row, int64_t u, int) {
    Word w;
    if constexpr (kVec) {
      const float4 f = __ldg(reinterpret_cast<const float4*>(row) + u);
      w.v[0] = f.x, w.v[1] = f.y, w.v[2] = f.z, w.v[3] = f.w;
    } else {
      w.v[0] = __ldg(reinterpret_cast<const float*>(row) + u);
    }
    return w;
  }
  struct X {
    float v[kPer];
  };
  __device__ static X LoadX(const XRows& x, int64_t r, int64_t u, int) {
    X v;
    if constexpr (kVec) {
      const float4 f = reinterpret_cast<const float4*>(x.f + r * x.in)[u];
      v.v[0] = f.x, v.v[1] = f.y, v.v[2] = f.z, v.v[3] = f.w;
    } else {
      v.v[0] = x.f[r * x.in + u];
    }
    return v;
  }
  // Float weights accumulate straight into `acc` (one FMA per element).
  __device__ static float Fma(const Word& w, const X& v, int, float acc) {
#pragma unroll
    for (int k = 0; k < kPer; ++k) acc = fmaf(w.v[k], v.v[k], acc);
    return acc;
  }
};

template <bool kVec>
struct Walk<kF16, kVec> : Walk<kF32, kVec> {
  using Base = Walk<kF32, kVec>;
  __device__ static typename Base::Word Decode(const uint8_t* row, int64_t u,
                                               int) {
    typename Base::Word w;
    if constexpr (kVec) {
      const uint2 h = __ldg(reinterpret_cast<const uint2*>(row) + u);
      w.v[0] = Half(h.x & 0xFFFF), w.v[1] = Half(h.x >> 16);
      w.v[2] = Half(h.y & 0xFFFF), w.v[3] = Half(h.y >> 16);
    } else {
      w.v[0] = Half(Load2(row + 2 * u));
    }
    return w;
  }
};

// Q8_0: eight lanes per 34-byte block, a word of 4 codes each.
template <>
struct Walk<kQ8_0> {
  static constexpr int kLanes = 8;
  static constexpr int kElems = 32;
  struct Word {
    float d;
    int q;
  };
  __device__ static int64_t Units(const XRows& x) { return x.nb; }
  __device__ static Word Decode(const uint8_t* row, int64_t b, int c) {
    const uint8_t* blk = row + b * 34;
    return {Half(Load2(blk)), Load4(blk + 2 + 4 * c)};
  }
  struct X {
    float d;
    int q;
  };
  __device__ static X LoadX(const XRows& x, int64_t r, int64_t b, int c) {
    return {x.d[r * x.nb + b], LoadX4(x.q + r * x.in + 32 * b + 4 * c)};
  }
  __device__ static float Fma(const Word& w, const X& v, int, float acc) {
    return acc + w.d * v.d * static_cast<float>(__dp4a(w.q, v.q, 0));
  }
};

// Q4_0: four lanes per 18-byte block; a word's low nibbles are weights
// 4c..4c+3, its high ones 16+4c.., each offset by -8.
template <>
struct Walk<kQ4_0> {
  static constexpr int kLanes = 4;
  static constexpr int kElems = 32;
  struct Word {
    float d;
    int lo, hi;
  };
  __device__ static int64_t Units(const XRows& x) { return x.nb; }
  __device__ static Word Decode(const uint8_t* row, int64_t b, int c) {
    const uint8_t* blk = row + b * 18;
    const int q = Load4(blk + 2 + 4 * c);
    return {Half(Load2(blk)),
            static_cast<int>(__vsub4(q & 0x0F0F0F0F, 0x08080808)),
            static_cast<int>(__vsub4((q >> 4) & 0x0F0F0F0F, 0x08080808))};
  }
  struct X {
    float d;
    int lo, hi;
  };
  __device__ static X LoadX(const XRows& x, int64_t r, int64_t b, int c) {
    const int8_t* xb = x.q + r * x.in + 32 * b + 4 * c;
    return {x.d[r * x.nb + b], LoadX4(xb), LoadX4(xb + 16)};
  }
  __device__ static float Fma(const Word& w, const X& v, int, float acc) {
    return acc +
           w.d * v.d *
               static_cast<float>(__dp4a(w.hi, v.hi, __dp4a(w.lo, v.lo, 0)));
  }
};

// Q4_K: all 32 lanes on one 144-byte super-block, a word of qs each: its
// low nibbles belong to sub-block j0 = 2 (lane / 8), its high ones to
// j0 + 1. The first lane of each 8 also subtracts the two sub-blocks' mins.
template <>
struct Walk<kQ4_K> {
  static constexpr int kLanes = 32;
  static constexpr int kElems = 256;
  struct Word {
    float d0, d1, m0, m1;
    int lo, hi;
  };
  __device__ static int64_t Units(const XRows& x) { return x.nb / 8; }
  __device__ static Word Decode(const uint8_t* row, int64_t sb, int lane) {
    const uint8_t* blk = row + sb * 144;
    const float d = Half(Load2(blk)), dmin = Half(Load2(blk + 2));
    const int q = __ldg(reinterpret_cast<const int*>(blk + 16) + lane);
    const int j0 = 2 * (lane / 8);
    int sc0, m0, sc1, m1;
    ScaleMinK4(blk + 4, j0, &sc0, &m0);
    ScaleMinK4(blk + 4, j0 + 1, &sc1, &m1);
    const bool first = lane % 8 == 0;
    return {d * sc0,
            d * sc1,
            first ? dmin * m0 : 0.0f,
            first ? dmin * m1 : 0.0f,
            q & 0x0F0F0F0F,
            (q >> 4) & 0x0F0F0F0F};
  }
  struct X {
    float d0, d1, s0, s1;
    int lo, hi;
  };
  __device__ static X LoadX(const XRows& x, int64_t r, int64_t sb, int lane) {
    const int j0 = 2 * (lane / 8);
    const int64_t b = r * x.nb + sb * 8 + j0;
    const int8_t* xs = x.q + r * x.in + 256 * sb + 32 * j0 + 4 * (lane % 8);
    return {x.d[b],
            x.d[b + 1],
            static_cast<float>(x.sum[b]),
            static_cast<float>(x.sum[b + 1]),
            LoadX4(xs),
            LoadX4(xs + 32)};
  }
  __device__ static float Fma(const Word& w, const X& v, int, float acc) {
    return acc + (v.d0 * (w.d0 * static_cast<float>(__dp4a(w.lo, v.lo, 0)) -
                          w.m0 * v.s0) +
                  v.d1 * (w.d1 * static_cast<float>(__dp4a(w.hi, v.hi, 0)) -
                          w.m1 * v.s1));
  }
};

// Q6_K: all 32 lanes on one 210-byte super-block, a word of ql each: its
// low nibbles are part pl of half `half`, its high ones part pl + 2, with
// two bits each from the qh word at the same position l; codes offset -32.
template <>
struct Walk<kQ6_K> {
  static constexpr int kLanes = 32;
  static constexpr int kElems = 256;
  struct Word {
    float dlo, dhi;
    int lo, hi;
  };
  __device__ static int64_t Units(const XRows& x) { return x.nb / 8; }
  // Position of a lane's low-nibble codes in the super-block.
  __device__ static int Elem(int lane) {
    const int half = lane / 16, bq = 4 * (lane % 16);
    return 128 * half + 32 * (bq / 32) + bq % 32;
  }
  __device__ static Word Decode(const uint8_t* row, int64_t sb, int lane) {
    const uint8_t* blk = row + sb * 210;
    const int half = lane / 16, bq = 4 * (lane % 16), l = bq % 32, pl = bq / 32;
    const int qlv = Load4(blk + 64 * half + bq);
    const int qhv = Load4(blk + 128 + 32 * half + l);
    const int8_t* scales = reinterpret_cast<const int8_t*>(blk + 192);
    const float d = Half(Load2(blk + 208));
    const int sc = 8 * half + l / 16 + 2 * pl;
    return {d * scales[sc], d * scales[sc + 4],
            static_cast<int>(__vsub4(
                (qlv & 0x0F0F0F0F) | (((qhv >> (2 * pl)) & 0x03030303) << 4),
                0x20202020)),
            static_cast<int>(
                __vsub4(((qlv >> 4) & 0x0F0F0F0F) |
                            (((qhv >> (2 * pl + 4)) & 0x03030303) << 4),
                        0x20202020))};
  }
  struct X {
    float dlo, dhi;
    int lo, hi;
  };
  __device__ static X LoadX(const XRows& x, int64_t r, int64_t sb, int lane) {
    const int e = Elem(lane);
    const int64_t b = r * x.nb + sb * 8;
    const int8_t* xs = x.q + r * x.in + 256 * sb;
    return {x.d[b + e / 32], x.d[b + e / 32 + 2], LoadX4(xs + e),
            LoadX4(xs + e + 64)};
  }
  __device__ static float Fma(const Word& w, const X& v, int, float acc) {
    return acc + (v.dlo * (w.dlo * static_cast<float>(__dp4a(w.lo, v.lo, 0))) +
                  v.dhi * (w.dhi * static_cast<float>(__dp4a(w.hi, v.hi, 0))));
  }
};

// GEMV thread blocks: kGemvWarps warps, each on kOW consecutive output rows
// for tiles of kRT rows of x. The block stages the tile of x in shared
// memory, kChunk columns at a time, so x comes from L2 once per block
// rather than once per warp; a word of x, once loaded, feeds kOW weight
// rows, and a decoded weight word feeds kRT rows of x. W comes from memory
// once (the tiles after the first reread it from L2).
constexpr int kGemvWarps = 8;
constexpr int kChunk = 512;   // Columns of x per stage (a multiple of 256).
constexpr int kMaxTile = 16;  // Rows of x per tile.
constexpr int kSmemBytes = kMaxTile * kChunk * 4;

template <int kType, int kRT, bool kVec>
__device__ __forceinline__ XRows StageX(const XRows& x, int64_t r0, int nr,
                                        int64_t k0, int kc, char* smem) {
  const int t = threadIdx.x, n = blockDim.x;
  if constexpr (kType == kF32 || kType == kF16) {
    float* f = reinterpret_cast<float*>(smem);
    for (int i = t; i < nr * kc; i += n) {
      f[i] = x.f[(r0 + i / kc) * x.in + k0 + i % kc];
    }
    return {f, nullptr, nullptr, nullptr, kc, kc / 32};
  } else {
    const int cb = kc / 32;                 // Blocks in the chunk.
    int* q = reinterpret_cast<int*>(smem);  // kRT x kc codes.
    float* d = reinterpret_cast<float*>(q + kRT * kc / 4);
    int* sum = reinterpret_cast<int*>(d + kRT * cb);
    for (int i = t; i < nr * kc / 4; i += n) {
      const int r = i / (kc / 4), c = i % (kc / 4);
      q[i] = LoadX4(x.q + (r0 + r) * x.in + k0 + 4 * c);
    }
    for (int i = t; i < nr * cb; i += n) {
      const int64_t b = (r0 + i / cb) * x.nb + k0 / 32 + i % cb;
      d[i] = x.d[b];
      sum[i] = x.sum[b];
    }
    return {nullptr, reinterpret_cast<int8_t*>(q), d, sum, kc, cb};
  }
}

template <int kType, int kOW, int kRT, int kU, bool kVec>
__global__ void __launch_bounds__(kWarp* kGemvWarps)
    GemvKernel(const uint8_t* __restrict__ w, int64_t out, XRows x,
               int64_t rows, float* __restrict__ y) {
  using W = Walk<kType, kVec>;
  __shared__ __align__(16) char smem[kSmemBytes];
  const int lane = threadIdx.x % kWarp;
  const int64_t o0 =
      (blockIdx.x * static_cast<int64_t>(kGemvWarps) + threadIdx.x / kWarp) *
      kOW;
  // Warps past `out` still stage x with the others; they store nothing.
  // (x's pointers may be null for the parts a weight type does not read.)
  const int64_t rb = RowBytes(kType, x.in);
  const uint8_t* row[kOW];
#pragma unroll
  for (int k = 0; k < kOW; ++k) {
    const int64_t o = o0 + k < out ? o0 + k : out - 1;  // Tail: reread.
    row[k] = w + o * rb;
  }
  const int sub = lane % W::kLanes;
  const int64_t step = kWarp / W::kLanes;
  for (int64_t r0 = 0; r0 < rows; r0 += kRT) {
    const int nr = static_cast<int>(rows - r0 < kRT ? rows - r0 : kRT);
    float acc[kOW][kRT];
#pragma unroll
    for (int k = 0; k < kOW; ++k) {
#pragma unroll
      for (int r = 0; r < kRT; ++r) acc[k][r] = 0.0f;
    }
    // Small tiles read x where it is (a few KiB, L1-resident): staging
    // would only add barriers to a pass that is a few loads long.
    constexpr bool kStage = kRT > 4;
    const int64_t chunk = kStage ? kChunk : x.in;
    for (int64_t k0 = 0; k0 < x.in; k0 += chunk) {
      const int kc = static_cast<int>(x.in - k0 < chunk ? x.in - k0 : chunk);
      XRows xs = x;  // Row r0 on: float rows or the blocks' arrays.
      if (x.f != nullptr) xs.f += r0 * x.in;
      if (x.q != nullptr) {
        xs.q += r0 * x.in;
        xs.d += r0 * x.nb;
        xs.sum += r0 * x.nb;
      }
      if constexpr (kStage) {
        __syncthreads();  // The previous chunk is no longer read.
        xs = StageX<kType, kRT, kVec>(x, r0, nr, k0, kc, smem);
        __syncthreads();
      }
      if (o0 >= out) continue;
      const int64_t u0 = k0 / W::kElems, units = kc / W::kElems;
      // kU units per lane per iteration, their weight loads issued
      // together (more bytes in flight per thread).
      for (int64_t u = lane / W::kLanes; u < units; u += step * kU) {
        typename W::Word wd[kU][kOW];
#pragma unroll
        for (int j = 0; j < kU; ++j) {
          if (u + j * step >= units) break;
#pragma unroll
          for (int k = 0; k < kOW; ++k) {
            wd[j][k] = W::Decode(row[k], u0 + u + j * step, sub);
          }
        }
#pragma unroll
        for (int j = 0; j < kU; ++j) {
          if (u + j * step >= units) break;
#pragma unroll
          for (int r = 0; r < kRT; ++r) {
            if (r >= nr) break;
            const typename W::X xv = W::LoadX(xs, r, u + j * step, sub);
#pragma unroll
            for (int k = 0; k < kOW; ++k) {
              acc[k][r] = W::Fma(wd[j][k], xv, sub, acc[k][r]);
            }
          }
        }
      }
    }
    if (o0 >= out) continue;
#pragma unroll
    for (int k = 0; k < kOW; ++k) {
#pragma unroll
      for (int r = 0; r < kRT; ++r) {
        if (r >= nr) break;
        const float v = WarpSum(acc[k][r]);
        if (lane == 0 && o0 + k < out) y[(r0 + r) * out + o0 + k] = v;
      }
    }
  }
}

struct GemvArgs {
  const uint8_t* w;
  int64_t out;
  XRows x;
  int64_t rows;
  float* y;
};

template <int kType, bool kVec>
void LaunchTiles(const GemvArgs& a, CUstream_st* stream) {
  const dim3 block(kWarp * kGemvWarps);
#define ES_GEMV_LAUNCH(OW, RT, U)                              \
  GemvKernel<kType, OW, RT, U, kVec>                           \
      <<<static_cast<unsigned>((a.out + OW * kGemvWarps - 1) / \
                               (OW * kGemvWarps)),             \
         block, 0, stream>>>(a.w, a.out, a.x, a.rows, a.y)
  if (a.rows == 1) {
    ES_GEMV_LAUNCH(2, 1, 1);
  } else if (a.rows == 2) {
    ES_GEMV_LAUNCH(4, 2, 2);
  } else if (a.rows <= 4) {
    ES_GEMV_LAUNCH(4, 4, 2);
  } else if (a.rows <= 8) {
    ES_GEMV_LAUNCH(4, 8, 1);
  } else {
    ES_GEMV_LAUNCH(4, kMaxTile, 1);
  }
#undef ES_GEMV_LAUNCH
}

void LaunchType(int type, bool vec, const GemvArgs& a, CUstream_st* stream) {
  switch (type) {
    case kF32:
      return vec ? LaunchTiles<kF32, true>(a, stream)
                 : LaunchTiles<kF32, false>(a, stream);
    case kF16:
      return vec ? LaunchTiles<kF16, true>(a, stream)
                 : LaunchTiles<kF16, false>(a, stream);
    case kQ8_0:
      return LaunchTiles<kQ8_0, true>(a, stream);
    case kQ4_0:
      return LaunchTiles<kQ4_0, true>(a, stream);
    case kQ4_K:
      return LaunchTiles<kQ4_K, true>(a, stream);
    case kQ6_K:
      return LaunchTiles<kQ6_K, true>(a, stream);
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
               int64_t rows, float* y, CUstream_st* stream, void* scratch) {
  if (rows > kMaxRows) return static_cast<int>(cudaErrorInvalidValue);
  GemvArgs a{static_cast<const uint8_t*>(w), out,
             XRows{x, nullptr, nullptr, nullptr, in, in / 32}, rows, y};
  const bool blocks = type != kF32 && type != kF16;
  const int64_t nblocks = rows * (in / 32);
  cudaError_t err = cudaSuccess;
  const bool own = blocks && scratch == nullptr;
  if (own) {
    // Stream-ordered scratch for x's blocks, freed after the GEMV.
    err = cudaMallocAsync(&scratch, GemvScratchBytes(type, rows, in), stream);
    if (err != cudaSuccess) return static_cast<int>(err);
  }
  if (blocks) {
    int8_t* xq = static_cast<int8_t*>(scratch);
    float* xd = reinterpret_cast<float*>(xq + nblocks * 32);
    int* xsum = reinterpret_cast<int*>(xd + nblocks);
    a.x.q = xq;
    a.x.d = xd;
    a.x.sum = xsum;
    QuantizeXKernel<<<static_cast<unsigned>((nblocks + 3) / 4), 4 * kWarp, 0,
                      stream>>>(x, nblocks, xq, xd, xsum);
  }
  // Float weights take 16-byte loads when every row and x row is aligned.
  const int64_t elem = type == kF32 ? 4 : 2;
  const bool vec = !blocks && in % 4 == 0 &&
                   reinterpret_cast<uintptr_t>(w) % (4 * elem) == 0 &&
                   reinterpret_cast<uintptr_t>(x) % 16 == 0;
  LaunchType(type, vec, a, stream);
  err = cudaGetLastError();
  if (own) {
    const cudaError_t freed = cudaFreeAsync(scratch, stream);
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
