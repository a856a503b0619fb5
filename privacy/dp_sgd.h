// DP-SGD for the device's own LoRA factors (Abadi et al. 2016): each
// training window's gradient of the factors is clipped to L2 norm `clip`,
// a step's clipped gradients are summed and the sum gets N(0, (σ·clip)²)
// in every coordinate before the optimizer sees it. The factors -- what
// SFL averaging uploads, what an export writes, what computes the
// activations the device sends later -- are then a post-processing of
// these noisy sums.
//
// The unit is one window, as for the cut (training_privatizer.h): two
// datasets that differ in one window give clipped sums that differ by at
// most 2·clip, so each use of a window is a Gaussian mechanism of
// multiplier σ/2 (RowsRdp counts it as one row). Batches are fixed (no
// Poisson sampling), so no amplification by subsampling is claimed: a
// window used u times costs u such mechanisms. A run is calibrated for
// its most used window; a use past a window's allowance (or of a window
// the run did not plan) is refused: RESOURCE_EXHAUSTED when an allowance
// is used up, FAILED_PRECONDITION otherwise.
//
// Sound only when everything else the gradients depend on is public or
// itself private: the servers' factors must train from noised data only
// (cut privacy on) or not at all. SplitTrainer checks this.
//
// Not thread-safe: the training thread owns it.
#ifndef EDGESPLIT_PRIVACY_DP_SGD_H_
#define EDGESPLIT_PRIVACY_DP_SGD_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "privacy/row_noise.h"

namespace edgesplit::privacy {

class DpSgd {
 public:
  // The number of trained values (every factor, flattened) is fixed by
  // the first example.
  DpSgd(double clip, std::unique_ptr<NoiseSource> noise);

  // Fixes the noise multiplier and how often each window (by
  // TrainingPrivatizer::Key) may be used. Once: FAILED_PRECONDITION after
  // the first; every use before it is refused.
  absl::Status Calibrate(double sigma, std::map<std::string, int64_t> uses);
  bool calibrated() const { return sigma_ > 0; }

  // One window's own gradient (not accumulated with another's) of the
  // loss scaled by `scale` (> 0, the window's share of the step's loss):
  // the unscaled gradient is clipped to `clip` and added to the step's
  // sum. Every window of a step has the same scale.
  absl::Status AddExample(const std::string& window,
                          absl::Span<const float> gradient, double scale);
  // The step's gradient as the optimizer takes it: (sum + noise) · scale.
  // Starts the next step. FAILED_PRECONDITION when no example was added.
  absl::StatusOr<std::vector<float>> Release();
  // Drops a failed step's examples (their uses stay counted).
  void Abort();

  // The most uses any window has made (what the ε spent is computed from).
  int64_t max_window_uses() const { return max_uses_; }
  // Examples clipped so far (their gradient norm exceeded `clip`), and
  // added in all.
  int64_t clipped() const { return clipped_; }
  int64_t examples() const { return examples_; }
  double sigma() const { return sigma_; }
  double clip() const { return clip_; }
  // The last Release's values (what the optimizer took; already public to
  // whoever sees the factors).
  const std::vector<float>& last_release() const { return last_; }

 private:
  int64_t params_ = -1;
  const double clip_;
  double sigma_ = 0;
  std::unique_ptr<NoiseSource> noise_;
  std::map<std::string, int64_t> allowed_, used_;
  std::vector<double> sum_;  // The step's clipped, unscaled gradients.
  std::vector<float> last_;
  int64_t step_examples_ = 0;
  double step_scale_ = 0;
  int64_t max_uses_ = 0, clipped_ = 0, examples_ = 0;
};

}  // namespace edgesplit::privacy

#endif  // EDGESPLIT_PRIVACY_DP_SGD_H_
