#include "privacy/dp_sgd.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "privacy/training_privatizer.h"

namespace edgesplit::privacy {
namespace {

using ::testing::HasSubstr;

std::string Window(int64_t first) {
  std::vector<int64_t> ids = {first, first + 1};
  return TrainingPrivatizer::Key(ids);
}

// Tiny noise: the release is the clipped mean to float precision.
constexpr double kQuiet = 1e-9;

TEST(DpSgdTest, ClipsEachExampleAndReleasesTheScaledSum) {
  DpSgd d(/*clip=*/1.0, NoiseSource::Seeded(1));
  ASSERT_TRUE(d.Calibrate(kQuiet, {{Window(1), 2}, {Window(2), 2}}).ok());
  // Scale 0.5 (two windows per step): unscaled gradients (6, 8, 0) (norm
  // 10, clipped to (0.6, 0.8, 0)) and (0.2, 0, 0) (kept).
  ASSERT_TRUE(d.AddExample(Window(1), std::vector<float>{3, 4, 0}, 0.5).ok());
  ASSERT_TRUE(
      d.AddExample(Window(2), std::vector<float>{0.1f, 0, 0}, 0.5).ok());
  EXPECT_EQ(d.clipped(), 1);
  absl::StatusOr<std::vector<float>> g = d.Release();
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_NEAR((*g)[0], 0.5 * (0.6 + 0.2), 1e-6);
  EXPECT_NEAR((*g)[1], 0.5 * 0.8, 1e-6);
  EXPECT_NEAR((*g)[2], 0.0, 1e-6);
  // The next step starts empty.
  EXPECT_EQ(d.Release().status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(d.AddExample(Window(2), std::vector<float>{0, 0, 5}, 1.0).ok());
  g = d.Release();
  ASSERT_TRUE(g.ok());
  EXPECT_NEAR((*g)[2], 1.0, 1e-6);  // Clipped to 1.
  EXPECT_EQ(d.max_window_uses(), 2);
  EXPECT_EQ(d.examples(), 3);
}

TEST(DpSgdTest, NoiseHasTheCalibratedScale) {
  const int n = 20000;
  const double sigma = 3.0, clip = 0.5, scale = 0.25;
  DpSgd d(clip, NoiseSource::Seeded(7));
  ASSERT_TRUE(d.Calibrate(sigma, {{Window(1), 1}}).ok());
  ASSERT_TRUE(d.AddExample(Window(1), std::vector<float>(n, 0.0f), scale).ok());
  absl::StatusOr<std::vector<float>> g = d.Release();
  ASSERT_TRUE(g.ok());
  double sum = 0, sq = 0;
  for (float v : *g) {
    sum += v;
    sq += double{v} * v;
  }
  const double want = sigma * clip * scale;
  EXPECT_NEAR(sum / n, 0.0, 5 * want / std::sqrt(n));
  EXPECT_NEAR(std::sqrt(sq / n), want, 0.03 * want);
}

TEST(DpSgdTest, RefusesUnplannedAndExhaustedUses) {
  DpSgd d(1.0, NoiseSource::Seeded(3));
  const std::vector<float> g = {1, 1};
  EXPECT_EQ(d.AddExample(Window(1), g, 1.0).code(),
            absl::StatusCode::kFailedPrecondition);  // Not calibrated.
  ASSERT_TRUE(d.Calibrate(2.0, {{Window(1), 1}}).ok());
  EXPECT_FALSE(d.Calibrate(2.0, {}).ok());  // Once.
  absl::Status s = d.AddExample(Window(9), g, 1.0);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("not calibrated for"));
  ASSERT_TRUE(d.AddExample(Window(1), g, 1.0).ok());
  s = d.AddExample(Window(1), g, 1.0);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  // Wrong size or mixed scales are the caller's bug, not input.
  DpSgd e(1.0, NoiseSource::Seeded(3));
  ASSERT_TRUE(e.Calibrate(2.0, {{Window(1), 3}}).ok());
  ASSERT_TRUE(e.AddExample(Window(1), g, 0.5).ok());  // Fixes the size.
  EXPECT_EQ(e.AddExample(Window(1), std::vector<float>{1}, 0.5).code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(e.AddExample(Window(1), g, 1.0).code(),
            absl::StatusCode::kInternal);
}

TEST(DpSgdTest, NonFiniteGradientsContributeNothing) {
  DpSgd d(1.0, NoiseSource::Seeded(4));
  ASSERT_TRUE(d.Calibrate(kQuiet, {{Window(1), 1}, {Window(2), 1}}).ok());
  const float nan = std::numeric_limits<float>::quiet_NaN();
  ASSERT_TRUE(d.AddExample(Window(1), std::vector<float>{nan, 1}, 1.0).ok());
  ASSERT_TRUE(d.AddExample(Window(2), std::vector<float>{0.5f, 0}, 1.0).ok());
  absl::StatusOr<std::vector<float>> g = d.Release();
  ASSERT_TRUE(g.ok());
  EXPECT_NEAR((*g)[0], 0.5, 1e-6);
  EXPECT_NEAR((*g)[1], 0.0, 1e-6);
}

}  // namespace
}  // namespace edgesplit::privacy
