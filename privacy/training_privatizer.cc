#include "privacy/training_privatizer.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace edgesplit::privacy {
namespace {

absl::Status Uncalibrated() {
  return absl::FailedPreconditionError(
      "privacy: no release before the noise is calibrated for the run");
}

}  // namespace

TrainingPrivatizer::TrainingPrivatizer(int64_t cols, double clip,
                                       double grad_clip,
                                       std::unique_ptr<NoiseSource> noise,
                                       int64_t max_bytes)
    : cols_(cols),
      clip_(clip),
      grad_clip_(grad_clip),
      max_bytes_(max_bytes),
      noise_(std::move(noise)) {}

std::string TrainingPrivatizer::Key(absl::Span<const int64_t> ids) {
  return std::string(reinterpret_cast<const char*>(ids.data()),
                     ids.size() * sizeof(int64_t));
}

absl::Status TrainingPrivatizer::Calibrate(
    double sigma, std::map<std::string, Allowance> allowed) {
  if (calibrated()) {
    return absl::FailedPreconditionError(
        "privacy: this training session's noise is already calibrated (one "
        "private run per session)");
  }
  if (!(sigma > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("privacy: noise multiplier ", sigma, " is not > 0"));
  }
  sigma_ = sigma;
  allowed_ = std::move(allowed);
  return absl::OkStatus();
}

int64_t TrainingPrivatizer::window_rows(const std::string& window) const {
  auto it = windows_.find(window);
  return it == windows_.end() ? 0 : it->second.rows;
}

void TrainingPrivatizer::Count(Window& w, int64_t rows) {
  w.rows += rows;
  max_window_rows_ = std::max(max_window_rows_, w.rows);
}

absl::Status TrainingPrivatizer::Activations(const std::string& window,
                                             float* data, int64_t rows) {
  if (!calibrated()) return Uncalibrated();
  auto allowed = allowed_.find(window);
  if (allowed == allowed_.end() || allowed->second.rows != rows) {
    return absl::FailedPreconditionError(absl::StrCat(
        "privacy: a window of ", rows,
        " rows the run's noise was not calibrated for (only the run's "
        "training and evaluation windows may be sent)"));
  }
  Window& w = windows_[window];
  if (allowed->second.activation_uses > 0) {
    if (w.activation_uses >= allowed->second.activation_uses) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "privacy: a training window's activations were released ",
          w.activation_uses,
          " times, as often as the run's noise was calibrated for"));
    }
    ClipRows(data, rows, cols_, clip_);
    AddGaussianNoise(data, rows * cols_, sigma_ * clip_, *noise_);
    ++w.activation_uses;
    Count(w, rows);
    return absl::OkStatus();
  }
  const size_t n = static_cast<size_t>(rows * cols_);
  if (w.activations.empty()) {
    const int64_t bytes = static_cast<int64_t>(n * sizeof(float));
    if (kept_bytes_ + bytes > max_bytes_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "privacy: the released activations kept for resending would pass ",
          max_bytes_ >> 20,
          " MiB; train on fewer or shorter windows per private run"));
    }
    kept_bytes_ += bytes;
    ClipRows(data, rows, cols_, clip_);
    AddGaussianNoise(data, rows * cols_, sigma_ * clip_, *noise_);
    w.activations.assign(data, data + n);
    Count(w, rows);
    return absl::OkStatus();
  }
  std::memcpy(data, w.activations.data(), n * sizeof(float));
  return absl::OkStatus();
}

absl::Status TrainingPrivatizer::Gradients(const std::string& window,
                                           float* data, int64_t rows) {
  if (!calibrated()) return Uncalibrated();
  auto allowed = allowed_.find(window);
  if (allowed == allowed_.end() || allowed->second.rows != rows) {
    return absl::FailedPreconditionError(
        "privacy: gradients of a window the run's noise was not calibrated "
        "for");
  }
  Window& w = windows_[window];
  if (w.gradient_uses >= allowed->second.gradient_uses) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "privacy: a training window's gradients were released ",
        w.gradient_uses,
        " times, as often as the run's noise was calibrated for; another "
        "release would exceed the privacy the run promised (start a new "
        "run: it is charged to the budget again)"));
  }
  ClipRows(data, rows, cols_, grad_clip_);
  AddGaussianNoise(data, rows * cols_, sigma_ * grad_clip_, *noise_);
  ++w.gradient_uses;
  Count(w, rows);
  return absl::OkStatus();
}

}  // namespace edgesplit::privacy
