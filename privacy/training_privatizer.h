// The device's mechanism for private split training (U-shaped; device
// blocks frozen or trained under DP-SGD). The privacy unit is one training
// window (an example): two datasets that differ in one window must be hard to
// tell apart from everything the servers receive.
//
// What a window releases:
//  * its activation rows at the cut: frozen device blocks compute them
//    from the window alone, so they are clipped, noised and released once;
//    every later use (epochs, replays after a failure, evaluation) resends
//    that release, which costs nothing more. Device blocks trained under
//    DP-SGD (dp_sgd.h) compute them from the window and factors that are
//    themselves private, so each use is a fresh release, counted;
//  * per use, the gradient rows of the head's loss (U-shaped: the labels
//    stay here) with respect to the last server's output: those depend on
//    the servers' current state, so each use is a new release.
// Every row is clipped (activations to `clip`, gradients to `grad_clip`)
// and noised with multiplier sigma; as for inference (row_noise.h) a row
// of sensitivity 2·clip costs SampledGaussianRdp(1, σ/2, α). A window with
// n rows used u times releases n·(1 + u) rows (n·2u when its activations
// are fresh); a run is calibrated for the
// most any window will release, and a release past a window's allowance
// (or of a window the run did not plan) is refused, never made silently:
// RESOURCE_EXHAUSTED when an allowance is used up, FAILED_PRECONDITION
// otherwise.
//
// Not thread-safe: the training thread owns it.
#ifndef EDGESPLIT_PRIVACY_TRAINING_PRIVATIZER_H_
#define EDGESPLIT_PRIVACY_TRAINING_PRIVATIZER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "privacy/row_noise.h"

namespace edgesplit::privacy {

class TrainingPrivatizer {
 public:
  // `max_bytes`: the most released activations kept (they are resent on
  // later uses); a release past it is refused (RESOURCE_EXHAUSTED).
  TrainingPrivatizer(int64_t cols, double clip, double grad_clip,
                     std::unique_ptr<NoiseSource> noise,
                     int64_t max_bytes = int64_t{1} << 30);

  // What the run was calibrated for, per window key.
  struct Allowance {
    int64_t rows = 0;           // Its activation rows (its length).
    int64_t gradient_uses = 0;  // Gradient releases it may make.
    // 0: the device's blocks are frozen, so the activations are released
    // once and resent. > 0: they train (under DP-SGD, dp_sgd.h), so each
    // send is computed afresh and is a new release; at most this many.
    int64_t activation_uses = 0;
  };
  // Fixes the noise multiplier and the windows that may release (no
  // other). Once: FAILED_PRECONDITION after the first; every release
  // before it is refused.
  absl::Status Calibrate(double sigma,
                         std::map<std::string, Allowance> allowed);
  bool calibrated() const { return sigma_ > 0; }

  // The activation rows ([rows, cols], row-major) of the window whose token
  // ids are `window`: its release, made now if this is the first time.
  absl::Status Activations(const std::string& window, float* data,
                           int64_t rows);
  // One use's gradient rows of `window`: clipped, noised, counted.
  absl::Status Gradients(const std::string& window, float* data, int64_t rows);

  // The most rows any one window has released so far (what the ε spent so
  // far is computed from).
  int64_t max_window_rows() const { return max_window_rows_; }
  // Rows a window has released so far (0 for one never seen).
  int64_t window_rows(const std::string& window) const;
  double sigma() const { return sigma_; }

  // A window's key: its token ids' bytes.
  static std::string Key(absl::Span<const int64_t> ids);

 private:
  struct Window {
    std::vector<float> activations;  // The release; empty until made.
    int64_t rows = 0;                // Released so far, all kinds.
    int64_t gradient_uses = 0;
    int64_t activation_uses = 0;  // Fresh releases made (see Allowance).
  };
  void Count(Window& w, int64_t rows);

  const int64_t cols_;
  const double clip_, grad_clip_;
  const int64_t max_bytes_;
  double sigma_ = 0;
  std::unique_ptr<NoiseSource> noise_;
  std::map<std::string, Window> windows_;
  std::map<std::string, Allowance> allowed_;
  int64_t max_window_rows_ = 0;
  int64_t kept_bytes_ = 0;
};

}  // namespace edgesplit::privacy

#endif  // EDGESPLIT_PRIVACY_TRAINING_PRIVATIZER_H_
