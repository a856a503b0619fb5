// Measures a node's compute for one model: a block's decode and prefill
// time and the head's, from one loaded block (all blocks of a model have
// the same shape). Servers report this on registration; devices with their
// sessions; the planner turns it into plans.
#ifndef EDGESPLIT_RUNTIME_PROFILER_H_
#define EDGESPLIT_RUNTIME_PROFILER_H_

#include <chrono>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/cpu/quant_blocks.h"

namespace edgesplit {

struct ComputeMeasurement {
  double decode_ms_per_block = 0;   // One token, at `context` tokens.
  double prefill_ms_per_token = 0;  // Per block.
  double head_ms = 0;               // Final norm + LM head, one token.
  // A step's fixed cost on a first stage: the token embedding and the
  // framework's per-forward work (a device pays it every step).
  double embed_ms = 0;
};

struct ProfileOptions {
  int prompt_tokens = 64;  // Prefill length timed.
  int decode_steps = 16;   // Decode steps timed after the prefill.
  int repeats = 3;         // Best of.
  // Pause before each timed decode step (see TimeSteps in profiler.cc).
  std::chrono::microseconds idle_between_steps{5000};
  bool copy_weights = true;
  // Weight type the stages will run with (their speed differs by type).
  std::optional<kernels::WeightType> weights;  // As StageOptions::weights.
};

// Loads block 0, the embedding and the head of the model in `model_dir` (only
// those tensors are read), times them, and frees them. Thread-compatible.
absl::StatusOr<ComputeMeasurement> ProfileCompute(
    const std::string& model_dir, const ProfileOptions& options = {});

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_PROFILER_H_
