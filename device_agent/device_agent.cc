#include "edgesplit/device_agent.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "delivery/adapter_files.h"
#include "device_agent/adapter_download.h"
#include "device_agent/agent_impl.h"
#include "device_agent/drafts.h"
#include "device_agent/remote_sequence.h"
#include "edgesplit/v1/controller.grpc.pb.h"
#include "edgesplit/v1/delivery.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "kernels/cpu/quant_blocks.h"
#include "privacy/row_noise.h"
#include "proto/grpc_status.h"
#include "proto/probe.h"
#include "proto/stage_stream.h"
#include "proto/tensor_codec.h"
#include "runtime/chat_template.h"
#include "runtime/generator.h"
#include "runtime/lora.h"
#include "runtime/model_store.h"
#include "runtime/profiler.h"
#include "runtime/speculative.h"
#include "runtime/threading.h"

namespace edgesplit {

struct Session::Impl {
  DeviceAgent::Impl* agent = nullptr;
  std::shared_ptr<LocalModel> model;
  v1::OpenSessionResponse route;
  std::string model_id, adapter;
  // The named adapter, whole (a stage uses only its own blocks' modules,
  // so it serves whatever blocks a re-plan gives this device); null
  // without one or without DeviceAgentOptions::adapter_dir.
  std::shared_ptr<const LoraAdapter> lora;
  int generation = 0;
  DraftCache drafts;  // The last speculative draft model loaded.
  // The model's chat template, loaded by the first Chat.
  std::unique_ptr<ChatTemplate> chat_template;
  // This generation decodes greedily without a penalty: the route answers
  // token ids instead of logits.
  bool argmax_only = false;

  class Rerouting;  // Below: a LogitsModel that survives route changes.

  // Where this device keeps the model (DeviceAgent::Impl::ModelDirFor).
  std::string ModelDir(const v1::OpenSessionResponse& r) const {
    return agent->ModelDirFor(model_id, r.plan());
  }
  std::string ModelDir() const { return ModelDir(route); }
  // Adopts a route from the controller: loads this device's part of it.
  absl::Status Adopt(v1::OpenSessionResponse r) {
    // The route and the local model change together, or not at all: a
    // device running other blocks than its route assumes would compute
    // nonsense with the right shapes.
    absl::Status have = agent->EnsureModel(model_id, r.plan());
    auto loaded = have.ok()
                      ? agent->Load(ModelDir(r), r.device_first_block(),
                                    r.device_last_block(), r.plan().u_shaped(),
                                    DeviceStageWeights(r))
                      : absl::StatusOr<std::shared_ptr<LocalModel>>(have);
    if (!loaded.ok()) {
      CloseOnController(r.session_id());
      return loaded.status();
    }
    const std::string old_id = route.session_id();
    route = std::move(r);
    model = *std::move(loaded);
    if (!old_id.empty()) CloseOnController(old_id);
    return absl::OkStatus();
  }
  void CloseOnController(const std::string& id) { agent->CloseRoute(id); }
  // After `failure` on the current route: finds the hops that no longer
  // answer (a short probe each), and adopts a route without them.
  absl::Status Reroute(const absl::Status& failure, absl::Time deadline) {
    std::vector<std::string> suspects;
    for (const v1::Hop& hop : route.route()) {
      ProbeOptions po;
      po.rtt_probes = 1;
      po.payload_bytes = 1024;
      po.timeout = std::min(agent->options.rpc_timeout, absl::Seconds(2));
      auto stub = agent->stubs->Get(hop.address(), hop.node());
      if (!stub.ok() || !ProbeLink(*stub, hop.node(), po).ok()) {
        suspects.push_back(hop.node());
      }
    }
    // Nodes that are alive beat again within a few heartbeats; a route that
    // needs longer is not coming.
    auto next = agent->OpenRoute(
        model_id, adapter, suspects,
        std::min(deadline, absl::Now() + agent->options.rpc_timeout));
    if (!next.ok()) {
      return absl::Status(failure.code(),
                          absl::StrCat(failure.message(), "; no new route: ",
                                       next.status().message()));
    }
    return Adopt(*std::move(next));
  }
  absl::Mutex mu;
  RemoteSequence* active ABSL_GUARDED_BY(mu) = nullptr;
  bool cancelled ABSL_GUARDED_BY(mu) = false;

  ~Impl() {
    // Best effort: the controller also forgets sessions of dead devices.
    CloseOnController(route.session_id());
  }
};

namespace {

bool Reroutable(const absl::Status& s) {
  // A hop gone (UNAVAILABLE), or a hop that no longer holds the stage after
  // a re-plan (NOT_FOUND). Bad input, cancellation and deadlines are final.
  return s.code() == absl::StatusCode::kUnavailable ||
         s.code() == absl::StatusCode::kNotFound;
}

// A sequence that survives route changes: on a reroutable failure it gets
// a new route and replays the tokens so far (prompt + generated) there,
// which rebuilds every KV cache, then answers the step that failed. The
// logits it returns are those of the same context, so generation goes on
// at the same token.
}  // namespace

class Session::Impl::Rerouting : public LogitsModel {
 public:
  Rerouting(Session::Impl* session, absl::Time deadline,
            std::function<void(RemoteSequence*)> on_active)
      : s_(session), deadline_(deadline), on_active_(std::move(on_active)) {}
  ~Rerouting() override { on_active_(nullptr); }

  // A private generation: every route it opens, the first included, must
  // keep the device on the blocks it has now (the released rows are of
  // that cut), give it at least one, and meet the plan's floor. Not owned.
  void RequirePrivacy(const PrivacyOptions* privacy) {
    privacy_ = privacy;
    private_blocks_ = {s_->route.device_first_block(),
                       s_->route.device_last_block()};
  }

  absl::Status CheckPrivateRoute() const {
    if (privacy_ == nullptr) return absl::OkStatus();
    const std::pair<int64_t, int64_t> blocks = {s_->route.device_first_block(),
                                                s_->route.device_last_block()};
    if (s_->model->local == nullptr || blocks != private_blocks_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "a private generation cannot move to a route that gives this "
          "device blocks [",
          blocks.first, ", ", blocks.second, ") instead of [",
          private_blocks_.first, ", ", private_blocks_.second,
          "): its released rows are of the old cut, and with no blocks "
          "token ids would leave the device"));
    }
    return CheckPlanPrivacy(s_->route, *privacy_);
  }

  absl::Status Open() {
    ES_RETURN_IF_ERROR(CheckPrivateRoute());
    RemoteSequenceOptions ro;
    // One stream session per attempt: fresh KV caches along the route.
    ro.session_id = absl::StrCat(s_->route.session_id(), "/", s_->generation++);
    ro.model_id = s_->model_id;
    ro.adapter = s_->adapter;
    ro.codec = s_->agent->codec;
    ro.grant = s_->route.grant();
    ro.route.assign(s_->route.route().begin(), s_->route.route().end());
    ro.deadline = deadline_;
    ro.compute_slowdown = s_->agent->options.compute_slowdown;
    ro.argmax_only = s_->argmax_only;
    ro.local_adapter = s_->lora.get();
    ro.privatizer = privatizer_;
    if (!s_->adapter.empty() && s_->model->local != nullptr &&
        s_->lora == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("adapter \"", s_->adapter,
                       "\": this device runs blocks of the model "
                       "and needs the adapter's part for them; set adapter_dir "
                       "(--adapter-dir) to a directory holding ",
                       s_->adapter, "/"));
    }
    on_active_(nullptr);
    ES_ASSIGN_OR_RETURN(
        v1::StageService::Stub * first,
        s_->agent->stubs->Get(ro.route[0].address(), ro.route[0].node()));
    ES_ASSIGN_OR_RETURN(
        seq_,
        RemoteSequence::Open(s_->model->store->config(), s_->model->local.get(),
                             s_->model->head.get(), first, ro));
    on_active_(seq_.get());
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<float>> Forward(
      absl::Span<const int32_t> tokens) override {
    auto logits = Rerouted<std::vector<float>>(seq_->Forward(tokens), [&] {
      std::vector<int32_t> replay = history_;
      replay.insert(replay.end(), tokens.begin(), tokens.end());
      return seq_->Forward(replay);
    });
    if (logits.ok()) {
      history_.insert(history_.end(), tokens.begin(), tokens.end());
    }
    return logits;
  }
  // Speculative verification, rerouted like Forward: the new route
  // replays the verified history, then verifies `tokens` again.
  absl::StatusOr<at::Tensor> ForwardAll(
      absl::Span<const int32_t> tokens) override {
    auto logits = Rerouted<at::Tensor>(
        seq_->ForwardAll(tokens), [&]() -> absl::StatusOr<at::Tensor> {
          if (!history_.empty()) {
            ES_RETURN_IF_ERROR(seq_->Forward(history_).status());
          }
          return seq_->ForwardAll(tokens);
        });
    if (logits.ok()) {
      history_.insert(history_.end(), tokens.begin(), tokens.end());
    }
    return logits;
  }
  absl::StatusOr<CheckedDraft> ForwardChecked(
      absl::Span<const int32_t> tokens, const DraftCheck& check) override {
    auto checked = Rerouted<CheckedDraft>(
        seq_->ForwardChecked(tokens, check),
        [&]() -> absl::StatusOr<CheckedDraft> {
          if (!history_.empty()) {
            ES_RETURN_IF_ERROR(seq_->Forward(history_).status());
          }
          return seq_->ForwardChecked(tokens, check);
        });
    if (checked.ok()) {
      history_.insert(history_.end(), tokens.begin(), tokens.end());
    }
    return checked;
  }
  absl::Status Rollback(int64_t positions) override {
    // The sequence's cache holds exactly history_: it checks the range.
    ES_RETURN_IF_ERROR(seq_->Rollback(positions));
    history_.resize(history_.size() - positions);
    return absl::OkStatus();
  }
  int64_t context_length() const override { return seq_->context_length(); }

  RemoteSequence& current() { return *seq_; }

  // Open() on a route the controller just planned: its servers may still be
  // loading their new stages (NOT_FOUND) for a moment.
  absl::Status OpenWhenLoaded() {
    const absl::Time until =
        std::min(deadline_, absl::Now() + s_->agent->options.rpc_timeout);
    absl::Duration backoff = absl::Milliseconds(20);
    for (;;) {
      absl::Status s = Open();
      if (s.ok() || s.code() != absl::StatusCode::kNotFound ||
          absl::Now() + backoff > until) {
        return s;
      }
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Milliseconds(500));
    }
  }
  // The first Open of a generation: a hop may have died since the
  // controller planned the route; that reroutes like a failed step.
  absl::Status OpenRerouting() {
    absl::Status s = OpenWhenLoaded();
    while (MayReroute(s)) {
      PaceReroute();
      ++reroutes_;
      ES_RETURN_IF_ERROR(s_->Reroute(s, deadline_));
      s = OpenWhenLoaded();
    }
    return s;
  }
  int reroutes() const { return reroutes_; }
  // Every row sent from now on, on this route and the next, goes through
  // `privatizer` (not owned; outlives this).
  void set_privatizer(privacy::SequencePrivatizer* privatizer) {
    privatizer_ = privatizer;
    if (seq_) seq_->set_privatizer(privatizer);
  }

 private:
  // Reroutes after the first wait a little, doubling (100 ms .. 2 s): a
  // node that just restarted heartbeats, so the controller routes through
  // it again before the connections to it are back.
  void PaceReroute() const {
    if (reroutes_ == 0) return;
    const int doublings = std::min(reroutes_ - 1, 5);
    absl::SleepFor(
        std::min(absl::Milliseconds(100) * (1 << doublings), absl::Seconds(2)));
  }
  // `result` of a step on the current route; after a failure a new route
  // may cure, the step `again` on a new route (whose KV caches it must
  // rebuild from history_), as often as reroutes and time allow.
  template <typename T>
  absl::StatusOr<T> Rerouted(absl::StatusOr<T> result,
                             const std::function<absl::StatusOr<T>()>& again) {
    while (MayReroute(result.status())) {
      PaceReroute();
      ++reroutes_;
      // End the failed route's sessions first: replaying on the same
      // servers must not find their KV budget held by the old caches.
      seq_->Cancel();
      ES_RETURN_IF_ERROR(s_->Reroute(result.status(), deadline_));
      absl::Status opened = OpenWhenLoaded();
      result = opened.ok() ? again() : absl::StatusOr<T>(opened);
    }
    return result;
  }
  // Whether `failure` is one a new route may cure, with reroutes and time
  // left for another.
  bool MayReroute(const absl::Status& failure) const {
    return !failure.ok() && Reroutable(failure) &&
           reroutes_ < s_->agent->options.max_reroutes &&
           absl::Now() < deadline_;
  }

  Session::Impl* const s_;
  const absl::Time deadline_;
  std::function<void(RemoteSequence*)> on_active_;
  std::unique_ptr<RemoteSequence> seq_;
  std::vector<int32_t> history_;
  int reroutes_ = 0;
  privacy::SequencePrivatizer* privatizer_ = nullptr;
  const PrivacyOptions* privacy_ = nullptr;
  std::pair<int64_t, int64_t> private_blocks_;
};

namespace {

// INVALID_ARGUMENT / FAILED_PRECONDITION for privacy settings this
// generation cannot honour; OK when privacy is off.
absl::Status CheckPrivacy(const SamplingOptions& sampling,
                          bool device_has_blocks) {
  const PrivacyOptions& p = sampling.privacy;
  if (p.epsilon == 0) return absl::OkStatus();
  if (!(p.epsilon > 0) || !std::isfinite(p.epsilon)) {
    return absl::InvalidArgumentError(
        absl::StrCat("privacy epsilon ", p.epsilon, " is not > 0"));
  }
  if (!(p.delta > 0 && p.delta < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("privacy delta ", p.delta, " is not in (0, 1)"));
  }
  if (!(p.clip > 0) || !std::isfinite(p.clip)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "privacy clip ", p.clip,
        " is not > 0: it bounds the L2 norm of each activation row sent "
        "(--privacy-clip)"));
  }
  if (!sampling.speculative.draft.empty()) {
    return absl::InvalidArgumentError(
        "privacy with speculative decoding: the rows of rejected drafts "
        "would be releases too; turn one of them off");
  }
  if (!device_has_blocks) {
    return absl::FailedPreconditionError(
        "privacy needs the device to run at least one block: the plan gives "
        "it none, so token ids would leave the device, and those cannot be "
        "noised");
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// The privacy of one generation: calibrated for every row it may send
// (the prompt and each new token but the last, within the context),
// charged to the device's budget before any row leaves.
struct PrivateGeneration {
  std::unique_ptr<privacy::SequencePrivatizer> privatizer;
  double epsilon = 0;
  double budget_spent = 0;

  absl::Status Start(privacy::PrivacyBudget* budget, const PrivacyOptions& p,
                     const ModelConfig& config, int64_t prompt_rows,
                     int32_t max_new_tokens) {
    if (prompt_rows > config.max_positions) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt of ", prompt_rows, " tokens exceeds the model's ",
          config.max_positions, " positions"));
    }
    const int64_t most = std::max(
        prompt_rows, std::min<int64_t>(config.max_positions,
                                       prompt_rows + max_new_tokens - 1));
    ES_ASSIGN_OR_RETURN(double sigma,
                        privacy::RowNoiseForEpsilon(p.epsilon, p.delta, most));
    ES_ASSIGN_OR_RETURN(epsilon, privacy::RowsEpsilon(most, sigma, p.delta));
    // Everything that may fail before the charge: a refused generation
    // spends nothing.
    ES_ASSIGN_OR_RETURN(std::unique_ptr<privacy::NoiseSource> noise,
                        privacy::NoiseSource::Secure());
    if (budget != nullptr) {
      ES_ASSIGN_OR_RETURN(std::vector<double> charged,
                          privacy::RowsRdp(most, sigma, budget->orders()));
      ES_ASSIGN_OR_RETURN(privacy::EpsilonAt total, budget->Charge(charged));
      budget_spent = total.epsilon;
    }
    privatizer = std::make_unique<privacy::SequencePrivatizer>(
        config.hidden_size, p.clip, sigma, most, std::move(noise));
    return absl::OkStatus();
  }
};

}  // namespace

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::~Session() = default;

void Session::Cancel() {
  absl::MutexLock lock(&impl_->mu);
  impl_->cancelled = true;
  if (impl_->active != nullptr) impl_->active->Cancel();
}

const std::string& Session::session_id() const {
  return impl_->route.session_id();
}

std::string Session::route() const { return RouteString(impl_->route); }

absl::StatusOr<GenerationStats> Session::Generate(
    absl::string_view prompt, const SamplingOptions& sampling,
    const std::function<void(absl::string_view)>& on_text) {
  ES_ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                      impl_->model->tokenizer->EncodePrompt(prompt));
  return GenerateFrom(std::move(ids), sampling, on_text);
}

absl::StatusOr<GenerationStats> Session::Chat(
    const std::vector<ChatMessage>& messages, const SamplingOptions& sampling,
    const std::function<void(absl::string_view)>& on_text) {
  Impl& s = *impl_;
  if (s.chat_template == nullptr) {
    ES_ASSIGN_OR_RETURN(s.chat_template, ChatTemplate::Load(s.ModelDir()));
  }
  std::vector<ChatTurn> turns;
  for (const ChatMessage& m : messages) turns.push_back({m.role, m.content});
  ES_ASSIGN_OR_RETURN(std::string text,
                      s.chat_template->Render(turns,
                                              /*add_generation_prompt=*/true));
  ES_ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                      s.chat_template->Encode(*s.model->tokenizer, text));
  return GenerateFrom(std::move(ids), sampling, on_text,
                      s.chat_template->TurnEndId(*s.model->tokenizer));
}

absl::StatusOr<GenerationStats> Session::GenerateFrom(
    std::vector<int32_t> prompt_ids, const SamplingOptions& sampling,
    const std::function<void(absl::string_view)>& on_text,
    int32_t turn_end_id) {
  Impl& s = *impl_;
  {
    absl::MutexLock lock(&s.mu);
    s.cancelled = false;
  }
  ES_RETURN_IF_ERROR(CheckPrivacy(sampling, s.model->local != nullptr));
  ES_RETURN_IF_ERROR(CheckPlanPrivacy(s.route, sampling.privacy));
  s.argmax_only = sampling.temperature == 0 && sampling.repetition_penalty == 1;
  // Declared before the sequence that points to its privatizer.
  PrivateGeneration private_gen;
  Impl::Rerouting seq(&s, absl::Now() + s.agent->options.generation_timeout,
                      [&s](RemoteSequence* active) {
                        absl::MutexLock lock(&s.mu);
                        s.active = active;
                        // Cancelled while a route was opening.
                        if (active != nullptr && s.cancelled) active->Cancel();
                      });
  if (sampling.privacy.epsilon > 0) seq.RequirePrivacy(&sampling.privacy);
  // A route planned a moment ago may still be loading on its servers, or
  // have lost a hop since.
  ES_RETURN_IF_ERROR(seq.OpenRerouting());
  GenerationOptions g;
  g.sampling.temperature = sampling.temperature;
  g.sampling.top_k = sampling.top_k;
  g.sampling.top_p = sampling.top_p;
  g.sampling.repetition_penalty = sampling.repetition_penalty;
  g.sampling.seed = sampling.seed;
  g.max_new_tokens = sampling.max_new_tokens;
  g.stop_at_eos = sampling.stop_at_eos;
  if (turn_end_id >= 0) g.more_eos_ids.push_back(turn_end_id);
  const SpeculativeOptions& spec = sampling.speculative;
  SpeculativeStats spec_stats;
  absl::StatusOr<GenerationResult> generated;
  if (spec.draft.empty()) {
    generated = GenerateTextFromIds(
        *s.model->tokenizer, std::move(prompt_ids), on_text,
        [&](absl::Span<const int32_t> ids, int32_t eos,
            const TokenCallback& on_token) -> absl::StatusOr<GenerationResult> {
          if (sampling.privacy.epsilon > 0) {
            ES_RETURN_IF_ERROR(private_gen.Start(
                s.agent->privacy_budget.get(), sampling.privacy,
                s.model->store->config(), static_cast<int64_t>(ids.size()),
                sampling.max_new_tokens));
            seq.set_privatizer(private_gen.privatizer.get());
          }
          return GenerateIds(seq, ids, g, eos, on_token);
        },
        sampling.stop);
  } else {
    ES_ASSIGN_OR_RETURN(
        std::unique_ptr<Drafter> drafter,
        MakeDrafter(spec.draft, s.ModelDir(), s.model->store->config(),
                    g.sampling, &s.drafts));
    SpeculationParams params;
    params.max_draft = spec.max_draft;
    params.adaptive = spec.adaptive;
    params.skip_threshold = spec.skip_threshold;
    generated = GenerateTextFromIds(
        *s.model->tokenizer, std::move(prompt_ids), on_text,
        [&](absl::Span<const int32_t> ids, int32_t eos,
            const TokenCallback& on_token) {
          return GenerateSpeculativeIds(seq, *drafter, ids, g, params, eos,
                                        on_token, &spec_stats);
        },
        sampling.stop);
  }
  {
    absl::MutexLock lock(&s.mu);
    if (s.cancelled) return absl::CancelledError("generation cancelled");
  }
  ES_ASSIGN_OR_RETURN(GenerationResult r, std::move(generated));
  GenerationStats stats;
  stats.text = std::move(r.text);
  stats.tokens = std::move(r.tokens);
  stats.prompt_tokens = static_cast<int32_t>(r.prompt_ids.size());
  stats.prefill_ms = r.prefill_seconds * 1e3;
  stats.decode_tokens_per_s = stats.tokens.size() > 1
                                  ? (stats.tokens.size() - 1) / r.decode_seconds
                                  : 0.0;
  RemoteSequence& last = seq.current();
  const double steps = std::max<int64_t>(last.steps(), 1);
  stats.device_ms_per_step = last.local_ms() / steps;
  stats.bytes_sent = last.bytes_sent();
  stats.bytes_received = last.bytes_received();
  stats.steps = static_cast<int32_t>(
      spec.draft.empty() ? std::max<int64_t>(last.steps() - 1, 0)
                         : spec_stats.rounds);
  stats.draft_steps = static_cast<int32_t>(spec_stats.draft_rounds);
  stats.drafted_tokens = spec_stats.drafted;
  stats.accepted_tokens = spec_stats.accepted;
  stats.draft_lengths.assign(spec_stats.k.begin(), spec_stats.k.end());
  stats.skipped_tokens = spec_stats.skipped;
  stats.skip_agreement =
      spec_stats.skipped_checked > 0
          ? spec_stats.skipped_agreement / spec_stats.skipped_checked
          : 0.0;
  stats.stopped_at_eos = r.stopped_at_eos;
  stats.stopped_at_stop = r.stopped_at_stop;
  stats.reroutes = seq.reroutes();
  if (private_gen.privatizer != nullptr) {
    stats.privacy_epsilon = private_gen.epsilon;
    stats.privacy_delta = sampling.privacy.delta;
    stats.noise_multiplier = private_gen.privatizer->sigma();
    stats.private_rows = private_gen.privatizer->released_rows();
    stats.clipped_rows = private_gen.privatizer->clipped_rows();
    stats.budget_epsilon_spent = private_gen.budget_spent;
  }
  for (const HopStats& h : last.hop_stats()) {
    stats.hops.push_back({h.node, h.compute_ms / steps, h.total_ms / steps});
  }
  return stats;
}

DeviceAgent::DeviceAgent(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeviceAgent::~DeviceAgent() = default;

absl::StatusOr<std::unique_ptr<DeviceAgent>> DeviceAgent::Connect(
    const DeviceAgentOptions& options) {
  if (options.controller.empty()) {
    return absl::InvalidArgumentError("DeviceAgentOptions.controller is empty");
  }
  if (!options.model_cache_dir.empty() &&
      std::filesystem::path(options.model_cache_dir).lexically_normal() ==
          std::filesystem::path(options.adapter_dir).lexically_normal()) {
    // Both keep what they fetch below <dir>/.cluster/<model>/<name>.
    return absl::InvalidArgumentError(
        absl::StrCat("DeviceAgentOptions.model_cache_dir \"",
                     options.model_cache_dir, "\" is also the adapter_dir"));
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  ES_ASSIGN_OR_RETURN(impl->codec, wire::ParseCodec(options.codec));
  if (!options.weights.empty() && !kernels::ParseWeightType(options.weights)) {
    return absl::InvalidArgumentError(
        absl::StrCat("DeviceAgentOptions.weights \"", options.weights,
                     "\" is not one of ", kernels::WeightTypeList()));
  }
  TlsConfig tls;
  tls.ca_file = options.tls.ca_file;
  tls.cert_file = options.tls.cert_file;
  tls.key_file = options.tls.key_file;
  tls.token_file = options.tls.token_file;
  tls.keepalive = options.keepalive;
  tls.insecure = options.insecure;
  ES_ASSIGN_OR_RETURN(impl->security, TransportSecurity::Create(tls));
  if (!impl->security->insecure()) {
    const Identity& me = impl->security->identity();
    if (me.kind != Identity::Kind::kDevice) {
      return absl::InvalidArgumentError(absl::StrCat(
          options.tls.token_file.empty() ? options.tls.cert_file
                                         : options.tls.token_file,
          " is the certificate of ", me.ToString(), ", not of a device"));
    }
    if (options.device_name != "device" && options.device_name != me.name) {
      return absl::InvalidArgumentError(
          absl::StrCat("DeviceAgentOptions.device_name \"", options.device_name,
                       "\" but the ",
                       options.tls.token_file.empty() ? "certificate" : "token",
                       " names device \"", me.name, "\""));
    }
    impl->options.device_name = me.name;
  }
  if (!options.privacy_budget_file.empty()) {
    ES_ASSIGN_OR_RETURN(
        impl->privacy_budget,
        privacy::PrivacyBudget::Open(options.privacy_budget_file,
                                     options.privacy_budget_epsilon,
                                     options.privacy_budget_delta));
  }
  SetComputeThreads(options.threads);
  impl->stubs =
      std::make_unique<StageStubCache>(wire::MaxMessageBytes(), impl->security);
  // Averaged adapters (split federated learning) can exceed gRPC's 4 MiB.
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  args.SetMaxSendMessageSize(256 << 20);
  ES_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                      impl->security->Dial(
                          options.controller,
                          ControllerIdentity(impl->security->cluster()), args));
  impl->controller = v1::ControllerService::NewStub(channel);
  impl->controller_channel = channel;
  return std::unique_ptr<DeviceAgent>(new DeviceAgent(std::move(impl)));
}

absl::StatusOr<std::vector<std::string>> DeviceAgent::ListAdapters(
    const std::string& model_id) {
  return ListAdapters(model_id, impl_->options.rpc_timeout);
}

absl::StatusOr<std::vector<std::string>> DeviceAgent::ListAdapters(
    const std::string& model_id, absl::Duration timeout) {
  if (model_id.empty()) {
    return absl::InvalidArgumentError("ListAdapters: empty model id");
  }
  auto registry = v1::AdapterRegistry::NewStub(impl_->controller_channel);
  v1::ListAdaptersRequest req;
  req.set_model_id(model_id);
  v1::ListAdaptersResponse listed;
  grpc::ClientContext ctx;
  ctx.set_deadline(ToChrono(absl::Now() + timeout));
  ES_RETURN_IF_ERROR(
      FromGrpcStatus(registry->ListAdapters(&ctx, req, &listed), "controller"));
  std::vector<std::string> names;
  for (const v1::RegisteredAdapter& a : listed.adapters()) {
    // The controller answers for the model asked; anything else (or a name
    // no session could open) is not passed on to the app.
    if (a.model_id() == model_id && ValidateAdapterName(a.name()).ok()) {
      names.push_back(a.name());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<std::unique_ptr<Session>> DeviceAgent::OpenSession(
    const std::string& model_id, const std::string& adapter) {
  v1::Hop previous;
  {
    absl::MutexLock lock(&impl_->profile_mu);
    previous = impl_->last_hop;
  }
  if (!previous.address().empty()) impl_->ProfileLink(previous);
  ES_ASSIGN_OR_RETURN(
      v1::OpenSessionResponse resp,
      impl_->OpenRoute(model_id, adapter, {},
                       absl::Now() + impl_->options.rpc_timeout));
  auto s = std::make_unique<Session::Impl>();
  s->agent = impl_.get();
  s->model_id = model_id;
  s->adapter = adapter;
  ES_RETURN_IF_ERROR(s->Adopt(std::move(resp)));
  if (!adapter.empty() && !impl_->options.adapter_dir.empty()) {
    ES_RETURN_IF_ERROR(ValidateAdapterName(adapter));
    const std::string& base = impl_->options.adapter_dir;
    ES_ASSIGN_OR_RETURN(std::string dir,
                        FindAdapterDir(base, model_id, adapter));
    if (dir.empty()) {
      // Fetched from the cluster (registered adapters), one at a time.
      absl::MutexLock lock(&impl_->adapter_mu);
      ES_ASSIGN_OR_RETURN(dir, FindAdapterDir(base, model_id, adapter));
      if (dir.empty()) {
        ES_ASSIGN_OR_RETURN(std::string fetched,
                            FetchedAdaptersDir(base, model_id));
        ES_RETURN_IF_ERROR(DownloadAdapter(
            impl_->controller_channel, impl_->options.device_name, model_id,
            adapter, base, fetched, impl_->options.rpc_timeout));
        dir = fetched + "/" + adapter;
      }
    }
    ES_ASSIGN_OR_RETURN(
        std::unique_ptr<LoraAdapter> lora,
        LoraAdapter::LoadPeft(dir, s->model->store->config(), adapter));
    s->lora = std::move(lora);
  }
  impl_->ProfileModel(model_id, s->ModelDir());
  impl_->ProfileLink(s->route.route(0));
  return std::unique_ptr<Session>(new Session(std::move(s)));
}

}  // namespace edgesplit
