// The compute-peak probe: each level's loop does the multiply-adds it
// counts (the int8 loops' sums are known exactly), and the probe measures a
// positive rate. Its speed is the benchmark's business, not a test's.
#include "kernels/cpu/compute_peak.h"

#include <cmath>

#include "gtest/gtest.h"
#include "kernels/cpu/gemv_internal.h"
#include "kernels/cpu/isa.h"

namespace edgesplit::kernels {
namespace {

TEST(ComputePeakTest, EveryLevelCountsTheMultiplyAddsItDoes) {
  constexpr int64_t kIters = 100;
  for (Isa isa : SupportedIsas()) {
    const internal::GemvKernels& k = internal::KernelsFor(isa);
    float sink = 0;
    const int64_t f32 = k.peak_f32(kIters, &sink);
    EXPECT_TRUE(std::isfinite(sink)) << IsaName(isa);
    float i8_sink = 0;
    const int64_t i8 = k.peak_i8(kIters, &i8_sink);
    switch (isa) {
      case Isa::kScalar:
        EXPECT_EQ(f32, kIters * 8);
        EXPECT_EQ(i8, kIters * 8);
        break;
      case Isa::kAvx2:
        EXPECT_EQ(f32, kIters * 12 * 8);
        EXPECT_EQ(i8, kIters * 12 * 32);
        // 12 accumulators of 8 lanes start at k and gain 4 x (3 x -5) per
        // lane per round.
        EXPECT_EQ(i8_sink, 8.0f * 66 - 12 * 8 * 60 * kIters);
        break;
      case Isa::kAvx512:
        EXPECT_EQ(f32, kIters * 12 * 16);
        EXPECT_EQ(i8, kIters * 12 * 64);
        EXPECT_EQ(i8_sink, 16.0f * 66 - 12 * 16 * 60 * kIters);
        break;
    }
  }
}

TEST(ComputePeakTest, MeasuresPositiveRates) {
  const ComputePeak peak = MeasureComputePeak(1);
  EXPECT_GT(peak.f32_fma_per_s, 0);
  EXPECT_GT(peak.i8_mac_per_s, 0);
}

}  // namespace
}  // namespace edgesplit::kernels
