#include "kernels/cpu/gemv.h"

#include <algorithm>
#include <cassert>
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

// x's rows as Q8_0 blocks in a per-thread buffer (reused across calls), or
// x itself for float and half weights.
const void* PrepareInput(Isa isa, WeightType type, const float* x, int64_t rows,
                         int64_t in) {
  if (!IsBlockType(type)) return x;
  thread_local std::vector<BlockQ8_0> xq;
  thread_local std::vector<float> d;
  thread_local std::vector<int32_t> sum;
  thread_local std::vector<internal::XPair> pairs;
  thread_local std::vector<float> half_dsum;
  thread_local internal::QuantizedRows rows_view;
  const int64_t nb = in / kBlockSize;
  xq.resize(static_cast<size_t>(rows * nb));
  d.resize(xq.size());
  sum.resize(xq.size());
  for (int64_t r = 0; r < rows; ++r) {
    QuantizeRowQ8_0(x + r * in, in, xq.data() + r * nb);
  }
  for (size_t b = 0; b < xq.size(); ++b) {
    d[b] = Fp16BitsToFp32(xq[b].d);
    int32_t s = 0;
    for (int j = 0; j < kBlockSize; ++j) s += xq[b].qs[j];
    sum[b] = s;
  }
  rows_view = {xq.data(), d.data(), sum.data()};
  if (isa == Isa::kAvx512) {
    const int64_t np = nb / 2;
    pairs.resize(static_cast<size_t>(rows * np));
    const int32_t offset = internal::PairOffset(type);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t p = 0; p < np; ++p) {
        internal::XPair& out = pairs[r * np + p];
        const int64_t b = r * nb + 2 * p;
        std::memcpy(out.q, xq[b].qs, kBlockSize);
        std::memcpy(out.q + kBlockSize, xq[b + 1].qs, kBlockSize);
        std::fill(std::begin(out.seed), std::end(out.seed), 0);
        out.seed[0] = offset * sum[b];
        out.seed[8] = offset * sum[b + 1];
        std::fill(out.d, out.d + 8, d[b]);
        std::fill(out.d + 8, out.d + 16, d[b + 1]);
      }
    }
    rows_view.pairs = pairs.data();
    if (type == WeightType::kQ6_K) {
      half_dsum.resize(2 * xq.size());
      for (size_t b = 0; b < xq.size(); ++b) {
        int32_t first = 0;
        for (int j = 0; j < kBlockSize / 2; ++j) first += xq[b].qs[j];
        half_dsum[2 * b] = d[b] * static_cast<float>(first);
        half_dsum[2 * b + 1] = d[b] * static_cast<float>(sum[b] - first);
      }
      rows_view.half_dsum = half_dsum.data();
    }
  }
  return &rows_view;
}

}  // namespace

void Gemv(const WeightView& w, const float* x, int64_t rows, float* y) {
  assert(CheckCols(w.type, w.in));
  if (rows <= 0 || w.out <= 0) return;
  const Isa isa = ActiveIsa();
  const internal::GemvFn fn = FnFor(KernelsFor(isa), w.type);
  const void* xin = PrepareInput(isa, w.type, x, rows, w.in);
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
  grain = (grain + 7) / 8 * 8;
  ParallelFor(w.out, grain, [&](int64_t o0, int64_t o1) {
    fn(base, row_bytes, w.in, xin, rows, y, w.out, o0, o1);
  });
}

void GemvOn(Isa isa, const WeightView& w, const float* x, int64_t rows,
            float* y, int64_t o0, int64_t o1) {
  assert(CheckCols(w.type, w.in));
  const void* xin = PrepareInput(isa, w.type, x, rows, w.in);
  FnFor(KernelsFor(isa), w.type)(static_cast<const uint8_t*>(w.data),
                                 RowBytes(w.type, w.in), w.in, xin, rows, y,
                                 w.out, o0, o1);
}

void DequantizeRows(const WeightView& w, int64_t o0, int64_t o1, float* out) {
  const int64_t row_bytes = RowBytes(w.type, w.in);
  const auto* base = static_cast<const uint8_t*>(w.data);
  ParallelFor(o1 - o0, 64, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      DequantizeRow(w.type, base + (o0 + o) * row_bytes, w.in, out + o * w.in);
    }
  });
}

}  // namespace edgesplit::kernels
