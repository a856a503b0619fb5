// Matrix-vector products for decode: y = x W^T for a few rows of x, where
// W [out, in] is read once per call at (close to) the machine's memory read
// bandwidth. Decoding a token is exactly this, once per weight matrix, so
// its speed is the weights' bytes over the read bandwidth; a GEMM library
// packs W for reuse first and streams it at a fraction of that. Quantized
// weights also take prefill-sized x through these kernels when the AVX-512
// (VNNI) variant runs: its integer products beat dequantizing into GEMM.
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

// How a matrix's blocks lie in memory.
//   kRows: row after row, row o at data + o * RowBytes(type, in), as GGUF
//     and quantized safetensors files store them.
//   kInterleaved16: Q4_0, Q8_0, Q4_K and Q6_K, out a multiple of 16: groups
//     of 16 rows whose blocks are interleaved (BlockQ4_0x16, BlockQ8_0x16,
//     BlockQ4_Kx16, BlockQ6_Kx16), group g's block b at data + (g * (blocks per
//     row) + b) * 16 * (the block's bytes). In memory only, made at load
//     (runtime's PackForDecode). One vpdpbusd then covers 16 rows, so a block
//     of x costs one scale FMA per 16 rows instead of one per two blocks:
//     batched decode was bound by that float work (about 2x the tokens/s at 16
//     sessions, bench/decode_bench), and one sequential stream serves 16 rows.
//     Its own arithmetic per row (all variants agree bit for bit), not kRows's.
enum class WeightLayout { kRows, kInterleaved16 };

// A weight matrix [out, in]. The caller keeps `data` alive and unchanged
// during calls.
struct WeightView {
  WeightType type = WeightType::kF32;
  const void* data = nullptr;
  int64_t out = 0, in = 0;
  WeightLayout layout = WeightLayout::kRows;
};

// The layout Gemv runs `type` [out, in] fastest in on this CPU:
// kInterleaved16 for the block types with `out` a multiple of 16 when the
// AVX-512 kernels are active (the other variants compute it with the
// scalar reference only), else kRows.
WeightLayout PreferredLayout(WeightType type, int64_t out);
// Whether Gemv beats dequantizing `type` into float GEMM at any number of
// rows of x on this CPU (prefill, training micro-batches): block types
// with the AVX-512 (VNNI) kernels, whose integer products measured 3-4.5x
// faster (llama-1b and gpt2-small prefill, bench/decode_bench). AVX2's
// (no VNNI) measured from 1.2x faster to 1.6x slower: there, and for float
// weights, GEMM takes the longer products.
bool GemvForAnyRows(WeightType type);
// Copies [out, in] blocks from kRows into `layout` (the same number of
// bytes; `dst` must not overlap `rows`). `layout` must suit the matrix.
void ToLayout(WeightLayout layout, WeightType type, const void* rows,
              int64_t out, int64_t in, void* dst);

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
// multiplies dequantized slices with GEMM. On the kernel pool; the second
// form runs on the calling thread.
void DequantizeRows(const WeightView& w, int64_t o0, int64_t o1, float* out);
void DequantizeRowsHere(const WeightView& w, int64_t o0, int64_t o1,
                        float* out);
// Same on one given variant, on the calling thread (every variant gives
// DequantizeRow's values bit for bit; for tests and benchmarks).
void DequantizeRowsOn(Isa isa, const WeightView& w, int64_t o0, int64_t o1,
                      float* out);

}  // namespace edgesplit::kernels

#endif  // EDGESPLIT_KERNELS_CPU_GEMV_H_
