#include "privacy/training_privatizer.h"

#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace edgesplit::privacy {
namespace {

using ::testing::HasSubstr;

std::string Window(int64_t first) {
  std::vector<int64_t> ids = {first, first + 1, first + 2};
  return TrainingPrivatizer::Key(ids);
}

TEST(TrainingPrivatizerTest, ReleasesActivationsOnceAndCountsGradientUses) {
  const int cols = 8, rows = 2;
  TrainingPrivatizer p(cols, 1.0, 0.5, NoiseSource::Seeded(5));
  std::vector<float> x(rows * cols, 3.0f);
  // Nothing before calibration.
  EXPECT_EQ(p.Activations(Window(1), x.data(), rows).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(x, std::vector<float>(rows * cols, 3.0f));
  ASSERT_TRUE(
      p.Calibrate(2.0, {{Window(1), {rows, 2}}, {Window(2), {rows, 0}}}).ok());
  EXPECT_FALSE(p.Calibrate(3.0, {}).ok());  // Once.

  std::vector<float> first = x;
  ASSERT_TRUE(p.Activations(Window(1), first.data(), rows).ok());
  EXPECT_NE(first, x);
  EXPECT_EQ(p.window_rows(Window(1)), rows);
  // Later uses (epochs, replays, evaluation) resend the release: no cost.
  std::vector<float> again(rows * cols, -7.0f);
  ASSERT_TRUE(p.Activations(Window(1), again.data(), rows).ok());
  EXPECT_EQ(again, first);
  EXPECT_EQ(p.window_rows(Window(1)), rows);

  // Gradients: each use a release, as many as allowed.
  for (int use = 0; use < 2; ++use) {
    std::vector<float> g(rows * cols, 1.0f);
    ASSERT_TRUE(p.Gradients(Window(1), g.data(), rows).ok());
    EXPECT_NE(g, std::vector<float>(rows * cols, 1.0f));
  }
  EXPECT_EQ(p.window_rows(Window(1)), 3 * rows);
  EXPECT_EQ(p.max_window_rows(), 3 * rows);
  std::vector<float> g(rows * cols, 1.0f);
  absl::Status s = p.Gradients(Window(1), g.data(), rows);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("released 2 times"));
  EXPECT_EQ(g, std::vector<float>(rows * cols, 1.0f));  // Untouched.
  // A window not in the run's plan gets no release at all, nor one of
  // another length.
  EXPECT_EQ(p.Gradients(Window(9), g.data(), rows).code(),
            absl::StatusCode::kFailedPrecondition);
  std::vector<float> other(rows * cols, 1.0f);
  EXPECT_EQ(p.Activations(Window(9), other.data(), rows).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(p.Activations(Window(2), other.data(), 1).ok());
  EXPECT_EQ(other, std::vector<float>(rows * cols, 1.0f));
  // Other windows are counted apart.
  std::vector<float> y(rows * cols, 0.1f);
  ASSERT_TRUE(p.Activations(Window(2), y.data(), rows).ok());
  EXPECT_EQ(p.window_rows(Window(2)), rows);
  EXPECT_EQ(p.max_window_rows(), 3 * rows);
}

TEST(TrainingPrivatizerTest, ClipsEachKindToItsBoundWithScaledNoise) {
  const int cols = 512, rows = 64;
  const double clip = 4.0, grad_clip = 0.25, sigma = 0.8;
  TrainingPrivatizer p(cols, clip, grad_clip, NoiseSource::Seeded(8));
  std::vector<float> zeros(rows * cols, 0.0f);
  ASSERT_TRUE(p.Calibrate(sigma, {{Window(1), {rows, 1}}}).ok());
  auto rms = [&](const std::vector<float>& v) {
    double sq = 0;
    for (float x : v) sq += double{x} * x;
    return std::sqrt(sq / v.size());
  };
  std::vector<float> a = zeros, g = zeros;
  ASSERT_TRUE(p.Activations(Window(1), a.data(), rows).ok());
  ASSERT_TRUE(p.Gradients(Window(1), g.data(), rows).ok());
  // Zero rows: what arrives is pure noise of stddev sigma x the bound.
  EXPECT_NEAR(rms(a), sigma * clip, 0.02 * sigma * clip);
  EXPECT_NEAR(rms(g), sigma * grad_clip, 0.02 * sigma * grad_clip);
}

TEST(TrainingPrivatizerTest, KeptReleasesAreBounded) {
  const int cols = 4, rows = 8;  // 128 bytes per window.
  TrainingPrivatizer p(cols, 1.0, 1.0, NoiseSource::Seeded(2),
                       /*max_bytes=*/300);
  ASSERT_TRUE(p.Calibrate(1.0, {{Window(1), {rows, 0}},
                                {Window(2), {rows, 0}},
                                {Window(3), {rows, 0}}})
                  .ok());
  std::vector<float> x(rows * cols, 0.5f);
  EXPECT_TRUE(p.Activations(Window(1), x.data(), rows).ok());
  EXPECT_TRUE(p.Activations(Window(2), x.data(), rows).ok());
  absl::Status s = p.Activations(Window(3), x.data(), rows);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(p.window_rows(Window(3)), 0);
  EXPECT_TRUE(p.Activations(Window(1), x.data(), rows).ok());  // Kept.
}

// Trained device blocks (DP-SGD): every send is a fresh, counted release.
TEST(TrainingPrivatizerTest, FreshActivationsAreNewReleasesEachUse) {
  const int cols = 4, rows = 3;
  TrainingPrivatizer p(cols, 1.0, 1.0, NoiseSource::Seeded(9));
  TrainingPrivatizer::Allowance a;
  a.rows = rows;
  a.activation_uses = 2;
  ASSERT_TRUE(p.Calibrate(1.5, {{Window(1), a}}).ok());
  const std::vector<float> x(rows * cols, 0.25f);
  std::vector<float> first = x, second = x;
  ASSERT_TRUE(p.Activations(Window(1), first.data(), rows).ok());
  ASSERT_TRUE(p.Activations(Window(1), second.data(), rows).ok());
  EXPECT_NE(first, x);
  EXPECT_NE(second, first);  // Fresh noise, not the earlier release.
  EXPECT_EQ(p.window_rows(Window(1)), 2 * rows);
  std::vector<float> third = x;
  EXPECT_EQ(p.Activations(Window(1), third.data(), rows).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(third, x);  // Nothing released.
}

}  // namespace
}  // namespace edgesplit::privacy
