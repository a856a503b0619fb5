// Rényi differential privacy accounting for the Gaussian mechanism and its
// Poisson-subsampled form (DP-SGD), composed over steps and sessions and
// converted to (ε, δ).
//
// A mechanism adding N(0, σ²·C²) noise to a sum whose L2 sensitivity is C
// (a clipped activation, gradient or update) has, at Rényi order α,
//   RDP(α) = α / (2σ²)                                   (Mironov 2017)
// and with each record taking part with probability q (Poisson sampling),
//   RDP(α) = log A_α / (α − 1),  A_α = E_{z∼N(0,σ²)}[(1 − q +
//   q·e^{(2z−1)/(2σ²)})^α]
// computed in closed form for integer α (a binomial sum) and by the
// two-series expansion of Mironov, Talwar and Zhang (2019, §3.3) for
// fractional α. RDP composes by addition over mechanisms at the same α. An
// RDP guarantee converts to (ε, δ) by Balle et al. (2020, Thm. 21):
//   ε = RDP(α) + log((α − 1)/α) − (log δ + log α) / (α − 1),
// minimized over the orders tracked.
//
// Written here (no Debian package has an RDP accountant); tested against
// the closed form, numerical integration of the definition, and
// composition/conversion properties (rdp_accountant_test.cc).
// Pure computation: thread-compatible.
#ifndef EDGESPLIT_PRIVACY_RDP_ACCOUNTANT_H_
#define EDGESPLIT_PRIVACY_RDP_ACCOUNTANT_H_

#include <vector>

#include "absl/status/statusor.h"

namespace edgesplit::privacy {

// The orders tracked by default: 1.25 … 10 in quarter steps, 11 … 63,
// then 64, 128, 256, 512 (wide enough for ε from ~0.01 to ~100).
const std::vector<double>& DefaultOrders();

// RDP at order `alpha` (> 1) of one step of the Gaussian mechanism with
// noise multiplier `sigma` (> 0), each record sampled with probability
// `q` in [0, 1] (q = 1: no sampling). INVALID_ARGUMENT naming the value
// otherwise. May be +infinity (no finite guarantee at that order).
absl::StatusOr<double> SampledGaussianRdp(double q, double sigma, double alpha);

struct EpsilonAt {
  double epsilon = 0;
  double order = 0;  // The order that gave it.
};

// (ε, δ) from RDP values at `orders` (same length): the smallest ε over
// the orders. δ in (0, 1).
absl::StatusOr<EpsilonAt> EpsilonFromRdp(const std::vector<double>& orders,
                                         const std::vector<double>& rdp,
                                         double delta);

// Accumulates privacy spent: RDP per order, summed over every mechanism
// applied to the same data.
class RdpAccountant {
 public:
  explicit RdpAccountant(std::vector<double> orders = DefaultOrders());

  // `steps` applications of the sampled Gaussian mechanism.
  absl::Status AddSampledGaussian(double q, double sigma, int64_t steps);
  // Another accountant's spending (e.g. an earlier session's, restored).
  absl::Status Add(const std::vector<double>& rdp);

  absl::StatusOr<EpsilonAt> Epsilon(double delta) const;
  const std::vector<double>& orders() const { return orders_; }
  const std::vector<double>& rdp() const { return rdp_; }

 private:
  std::vector<double> orders_;
  std::vector<double> rdp_;
};

// The smallest noise multiplier σ (to ~1e-4 relative) with which `steps`
// steps sampling with probability `q` stay within (ε, δ), on `orders`;
// INVALID_ARGUMENT when even σ = 10^4 cannot.
absl::StatusOr<double> NoiseForEpsilon(
    double epsilon, double delta, double q, int64_t steps,
    const std::vector<double>& orders = DefaultOrders());

}  // namespace edgesplit::privacy

#endif  // EDGESPLIT_PRIVACY_RDP_ACCOUNTANT_H_
