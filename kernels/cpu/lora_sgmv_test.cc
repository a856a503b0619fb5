#include "kernels/cpu/lora_sgmv.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/compute_pool.h"
#include "testing/random_floats.h"

namespace edgesplit::kernels {
namespace {

std::vector<float> Random(int64_t n, uint32_t seed) {
  return testing::RandomNormal(n, seed);
}

struct Factors {
  std::vector<float> a, b;
  int64_t rank;
};

// The definition, in double: y[rows] += scaling * (x A^T) B^T.
void Reference(const LoraSegment& g, const float* x, int64_t in, int64_t out,
               std::vector<double>& y) {
  for (int64_t r = g.row_begin; r < g.row_begin + g.rows; ++r) {
    std::vector<double> low(static_cast<size_t>(g.rank));
    for (int64_t k = 0; k < g.rank; ++k) {
      for (int64_t i = 0; i < in; ++i) {
        low[k] += double{x[r * in + i]} * g.a[k * in + i];
      }
    }
    for (int64_t o = 0; o < out; ++o) {
      double d = 0;
      for (int64_t k = 0; k < g.rank; ++k) d += low[k] * g.b[o * g.rank + k];
      y[r * out + o] += g.scaling * d;
    }
  }
}

TEST(LoraSgmvTest, EachSegmentGetsItsOwnAdapterAndOtherRowsAreUntouched) {
  for (int threads : {1, 2}) {
    SetKernelThreads(threads);
    const int64_t in = 72, out = 300, rows = 11;
    // Adapters of ranks 16, 4 and 1; rows 0-2 use the first, 3 none
    // (the base model), 4 the second, 5-9 the first again, 10 the third,
    // and an empty segment that must change nothing.
    std::vector<Factors> f;
    for (int64_t rank : {16, 4, 1}) {
      f.push_back(
          {Random(rank * in, 10 + rank), Random(out * rank, 20 + rank), rank});
    }
    auto seg = [&](int64_t begin, int64_t n, const Factors& a, float s) {
      return LoraSegment{begin, n, a.a.data(), a.b.data(), a.rank, s};
    };
    const std::vector<LoraSegment> segments = {
        seg(0, 3, f[0], 2.0f), seg(4, 1, f[1], 0.5f), seg(5, 5, f[0], 2.0f),
        seg(10, 1, f[2], 1.0f), seg(3, 0, f[1], 9.0f)};
    const std::vector<float> x = Random(rows * in, 1);
    std::vector<float> y = Random(rows * out, 2);
    std::vector<double> want(y.begin(), y.end());
    for (const LoraSegment& g : segments) Reference(g, x.data(), in, out, want);
    LoraSgmv(segments.data(), static_cast<int64_t>(segments.size()), x.data(),
             in, out, y.data());
    for (int64_t i = 0; i < rows * out; ++i) {
      ASSERT_NEAR(y[i], want[i], 1e-4 * (1 + std::abs(want[i])))
          << "element " << i << " (row " << i / out << ")";
    }
    // Row 3 is in no segment: exactly as it was.
    const std::vector<float> y0 = Random(rows * out, 2);
    for (int64_t o = 0; o < out; ++o)
      EXPECT_EQ(y[3 * out + o], y0[3 * out + o]);
  }
  SetKernelThreads(1);
}

TEST(LoraSgmvTest, NoSegmentsIsANoOp) {
  std::vector<float> x(4, 1.0f), y(4, 3.0f);
  LoraSgmv(nullptr, 0, x.data(), 2, 2, y.data());
  EXPECT_EQ(y, std::vector<float>(4, 3.0f));
}

}  // namespace
}  // namespace edgesplit::kernels
