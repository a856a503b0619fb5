#include "runtime/draft_length.h"

#include <algorithm>
#include <cmath>

namespace edgesplit {
namespace {

// Weight left to a sample after each later one: about the last ten rounds
// count, so the estimates follow the text (and the link) as they change.
constexpr double kDecay = 0.9;

}  // namespace

DraftLengthPolicy::DraftLengthPolicy(int max_draft) : max_draft_(max_draft) {}

double DraftLengthPolicy::acceptance() const {
  return kept_ / (kept_ + rejected_);
}

double DraftLengthPolicy::RoundSeconds(int rows) const {
  if (w_ <= 0) return 0;
  const double det = w_ * sxx_ - sx_ * sx_;
  // One row count seen so far: no slope yet (decode steps of a few rows
  // cost about what one does: the weights are read once).
  double slope = det > 1e-12 * w_ * w_ ? (w_ * sxy_ - sx_ * sy_) / det : 0;
  slope = std::max(slope, 0.0);
  const double intercept = (sy_ - slope * sx_) / w_;
  return std::max(intercept + slope * rows, 0.0);
}

int DraftLengthPolicy::Best() const {
  const double a = std::min(acceptance(), 1.0 - 1e-9);
  int best = 0;
  double best_rate = 0;
  for (int k = 0; k <= max_draft_; ++k) {
    const double tokens = (1 - std::pow(a, k + 1)) / (1 - a);
    const double cost = RoundSeconds(k + 1) + draft_per_token_ * k;
    // Before any timing more drafts are never worse; after, a round costs
    // something even where the fitted line runs to zero.
    const double rate = w_ > 0 ? tokens / std::max(cost, 1e-9) : tokens;
    if (rate > best_rate * (1 + 1e-9)) {
      best = k;
      best_rate = rate;
    }
  }
  return best;
}

int DraftLengthPolicy::Next() {
  if (pause_ > 0) {
    if (--pause_ == 0) probing_ = true;
    return 0;
  }
  if (probing_) return std::min(4, max_draft_);
  const int k = Best();
  if (k == 0) {
    // This plain round and pause_length_ - 1 more, then a probe.
    pause_ = pause_length_ - 1;
    pause_length_ = std::min(2 * pause_length_, 64);
  }
  return k;
}

void DraftLengthPolicy::AddRound(int rows, double seconds) {
  w_ = kDecay * w_ + 1;
  sx_ = kDecay * sx_ + rows;
  sy_ = kDecay * sy_ + seconds;
  sxx_ = kDecay * sxx_ + double{1} * rows * rows;
  sxy_ = kDecay * sxy_ + rows * seconds;
}

void DraftLengthPolicy::OnPlain(double seconds) { AddRound(1, seconds); }

void DraftLengthPolicy::OnDraft(int k, int accepted, double draft_seconds,
                                double verify_seconds) {
  AddRound(k + 1, verify_seconds);
  kept_ = kDecay * kept_ + accepted;
  rejected_ = kDecay * rejected_ + (accepted < k ? 1 : 0);
  const double per_token = draft_seconds / std::max(k, 1);
  draft_per_token_ = measured_draft_
                         ? kDecay * draft_per_token_ + (1 - kDecay) * per_token
                         : per_token;
  measured_draft_ = true;
  if (probing_) {
    probing_ = false;
    // A probe that pays ends the backoff.
    if (Best() > 0) pause_length_ = 4;
  }
}

}  // namespace edgesplit
