// The acceptance test of speculative sampling (Leviathan et al., 2023),
// run where the target's logits are: on the device for a local model, on
// the route's last server for a split one, which then answers how many
// draft tokens it kept and one row of logits instead of every row's.
// Both sides run this one function on the same numbers, so where it runs
// never changes a token.
#ifndef EDGESPLIT_RUNTIME_DRAFT_CHECK_H_
#define EDGESPLIT_RUNTIME_DRAFT_CHECK_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/sampling.h"

namespace edgesplit {

// The most draft tokens one verification step may carry.
inline constexpr int kMaxDraftTokens = 32;

// Draft token i (of k) is kept when p_i(d_i) > 0 and either
// p_i(d_i) >= q_i or uniforms[i] < p_i(d_i) / q_i, where p_i is the
// target's sampling distribution at row i (temperature, top-k, top-p of
// `params`; no repetition penalty, which needs the context) and q_i the
// draft's probability of d_i (1 for a draft without probabilities).
struct DraftCheck {
  SamplingParams params;
  std::vector<float> draft_probs;  // q_i, one per draft token, in (0, 1].
  std::vector<double> uniforms;    // One per draft token, in [0, 1).

  // INVALID_ARGUMENT naming the field (the check may come off the wire):
  // valid params with temperature > 0 and no penalty, `drafts` draft
  // tokens with one probability and one uniform each, within range.
  absl::Status Validate(int64_t drafts) const;
};

// The rule above for one draft token: p(d), q(d) and its uniform u. Every
// check (AcceptDraft, and the device's own when a repetition penalty
// keeps it local) decides with this one function.
inline bool KeepDraft(double pd, double qd, double u) {
  return pd > 0 && (pd >= qd || u < pd / qd);
}

// What a checked verification answers.
struct CheckedDraft {
  int64_t accepted = 0;  // Leading draft tokens kept.
  // Logits of row `accepted`: the distribution the next token comes from
  // (the residual's target after a rejection, else the bonus token's).
  std::vector<float> logits;
};

// Checks the drafts `drafts` (k tokens) against `logits`, k + 1 rows of
// `vocab` float32 logits, row i predicting the token after the i-th fed
// row (the token before the drafts, then each draft). `check` must be
// valid for k drafts. Returns how many leading drafts are kept.
int64_t AcceptDraft(const float* logits, int64_t vocab,
                    absl::Span<const int32_t> drafts, const DraftCheck& check);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_DRAFT_CHECK_H_
