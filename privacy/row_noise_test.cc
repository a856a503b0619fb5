#include "privacy/row_noise.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace edgesplit::privacy {
namespace {

using ::testing::HasSubstr;

double NormalCdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

TEST(NoiseSourceTest, GaussianHasTheNormalDistribution) {
  auto noise = NoiseSource::Seeded(7);
  const int n = 200000;
  std::vector<double> z(n);
  double sum = 0, sq = 0, fourth = 0;
  for (double& x : z) {
    x = noise->Gaussian();
    sum += x;
    sq += x * x;
    fourth += x * x * x * x;
  }
  const double mean = sum / n;
  const double var = sq / n - mean * mean;
  EXPECT_NEAR(mean, 0, 5 / std::sqrt(n));
  EXPECT_NEAR(var, 1, 5 * std::sqrt(2.0 / n));
  EXPECT_NEAR(fourth / n, 3, 5 * std::sqrt(96.0 / n));
  // Kolmogorov–Smirnov against N(0, 1): the 0.1% critical value is
  // 1.95 / sqrt(n).
  std::sort(z.begin(), z.end());
  double d = 0;
  for (int i = 0; i < n; ++i) {
    const double f = NormalCdf(z[i]);
    d = std::max({d, f - double(i) / n, double(i + 1) / n - f});
  }
  EXPECT_LT(d, 1.95 / std::sqrt(n));
}

TEST(NoiseSourceTest, SeededRepeatsAndSecureSourcesDiffer) {
  auto a = NoiseSource::Seeded(3), b = NoiseSource::Seeded(3),
       c = NoiseSource::Seeded(4);
  for (int i = 0; i < 10; ++i) {
    const double x = a->Gaussian();
    EXPECT_EQ(x, b->Gaussian());
    EXPECT_NE(x, c->Gaussian());
  }
  auto s1 = NoiseSource::Secure(), s2 = NoiseSource::Secure();
  ASSERT_TRUE(s1.ok() && s2.ok());
  EXPECT_NE((*s1)->Uniform(), (*s2)->Uniform());
  for (int i = 0; i < 100000; ++i) {
    const double u = (*s1)->Uniform();
    ASSERT_GT(u, 0);
    ASSERT_LE(u, 1);
  }
}

TEST(ClipRowsTest, BoundsEveryRowAndLeavesShortRowsAlone) {
  auto noise = NoiseSource::Seeded(1);
  const int rows = 50, cols = 64;
  std::vector<float> x(rows * cols);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      x[r * cols + c] = static_cast<float>(noise->Gaussian() * (r % 5));
    }
  }
  const std::vector<float> before = x;
  const double clip = 4.0;
  const int64_t clipped = ClipRows(x.data(), rows, cols, clip);
  int64_t expected = 0;
  for (int r = 0; r < rows; ++r) {
    double before_sq = 0, after_sq = 0;
    for (int c = 0; c < cols; ++c) {
      before_sq += double{before[r * cols + c]} * before[r * cols + c];
      after_sq += double{x[r * cols + c]} * x[r * cols + c];
    }
    EXPECT_LE(std::sqrt(after_sq), clip) << "row " << r;
    if (std::sqrt(before_sq) <= clip) {
      EXPECT_TRUE(std::equal(x.begin() + r * cols, x.begin() + (r + 1) * cols,
                             before.begin() + r * cols))
          << "row " << r << " was within the bound";
    } else {
      ++expected;
      EXPECT_NEAR(std::sqrt(after_sq), clip, 1e-4);
      // Scaled, not reshaped: same direction.
      EXPECT_NEAR(x[r * cols] / before[r * cols],
                  x[r * cols + 1] / before[r * cols + 1], 1e-5);
    }
  }
  EXPECT_EQ(clipped, expected);
  EXPECT_GT(clipped, 0);
  EXPECT_LT(clipped, rows);
}

TEST(RowsRdpTest, IsTheGaussianMechanismOfSensitivityTwiceTheClip) {
  // n rows at multiplier σ: n · α·(2C)²/(2σ²C²) = 2nα/σ².
  auto rdp = RowsRdp(10, 4.0, {2, 8, 32});
  ASSERT_TRUE(rdp.ok());
  EXPECT_NEAR((*rdp)[0], 2 * 10 * 2 / 16.0, 1e-12);
  EXPECT_NEAR((*rdp)[1], 2 * 10 * 8 / 16.0, 1e-12);
  EXPECT_NEAR((*rdp)[2], 2 * 10 * 32 / 16.0, 1e-12);
  auto sigma = RowNoiseForEpsilon(8, 1e-5, 100);
  ASSERT_TRUE(sigma.ok());
  auto spent = RowsRdp(100, *sigma);
  ASSERT_TRUE(spent.ok());
  auto eps = EpsilonFromRdp(DefaultOrders(), *spent, 1e-5);
  ASSERT_TRUE(eps.ok());
  EXPECT_LE(eps->epsilon, 8);
  EXPECT_GT(eps->epsilon, 7.99);
  // More rows need more noise for the same ε.
  EXPECT_GT(*RowNoiseForEpsilon(8, 1e-5, 400), *sigma);
}

TEST(SequencePrivatizerTest, NoisesNewRowsAndReplaysReleasedOnes) {
  const int cols = 16;
  const double clip = 2.0, sigma = 0.5;
  SequencePrivatizer p(cols, clip, sigma, 6, NoiseSource::Seeded(9));
  std::vector<float> x(4 * cols, 0.25f);
  std::vector<float> first = x;
  ASSERT_TRUE(p.Privatize(0, {5, 6, 7, 8}, first.data()).ok());
  EXPECT_EQ(p.released_rows(), 4);
  EXPECT_NE(first, x);  // Every row changed.
  for (int r = 0; r < 4; ++r) {
    EXPECT_FALSE(std::equal(first.begin() + r * cols,
                            first.begin() + (r + 1) * cols, x.begin()));
  }
  // A replay from the start (new route) gets the same rows, spends nothing.
  std::vector<float> replay(5 * cols, 0.25f);
  ASSERT_TRUE(p.Privatize(0, {5, 6, 7, 8, 9}, replay.data()).ok());
  EXPECT_TRUE(std::equal(first.begin(), first.end(), replay.begin()));
  EXPECT_EQ(p.released_rows(), 5);
  // Another token at a released position would be a second release.
  std::vector<float> other(cols, 0.25f);
  absl::Status s = p.Privatize(2, {1}, other.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("position 2 was released for token 7"));
  EXPECT_EQ(other, std::vector<float>(cols, 0.25f));
  // Beyond the calibrated rows.
  std::vector<float> two(2 * cols, 0.25f);
  s = p.Privatize(5, {1, 2}, two.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("calibrated for 6 rows"));
  EXPECT_EQ(p.released_rows(), 5);
  // A gap is refused too.
  EXPECT_FALSE(p.Privatize(7, {1}, other.data()).ok());
}

TEST(SequencePrivatizerTest, NoiseHasTheCalibratedScale) {
  const int cols = 256, rows = 200;
  const double clip = 3.0, sigma = 1.5;
  SequencePrivatizer p(cols, clip, sigma, rows, NoiseSource::Seeded(11));
  std::vector<float> x(rows * cols, 1.0f);  // Norm 16 > clip: clipped.
  std::vector<int32_t> tokens(rows, 1);
  ASSERT_TRUE(p.Privatize(0, tokens, x.data()).ok());
  EXPECT_EQ(p.clipped_rows(), rows);
  const double clipped_value = clip / std::sqrt(double{cols});
  double sum = 0, sq = 0;
  for (float v : x) {
    const double e = v - clipped_value;
    sum += e;
    sq += e * e;
  }
  const double n = x.size();
  EXPECT_NEAR(sum / n, 0, 5 * sigma * clip / std::sqrt(n));
  EXPECT_NEAR(std::sqrt(sq / n), sigma * clip, 0.01 * sigma * clip);
}

}  // namespace
}  // namespace edgesplit::privacy
