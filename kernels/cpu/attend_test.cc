#include "kernels/cpu/attend.h"

#include <cfloat>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace edgesplit::kernels {
namespace {

// Softmax and weighted sum in double: what every level approximates.
std::vector<double> Exact(const std::vector<float>& scores, float scale,
                          const std::vector<float>& values, int64_t d) {
  const int64_t len = static_cast<int64_t>(scores.size());
  double mx = -INFINITY;
  for (float s : scores) mx = std::max(mx, double{s * scale});
  std::vector<double> p(len);
  double sum = 0;
  for (int64_t j = 0; j < len; ++j) {
    p[j] = std::exp(double{scores[j] * scale} - mx);
    sum += p[j];
  }
  std::vector<double> out(d, 0.0);
  for (int64_t j = 0; j < len; ++j) {
    for (int64_t i = 0; i < d; ++i) out[i] += p[j] / sum * values[j * d + i];
  }
  return out;
}

// Every level, every length across the 16-wide steps and head widths
// across the 64-wide register block (masked tails on both), against the
// double reference: within a few ulps of the sum of |p_j v_ji|.
TEST(SoftmaxValuesTest, EveryLevelMatchesTheExactSum) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (Isa isa : SupportedIsas()) {
    for (int64_t d : {16, 24, 64, 80, 128, 130}) {
      for (int64_t len : {1, 2, 15, 16, 17, 33, 100, 1000}) {
        std::vector<float> scores(len), values(len * d);
        // Spread scores over a wide range: exp underflows for some.
        for (float& s : scores) s = 12.0f * normal(rng);
        for (float& v : values) v = normal(rng);
        const float scale = 0.125f;
        const std::vector<double> want = Exact(scores, scale, values, d);
        std::vector<float> work = scores, out(d, -1.0f);
        SoftmaxValues(isa, work.data(), len, scale, values.data(), d,
                      out.data());
        for (int64_t i = 0; i < d; ++i) {
          double bound = 0;
          for (int64_t j = 0; j < len; ++j) {
            bound += std::fabs(values[j * d + i]);
          }
          // Each p_j within ~4 ulps, then len additions at 1 ulp each.
          bound *= 1e-6 + 1.2e-7 * std::log2(double(len) + 1);
          ASSERT_NEAR(out[i], want[i], bound + 1e-30)
              << IsaName(isa) << " d " << d << " len " << len << " i " << i;
        }
      }
    }
  }
}

// The vector levels' exp against libm's over the range softmax feeds it
// (x <= 0): within 2.5 ulps (a few denormal steps below 1.2e-38), 1
// exactly at 0, 0 far below (AVX2 flushes below -87, where expf's results
// are under 1.7e-38).
TEST(SoftmaxValuesTest, VectorExpAgreesWithLibm) {
  int tested = 0;
  for (Isa isa : SupportedIsas()) {
    if (isa == Isa::kScalar) continue;
    ++tested;
    const float flush = isa == Isa::kAvx2 ? 1.7e-38f : 1e-44f;
    // One key at 0 and one at x: p = (1, e^x) / (1 + e^x); with unit
    // values the second output column is e^x / (1 + e^x).
    for (float x = -100.0f; x <= 0.0f; x += 0.013f) {
      float scores[2] = {0.0f, x};
      const float values[4] = {1.0f, 0.0f, 0.0f, 1.0f};  // d = 2.
      float out[2];
      SoftmaxValues(isa, scores, 2, 1.0f, values, 2, out);
      const float e = std::exp(x);
      const float ulp = std::nextafter(e, 1.0f) - e;
      ASSERT_NEAR(scores[1], e, 2.5f * ulp + flush) << IsaName(isa) << " " << x;
      ASSERT_EQ(scores[0], 1.0f) << IsaName(isa);
      ASSERT_NEAR(out[1], e / (1.0f + e), 1e-6f * (e / (1.0f + e)) + flush)
          << IsaName(isa) << " " << x;
    }
    for (float low : {-200.0f, -1e30f, -FLT_MAX, -INFINITY}) {
      float far[2] = {0.0f, low};
      const float values[2] = {1.0f, 1.0f};
      float out[1];
      SoftmaxValues(isa, far, 2, 1.0f, values, 1, out);
      EXPECT_EQ(far[1], 0.0f) << IsaName(isa) << " " << low;
      EXPECT_EQ(out[0], 1.0f) << IsaName(isa) << " " << low;
    }
    // Corrupt scores stay visible, as with libm: a NaN score, or nothing
    // but -inf, gives NaN rather than a plausible average.
    for (const auto& bad :
         {std::vector<float>{0.0f, NAN, 1.0f},
          std::vector<float>{-INFINITY, -INFINITY, -INFINITY}}) {
      std::vector<float> s = bad;
      const float values[3] = {1.0f, 2.0f, 3.0f};
      float out[1];
      SoftmaxValues(isa, s.data(), 3, 1.0f, values, 1, out);
      EXPECT_TRUE(std::isnan(out[0])) << IsaName(isa) << " " << out[0];
    }
  }
  if (tested == 0) GTEST_SKIP() << "no vector level on this CPU";
}

}  // namespace
}  // namespace edgesplit::kernels
