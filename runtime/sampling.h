// Next-token sampling from logits: greedy, temperature, top-k, top-p
// (nucleus) and repetition penalty, with a seeded RNG so runs repeat.
#ifndef EDGESPLIT_RUNTIME_SAMPLING_H_
#define EDGESPLIT_RUNTIME_SAMPLING_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace edgesplit {

struct SamplingParams {
  float temperature = 1.0f;  // 0: greedy.
  int32_t top_k = 0;         // 0: off.
  float top_p = 1.0f;        // 1: off.
  // > 1 discourages tokens already in the context (CTRL / HF convention:
  // positive logits divided, negative multiplied). 1: off.
  float repetition_penalty = 1.0f;
  uint64_t seed = 0;

  absl::Status Validate() const;  // Errors name the parameter.
};

// Not thread-safe (owns an RNG); one per sequence.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // Picks the next token. `context` is the sequence so far (prompt and
  // generated), used by the repetition penalty. Greedy ties go to the
  // lowest id.
  int32_t Sample(absl::Span<const float> logits,
                 absl::Span<const int32_t> context);

  // The distribution Sample draws from, over the whole vocabulary (zero
  // outside top-k / top-p; one-hot at Sample's choice when greedy).
  void Distribution(absl::Span<const float> logits,
                    absl::Span<const int32_t> context,
                    std::vector<float>* probs);
  // A draw from `weights` (non-negative, not all zero; normalised here)
  // with this sampler's RNG; the last positive index if rounding runs out.
  int32_t Draw(absl::Span<const float> weights);
  // A uniform draw from [0, 1) with this sampler's RNG.
  double Uniform();
  const SamplingParams& params() const { return params_; }

 private:
  // work_ = logits after the repetition penalty.
  void Penalize(absl::Span<const float> logits,
                absl::Span<const int32_t> context);
  // After Penalize, temperature > 0: the candidates in order_[0, keep)
  // with unnormalised probabilities probs_[0, keep); returns keep.
  int32_t Candidates();

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> work_;
  std::vector<int32_t> order_;
  std::vector<double> probs_;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_SAMPLING_H_
