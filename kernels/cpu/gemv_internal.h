// Per-instruction-set GEMV kernels behind gemv.h; each table lives in a
// translation unit compiled with that set's -m flags.
#ifndef EDGESPLIT_KERNELS_CPU_GEMV_INTERNAL_H_
#define EDGESPLIT_KERNELS_CPU_GEMV_INTERNAL_H_

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/gemv.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/quant_blocks.h"

namespace edgesplit::kernels::internal {

// Rows of x quantized to Q8_0 for the quantized kernels, with each block's
// scale as float (exact: fp16 widens exactly) and the sum of its codes
// (Q4_0 kernels multiply the unsigned nibbles and subtract 8 * sum).
struct QuantizedRows {
  const BlockQ8_0* q;
  const float* d;
  const int32_t* sum;
  // For the AVX-512 quantized kernels only (else null): each
  // row's whole pairs of blocks, [rows, in / 64], as those kernels load them.
  const struct XPair* pairs = nullptr;
  // For the AVX-512 Q6_K kernels only (else null): each block's scale
  // times the sum of its first and of its last 16 codes (HalfDsum),
  // [rows, in / 16].
  const float* half_dsum = nullptr;
};

// The sum of a Q8_0 block's first 16 codes.
inline int32_t FirstHalfSum(const BlockQ8_0& b) {
  int32_t first = 0;
  for (int j = 0; j < kBlockSize / 2; ++j) first += b.qs[j];
  return first;
}

// A Q8_0 block's scale d times the sum of its first (half 0) or last
// (half 1) 16 codes, from `first` (FirstHalfSum) and `sum`, all 32 codes'
// (QuantizedRows::half_dsum).
inline float HalfDsum(float d, int32_t first, int32_t sum, int half) {
  return d * static_cast<float>(half == 0 ? first : sum - first);
}

// Blocks 2p and 2p + 1 of one row of x laid out for 512-bit VNNI kernels
// that multiply two blocks per instruction: built once per call so that
// every weight row reuses it instead of assembling it again (the batched
// kernels' main cost before).
struct alignas(64) XPair {
  int8_t q[64];      // The two blocks' codes.
  int32_t seed[16];  // Lanes 0 and 8: offset * the blocks' code sums.
  float d[16];       // Lanes 0-7: block 2p's scale; 8-15: block 2p + 1's.
};

// The offset the weight type's unsigned codes carry (Q4_0's nibbles are
// w + 8; Q8_0's codes are biased to unsigned by flipping the sign bit;
// Q4_K's mins and Q6_K's offset of 32 per 16 weights are applied apart).
constexpr int32_t PairOffset(WeightType type) {
  if (type == WeightType::kQ4_0) return -8;
  if (type == WeightType::kQ4_K || type == WeightType::kQ6_K) return 0;
  return -128;
}

// y[r * ldy + o] for o in [o0, o1) and r in [0, rows). `w` row o starts at
// w + o * row_bytes. For f32 and f16, x is float [rows, in]; for the
// quantized types it is a QuantizedRows of [rows, in / 32] blocks.
using GemvFn = void (*)(const uint8_t* w, int64_t row_bytes, int64_t in,
                        const void* x, int64_t rows, float* y, int64_t ldy,
                        int64_t o0, int64_t o1);

// The sum of n words: the streaming read that measures read bandwidth.
using SumFn = uint64_t (*)(const uint64_t* p, int64_t n);

// Register-resident arithmetic with no memory traffic, for the compute
// peak (compute_peak.h): `iters` rounds of the widest multiply-adds the
// level has, f32 FMAs or int8 products (u8 x s8, summed into int32 as the
// quantized kernels do). Returns how many multiply-adds it did; adds a
// value depending on all of them to *sink so that none is optimized away.
using PeakFn = int64_t (*)(int64_t iters, float* sink);

struct GemvKernels {
  GemvFn f32, q8_0, q4_0, q4_k, q6_k, f16;
  SumFn sum_u64;
  PeakFn peak_f32, peak_i8;
};

const GemvKernels& KernelsFor(Isa isa);

// Q4_0 and Q8_0 weights in WeightLayout::kInterleaved16 (w: the groups;
// row_bytes: one row's in kRows), x a QuantizedRows. Per row and block, the
// exact integer dot product (Q4_0: of the nibbles, minus 8 * x's code
// sum), then acc = fma(dw * dx, dot, acc) over the blocks in order: the
// AVX-512 forms compute exactly this.
void GemvQ4_0x16Scalar(const uint8_t* w, int64_t row_bytes, int64_t in,
                       const void* x, int64_t rows, float* y, int64_t ldy,
                       int64_t o0, int64_t o1);
void GemvQ4_0x16Avx512(const uint8_t* w, int64_t row_bytes, int64_t in,
                       const void* x, int64_t rows, float* y, int64_t ldy,
                       int64_t o0, int64_t o1);
// Q4_K's: per row and 32-weight sub-block j, acc = fma(d * sc(j) * dx,
// dot, acc) and mins = fma(dmin * m(j), dx * sum(x), mins) in order; the
// row is acc - mins.
void GemvQ4_Kx16Scalar(const uint8_t* w, int64_t row_bytes, int64_t in,
                       const void* x, int64_t rows, float* y, int64_t ldy,
                       int64_t o0, int64_t o1);
void GemvQ4_Kx16Avx512(const uint8_t* w, int64_t row_bytes, int64_t in,
                       const void* x, int64_t rows, float* y, int64_t ldy,
                       int64_t o0, int64_t o1);
// Q6_K's: per row and 16-weight sub-block j (of its super-block's 16),
// with sc = d * scale(j), acc = fma(sc * dx, dot, acc) and offs = fma(sc,
// HalfDsum(x's block, its half), offs) in order, dot over the unsigned
// 6-bit codes; the row is acc - 32 * offs.
void GemvQ6_Kx16Scalar(const uint8_t* w, int64_t row_bytes, int64_t in,
                       const void* x, int64_t rows, float* y, int64_t ldy,
                       int64_t o0, int64_t o1);
void GemvQ6_Kx16Avx512(const uint8_t* w, int64_t row_bytes, int64_t in,
                       const void* x, int64_t rows, float* y, int64_t ldy,
                       int64_t o0, int64_t o1);
void GemvQ8_0x16Scalar(const uint8_t* w, int64_t row_bytes, int64_t in,
                       const void* x, int64_t rows, float* y, int64_t ldy,
                       int64_t o0, int64_t o1);
void GemvQ8_0x16Avx512(const uint8_t* w, int64_t row_bytes, int64_t in,
                       const void* x, int64_t rows, float* y, int64_t ldy,
                       int64_t o0, int64_t o1);

// Rows [o0, o1) of `w` (row_bytes: one row's in kRows; row o at out +
// (o - o0) * in) exactly as DequantizeRow gives them, for Q8_0, Q4_0,
// Q4_K and Q6_K in either layout; false (nothing written) for f32 and
// f16. AVX2 (the AVX-512 variant calls it too).
bool DequantizeRowsAvx2(WeightType type, WeightLayout layout, const uint8_t* w,
                        int64_t row_bytes, int64_t in, int64_t o0, int64_t o1,
                        float* out);

// Bytes the calling thread holds for x's quantized rows between calls: a
// long prompt's are let go at the next, much smaller, call.
size_t PreparedInputBytes();

extern const GemvKernels kScalarKernels;
extern const GemvKernels kAvx2Kernels;
extern const GemvKernels kAvx512Kernels;

}  // namespace edgesplit::kernels::internal

#endif  // EDGESPLIT_KERNELS_CPU_GEMV_INTERNAL_H_
