#include "runtime/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace edgesplit {

absl::Status SamplingParams::Validate() const {
  if (!(temperature >= 0) || !std::isfinite(temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be >= 0, got ", temperature));
  }
  if (top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be >= 0, got ", top_k));
  }
  if (!(top_p > 0 && top_p <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_p must be in (0, 1], got ", top_p));
  }
  if (!(repetition_penalty > 0) || !std::isfinite(repetition_penalty)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "repetition_penalty must be > 0, got ", repetition_penalty));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params)
    : params_(params), rng_(params.seed) {}

void Sampler::Penalize(absl::Span<const float> logits,
                       absl::Span<const int32_t> context) {
  const int32_t n = static_cast<int32_t>(logits.size());
  work_.assign(logits.begin(), logits.end());
  if (params_.repetition_penalty == 1.0f) return;
  // Once per distinct token, as Hugging Face does (gather + scatter).
  std::vector<int32_t> distinct(context.begin(), context.end());
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  for (int32_t t : distinct) {
    if (t < 0 || t >= n) continue;
    float& l = work_[t];
    l = l > 0 ? l / params_.repetition_penalty : l * params_.repetition_penalty;
  }
}

int32_t Sampler::Candidates() {
  const int32_t n = static_cast<int32_t>(work_.size());
  for (float& l : work_) l /= params_.temperature;
  order_.resize(n);
  std::iota(order_.begin(), order_.end(), 0);
  int32_t keep = n;
  if (params_.top_k > 0 && params_.top_k < n) keep = params_.top_k;
  // Sort only the candidates we may keep (top-k), by logit descending.
  auto by_logit = [&](int32_t a, int32_t b) {
    return work_[a] > work_[b] || (work_[a] == work_[b] && a < b);
  };
  if (keep < n || params_.top_p < 1.0f) {
    std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(),
                      by_logit);
  }
  const float max_logit = *std::max_element(work_.begin(), work_.end());
  probs_.resize(keep);
  double sum = 0;
  for (int32_t i = 0; i < keep; ++i) {
    probs_[i] = std::exp(static_cast<double>(work_[order_[i]]) - max_logit);
    sum += probs_[i];
  }
  if (params_.top_p < 1.0f) {
    // Smallest prefix whose mass reaches top_p (at least one token).
    double cum = 0;
    for (int32_t i = 0; i < keep; ++i) {
      cum += probs_[i] / sum;
      if (cum >= params_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  return keep;
}

int32_t Sampler::Sample(absl::Span<const float> logits,
                        absl::Span<const int32_t> context) {
  Penalize(logits, context);
  if (params_.temperature == 0.0f) {
    return static_cast<int32_t>(std::max_element(work_.begin(), work_.end()) -
                                work_.begin());
  }
  const int32_t keep = Candidates();
  const double sum =
      std::accumulate(probs_.begin(), probs_.begin() + keep, 0.0);
  std::uniform_real_distribution<double> uniform(0.0, sum);
  double r = uniform(rng_);
  for (int32_t i = 0; i < keep; ++i) {
    r -= probs_[i];
    if (r < 0) return order_[i];
  }
  return order_[keep - 1];
}

void Sampler::Distribution(absl::Span<const float> logits,
                           absl::Span<const int32_t> context,
                           std::vector<float>* probs) {
  Penalize(logits, context);
  probs->assign(logits.size(), 0.0f);
  if (params_.temperature == 0.0f) {
    (*probs)[std::max_element(work_.begin(), work_.end()) - work_.begin()] = 1;
    return;
  }
  const int32_t keep = Candidates();
  const double sum =
      std::accumulate(probs_.begin(), probs_.begin() + keep, 0.0);
  for (int32_t i = 0; i < keep; ++i) {
    (*probs)[order_[i]] = static_cast<float>(probs_[i] / sum);
  }
}

int32_t Sampler::Draw(absl::Span<const float> weights) {
  double sum = 0;
  int32_t last = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    sum += weights[i];
    if (weights[i] > 0) last = static_cast<int32_t>(i);
  }
  std::uniform_real_distribution<double> uniform(0.0, sum);
  double r = uniform(rng_);
  for (size_t i = 0; i < weights.size(); ++i) {
    r -= weights[i];
    if (r < 0) return static_cast<int32_t>(i);
  }
  return last;
}

double Sampler::Uniform() {
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
}

}  // namespace edgesplit
