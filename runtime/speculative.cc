#include "runtime/speculative.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/sampling.h"

namespace edgesplit {
namespace {

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
      .count();
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> PromptLookupDrafter::Draft(
    absl::Span<const int32_t> context, int k) {
  const int64_t size = static_cast<int64_t>(context.size());
  for (int n = max_ngram_; n >= std::max(min_ngram_, 1); --n) {
    if (size <= n) continue;
    const absl::Span<const int32_t> tail = context.subspan(size - n);
    // Latest match first: recent text predicts best.
    for (int64_t i = size - n - 1; i >= 0; --i) {
      if (!std::equal(tail.begin(), tail.end(), context.begin() + i)) continue;
      const int64_t from = i + n;
      const int64_t take = std::min<int64_t>(k, size - from);
      return std::vector<int32_t>(context.begin() + from,
                                  context.begin() + from + take);
    }
  }
  return std::vector<int32_t>();
}

std::string PromptLookupDrafter::Describe() const {
  return absl::StrCat("prompt lookup (n-grams ", max_ngram_, "..", min_ngram_,
                      ")");
}

ModelDrafter::ModelDrafter(const LocalPipeline* pipeline,
                           std::string description, float repetition_penalty)
    : seq_(pipeline->NewSequence()),
      description_(std::move(description)),
      repetition_penalty_(repetition_penalty) {}

absl::StatusOr<std::vector<int32_t>> ModelDrafter::Draft(
    absl::Span<const int32_t> context, int k) {
  std::vector<int32_t> out;
  const int64_t size = static_cast<int64_t>(context.size());
  if (k <= 0 || size == 0) return out;
  // Its context is the draft model's too: draft only what fits.
  k = static_cast<int>(std::min<int64_t>(k, seq_->context_length() - size));
  if (k <= 0) return out;
  // Keep what the cache shares with the context; the last context token is
  // always fed again (its logits start the draft).
  size_t common = 0;
  while (common < fed_.size() && common < context.size() &&
         fed_[common] == context[common]) {
    ++common;
  }
  common = std::min(common, context.size() - 1);
  ES_RETURN_IF_ERROR(
      seq_->Rollback(static_cast<int64_t>(fed_.size() - common)));
  fed_.resize(common);
  ES_ASSIGN_OR_RETURN(std::vector<float> logits,
                      seq_->Forward(context.subspan(common)));
  fed_.insert(fed_.end(), context.begin() + common, context.end());
  SamplingParams greedy;
  greedy.temperature = 0;
  greedy.repetition_penalty = repetition_penalty_;
  Sampler sampler(greedy);
  std::vector<int32_t> seen(context.begin(), context.end());
  for (int i = 0; i < k; ++i) {
    const int32_t t = sampler.Sample(logits, seen);
    out.push_back(t);
    seen.push_back(t);
    if (i + 1 == k) break;
    ES_ASSIGN_OR_RETURN(logits, seq_->Forward({&t, 1}));
    fed_.push_back(t);
  }
  return out;
}

absl::StatusOr<GenerationResult> GenerateSpeculativeIds(
    LogitsModel& target, Drafter& drafter, absl::Span<const int32_t> prompt_ids,
    const GenerationOptions& options, const SpeculationParams& speculative,
    int32_t eos_id, const std::function<void(int32_t)>& on_token,
    SpeculativeStats* stats) {
  ES_RETURN_IF_ERROR(options.sampling.Validate());
  if (options.sampling.temperature != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "speculative decoding samples greedily only for now (temperature 0, "
        "got ",
        options.sampling.temperature, ")"));
  }
  if (speculative.max_draft < 1 || speculative.max_draft > kMaxDraftTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("speculative max_draft ", speculative.max_draft,
                     " is not in [1, ", kMaxDraftTokens, "]"));
  }
  ES_ASSIGN_OR_RETURN(const int64_t max_new,
                      MaxNewTokens(target, prompt_ids, options));
  SpeculativeStats local_stats;
  SpeculativeStats& st = stats != nullptr ? *stats : local_stats;
  const int64_t context_len = target.context_length();
  GenerationResult result;
  result.prompt_ids.assign(prompt_ids.begin(), prompt_ids.end());
  std::vector<int32_t> context = result.prompt_ids;
  Sampler sampler(options.sampling);
  auto t0 = std::chrono::steady_clock::now();
  ES_ASSIGN_OR_RETURN(std::vector<float> logits, target.Forward(prompt_ids));
  result.prefill_seconds = Since(t0);
  t0 = std::chrono::steady_clock::now();
  // Takes a chosen token; true when generation is over.
  auto emit = [&](int32_t t) {
    if (options.stop_at_eos && t == eos_id && eos_id >= 0) {
      result.stopped_at_eos = true;
      return true;
    }
    result.tokens.push_back(t);
    context.push_back(t);
    if (on_token) on_token(t);
    if (static_cast<int64_t>(result.tokens.size()) == max_new) {
      result.stopped_at_context = max_new < options.max_new_tokens;
      return true;
    }
    return false;
  };
  bool over = max_new <= 0 || emit(sampler.Sample(logits, context));
  int k = speculative.adaptive ? std::min(4, speculative.max_draft)
                               : speculative.max_draft;
  while (!over) {
    // The target holds every context token but the last (`next`).
    const int32_t next = context.back();
    const int64_t remaining =
        max_new - static_cast<int64_t>(result.tokens.size());
    const int64_t fits = std::min<int64_t>(
        {k, remaining - 1, context_len - static_cast<int64_t>(context.size())});
    std::vector<int32_t> draft;
    if (fits > 0) {
      const auto d0 = std::chrono::steady_clock::now();
      ES_ASSIGN_OR_RETURN(draft,
                          drafter.Draft(context, static_cast<int>(fits)));
      st.draft_seconds += Since(d0);
      if (static_cast<int64_t>(draft.size()) > fits) draft.resize(fits);
    }
    ++st.rounds;
    if (draft.empty()) {
      ES_ASSIGN_OR_RETURN(logits, target.Forward({&next, 1}));
      over = emit(sampler.Sample(logits, context));
      continue;
    }
    std::vector<int32_t> rows = {next};
    rows.insert(rows.end(), draft.begin(), draft.end());
    ES_ASSIGN_OR_RETURN(at::Tensor all, target.ForwardAll(rows));
    const int64_t m = static_cast<int64_t>(draft.size());
    if (all.dim() != 2 || all.size(0) != m + 1 ||
        all.scalar_type() != at::kFloat) {
      return absl::InternalError(absl::StrCat(
          "verification returned ", all.dim(), "-d logits of ",
          all.dim() > 0 ? all.size(0) : 0, " rows for ", m + 1, " rows"));
    }
    const int64_t vocab = all.size(1);
    all = all.contiguous();
    const float* rows_logits = all.data_ptr<float>();
    ++st.draft_rounds;
    st.drafted += m;
    st.k.push_back(static_cast<int>(m));
    int64_t accepted = 0;
    for (int64_t i = 0; i <= m && !over; ++i) {
      const int32_t t = sampler.Sample(
          absl::Span<const float>(rows_logits + i * vocab, vocab), context);
      const bool agrees = i < m && t == draft[i];
      over = emit(t);
      if (!agrees) break;
      ++accepted;
    }
    st.accepted += accepted;
    if (over) break;
    // Rows after the last accepted draft token fed positions that the
    // target's choice replaced.
    if (accepted < m) ES_RETURN_IF_ERROR(target.Rollback(m - accepted));
    if (speculative.adaptive) {
      k = accepted == m ? std::min(k + 2, speculative.max_draft)
                        : std::max(k - 1, 1);
    }
  }
  result.decode_seconds = Since(t0);
  return result;
}

}  // namespace edgesplit
