// The optimizer of split LoRA training: AdamW over each trainable factor.
#ifndef EDGESPLIT_RUNTIME_TRAIN_OPTIMIZER_H_
#define EDGESPLIT_RUNTIME_TRAIN_OPTIMIZER_H_

#include <ATen/ATen.h>

#include <cstdint>

namespace edgesplit {

// AdamW (decoupled weight decay) with linear warm-up and cosine decay.
struct AdamWOptions {
  double lr = 2e-4;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;     // Cosine decay to 0 over these; 0: constant.
  double max_grad_norm = 1.0;  // Global clipping; <= 0: none.

  // The learning rate at `step` (0-based).
  double LearningRate(int64_t step) const;
};

// One trainable factor with its AdamW moments (checkpoints).
struct FactorState {
  at::Tensor value, m, v;
};

// One AdamW update of `value` with gradient `grad` (already scaled by the
// caller's clipping), moments `m` and `v` updated in place; `step` is the
// 0-based update index (bias correction, learning-rate schedule). Call
// under at::NoGradGuard.
void AdamWUpdate(const AdamWOptions& options, int64_t step,
                 const at::Tensor& grad, at::Tensor& value, at::Tensor& m,
                 at::Tensor& v);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TRAIN_OPTIMIZER_H_
