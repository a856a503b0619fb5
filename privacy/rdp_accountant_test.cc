#include "privacy/rdp_accountant.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace edgesplit::privacy {
namespace {

using ::testing::HasSubstr;

// log A_α by direct numerical integration of its definition,
//   A_α = ∫ N(z; 0, σ²) · (1 − q + q·e^{(2z−1)/(2σ²)})^α dz,
// with composite Simpson in long double, in log space (shifted by the
// integrand's maximum): a reference independent of the series.
double LogAByIntegration(double q, double sigma, double alpha) {
  const long double s2 = 2.0L * sigma * sigma;
  auto log_f = [&](long double z) {
    const long double ratio = (1.0L - q) + q * std::exp((2 * z - 1) / s2);
    return -z * z / s2 - 0.5L * std::log(M_PI * s2) + alpha * std::log(ratio);
  };
  const long double lo = -40.0L * sigma, hi = alpha + 40.0L * sigma;
  const int64_t n = 2 * static_cast<int64_t>((hi - lo) / (sigma / 400.0L));
  const long double h = (hi - lo) / n;
  long double peak = -INFINITY;
  for (int64_t i = 0; i <= n; ++i) peak = std::max(peak, log_f(lo + i * h));
  long double sum = 0;
  for (int64_t i = 0; i <= n; ++i) {
    const long double w = (i == 0 || i == n) ? 1 : (i % 2 == 1 ? 4 : 2);
    sum += w * std::exp(log_f(lo + i * h) - peak);
  }
  return static_cast<double>(peak + std::log(sum * h / 3));
}

TEST(RdpAccountantTest, SampledGaussianMatchesItsDefinition) {
  for (double q : {0.001, 0.01, 0.1, 0.5}) {
    for (double sigma : {0.8, 1.1, 4.0}) {
      for (double alpha : {1.5, 2.0, 2.75, 8.0, 13.5, 32.0}) {
        auto rdp = SampledGaussianRdp(q, sigma, alpha);
        ASSERT_TRUE(rdp.ok()) << rdp.status();
        const double want = LogAByIntegration(q, sigma, alpha) / (alpha - 1);
        EXPECT_NEAR(*rdp, want, 1e-6 * std::fabs(want) + 1e-12)
            << "q " << q << " sigma " << sigma << " alpha " << alpha;
      }
    }
  }
}

TEST(RdpAccountantTest, WithoutSamplingItIsTheGaussianMechanismsClosedForm) {
  // Through the general series (q just below 1), integer and fractional.
  for (double sigma : {0.7, 1.0, 3.0}) {
    for (double alpha : {1.5, 2.0, 3.25, 10.0, 64.0}) {
      auto rdp = SampledGaussianRdp(1 - 1e-12, sigma, alpha);
      ASSERT_TRUE(rdp.ok());
      const double closed = alpha / (2 * sigma * sigma);
      EXPECT_NEAR(*rdp, closed, 1e-6 * closed) << sigma << " " << alpha;
      EXPECT_EQ(*SampledGaussianRdp(1, sigma, alpha), closed);
    }
  }
  EXPECT_EQ(*SampledGaussianRdp(0, 1, 2), 0);
}

TEST(RdpAccountantTest, ComposesByAdditionAndConvertsMonotonically) {
  RdpAccountant once, twice;
  ASSERT_TRUE(once.AddSampledGaussian(0.01, 1.1, 1000).ok());
  ASSERT_TRUE(twice.AddSampledGaussian(0.01, 1.1, 400).ok());
  ASSERT_TRUE(twice.AddSampledGaussian(0.01, 1.1, 600).ok());
  for (size_t i = 0; i < once.rdp().size(); ++i) {
    EXPECT_NEAR(once.rdp()[i], twice.rdp()[i], 1e-9 * once.rdp()[i]);
  }
  // ε grows with steps and falls with δ and with σ.
  double last = 0;
  for (int64_t steps : {10, 100, 1000, 10000}) {
    RdpAccountant a;
    ASSERT_TRUE(a.AddSampledGaussian(0.01, 1.1, steps).ok());
    const double eps = a.Epsilon(1e-5)->epsilon;
    EXPECT_GT(eps, last) << steps;
    last = eps;
  }
  EXPECT_GT(once.Epsilon(1e-6)->epsilon, once.Epsilon(1e-5)->epsilon);
  RdpAccountant noisier;
  ASSERT_TRUE(noisier.AddSampledGaussian(0.01, 2.0, 1000).ok());
  EXPECT_LT(noisier.Epsilon(1e-5)->epsilon, once.Epsilon(1e-5)->epsilon);
}

TEST(RdpAccountantTest, ConversionIsBalleEtAlsTheorem) {
  // One order: ε = r + log((α−1)/α) − (log δ + log α)/(α − 1).
  auto e = EpsilonFromRdp({4.0}, {1.0}, 1e-5);
  ASSERT_TRUE(e.ok());
  EXPECT_NEAR(e->epsilon,
              1.0 + std::log(0.75) - (std::log(1e-5) + std::log(4.0)) / 3,
              1e-12);
  EXPECT_EQ(e->order, 4.0);
  // The Gaussian mechanism (σ = 1, one release) over the default orders
  // is within the order grid of the continuous optimum.
  RdpAccountant g;
  ASSERT_TRUE(g.AddSampledGaussian(1, 1, 1).ok());
  double best = INFINITY;
  for (double a = 1.01; a < 100; a += 0.001) {
    best = std::min(best, a / 2 + std::log((a - 1) / a) -
                              (std::log(1e-5) + std::log(a)) / (a - 1));
  }
  EXPECT_GE(g.Epsilon(1e-5)->epsilon, best - 1e-9);
  EXPECT_LE(g.Epsilon(1e-5)->epsilon, best * 1.01);
}

TEST(RdpAccountantTest, CalibratesNoiseToATargetEpsilon) {
  for (double target : {1.0, 3.0, 8.0}) {
    auto sigma = NoiseForEpsilon(target, 1e-5, 0.01, 1000);
    ASSERT_TRUE(sigma.ok()) << sigma.status();
    RdpAccountant at, below;
    ASSERT_TRUE(at.AddSampledGaussian(0.01, *sigma, 1000).ok());
    ASSERT_TRUE(below.AddSampledGaussian(0.01, *sigma * 0.999, 1000).ok());
    EXPECT_LE(at.Epsilon(1e-5)->epsilon, target);
    EXPECT_GT(below.Epsilon(1e-5)->epsilon, target);
  }
}

TEST(RdpAccountantTest, BadInputsNameTheValue) {
  EXPECT_THAT(SampledGaussianRdp(1.5, 1, 2).status().message(),
              HasSubstr("q = 1.5"));
  EXPECT_THAT(SampledGaussianRdp(0.1, 0, 2).status().message(),
              HasSubstr("sigma = 0"));
  EXPECT_THAT(SampledGaussianRdp(0.1, 1, 1).status().message(),
              HasSubstr("alpha = 1"));
  EXPECT_THAT(EpsilonFromRdp({2}, {1}, 0).status().message(),
              HasSubstr("delta = 0"));
  RdpAccountant a;
  EXPECT_FALSE(a.Add({1.0}).ok());
  EXPECT_FALSE(a.AddSampledGaussian(0.1, 1, -1).ok());
  EXPECT_FALSE(NoiseForEpsilon(0, 1e-5, 0.1, 10).ok());
}

}  // namespace
}  // namespace edgesplit::privacy
