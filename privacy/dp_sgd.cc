#include "privacy/dp_sgd.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace edgesplit::privacy {

DpSgd::DpSgd(double clip, std::unique_ptr<NoiseSource> noise)
    : clip_(clip), noise_(std::move(noise)) {}

absl::Status DpSgd::Calibrate(double sigma,
                              std::map<std::string, int64_t> uses) {
  if (calibrated()) {
    return absl::FailedPreconditionError(
        "device privacy: the noise is already calibrated (one private run "
        "per training session)");
  }
  if (!(sigma > 0) || !std::isfinite(sigma)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device privacy: noise multiplier ", sigma, " is not > 0"));
  }
  sigma_ = sigma;
  allowed_ = std::move(uses);
  return absl::OkStatus();
}

absl::Status DpSgd::AddExample(const std::string& window,
                               absl::Span<const float> gradient, double scale) {
  if (!calibrated()) {
    return absl::FailedPreconditionError(
        "device privacy: no update before the noise is calibrated for the "
        "run");
  }
  if (params_ < 0) {
    params_ = static_cast<int64_t>(gradient.size());
    sum_.assign(gradient.size(), 0.0);
  }
  if (static_cast<int64_t>(gradient.size()) != params_ || !(scale > 0) ||
      (step_examples_ > 0 && scale != step_scale_)) {
    return absl::InternalError(absl::StrCat(
        "device privacy: a gradient of ", gradient.size(), " values at scale ",
        scale, " where ", params_, " at one scale per step were due"));
  }
  auto allowed = allowed_.find(window);
  if (allowed == allowed_.end()) {
    return absl::FailedPreconditionError(
        "device privacy: a window the run's noise was not calibrated for");
  }
  int64_t& used = used_[window];
  if (used >= allowed->second) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "device privacy: a training window was used ", used,
        " times, as often as the run's noise was calibrated for; another "
        "use would exceed the privacy the run promised"));
  }
  ++used;
  max_uses_ = std::max(max_uses_, used);
  double sq = 0;
  for (float g : gradient) sq += double{g} * g;
  const double norm = std::sqrt(sq) / scale;
  // The unscaled gradient, clipped: g / scale · min(1, clip / norm).
  double factor = 1.0 / scale;
  if (norm > clip_) {
    factor *= clip_ / norm;
    ++clipped_;
  }
  // A non-finite gradient would poison the sum and defeat the clip: it
  // contributes nothing (still a use).
  if (std::isfinite(norm)) {
    for (size_t i = 0; i < gradient.size(); ++i) {
      sum_[i] += gradient[i] * factor;
    }
  }
  step_scale_ = scale;
  ++step_examples_;
  ++examples_;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> DpSgd::Release() {
  if (step_examples_ == 0) {
    return absl::FailedPreconditionError(
        "device privacy: an update without examples");
  }
  std::vector<float> out(sum_.size());
  const double stddev = sigma_ * clip_;
  for (size_t i = 0; i < sum_.size(); ++i) {
    out[i] = static_cast<float>((sum_[i] + stddev * noise_->Gaussian()) *
                                step_scale_);
  }
  Abort();
  last_ = out;
  return out;
}

void DpSgd::Abort() {
  std::fill(sum_.begin(), sum_.end(), 0.0);
  step_examples_ = 0;
  step_scale_ = 0;
}

}  // namespace edgesplit::privacy
