#include "runtime/generator.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/torch_util.h"

namespace edgesplit {
namespace {

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
      .count();
}

// Streams text as HF's TextStreamer does, in O(length) decode work: decode
// a short window of ids starting a few tokens back (so SentencePiece keeps
// leading spaces and multi-byte pieces join), emit what it adds to the
// window's previous decoding, and hold back text ending in U+FFFD (an
// incomplete UTF-8 sequence whose bytes are still coming).
class TextStream {
 public:
  TextStream(const Tokenizer& tokenizer, std::vector<int32_t> prompt,
             const std::function<void(absl::string_view)>& on_text)
      : tokenizer_(tokenizer), ids_(std::move(prompt)), on_text_(on_text) {
    read_offset_ = ids_.size();
    prefix_offset_ = ids_.size() > 5 ? ids_.size() - 5 : 0;
  }

  absl::Status Add(int32_t id) {
    ids_.push_back(id);
    return Emit(/*final=*/false);
  }
  absl::Status Finish() { return Emit(/*final=*/true); }

 private:
  absl::Status Emit(bool final) {
    absl::Span<const int32_t> all(ids_);
    ES_ASSIGN_OR_RETURN(std::string prefix,
                        tokenizer_.Decode(all.subspan(
                            prefix_offset_, read_offset_ - prefix_offset_)));
    ES_ASSIGN_OR_RETURN(std::string text,
                        tokenizer_.Decode(all.subspan(prefix_offset_)));
    constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";
    const bool incomplete =
        text.size() >= 3 &&
        absl::string_view(text).substr(text.size() - 3) == kReplacement;
    if (text.size() > prefix.size() && (final || !incomplete)) {
      if (on_text_) on_text_(absl::string_view(text).substr(prefix.size()));
      prefix_offset_ = read_offset_;
      read_offset_ = ids_.size();
    }
    return absl::OkStatus();
  }

  const Tokenizer& tokenizer_;
  std::vector<int32_t> ids_;
  const std::function<void(absl::string_view)>& on_text_;
  size_t prefix_offset_ = 0;
  size_t read_offset_ = 0;
};

}  // namespace

absl::StatusOr<int64_t> MaxNewTokens(const LogitsModel& model,
                                     absl::Span<const int32_t> prompt_ids,
                                     const GenerationOptions& options) {
  if (prompt_ids.empty()) {
    return absl::InvalidArgumentError("prompt has no tokens");
  }
  const int64_t context_len = model.context_length();
  if (static_cast<int64_t>(prompt_ids.size()) > context_len) {
    return absl::OutOfRangeError(
        absl::StrCat("prompt of ", prompt_ids.size(),
                     " tokens exceeds the model's context of ", context_len));
  }
  // Stop cleanly when the context is full instead of failing and losing
  // the text so far.
  const int64_t room =
      context_len - static_cast<int64_t>(prompt_ids.size()) + 1;
  return std::min<int64_t>(options.max_new_tokens, room);
}

absl::StatusOr<GenerationResult> GenerateIds(
    LogitsModel& model, absl::Span<const int32_t> prompt_ids,
    const GenerationOptions& options, int32_t eos_id,
    const TokenCallback& on_token) {
  ES_RETURN_IF_ERROR(options.sampling.Validate());
  ES_ASSIGN_OR_RETURN(const int64_t max_new,
                      MaxNewTokens(model, prompt_ids, options));
  GenerationResult result;
  result.prompt_ids.assign(prompt_ids.begin(), prompt_ids.end());
  std::vector<int32_t> context = result.prompt_ids;
  Sampler sampler(options.sampling);
  auto t0 = std::chrono::steady_clock::now();
  ES_ASSIGN_OR_RETURN(std::vector<float> logits, model.Forward(prompt_ids));
  result.prefill_seconds = Since(t0);
  t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < max_new; ++i) {
    const int32_t next = sampler.Sample(logits, context);
    if (IsEos(options, eos_id, next)) {
      result.stopped_at_eos = true;
      break;
    }
    result.tokens.push_back(next);
    context.push_back(next);
    if (on_token && !on_token(next)) {
      result.stopped_by_caller = true;
      break;
    }
    if (i + 1 == max_new) {
      result.stopped_at_context = max_new < options.max_new_tokens;
      break;
    }
    ES_ASSIGN_OR_RETURN(logits, model.Forward({&next, 1}));
  }
  result.decode_seconds = Since(t0);
  return result;
}

absl::StatusOr<at::Tensor> LogitsModel::ForwardAll(
    absl::Span<const int32_t> tokens) {
  (void)tokens;
  return absl::UnimplementedError("this model does not verify drafts");
}

absl::Status LogitsModel::Rollback(int64_t positions) {
  (void)positions;
  return absl::UnimplementedError("this model does not roll back");
}

absl::StatusOr<CheckedDraft> LogitsModel::ForwardChecked(
    absl::Span<const int32_t> tokens, const DraftCheck& check) {
  const int64_t k = static_cast<int64_t>(tokens.size()) - 1;
  ES_RETURN_IF_ERROR(check.Validate(k));
  ES_ASSIGN_OR_RETURN(at::Tensor all, ForwardAll(tokens));
  if (all.dim() != 2 || all.size(0) != k + 1 ||
      all.scalar_type() != at::kFloat) {
    return absl::InternalError(absl::StrCat(
        "verification returned ", all.dim(), "-d logits of ",
        all.dim() > 0 ? all.size(0) : 0, " rows for ", k + 1, " rows"));
  }
  all = all.contiguous();
  const int64_t vocab = all.size(1);
  const float* rows = all.data_ptr<float>();
  CheckedDraft out;
  out.accepted = AcceptDraft(rows, vocab, tokens.subspan(1), check);
  out.logits.assign(rows + out.accepted * vocab,
                    rows + (out.accepted + 1) * vocab);
  return out;
}

absl::StatusOr<GenerationResult> Generate(
    LogitsModel& model, const Tokenizer& tokenizer, absl::string_view prompt,
    const GenerationOptions& options,
    const std::function<void(absl::string_view)>& on_text) {
  return GenerateText(tokenizer, prompt, on_text,
                      [&](absl::Span<const int32_t> prompt_ids, int32_t eos_id,
                          const TokenCallback& on_token) {
                        return GenerateIds(model, prompt_ids, options, eos_id,
                                           on_token);
                      });
}

absl::StatusOr<GenerationResult> GenerateText(
    const Tokenizer& tokenizer, absl::string_view prompt,
    const std::function<void(absl::string_view)>& on_text,
    const IdGenerator& generate_ids) {
  ES_ASSIGN_OR_RETURN(std::vector<int32_t> prompt_ids,
                      tokenizer.EncodePrompt(prompt));
  return GenerateTextFromIds(tokenizer, std::move(prompt_ids), on_text,
                             generate_ids);
}

absl::StatusOr<GenerationResult> GenerateTextFromIds(
    const Tokenizer& tokenizer, std::vector<int32_t> prompt_ids,
    const std::function<void(absl::string_view)>& on_text,
    const IdGenerator& generate_ids, const std::vector<std::string>& stop) {
  for (const std::string& s : stop) {
    if (s.empty()) return absl::InvalidArgumentError("empty stop string");
  }
  StopStringFilter filter(stop, [&](absl::string_view text) {
    if (on_text) on_text(text);
  });
  // Named: TextStream keeps a reference to it.
  const std::function<void(absl::string_view)> to_filter =
      [&](absl::string_view text) { filter.Add(text); };
  TextStream stream(tokenizer, prompt_ids, to_filter);
  absl::Status stream_status;
  auto on_token = [&](int32_t id) {
    if (stream_status.ok()) stream_status = stream.Add(id);
    return stream_status.ok() && !filter.stopped();
  };
  ES_ASSIGN_OR_RETURN(GenerationResult result,
                      generate_ids(prompt_ids, tokenizer.eos_id(), on_token));
  ES_RETURN_IF_ERROR(stream_status);
  ES_RETURN_IF_ERROR(stream.Finish());
  filter.Finish();
  result.stopped_at_stop = filter.stopped();
  if (result.stopped_at_stop) result.stopped_by_caller = false;
  // The continuation: decode(prompt + generated) minus decode(prompt), which
  // keeps SentencePiece's leading space that decoding the new ids alone
  // would drop.
  ES_ASSIGN_OR_RETURN(std::string prompt_text, tokenizer.Decode(prompt_ids));
  std::vector<int32_t> all = prompt_ids;
  all.insert(all.end(), result.tokens.begin(), result.tokens.end());
  ES_ASSIGN_OR_RETURN(std::string full, tokenizer.Decode(all));
  result.text = full.size() >= prompt_text.size()
                    ? full.substr(prompt_text.size())
                    : std::string();
  if (result.stopped_at_stop) {
    size_t cut = result.text.size();
    for (const std::string& s : stop) cut = std::min(cut, result.text.find(s));
    result.text.resize(cut);
  }
  return result;
}

StopStringFilter::StopStringFilter(const std::vector<std::string>& stop,
                                   std::function<void(absl::string_view)> out)
    : stop_(stop), out_(std::move(out)) {}

bool StopStringFilter::Add(absl::string_view text) {
  if (stopped_) return false;
  held_.append(text.data(), text.size());
  size_t first = std::string::npos;
  for (const std::string& s : stop_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    if (first > 0) out_(absl::string_view(held_).substr(0, first));
    held_.clear();
    stopped_ = true;
    return false;
  }
  // Hold back the longest tail that is a proper prefix of a stop string:
  // the next text may complete it.
  size_t keep = 0;
  for (const std::string& s : stop_) {
    for (size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n) {
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
    }
  }
  if (held_.size() > keep) {
    out_(absl::string_view(held_).substr(0, held_.size() - keep));
    held_.erase(0, held_.size() - keep);
  }
  return true;
}

void StopStringFilter::Finish() {
  if (!stopped_ && !held_.empty()) out_(held_);
  held_.clear();
}

absl::StatusOr<std::unique_ptr<LocalPipeline>> LocalPipeline::Load(
    const ModelStore& store, const std::vector<int64_t>& cuts,
    const StageOptions& options) {
  return Load(store, cuts, std::vector<StageOptions>(cuts.size() + 1, options));
}

absl::StatusOr<std::unique_ptr<LocalPipeline>> LocalPipeline::Load(
    const ModelStore& store, const std::vector<int64_t>& cuts,
    const std::vector<StageOptions>& per_stage) {
  if (per_stage.size() != cuts.size() + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        per_stage.size(), " stage options for ", cuts.size() + 1, " stages"));
  }
  const int64_t n = store.config().num_layers;
  std::vector<int64_t> bounds = {0};
  for (int64_t c : cuts) {
    if (c <= bounds.back() || c >= n) {
      return absl::InvalidArgumentError(absl::StrCat(
          "split points must increase strictly inside (0, ", n, "), got ", c));
    }
    bounds.push_back(c);
  }
  bounds.push_back(n);
  auto p = std::unique_ptr<LocalPipeline>(new LocalPipeline());
  for (size_t i = 0; i + 1 < bounds.size(); ++i) {
    StageSpec spec;
    spec.blocks = {bounds[i], bounds[i + 1]};
    spec.embedding = i == 0;
    spec.head = i + 2 == bounds.size();
    ES_ASSIGN_OR_RETURN(auto stage,
                        StageModel::Load(store, spec, per_stage[i]));
    p->stages_.push_back(std::move(stage));
  }
  return p;
}

absl::Status LocalPipeline::AttachAdapter(
    std::shared_ptr<LoraAdapter> adapter) {
  for (auto& s : stages_) ES_RETURN_IF_ERROR(s->AttachAdapter(adapter));
  absl::MutexLock lock(&mu_);
  adapters_[adapter->name()] = std::move(adapter);
  return absl::OkStatus();
}

std::unique_ptr<LocalPipeline::Sequence> LocalPipeline::NewSequence(
    KvBudget* budget, std::string adapter) const {
  auto seq = std::unique_ptr<Sequence>(new Sequence());
  seq->pipeline_ = this;
  seq->adapter_ = std::move(adapter);
  for (const auto& s : stages_) seq->caches_.push_back(s->NewCache(budget));
  return seq;
}

absl::StatusOr<at::Tensor> LocalPipeline::RunStages(
    absl::Span<Sequence* const> seqs,
    absl::Span<const absl::Span<const int32_t>> tokens, bool last_only) const {
  if (seqs.size() != tokens.size() || seqs.empty()) {
    return absl::InvalidArgumentError("one token list per sequence");
  }
  bool mixed = false;
  for (const Sequence* s : seqs) {
    if (s->pipeline_ != this) {
      return absl::InvalidArgumentError("sequence belongs to another pipeline");
    }
    mixed = mixed || s->adapter_ != seqs[0]->adapter_;
  }
  // A batch of several adapters names one per sequence (held here for the
  // call); a batch of one names it for all (training's path).
  std::vector<std::shared_ptr<LoraAdapter>> held;
  std::vector<const LoraAdapter*> per_sequence;
  if (mixed) {
    absl::MutexLock lock(&mu_);
    for (const Sequence* s : seqs) {
      if (s->adapter_.empty()) {
        per_sequence.push_back(nullptr);
        continue;
      }
      auto it = adapters_.find(s->adapter_);
      if (it == adapters_.end()) {
        return absl::NotFoundError(
            absl::StrCat("adapter \"", s->adapter_, "\" is not attached"));
      }
      held.push_back(it->second);
      per_sequence.push_back(it->second.get());
    }
  }
  return TorchCall("LocalPipeline", [&]() -> absl::StatusOr<at::Tensor> {
    std::vector<int64_t> ids;
    for (const auto& t : tokens) ids.insert(ids.end(), t.begin(), t.end());
    std::vector<int64_t> before;
    for (Sequence* s : seqs) before.push_back(s->length());
    at::Tensor x;
    for (size_t si = 0; si < stages_.size(); ++si) {
      StageInput in;
      for (size_t i = 0; i < seqs.size(); ++i) {
        in.sequences.push_back({seqs[i]->caches_[si].get(),
                                static_cast<int64_t>(tokens[i].size())});
      }
      if (si == 0) {
        in.tokens = at::tensor(ids, at::kLong);
      } else {
        in.hidden = x;
      }
      in.last_token_only = last_only;
      if (mixed) {
        in.sequence_adapters = per_sequence;
      } else {
        in.adapter = seqs[0]->adapter_;
      }
      auto out = stages_[si]->Forward(in);
      if (!out.ok()) {
        // A later stage failing must not leave earlier stages advanced.
        for (size_t i = 0; i < seqs.size(); ++i) {
          for (auto& c : seqs[i]->caches_) c->Truncate(before[i]);
        }
        return out.status();
      }
      x = *std::move(out);
    }
    return x;
  });
}

absl::StatusOr<at::Tensor> LocalPipeline::Sequence::Run(
    absl::Span<const int32_t> tokens, bool last_only) {
  Sequence* self = this;
  return pipeline_->RunStages({&self, 1}, {&tokens, 1}, last_only);
}

absl::StatusOr<std::vector<float>> LocalPipeline::Sequence::Forward(
    absl::Span<const int32_t> tokens) {
  ES_ASSIGN_OR_RETURN(at::Tensor logits, Run(tokens, /*last_only=*/true));
  at::Tensor row = logits[0].contiguous();
  const float* p = row.data_ptr<float>();
  return std::vector<float>(p, p + row.numel());
}

absl::StatusOr<at::Tensor> LocalPipeline::Sequence::ForwardAll(
    absl::Span<const int32_t> tokens) {
  return Run(tokens, /*last_only=*/false);
}

absl::Status LocalPipeline::Sequence::Rollback(int64_t positions) {
  if (positions < 0 || positions > length()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rollback of ", positions,
                     " positions, but the sequence "
                     "holds ",
                     length()));
  }
  for (auto& c : caches_) c->Truncate(c->length() - positions);
  return absl::OkStatus();
}

}  // namespace edgesplit
