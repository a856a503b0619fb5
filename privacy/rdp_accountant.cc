#include "privacy/rdp_accountant.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace edgesplit::privacy {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// log(e^a + e^b).
double LogAdd(double a, double b) {
  if (a == -kInf) return b;
  if (b == -kInf) return a;
  const double hi = std::max(a, b), lo = std::min(a, b);
  return hi + std::log1p(std::exp(lo - hi));
}

// log(e^a − e^b) for a >= b; -inf when they cancel (or rounding makes
// b > a: the series' negative terms never truly exceed its positive ones).
double LogSub(double a, double b) {
  if (b == -kInf) return a;
  if (b >= a) return -kInf;
  return a + std::log(-std::expm1(b - a));
}

// log(erfc(x)), accurate where erfc underflows (asymptotic series).
double LogErfc(double x) {
  if (x < 25) return std::log(std::erfc(x));
  const double x2 = x * x;
  return -x2 - std::log(x) - 0.5 * std::log(M_PI) +
         std::log1p(-1 / (2 * x2) + 3 / (4 * x2 * x2) -
                    15 / (8 * x2 * x2 * x2));
}

// log A_α for integer α: Σ_k C(α,k) (1−q)^{α−k} q^k e^{(k²−k)/(2σ²)}.
double LogAInt(double q, double sigma, int64_t alpha) {
  double log_a = -kInf;
  const double s2 = 2 * sigma * sigma;
  for (int64_t k = 0; k <= alpha; ++k) {
    const double log_binom = std::lgamma(static_cast<double>(alpha) + 1) -
                             std::lgamma(static_cast<double>(k) + 1) -
                             std::lgamma(static_cast<double>(alpha - k) + 1);
    const double kk = static_cast<double>(k);
    const double term = log_binom + kk * std::log(q) +
                        static_cast<double>(alpha - k) * std::log1p(-q) +
                        (kk * kk - kk) / s2;
    log_a = LogAdd(log_a, term);
  }
  return log_a;
}

// log A_α for fractional α: the two series of Mironov, Talwar and Zhang
// (2019, §3.3), split at z0 where the two mixture terms are equal.
double LogAFrac(double q, double sigma, double alpha) {
  const double z0 = sigma * sigma * std::log(1 / q - 1) + 0.5;
  const double s2 = 2 * sigma * sigma;
  const double root2_sigma = std::sqrt(2.0) * sigma;
  double log_a0 = -kInf, log_a1 = -kInf;
  double log_coef = 0;  // log |C(α, i)|
  bool positive = true;
  for (int64_t i = 0;; ++i) {
    const double di = static_cast<double>(i);
    if (i > 0) {
      // C(α, i) = C(α, i−1) · (α − i + 1) / i.
      const double factor = alpha - di + 1;
      log_coef += std::log(std::fabs(factor)) - std::log(di);
      if (factor < 0) positive = !positive;
    }
    const double j = alpha - di;
    const double log_t0 = log_coef + di * std::log(q) + j * std::log1p(-q);
    const double log_t1 = log_coef + j * std::log(q) + di * std::log1p(-q);
    const double log_e0 = std::log(0.5) + LogErfc((di - z0) / root2_sigma);
    const double log_e1 = std::log(0.5) + LogErfc((z0 - j) / root2_sigma);
    const double log_s0 = log_t0 + (di * di - di) / s2 + log_e0;
    const double log_s1 = log_t1 + (j * j - j) / s2 + log_e1;
    if (positive) {
      log_a0 = LogAdd(log_a0, log_s0);
      log_a1 = LogAdd(log_a1, log_s1);
    } else {
      log_a0 = LogSub(log_a0, log_s0);
      log_a1 = LogSub(log_a1, log_s1);
    }
    // Terms fall off super-exponentially once i passes α and z0.
    if (di > alpha + 1 && std::max(log_s0, log_s1) < -30) break;
    if (i > 100000) break;  // Unreachable for orders up to 512.
  }
  return LogAdd(log_a0, log_a1);
}

absl::Status CheckSampling(double q, double sigma) {
  if (!(q >= 0 && q <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling rate q = ", q, " is not in [0, 1]"));
  }
  if (!(sigma > 0) || !std::isfinite(sigma)) {
    return absl::InvalidArgumentError(
        absl::StrCat("noise multiplier sigma = ", sigma, " is not > 0"));
  }
  return absl::OkStatus();
}

}  // namespace

const std::vector<double>& DefaultOrders() {
  static const std::vector<double> orders = [] {
    std::vector<double> o;
    for (double a = 1.25; a <= 10; a += 0.25) o.push_back(a);
    for (int a = 11; a <= 64; ++a) o.push_back(a);
    for (double a : {128.0, 256.0, 512.0}) o.push_back(a);
    return o;
  }();
  return orders;
}

absl::StatusOr<double> SampledGaussianRdp(double q, double sigma,
                                          double alpha) {
  ES_RETURN_IF_ERROR(CheckSampling(q, sigma));
  if (!(alpha > 1) || !std::isfinite(alpha)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Renyi order alpha = ", alpha, " is not > 1"));
  }
  if (q == 0) return 0.0;
  if (q == 1) return alpha / (2 * sigma * sigma);
  const double log_a = alpha == std::floor(alpha)
                           ? LogAInt(q, sigma, static_cast<int64_t>(alpha))
                           : LogAFrac(q, sigma, alpha);
  return log_a / (alpha - 1);
}

absl::StatusOr<EpsilonAt> EpsilonFromRdp(const std::vector<double>& orders,
                                         const std::vector<double>& rdp,
                                         double delta) {
  if (orders.size() != rdp.size() || orders.empty()) {
    return absl::InvalidArgumentError("orders and RDP values differ in count");
  }
  if (!(delta > 0 && delta < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("delta = ", delta, " is not in (0, 1)"));
  }
  // Nothing released is (0, 0)-DP; the conversion below is loose there.
  if (std::all_of(rdp.begin(), rdp.end(), [](double r) { return r == 0; })) {
    return EpsilonAt{0, orders.back()};
  }
  EpsilonAt best{kInf, 0};
  for (size_t i = 0; i < orders.size(); ++i) {
    const double a = orders[i];
    if (!(a > 1) || std::isnan(rdp[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad order ", a, " or RDP ", rdp[i]));
    }
    // Balle et al. (2020), Theorem 21.
    const double eps = rdp[i] + std::log((a - 1) / a) -
                       (std::log(delta) + std::log(a)) / (a - 1);
    if (eps < best.epsilon) best = {std::max(eps, 0.0), a};
  }
  return best;
}

RdpAccountant::RdpAccountant(std::vector<double> orders)
    : orders_(std::move(orders)), rdp_(orders_.size(), 0) {}

absl::Status RdpAccountant::AddSampledGaussian(double q, double sigma,
                                               int64_t steps) {
  if (steps < 0) {
    return absl::InvalidArgumentError(absl::StrCat("steps = ", steps));
  }
  std::vector<double> add(orders_.size());
  for (size_t i = 0; i < orders_.size(); ++i) {
    ES_ASSIGN_OR_RETURN(double r, SampledGaussianRdp(q, sigma, orders_[i]));
    add[i] = r * static_cast<double>(steps);
  }
  return Add(add);
}

absl::Status RdpAccountant::Add(const std::vector<double>& rdp) {
  if (rdp.size() != orders_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RDP of ", rdp.size(), " orders added to ", orders_.size()));
  }
  for (double r : rdp) {
    if (!(r >= 0)) {
      return absl::InvalidArgumentError(absl::StrCat("RDP value ", r));
    }
  }
  for (size_t i = 0; i < rdp.size(); ++i) rdp_[i] += rdp[i];
  return absl::OkStatus();
}

absl::StatusOr<EpsilonAt> RdpAccountant::Epsilon(double delta) const {
  return EpsilonFromRdp(orders_, rdp_, delta);
}

absl::StatusOr<double> NoiseForEpsilon(double epsilon, double delta, double q,
                                       int64_t steps,
                                       const std::vector<double>& orders) {
  if (!(epsilon > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("target epsilon = ", epsilon, " is not > 0"));
  }
  auto eps_at = [&](double sigma) -> absl::StatusOr<double> {
    RdpAccountant a(orders);
    ES_RETURN_IF_ERROR(a.AddSampledGaussian(q, sigma, steps));
    ES_ASSIGN_OR_RETURN(EpsilonAt e, a.Epsilon(delta));
    return e.epsilon;
  };
  double lo = 1e-2, hi = 1e4;
  ES_ASSIGN_OR_RETURN(double at_hi, eps_at(hi));
  if (at_hi > epsilon) {
    return absl::InvalidArgumentError(absl::StrCat(
        "epsilon ", epsilon, " is out of reach for ", steps,
        " steps at sampling rate ", q, " (sigma 1e4 gives ", at_hi, ")"));
  }
  ES_ASSIGN_OR_RETURN(double at_lo, eps_at(lo));
  if (at_lo <= epsilon) return lo;
  // ε falls as σ grows: bisect in log σ.
  while (hi / lo > 1 + 1e-5) {
    const double mid = std::sqrt(lo * hi);
    ES_ASSIGN_OR_RETURN(double e, eps_at(mid));
    (e <= epsilon ? hi : lo) = mid;
  }
  return hi;
}

}  // namespace edgesplit::privacy
