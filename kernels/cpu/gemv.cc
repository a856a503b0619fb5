#include "kernels/cpu/gemv.h"

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstring>
#include <iterator>
#include <vector>

#include "kernels/cpu/compute_pool.h"
#include "kernels/cpu/gemv_internal.h"
#include "kernels/scalar_codecs.h"

namespace edgesplit::kernels {
namespace internal {

const GemvKernels& KernelsFor(Isa isa) {
  switch (isa) {
#if EDGESPLIT_X86_KERNELS
    case Isa::kAvx512:
      return internal::kAvx512Kernels;
    case Isa::kAvx2:
      return internal::kAvx2Kernels;
#else
    case Isa::kAvx512:
    case Isa::kAvx2:
#endif
    case Isa::kScalar:
      break;
  }
  return internal::kScalarKernels;
}

}  // namespace internal
namespace {

using internal::KernelsFor;

internal::GemvFn FnFor(const internal::GemvKernels& k, WeightType type) {
  switch (type) {
    case WeightType::kQ8_0:
      return k.q8_0;
    case WeightType::kQ4_0:
      return k.q4_0;
    case WeightType::kQ4_K:
      return k.q4_k;
    case WeightType::kQ6_K:
      return k.q6_k;
    case WeightType::kF16:
      return k.f16;
    case WeightType::kF32:
      break;
  }
  return k.f32;
}

// The kernel for `w` on `isa`: the layout's own, else the type's.
internal::GemvFn FnFor(Isa isa, const WeightView& w) {
  if (w.layout == WeightLayout::kInterleaved16) {
#if EDGESPLIT_X86_KERNELS
    if (isa == Isa::kAvx512) {
      if (w.type == WeightType::kQ4_K) return internal::GemvQ4_Kx16Avx512;
      if (w.type == WeightType::kQ6_K) return internal::GemvQ6_Kx16Avx512;
      return w.type == WeightType::kQ4_0 ? internal::GemvQ4_0x16Avx512
                                         : internal::GemvQ8_0x16Avx512;
    }
#endif
    if (w.type == WeightType::kQ4_K) return internal::GemvQ4_Kx16Scalar;
    if (w.type == WeightType::kQ6_K) return internal::GemvQ6_Kx16Scalar;
    return w.type == WeightType::kQ4_0 ? internal::GemvQ4_0x16Scalar
                                       : internal::GemvQ8_0x16Scalar;
  }
  return FnFor(KernelsFor(isa), w.type);
}

// The calling thread's buffers for x's quantized rows (reused across
// calls).
struct PreparedBuffers {
  std::vector<BlockQ8_0> xq;
  std::vector<float> d;
  std::vector<int32_t> sum;
  std::vector<internal::XPair> pairs;
  std::vector<float> half_dsum;
  internal::QuantizedRows rows_view;
};
thread_local PreparedBuffers prepared;

// Resizes a buffer to n, first letting go of a much larger one of over
// 4 MiB (a long prompt's): the decode steps after a prefill would otherwise
// keep it for the thread's life. Decode-sized buffers stay (32 rows 8192
// wide take well under 4 MiB): a server alternating 1- and 16-row steps
// would otherwise map and unmap them at every product.
template <typename T>
void Fit(std::vector<T>& v, size_t n) {
  if (v.capacity() > 4 * n && v.capacity() * sizeof(T) > (size_t{4} << 20)) {
    std::vector<T>().swap(v);
  }
  v.resize(n);
}

// x's rows as Q8_0 blocks in the calling thread's buffers, or
// x itself for float and half weights. `pairs`: also the AVX-512 row
// layout kernels' XPairs. `pooled`: many rows are shared with the kernel
// pool (prefill quantizes up to thousands of rows per product; the
// quantizer is the scalar reference, llama.cpp's).
const void* PrepareInput(Isa isa, WeightType type, const float* x, int64_t rows,
                         int64_t in, bool pairs_wanted, bool pooled) {
  if (!IsBlockType(type)) return x;
  auto& [xq, d, sum, pairs, half_dsum, rows_view] = prepared;
  const int64_t nb = in / kBlockSize, np = nb / 2;
  Fit(xq, static_cast<size_t>(rows * nb));
  Fit(d, xq.size());
  Fit(sum, xq.size());
  const bool want_pairs = isa == Isa::kAvx512 && pairs_wanted;
  const bool want_half = isa == Isa::kAvx512 && type == WeightType::kQ6_K;
  Fit(pairs, want_pairs ? static_cast<size_t>(rows * np) : 0);
  Fit(half_dsum, want_half ? 2 * xq.size() : 0);
  // Raw pointers: a thread_local named inside the job would be the
  // worker's own.
  BlockQ8_0* const q = xq.data();
  float* const dp = d.data();
  int32_t* const sp = sum.data();
  internal::XPair* const pp = want_pairs ? pairs.data() : nullptr;
  float* const hp = want_half ? half_dsum.data() : nullptr;
  const int32_t offset = internal::PairOffset(type);
  auto prepare = [=](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      QuantizeRowQ8_0(x + r * in, in, q + r * nb);
      for (int64_t b = r * nb; b < (r + 1) * nb; ++b) {
        dp[b] = Fp16BitsToFp32(q[b].d);
        const int32_t first = internal::FirstHalfSum(q[b]);
        int32_t s = first;
        for (int j = kBlockSize / 2; j < kBlockSize; ++j) s += q[b].qs[j];
        sp[b] = s;
        if (hp != nullptr) {
          hp[2 * b] = internal::HalfDsum(dp[b], first, s, 0);
          hp[2 * b + 1] = internal::HalfDsum(dp[b], first, s, 1);
        }
      }
      for (int64_t p = 0; pp != nullptr && p < np; ++p) {
        internal::XPair& out = pp[r * np + p];
        const int64_t b = r * nb + 2 * p;
        std::memcpy(out.q, q[b].qs, kBlockSize);
        std::memcpy(out.q + kBlockSize, q[b + 1].qs, kBlockSize);
        std::fill(std::begin(out.seed), std::end(out.seed), 0);
        out.seed[0] = offset * sp[b];
        out.seed[8] = offset * sp[b + 1];
        std::fill(out.d, out.d + 8, dp[b]);
        std::fill(out.d + 8, out.d + 16, dp[b + 1]);
      }
    }
  };
  if (pooled && rows > 1 && rows * in >= (int64_t{1} << 16)) {
    ParallelFor(rows, 1, prepare);
  } else {
    prepare(0, rows);
  }
  rows_view = {q, dp, sp};
  rows_view.pairs = pp;
  rows_view.half_dsum = hp;
  return &rows_view;
}

// Where a row's block lies in its group's block of 16 interleaved rows
// (BlockQ4_0x16, BlockQ8_0x16: the scale at d[lane], code bytes 4j..4j+3
// at qs[64 j + 4 lane ..]; BlockQ4_Kx16: d, dmin, each scales byte, then
// the codes likewise; BlockQ6_Kx16: d, each scale, ql's and qh's bytes
// likewise). `copy(group_offset, block_offset, n)` moves each piece one
// way or the other.
template <typename Copy>
void ForEachPiece(WeightType type, int64_t lane, Copy copy) {
  if (type == WeightType::kQ6_K) {
    copy(2 * lane, offsetof(BlockQ6_K, d), 2);
    for (int64_t i = 0; i < 16; ++i) {
      copy(offsetof(BlockQ6_Kx16, scales) + 16 * i + lane,
           offsetof(BlockQ6_K, scales) + i, 1);
    }
    for (int64_t c = 0; c < 32; ++c) {
      copy(offsetof(BlockQ6_Kx16, ql) + 64 * c + 4 * lane, 4 * c, 4);
    }
    for (int64_t c = 0; c < 16; ++c) {
      copy(offsetof(BlockQ6_Kx16, qh) + 64 * c + 4 * lane,
           offsetof(BlockQ6_K, qh) + 4 * c, 4);
    }
    return;
  }
  copy(2 * lane, 0, 2);
  if (type == WeightType::kQ4_K) {
    copy(32 + 2 * lane, 2, 2);
    for (int64_t i = 0; i < 12; ++i) copy(64 + 16 * i + lane, 4 + i, 1);
    for (int64_t c = 0; c < 32; ++c)
      copy(256 + 64 * c + 4 * lane, 16 + 4 * c, 4);
    return;
  }
  const int64_t chunks = type == WeightType::kQ4_0 ? 4 : 8;
  for (int64_t j = 0; j < chunks; ++j)
    copy(32 + 64 * j + 4 * lane, 2 + 4 * j, 4);
}

// memcpy of the sizes ForEachPiece names, each inlined.
inline void CopyPiece(uint8_t* to, const uint8_t* from, int64_t n) {
  if (n == 4) {
    std::memcpy(to, from, 4);
  } else if (n == 2) {
    std::memcpy(to, from, 2);
  } else {
    *to = *from;
  }
}

bool Interleaves(WeightType type) {
  return type == WeightType::kQ4_0 || type == WeightType::kQ8_0 ||
         type == WeightType::kQ4_K || type == WeightType::kQ6_K;
}

}  // namespace

namespace internal {

size_t PreparedInputBytes() {
  return prepared.xq.capacity() * sizeof(BlockQ8_0) +
         prepared.d.capacity() * sizeof(float) +
         prepared.sum.capacity() * sizeof(int32_t) +
         prepared.pairs.capacity() * sizeof(XPair) +
         prepared.half_dsum.capacity() * sizeof(float);
}

}  // namespace internal

WeightLayout PreferredLayout(WeightType type, int64_t out) {
  return Interleaves(type) && out % 16 == 0 && ActiveIsa() == Isa::kAvx512
             ? WeightLayout::kInterleaved16
             : WeightLayout::kRows;
}

bool GemvForAnyRows(WeightType type) {
  return IsBlockType(type) && ActiveIsa() == Isa::kAvx512;
}

void ToLayout(WeightLayout layout, WeightType type, const void* rows,
              int64_t out, int64_t in, void* dst) {
  const int64_t row_bytes = RowBytes(type, in);
  if (layout == WeightLayout::kRows) {
    std::memcpy(dst, rows, static_cast<size_t>(out * row_bytes));
    return;
  }
  assert(Interleaves(type) && out % 16 == 0);
  const int64_t nb = in / BlockWeights(type);
  const int64_t block_bytes = row_bytes / nb;
  const auto* src = static_cast<const uint8_t*>(rows);
  auto* groups = static_cast<uint8_t*>(dst);
  ParallelFor(out / 16, 16, [&](int64_t g0, int64_t g1) {
    for (int64_t o = g0 * 16; o < g1 * 16; ++o) {
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* from = src + o * row_bytes + b * block_bytes;
        uint8_t* to = groups + (o / 16) * 16 * row_bytes + b * 16 * block_bytes;
        ForEachPiece(type, o % 16, [&](int64_t at, int64_t from_at, int64_t n) {
          CopyPiece(to + at, from + from_at, n);
        });
      }
    }
  });
}

void Gemv(const WeightView& w, const float* x, int64_t rows, float* y) {
  assert(CheckCols(w.type, w.in));
  if (rows <= 0 || w.out <= 0) return;
  const Isa isa = ActiveIsa();
  const internal::GemvFn fn = FnFor(isa, w);
  const bool grouped = w.layout == WeightLayout::kInterleaved16;
  const void* xin =
      PrepareInput(isa, w.type, x, rows, w.in, !grouped, /*pooled=*/true);
  const int64_t row_bytes = RowBytes(w.type, w.in);
  const auto* base = static_cast<const uint8_t*>(w.data);
  // A few long chunks per thread: each is one sequential stream the
  // prefetchers follow, and a thread that falls behind still leaves work
  // to share. At least 64 KiB each (the claim is an atomic add, and y's
  // cache lines are shared at chunk edges), in whole 8-row tiles.
  const int64_t min_rows = (64 << 10) / std::max<int64_t>(row_bytes, 1);
  const int64_t chunks = 4 * KernelThreads();
  int64_t grain =
      std::max<int64_t>({1, min_rows, (w.out + chunks - 1) / chunks});
  const int64_t tile = grouped ? 16 : 8;  // No group split across chunks.
  grain = (grain + tile - 1) / tile * tile;
  ParallelFor(w.out, grain, [&](int64_t o0, int64_t o1) {
    fn(base, row_bytes, w.in, xin, rows, y, w.out, o0, o1);
  });
}

void GemvOn(Isa isa, const WeightView& w, const float* x, int64_t rows,
            float* y, int64_t o0, int64_t o1) {
  assert(CheckCols(w.type, w.in));
  const void* xin =
      PrepareInput(isa, w.type, x, rows, w.in, w.layout == WeightLayout::kRows,
                   /*pooled=*/false);
  FnFor(isa, w)(static_cast<const uint8_t*>(w.data), RowBytes(w.type, w.in),
                w.in, xin, rows, y, w.out, o0, o1);
}

void DequantizeRowsHere(const WeightView& w, int64_t o0, int64_t o1,
                        float* out) {
  DequantizeRowsOn(ActiveIsa(), w, o0, o1, out);
}

void DequantizeRowsOn(Isa isa, const WeightView& w, int64_t o0, int64_t o1,
                      float* out) {
  const int64_t row_bytes = RowBytes(w.type, w.in);
  const auto* base = static_cast<const uint8_t*>(w.data);
#if EDGESPLIT_X86_KERNELS
  if (isa != Isa::kScalar &&
      internal::DequantizeRowsAvx2(w.type, w.layout, base, row_bytes, w.in, o0,
                                   o1, out)) {
    return;
  }
#endif
  (void)isa;  // The reference: also the other types' only form.
  if (w.layout == WeightLayout::kRows) {
    for (int64_t o = o0; o < o1; ++o) {
      DequantizeRow(w.type, base + o * row_bytes, w.in, out + (o - o0) * w.in);
    }
    return;
  }
  // Each row gathered back into its blocks, then dequantized as kRows is.
  std::vector<uint8_t> row(static_cast<size_t>(row_bytes));
  for (int64_t o = o0; o < o1; ++o) {
    const uint8_t* group = base + (o / 16) * 16 * row_bytes;
    const int64_t nb = w.in / BlockWeights(w.type);
    const int64_t block_bytes = row_bytes / nb;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* g = group + b * 16 * block_bytes;
      uint8_t* to = row.data() + b * block_bytes;
      ForEachPiece(w.type, o % 16, [&](int64_t at, int64_t to_at, int64_t n) {
        CopyPiece(to + to_at, g + at, n);
      });
    }
    DequantizeRow(w.type, row.data(), w.in, out + (o - o0) * w.in);
  }
}

void DequantizeRows(const WeightView& w, int64_t o0, int64_t o1, float* out) {
  ParallelFor(o1 - o0, 64, [&](int64_t b, int64_t e) {
    DequantizeRowsHere(w, o0 + b, o0 + e, out + b * w.in);
  });
}

}  // namespace edgesplit::kernels
