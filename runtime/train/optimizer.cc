#include "runtime/train/optimizer.h"

#include <algorithm>
#include <cmath>

namespace edgesplit {

double AdamWOptions::LearningRate(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps) {
    return lr * static_cast<double>(step + 1) / warmup_steps;
  }
  if (total_steps <= warmup_steps) return lr;
  const double progress =
      std::min(1.0, static_cast<double>(step - warmup_steps) /
                        static_cast<double>(total_steps - warmup_steps));
  return lr * 0.5 * (1.0 + std::cos(M_PI * progress));
}

void AdamWUpdate(const AdamWOptions& o, int64_t step, const at::Tensor& g,
                 at::Tensor& value, at::Tensor& m, at::Tensor& v) {
  const double lr = o.LearningRate(step);
  const double bc1 = 1 - std::pow(o.beta1, static_cast<double>(step + 1));
  const double bc2 = 1 - std::pow(o.beta2, static_cast<double>(step + 1));
  m.mul_(o.beta1).add_(g, 1 - o.beta1);
  v.mul_(o.beta2).addcmul_(g, g, 1 - o.beta2);
  // Decoupled weight decay, then the Adam step.
  if (o.weight_decay > 0) value.mul_(1 - lr * o.weight_decay);
  at::Tensor denom = (v / bc2).sqrt_().add_(o.eps);
  value.addcdiv_(m, denom, -lr / bc1);
}

}  // namespace edgesplit
