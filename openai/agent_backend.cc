#include "openai/agent_backend.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace edgesplit {
namespace openai {

absl::StatusOr<std::unique_ptr<AgentBackend>> AgentBackend::Connect(
    AgentBackendOptions options) {
  if (options.model_ids.empty()) {
    return absl::InvalidArgumentError("no model ids to serve (--model-id)");
  }
  for (const std::string& id : options.model_ids) {
    if (id.empty() || id.find(':') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("model id \"", id, "\" is empty or has a ':'"));
    }
  }
  auto b = std::unique_ptr<AgentBackend>(new AgentBackend());
  b->options_ = std::move(options);
  auto agent = DeviceAgent::Connect(b->options_.agent);
  if (!agent.ok()) return agent.status();
  b->agent_ = *std::move(agent);
  return b;
}

std::vector<std::string> AgentBackend::Models() const {
  // Each model, then its adapters this device may use ("ID:NAME", what a
  // request names). The controller answers per call, so a newly
  // registered adapter shows at once; when it cannot answer, what it said
  // last (sessions need it anyway, and their errors say why), and it is
  // not asked again during the back-off: a controller behind a dead link
  // would otherwise hold every listing for each model's deadline.
  // Without an adapter directory a device that runs blocks cannot hold an
  // adapter's part for them (sessions would fail): none are listed.
  std::vector<std::string> ids = options_.model_ids;
  if (options_.agent.adapter_dir.empty()) return ids;
  absl::MutexLock lock(&list_mu_);
  const absl::Duration timeout =
      std::min(options_.list_timeout, options_.agent.rpc_timeout);
  for (const std::string& model : options_.model_ids) {
    if (absl::Now() >= ask_after_) {
      absl::StatusOr<std::vector<std::string>> names =
          agent_->ListAdapters(model, timeout);
      if (names.ok()) {
        listed_[model] = *std::move(names);
      } else {
        ask_after_ = absl::Now() + options_.list_backoff;
      }
    }
    for (const std::string& name : listed_[model]) {
      ids.push_back(absl::StrCat(model, ":", name));
    }
  }
  return ids;
}

absl::Status AgentBackend::Check(const CompletionRequest& request) const {
  const auto& ids = options_.model_ids;
  if (std::find(ids.begin(), ids.end(), request.model) == ids.end()) {
    return absl::NotFoundError(absl::StrCat(
        "model \"", request.model,
        "\" is not served here (models: ", absl::StrJoin(ids, ", "), ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Session>> AgentBackend::Acquire(
    const std::string& model, const std::string& adapter) {
  {
    absl::MutexLock lock(&mu_);
    auto& idle = idle_[absl::StrCat(model, ":", adapter)];
    if (!idle.empty()) {
      std::unique_ptr<Session> s = std::move(idle.back());
      idle.pop_back();
      return s;
    }
  }
  // A route from the controller (and, for an adapter new to this device,
  // its download): outside the lock, so other requests go on.
  return agent_->OpenSession(model, adapter);
}

void AgentBackend::Release(const std::string& key,
                           std::unique_ptr<Session> session) {
  {
    absl::MutexLock lock(&mu_);
    auto& idle = idle_[key];
    if (static_cast<int>(idle.size()) < options_.max_idle_sessions) {
      idle.push_back(std::move(session));
    }
  }
  session.reset();  // One too many: closed outside the lock.
}

// A request on its session; the session goes back to the pool after a
// clean finish. A session whose generation failed or was cancelled is
// dropped: its route may be what failed (the next request asks the
// controller afresh).
class AgentBackend::AgentGeneration : public Generation {
 public:
  AgentGeneration(AgentBackend* backend, std::unique_ptr<Session> session,
                  const CompletionRequest& request)
      : backend_(backend),
        session_(std::move(session)),
        key_(absl::StrCat(request.model, ":", request.adapter)),
        chat_(request.chat),
        prompt_(request.prompt),
        messages_(request.messages),
        sampling_(request.sampling) {}

  absl::StatusOr<CompletionResult> Run(const TextSink& sink) override {
    Session* s = session_.get();
    bool cancelled = false;
    auto on_text = [&](absl::string_view text) {
      if (!cancelled && !sink(text)) {
        cancelled = true;
        s->Cancel();  // Closes the chain hop by hop.
      }
    };
    absl::StatusOr<GenerationStats> stats =
        chat_ ? s->Chat(messages_, sampling_, on_text)
              : s->Generate(prompt_, sampling_, on_text);
    if (cancelled) return absl::CancelledError("the client went away");
    if (!stats.ok()) return stats.status();
    backend_->Release(key_, std::move(session_));
    CompletionResult out;
    out.text = std::move(stats->text);
    out.prompt_tokens = stats->prompt_tokens;
    out.completion_tokens = static_cast<int64_t>(stats->tokens.size());
    out.finish_reason =
        FinishReason(stats->stopped_at_eos || stats->stopped_at_stop);
    return out;
  }

 private:
  AgentBackend* const backend_;
  std::unique_ptr<Session> session_;
  const std::string key_;
  const bool chat_;
  const std::string prompt_;
  const std::vector<ChatMessage> messages_;
  const SamplingOptions sampling_;
};

absl::StatusOr<std::unique_ptr<Generation>> AgentBackend::Start(
    const CompletionRequest& request) {
  if (absl::Status s = Check(request); !s.ok()) return s;
  auto session = Acquire(request.model, request.adapter);
  if (!session.ok()) return session.status();
  return std::unique_ptr<Generation>(
      new AgentGeneration(this, *std::move(session), request));
}

}  // namespace openai
}  // namespace edgesplit
