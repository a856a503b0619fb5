// Speculative decoding: a cheap draft proposes the next k tokens, the
// target model (here, or split across edge servers) runs them as one
// multi-row step, and the longest prefix of the draft the target agrees
// with is kept, plus the target's own next token. Over a link each
// verification round trip then yields up to k + 1 tokens instead of one.
//
// Exactness: each row's token distribution is the target's, processed by
// the same Sampler plain decoding uses (penalty, temperature, top-k,
// top-p). A draft token d drawn from q is kept with probability
// min(1, p(d) / q(d)); the first one rejected is replaced by a draw from
// the residual max(0, p - q) (normalised), and when all are kept one more
// token comes from the last row's p (Leviathan et al. 2023; Chen et al.
// 2023). Every emitted token is then distributed exactly as plain
// sampling's. Greedy decoding is the case where p is one-hot: the output
// is identical to GenerateIds' token for token, whatever the draft.
#ifndef EDGESPLIT_RUNTIME_SPECULATIVE_H_
#define EDGESPLIT_RUNTIME_SPECULATIVE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/generator.h"
#include "runtime/sampling.h"

namespace edgesplit {

// What a drafter proposes.
struct Draft {
  std::vector<int32_t> tokens;
  // The distribution (vocabulary-sized) each token was drawn from; empty
  // when the tokens are proposed deterministically (a point mass each).
  std::vector<std::vector<float>> probs;
  // A draft model's own probability of each token (softmax of its logits
  // at temperature 1): the uncertainty skip's signal. Empty without a
  // model (prompt lookup).
  std::vector<float> confidence;
};

// Proposes tokens. Not thread-safe: one sequence at a time.
class Drafter {
 public:
  virtual ~Drafter() = default;
  // Up to `k` tokens likely to follow `context` (the prompt and every
  // verified token); fewer, or none, when it has no guess.
  virtual absl::StatusOr<Draft> Propose(absl::Span<const int32_t> context,
                                        int k) = 0;
  virtual std::string Describe() const = 0;
};

// Prompt lookup (n-gram copy, no model): finds the latest earlier
// occurrence of the context's last n tokens, n from `max_ngram` down to
// `min_ngram`, and proposes what followed it. Pays on text that repeats
// its context (summaries, extraction, code edits, repetitive stories).
class PromptLookupDrafter : public Drafter {
 public:
  explicit PromptLookupDrafter(int max_ngram = 3, int min_ngram = 1)
      : max_ngram_(max_ngram), min_ngram_(min_ngram) {}
  absl::StatusOr<Draft> Propose(absl::Span<const int32_t> context,
                                int k) override;
  std::string Describe() const override;

 private:
  const int max_ngram_;
  const int min_ngram_;
};

// A draft model run here: a small model with the target's tokenizer, or
// the target itself with quantized weights ("self-speculation"). It
// samples with the target's parameters (greedy when the target is) from
// its own KV cache, which follows the verified context: each round rolls
// it back to what the context and its cache share.
class ModelDrafter : public Drafter {
 public:
  // `pipeline` must outlive the drafter. `sampling`: the target's (its
  // seed is varied: the draft's draws are its own).
  ModelDrafter(const LocalPipeline* pipeline, std::string description,
               const SamplingParams& sampling);
  absl::StatusOr<Draft> Propose(absl::Span<const int32_t> context,
                                int k) override;
  std::string Describe() const override { return description_; }

 private:
  std::unique_ptr<LocalPipeline::Sequence> seq_;
  const std::string description_;
  Sampler sampler_;
  std::vector<int32_t> fed_;  // What seq_'s cache holds.
};

struct SpeculationParams {
  // Draft tokens per verification step, at most (1..kMaxDraftTokens).
  int max_draft = 8;
  // Choose each round's k (0: a plain step) for the most tokens per
  // second from the measured acceptance rate, verification round trips
  // and drafting cost (DraftLengthPolicy, runtime/draft_length.h); while
  // drafting does not pay, plain steps run for 4, 8, ... 64 rounds between
  // probes. false: always max_draft.
  bool adaptive = true;
  // Uncertainty skip (U-HLM), approximate and off at 0: a draft token
  // whose draft probability reaches this is emitted at once without
  // verification (the target still gets it, with the next round that
  // goes to it, and never checks it); rounds whose drafts are all that
  // confident make no round trip. Needs a draft model. Its quality is
  // reported (SpeculativeStats::skipped_agreement).
  float skip_threshold = 0;
};

struct SpeculativeStats {
  int64_t rounds = 0;        // Target steps after the prefill.
  int64_t draft_rounds = 0;  // Of those, steps that carried draft tokens.
  int64_t drafted = 0;       // Draft tokens sent for verification.
  int64_t accepted = 0;      // Of those, kept.
  double draft_seconds = 0;  // Spent drafting.
  std::vector<int> k;        // The draft size of each draft round.
  // Uncertainty skip: tokens emitted unverified; of those the target saw
  // later, how many, and the sum of the chance verification would have
  // kept each, min(1, p/q) (greedy: whether it was the target's choice).
  int64_t skipped = 0;
  int64_t skipped_checked = 0;
  double skipped_agreement = 0;
};

// GenerateIds with a draft: same options; the same tokens when greedy,
// the same distribution when sampling. `target` must implement ForwardAll
// and Rollback.
absl::StatusOr<GenerationResult> GenerateSpeculativeIds(
    LogitsModel& target, Drafter& drafter, absl::Span<const int32_t> prompt_ids,
    const GenerationOptions& options, const SpeculationParams& speculative,
    int32_t eos_id, const TokenCallback& on_token, SpeculativeStats* stats);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_SPECULATIVE_H_
