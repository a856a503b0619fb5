#include "openai/local_backend.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "runtime/adapter_name.h"
#include "runtime/lora.h"

namespace edgesplit {
namespace openai {

absl::StatusOr<std::unique_ptr<LocalBackend>> LocalBackend::Load(
    LocalBackendOptions options) {
  auto b = std::unique_ptr<LocalBackend>(new LocalBackend());
  if (options.model_id.empty()) {
    // "DIR/stories260K" or "DIR/model.gguf": "stories260K", "model".
    const std::filesystem::path path =
        std::filesystem::path(options.model_dir).lexically_normal();
    options.model_id =
        path.extension() == ".gguf" ? path.stem() : path.filename();
    if (options.model_id.empty()) {
      options.model_id = std::filesystem::path(options.model_dir)
                             .lexically_normal()
                             .parent_path()
                             .filename();
    }
  }
  if (options.model_id.empty() ||
      options.model_id.find(':') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model id \"", options.model_id, "\" is empty or has a ':'"));
  }
  b->options_ = std::move(options);
  ES_ASSIGN_OR_RETURN(b->store_, ModelStore::Open(b->options_.model_dir));
  ES_ASSIGN_OR_RETURN(b->tokenizer_, b->store_->LoadTokenizer());
  ES_ASSIGN_OR_RETURN(b->pipeline_,
                      LocalPipeline::Load(*b->store_, {}, b->options_.stage));
  auto chat = ChatTemplate::Load(b->options_.model_dir);
  if (chat.ok()) {
    b->chat_ = *std::move(chat);
  } else if (chat.status().code() == absl::StatusCode::kNotFound) {
    b->chat_error_ = chat.status();
  } else {
    return chat.status();  // A template that does not parse.
  }
  return b;
}

std::vector<std::string> LocalBackend::Models() const {
  std::vector<std::string> ids = {options_.model_id};
  std::error_code ec;
  if (options_.adapter_dir.empty()) return ids;
  std::vector<std::string> adapters;
  for (const auto& e :
       std::filesystem::directory_iterator(options_.adapter_dir, ec)) {
    const std::string name = e.path().filename();
    if (ValidateAdapterName(name).ok() &&
        std::filesystem::exists(e.path() / "adapter_config.json", ec)) {
      adapters.push_back(absl::StrCat(options_.model_id, ":", name));
    }
  }
  std::sort(adapters.begin(), adapters.end());
  ids.insert(ids.end(), adapters.begin(), adapters.end());
  return ids;
}

absl::Status LocalBackend::Check(const CompletionRequest& request) const {
  if (request.model != options_.model_id) {
    return absl::NotFoundError(absl::StrCat(
        "model \"", request.model,
        "\" is not served here (models: ", options_.model_id, ")"));
  }
  if (request.adapter.empty()) return absl::OkStatus();
  ES_RETURN_IF_ERROR(ValidateAdapterName(request.adapter));
  std::error_code ec;
  if (options_.adapter_dir.empty() ||
      !std::filesystem::exists(std::filesystem::path(options_.adapter_dir) /
                                   request.adapter / "adapter_config.json",
                               ec)) {
    return absl::NotFoundError(absl::StrCat(
        "adapter \"", request.adapter, "\" of model \"", request.model,
        "\" is not served here",
        options_.adapter_dir.empty()
            ? " (no adapter directory)"
            : absl::StrCat(" (not in ", options_.adapter_dir, ")")));
  }
  return absl::OkStatus();
}

absl::Status LocalBackend::Attach(const std::string& adapter) {
  absl::MutexLock lock(&mu_);
  if (attached_.count(adapter) > 0) return absl::OkStatus();
  ES_ASSIGN_OR_RETURN(
      std::unique_ptr<LoraAdapter> lora,
      LoraAdapter::LoadPeft(
          (std::filesystem::path(options_.adapter_dir) / adapter).string(),
          store_->config(), adapter));
  ES_RETURN_IF_ERROR(pipeline_->AttachAdapter(std::move(lora)));
  attached_.insert(adapter);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> LocalBackend::PromptIds(
    const CompletionRequest& request) const {
  if (!request.chat) return tokenizer_->EncodePrompt(request.prompt);
  // A request this model cannot take (400), not a missing model (404).
  if (chat_ == nullptr) {
    return absl::InvalidArgumentError(chat_error_.message());
  }
  std::vector<ChatTurn> turns;
  for (const ChatMessage& m : request.messages) {
    turns.push_back({m.role, m.content});
  }
  ES_ASSIGN_OR_RETURN(std::string text,
                      chat_->Render(turns, /*add_generation_prompt=*/true));
  return chat_->Encode(*tokenizer_, text);
}

// A request's own sequence of the shared pipeline, and its prompt.
class LocalBackend::LocalGeneration : public Generation {
 public:
  LocalGeneration(const Tokenizer* tokenizer,
                  std::unique_ptr<LocalPipeline::Sequence> seq,
                  std::vector<int32_t> ids, GenerationOptions g,
                  std::vector<std::string> stop)
      : tokenizer_(tokenizer),
        seq_(std::move(seq)),
        ids_(std::move(ids)),
        g_(std::move(g)),
        stop_(std::move(stop)) {}

  absl::StatusOr<CompletionResult> Run(const TextSink& sink) override {
    bool cancelled = false;
    ES_ASSIGN_OR_RETURN(GenerationResult r,
                        GenerateTextFromIds(
                            *tokenizer_, std::move(ids_),
                            [&](absl::string_view text) {
                              if (!cancelled && !sink(text)) cancelled = true;
                            },
                            [&](absl::Span<const int32_t> prompt, int32_t eos,
                                const TokenCallback& on_token) {
                              return GenerateIds(
                                  *seq_, prompt, g_, eos, [&](int32_t id) {
                                    return on_token(id) && !cancelled;
                                  });
                            },
                            stop_));
    if (cancelled) return absl::CancelledError("the client went away");
    CompletionResult out;
    out.text = std::move(r.text);
    out.prompt_tokens = static_cast<int64_t>(r.prompt_ids.size());
    out.completion_tokens = static_cast<int64_t>(r.tokens.size());
    out.finish_reason = FinishReason(r.stopped_at_eos || r.stopped_at_stop);
    return out;
  }

 private:
  const Tokenizer* tokenizer_;
  std::unique_ptr<LocalPipeline::Sequence> seq_;
  std::vector<int32_t> ids_;
  GenerationOptions g_;
  std::vector<std::string> stop_;
};

absl::StatusOr<std::unique_ptr<Generation>> LocalBackend::Start(
    const CompletionRequest& request) {
  ES_RETURN_IF_ERROR(Check(request));
  if (!request.adapter.empty()) ES_RETURN_IF_ERROR(Attach(request.adapter));
  ES_ASSIGN_OR_RETURN(std::vector<int32_t> ids, PromptIds(request));
  const SamplingOptions& s = request.sampling;
  GenerationOptions g;
  g.sampling.temperature = s.temperature;
  g.sampling.top_k = s.top_k;
  g.sampling.top_p = s.top_p;
  g.sampling.repetition_penalty = s.repetition_penalty;
  g.sampling.seed = s.seed;
  g.max_new_tokens = s.max_new_tokens;
  g.stop_at_eos = s.stop_at_eos;
  if (request.chat) {
    const int32_t turn_end = chat_->TurnEndId(*tokenizer_);
    if (turn_end >= 0) g.more_eos_ids.push_back(turn_end);
  }
  ES_RETURN_IF_ERROR(g.sampling.Validate());
  auto seq = pipeline_->NewSequence(nullptr, request.adapter);
  // A prompt the context cannot hold is refused now, not mid-stream.
  ES_RETURN_IF_ERROR(MaxNewTokens(*seq, ids, g).status());
  return std::unique_ptr<Generation>(new LocalGeneration(
      tokenizer_.get(), std::move(seq), std::move(ids), std::move(g), s.stop));
}

}  // namespace openai
}  // namespace edgesplit
