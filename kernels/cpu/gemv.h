// Matrix-vector products for decode: y = x W^T for a few rows of x, where
// W [out, in] is read once per call at (close to) the machine's memory read
// bandwidth. Decoding a token is exactly this, once per weight matrix, so
// its speed is the weights' bytes over the read bandwidth; a GEMM library
// packs W for reuse first and streams it at a fraction of that.
//
// Variants: scalar, AVX2+FMA and AVX-512 (isa.h), chosen at run time;
// all threads of the kernel pool (compute_pool.h) share the output rows.
// Quantized weights (quant_blocks.h) are multiplied as llama.cpp does: each
// row of x is first quantized to Q8_0 blocks, then int8 dot products per
// block are scaled by the two blocks' scales. That activation rounding is
// part of the approximation the quantized types make (their measured
// quality is reported by bench/quality_bench).
//
// Thread-safety: safe to call concurrently (ParallelFor runs one caller's
// job on the pool and the others inline).
#ifndef EDGESPLIT_KERNELS_CPU_GEMV_H_
#define EDGESPLIT_KERNELS_CPU_GEMV_H_

#include <cstdint>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/quant_blocks.h"

namespace edgesplit::kernels {

// A weight matrix [out, in]; row o starts at data + o * RowBytes(type, in).
// The caller keeps `data` alive and unchanged during calls.
struct WeightView {
  WeightType type = WeightType::kF32;
  const void* data = nullptr;
  int64_t out = 0, in = 0;
};

// y [rows, out] = x [rows, in] W^T, both row-major float. `in` must suit the
// type (CheckCols). Any rows >= 0; the weights are read once per call for
// up to a few dozen rows (x's rows stay in cache while a block of weight
// rows is reused), so batched decode costs about one single-row call.
void Gemv(const WeightView& w, const float* x, int64_t rows, float* y);

// Same on one given variant, on the calling thread only, over output rows
// [o0, o1) (y still has `out` columns): for products too small to share
// (attention scores), and for tests comparing variants.
void GemvOn(Isa isa, const WeightView& w, const float* x, int64_t rows,
            float* y, int64_t o0, int64_t o1);

// Rows [o0, o1) of W as float ([o1 - o0, in], row-major): the prefill path
// multiplies dequantized slices with GEMM.
void DequantizeRows(const WeightView& w, int64_t o0, int64_t o1, float* out);

}  // namespace edgesplit::kernels

#endif  // EDGESPLIT_KERNELS_CPU_GEMV_H_
