// Text generation over any way of computing next-token logits: a local
// pipeline of stages here, a remote chain of edge servers in the device
// agent. The loop (prefill, sample, decode, stream text) is shared.
#ifndef EDGESPLIT_RUNTIME_GENERATOR_H_
#define EDGESPLIT_RUNTIME_GENERATOR_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "runtime/draft_check.h"
#include "runtime/kv_cache.h"
#include "runtime/model_store.h"
#include "runtime/sampling.h"
#include "runtime/stage_model.h"
#include "runtime/tokenizer/tokenizer.h"

namespace edgesplit {

// One sequence's model: feed new tokens, get the logits after the last one.
// The seam tests and the device agent replace.
class LogitsModel {
 public:
  virtual ~LogitsModel() = default;
  // Appends `tokens` to the sequence and returns the logits (float32,
  // vocab-sized) predicting the token after them.
  virtual absl::StatusOr<std::vector<float>> Forward(
      absl::Span<const int32_t> tokens) = 0;
  // The most tokens a sequence may hold (the model's context).
  virtual int64_t context_length() const = 0;

  // Speculative decoding's verification (models that support it; the
  // defaults answer UNIMPLEMENTED). ForwardAll appends `tokens` like
  // Forward and returns every row's logits, [tokens.size(), vocab] float32:
  // row i predicts the token after tokens[i].
  virtual absl::StatusOr<at::Tensor> ForwardAll(
      absl::Span<const int32_t> tokens);
  // Forgets the last `positions` tokens of the sequence (rejected drafts);
  // at most as many as it holds. A remote model may apply it with its next
  // forward.
  virtual absl::Status Rollback(int64_t positions);
  // Sampled verification: appends `tokens` (the token before the drafts,
  // then the drafts) like ForwardAll and runs AcceptDraft on the rows
  // where the logits are. The default does both here through ForwardAll;
  // a split model lets its last server check, which then answers one row
  // of logits instead of every row's.
  virtual absl::StatusOr<CheckedDraft> ForwardChecked(
      absl::Span<const int32_t> tokens, const DraftCheck& check);
};

// Sees each new token id as it is chosen; false ends the generation after
// it (a stop string completed, a client went away).
using TokenCallback = std::function<bool(int32_t)>;

struct GenerationOptions {
  SamplingParams sampling;
  int32_t max_new_tokens = 64;
  bool stop_at_eos = true;
  // More ids that end the generation like EOS (with stop_at_eos): a chat
  // model's end of turn (ChatTemplate::TurnEndId).
  std::vector<int32_t> more_eos_ids;
};

struct GenerationResult {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> tokens;  // Generated ids (EOS excluded).
  std::string text;             // Decoded continuation.
  bool stopped_at_eos = false;
  bool stopped_at_context = false;  // The model's context is full.
  // A stop string completed (GenerateTextFromIds): `text` ends before it.
  bool stopped_at_stop = false;
  bool stopped_by_caller = false;  // on_token answered false.
  double prefill_seconds = 0;
  double decode_seconds = 0;  // All decode steps after the first token.
};

// Whether `id` ends a generation with `options` and EOS `eos_id`.
inline bool IsEos(const GenerationOptions& options, int32_t eos_id,
                  int32_t id) {
  if (!options.stop_at_eos) return false;
  if (id == eos_id && eos_id >= 0) return true;
  for (int32_t e : options.more_eos_ids) {
    if (id == e) return true;
  }
  return false;
}

// How many tokens a generation from `prompt_ids` may add: the options'
// maximum, or fewer where the model's context ends (every generated token
// but the last is fed back). Errors for an empty or too long prompt.
absl::StatusOr<int64_t> MaxNewTokens(const LogitsModel& model,
                                     absl::Span<const int32_t> prompt_ids,
                                     const GenerationOptions& options);

// Generates from token ids. `on_token` (optional) sees each new id.
absl::StatusOr<GenerationResult> GenerateIds(
    LogitsModel& model, absl::Span<const int32_t> prompt_ids,
    const GenerationOptions& options, int32_t eos_id,
    const TokenCallback& on_token = nullptr);

// Generates from text and streams the continuation's text as it becomes
// complete UTF-8 (`on_text`, optional).
absl::StatusOr<GenerationResult> Generate(
    LogitsModel& model, const Tokenizer& tokenizer, absl::string_view prompt,
    const GenerationOptions& options,
    const std::function<void(absl::string_view)>& on_text = nullptr);

// Generate's text side around any way of generating ids (GenerateIds, or
// speculative decoding): tokenizes the prompt, streams the text, decodes
// the continuation.
using IdGenerator = std::function<absl::StatusOr<GenerationResult>(
    absl::Span<const int32_t> prompt_ids, int32_t eos_id,
    const TokenCallback& on_token)>;
absl::StatusOr<GenerationResult> GenerateText(
    const Tokenizer& tokenizer, absl::string_view prompt,
    const std::function<void(absl::string_view)>& on_text,
    const IdGenerator& generate_ids);
// Same, from a prompt already encoded (a chat prompt: ChatTemplate::Encode).
// Generation ends where the continuation's text first contains one of
// `stop` (non-empty strings): the text before it streams and is the
// result's text; text that may begin a stop string is held back until it
// is known not to.
absl::StatusOr<GenerationResult> GenerateTextFromIds(
    const Tokenizer& tokenizer, std::vector<int32_t> prompt_ids,
    const std::function<void(absl::string_view)>& on_text,
    const IdGenerator& generate_ids, const std::vector<std::string>& stop = {});

// Streams text with stop strings cut out: Add passes text on, holding back
// a tail that may begin a stop string; once one completes, the text before
// it is passed on and nothing after. Not thread-safe.
class StopStringFilter {
 public:
  // `stop`: non-empty strings; `out` receives the text that stays.
  StopStringFilter(const std::vector<std::string>& stop,
                   std::function<void(absl::string_view)> out);
  // False once a stop string has completed (with this text or before).
  bool Add(absl::string_view text);
  // The end of the text: passes on what was held back (unless stopped).
  void Finish();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stop_;
  std::function<void(absl::string_view)> out_;
  std::string held_;
  bool stopped_ = false;
};

// The stages of one split, run in one process in order. Thread-safe for
// distinct sequences.
namespace testing {
class LocalPipelinePeer;
}  // namespace testing

class LocalPipeline {
 public:
  // `cuts` are the block indices where a new stage starts, e.g. {2} splits
  // into [0,2) and [2,n); {} is the whole model in one stage.
  static absl::StatusOr<std::unique_ptr<LocalPipeline>> Load(
      const ModelStore& store, const std::vector<int64_t>& cuts,
      const StageOptions& options = {});
  // Each stage with its own options (one per stage: cuts.size() + 1), e.g.
  // a weight type per stage as a plan gives them.
  static absl::StatusOr<std::unique_ptr<LocalPipeline>> Load(
      const ModelStore& store, const std::vector<int64_t>& cuts,
      const std::vector<StageOptions>& per_stage);

  const std::vector<std::unique_ptr<StageModel>>& stages() const {
    return stages_;
  }
  const ModelConfig& config() const { return stages_.front()->config(); }

  // Attaches an adapter to every stage (each uses its own blocks' part).
  // Sequences of different adapters (and none) may share a batch.
  absl::Status AttachAdapter(std::shared_ptr<LoraAdapter> adapter);

  // A sequence: one cache per stage. `budget` may be null.
  class Sequence : public LogitsModel {
   public:
    absl::StatusOr<std::vector<float>> Forward(
        absl::Span<const int32_t> tokens) override;
    // All tokens' logits [n, vocab].
    absl::StatusOr<at::Tensor> ForwardAll(
        absl::Span<const int32_t> tokens) override;
    absl::Status Rollback(int64_t positions) override;
    int64_t length() const { return caches_.front()->length(); }
    int64_t context_length() const override {
      return pipeline_->config().max_positions;
    }

   private:
    friend class LocalPipeline;
    absl::StatusOr<at::Tensor> Run(absl::Span<const int32_t> tokens,
                                   bool last_only);
    const LocalPipeline* pipeline_ = nullptr;
    std::string adapter_;
    std::vector<std::unique_ptr<SequenceKvCache>> caches_;
  };
  std::unique_ptr<Sequence> NewSequence(KvBudget* budget = nullptr,
                                        std::string adapter = "") const;

 private:
  // Tests run batched steps through testing/local_pipeline_peer.h.
  friend class testing::LocalPipelinePeer;
  // Runs new tokens of `seqs` through every stage; on failure no stage's
  // cache has advanced.
  absl::StatusOr<at::Tensor> RunStages(
      absl::Span<Sequence* const> seqs,
      absl::Span<const absl::Span<const int32_t>> tokens, bool last_only) const;

  std::vector<std::unique_ptr<StageModel>> stages_;
  mutable absl::Mutex mu_;
  // What AttachAdapter attached, by name: a batch mixing adapters passes
  // them to the stages per sequence.
  std::map<std::string, std::shared_ptr<LoraAdapter>> adapters_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_GENERATOR_H_
