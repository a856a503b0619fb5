// Split LoRA training, one stage at a time: the building block of split
// fine-tuning. A stage's trainer runs its forward for a
// micro-batch keeping the autograd graph, later takes the gradient of the
// loss with respect to its output, accumulates its LoRA factors' gradients
// and returns the gradient with respect to its input for the stage before
// it. Base weights never require gradients; only the adapter's factors on
// this stage's blocks do. Chaining trainers performs exactly the
// operations of one whole-model training step, so a split step equals the
// single-process one (tests bound losses and gradients at 1e-5). The
// optimizer, the loss and the checkpoints are in optimizer.h, loss.h and
// checkpoints.h beside it.
//
// Not thread-safe: one trainer per stage, driven by one thread.
#ifndef EDGESPLIT_RUNTIME_TRAIN_STAGE_TRAINER_H_
#define EDGESPLIT_RUNTIME_TRAIN_STAGE_TRAINER_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/lora.h"
#include "runtime/stage_model.h"
#include "runtime/train/loss.h"
#include "runtime/train/optimizer.h"

namespace edgesplit {

struct TrainerOptions {
  // Keep only each micro-batch's input and run its forward again, with the
  // graph, at backward: activation memory of one micro-batch instead of
  // every micro-batch in flight, for one more forward.
  bool recompute = false;
};

class StageTrainer {
 public:
  // `stage` and `adapter` must outlive the trainer; the adapter must be
  // attached to the stage. Its factors on the stage's blocks become
  // trainable (fp32, requires_grad).
  static absl::StatusOr<std::unique_ptr<StageTrainer>> Create(
      const StageModel* stage, std::shared_ptr<LoraAdapter> adapter,
      TrainerOptions options = {});

  // Forward of micro-batch `id` (one sequence: `input.tokens` on a first
  // stage, else `input.hidden`); keeps what Backward needs. Returns the
  // output detached from the graph: hidden states, or logits on a stage
  // with the head.
  absl::StatusOr<at::Tensor> Forward(uint64_t id, StageInput input);
  // Forward of a stage with the head, then the loss against `labels`:
  // Backward(id, undefined) later starts from loss x `loss_scale` (the
  // micro-batch's share of the step's loss). Returns the unscaled loss.
  absl::StatusOr<double> ForwardLoss(uint64_t id, StageInput input,
                                     const at::Tensor& labels,
                                     double loss_scale = 1.0);
  // Backward of micro-batch `id` given dLoss/dOutput (undefined after
  // ForwardLoss); accumulates the factors' gradients and returns
  // dLoss/dInput (undefined on a first stage, whose input is token ids).
  // Frees the micro-batch.
  absl::StatusOr<at::Tensor> Backward(uint64_t id,
                                      const at::Tensor& grad_output);
  // For a stage whose output is the loss's input (the head): Forward,
  // loss against `labels`, and Backward in one go; returns the loss.
  absl::StatusOr<double> ForwardBackwardLoss(uint64_t id, StageInput input,
                                             const at::Tensor& labels,
                                             at::Tensor* grad_input);
  // Evaluation: the output (or the loss) with the current factors, without
  // a graph.
  absl::StatusOr<at::Tensor> Evaluate(StageInput input) const;
  absl::StatusOr<double> EvaluateLoss(StageInput input,
                                      const at::Tensor& labels) const;

  // Sum of squared gradient entries: stages add theirs for a global norm.
  double GradSquaredNorm() const;
  // One AdamW update of every factor with its accumulated gradient times
  // `grad_scale` (global clipping: max_norm / max(norm, max_norm)), then
  // zeroes the gradients. `step` is 0-based.
  void Step(const AdamWOptions& options, int64_t step, double grad_scale);
  void ZeroGrad();
  // Drops micro-batches in flight (a failed step): all, or ids in
  // [first, last).
  void Abort() { pending_.clear(); }
  void Abort(uint64_t first, uint64_t last) {
    pending_.erase(pending_.lower_bound(first), pending_.lower_bound(last));
  }

  // The trainable factors, keyed by PEFT module path plus ".lora_A" /
  // ".lora_B".
  std::map<std::string, at::Tensor> Gradients() const;
  // The accumulated gradients as one vector over every factor in key order
  // (zeros where none), and setting them in that layout (DP-SGD clips and
  // noises per window outside the trainer). Set: INVALID_ARGUMENT unless
  // `flat` has exactly num_params() values.
  int64_t num_params() const;
  std::vector<float> FlatGradients() const;
  absl::Status SetFlatGradients(const std::vector<float>& flat);
  // Factors and moments (copies), and setting them (checkpoints; every key
  // must be present with its shape).
  std::map<std::string, FactorState> State() const;
  absl::Status SetState(const std::map<std::string, FactorState>& state);
  // Back to the factors it was created with (zero moments).
  absl::Status Reset() { return SetState(initial_); }
  int64_t pending() const { return static_cast<int64_t>(pending_.size()); }

 private:
  struct Pending {
    std::unique_ptr<SequenceKvCache> cache;  // Holds K/V of the graph.
    at::Tensor input;   // Hidden input (requires grad), or undefined.
    at::Tensor output;  // With its graph (the scaled loss after ForwardLoss).
    // Recompute: what the forward needs again.
    StageInput replay;
    at::Tensor labels;
    double loss_scale = 1.0;
    bool loss = false;
    double loss_value = 0;
  };
  struct Param {
    at::Tensor value;  // The adapter's factor itself (updated in place).
    at::Tensor m, v;   // AdamW moments.
  };
  StageTrainer() = default;
  // The forward with its graph into `p` (and the scaled loss when p.loss).
  absl::Status RunForward(Pending& p, StageInput input) const;

  const StageModel* stage_ = nullptr;
  std::shared_ptr<LoraAdapter> adapter_;
  TrainerOptions options_;
  std::map<std::string, Param> params_;
  std::map<std::string, FactorState> initial_;  // For Reset().
  std::map<uint64_t, Pending> pending_;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TRAIN_STAGE_TRAINER_H_
