// The public Trainer: a SplitTrainer on the controller's route, reopened
// and restored from the newest common checkpoint after failures, with
// federated averaging through the controller and PEFT export.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "base/file_util.h"
#include "device_agent/agent_impl.h"
#include "device_agent/split_trainer.h"
#include "device_agent/training_privacy.h"
#include "privacy/dp_sgd.h"
#include "privacy/row_noise.h"
#include "privacy/training_privatizer.h"
#include "proto/training_spec.h"
#include "runtime/lora.h"
#include "runtime/torch_util.h"
#include "runtime/weight_layout.h"

namespace edgesplit {
namespace {

// Every linear module of a block, by the short names PEFT matches.
std::vector<std::string> AllLinearTargets(const ModelConfig& config) {
  std::vector<std::string> names;
  for (const LinearModule& m : BlockLinearModules(config, 0)) {
    if (std::find(names.begin(), names.end(), m.short_name) == names.end()) {
      names.push_back(m.short_name);
    }
  }
  return names;
}

absl::StatusOr<std::vector<at::Tensor>> Windows(
    const std::vector<std::vector<int32_t>>& windows) {
  std::vector<at::Tensor> out;
  out.reserve(windows.size());
  for (const auto& w : windows) {
    if (w.size() < 2) {
      return absl::InvalidArgumentError(
          "a training window needs at least 2 tokens (inputs and labels)");
    }
    out.push_back(
        at::tensor(std::vector<int64_t>(w.begin(), w.end()), at::kLong));
  }
  return out;
}

}  // namespace

struct Trainer::Impl {
  ~Impl() {
    trainer.reset();
    if (agent != nullptr && !route.session_id().empty()) {
      agent->CloseRoute(route.session_id());
    }
  }
  Impl() = default;
  Impl(Impl&&) = default;

  DeviceAgent::Impl* agent = nullptr;
  std::string model_id;
  TrainingOptions options;
  v1::TrainingSpec spec;
  v1::OpenSessionResponse route;
  std::shared_ptr<LocalModel> model;
  // Private training (options.privacy): made with the first route;
  // calibrated by Run, which alone may release (in_private_run). Declared
  // before the trainer that points to it.
  std::unique_ptr<privacy::TrainingPrivatizer> privatizer;
  // options.device_privacy (DP-SGD of the device's factors): made with the
  // first route, calibrated by Run. Before the trainer too.
  std::unique_ptr<privacy::DpSgd> dp_sgd;
  std::unique_ptr<SplitTrainer> trainer;
  int attempt = 0;
  bool export_only = false;  // ExportAdapter: never roll a job back.
  bool in_private_run = false;
  double privacy_epsilon = 0;
  // options.averaging_privacy, once Run calibrated it: the noise, the
  // rounds it allows and those sent, and the last average adopted (what
  // updates are measured from: public, unlike the device's own factors).
  double average_sigma = 0;
  int64_t average_rounds_allowed = 0, average_rounds_sent = 0;
  std::unique_ptr<privacy::NoiseSource> average_noise;
  AdapterTensors average_reference;
  // The devices the last round's answer selected for the next (empty:
  // all), and this device's last measured seconds per trained window.
  std::vector<std::string> selected_next;
  double last_pace = 0;
  bool LeftOut() const {
    return !selected_next.empty() &&
           std::find(selected_next.begin(), selected_next.end(),
                     agent->options.device_name) == selected_next.end();
  }
  uint32_t Participants() const {
    return static_cast<uint32_t>(selected_next.size());
  }

  bool Private() const {
    return privatizer != nullptr || dp_sgd != nullptr ||
           options.averaging_privacy.epsilon > 0;
  }

  // The device's factors as one private averaging round sends them: the
  // reference plus the update clipped to the clip as a whole, noised.
  absl::StatusOr<AdapterTensors> NoisyUpload(const AdapterTensors& factors) {
    if (average_rounds_sent >= average_rounds_allowed) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "averaging privacy: ", average_rounds_sent,
          " rounds sent, as many as the run's noise was calibrated for"));
    }
    const double clip = options.averaging_privacy.clip;
    return TorchCall(
        "averaging privacy", [&]() -> absl::StatusOr<AdapterTensors> {
          AdapterTensors update;
          double sq = 0;
          for (const auto& [name, f] : factors) {
            auto ref = average_reference.find(name);
            if (ref == average_reference.end() ||
                ref->second.sizes() != f.sizes()) {
              return absl::InternalError("device factor " + name +
                                         " has no reference");
            }
            update[name] = (f.to(at::kFloat) - ref->second.to(at::kFloat))
                               .contiguous()
                               .clone();
            sq += update[name].pow(2).sum().item<double>();
          }
          const double scale =
              std::min(1.0, clip / std::max(std::sqrt(sq), 1e-30));
          AdapterTensors out;
          for (auto& [name, u] : update) {
            u.mul_(scale);
            privacy::AddGaussianNoise(u.data_ptr<float>(), u.numel(),
                                      average_sigma * clip, *average_noise);
            out[name] = average_reference[name].to(at::kFloat) + u;
          }
          ++average_rounds_sent;
          return out;
        });
  }
  uint64_t server_step_seen = 0;  // The least advanced hop's updates.

  std::string ModelDir(const v1::OpenSessionResponse& r) const {
    auto it = agent->options.model_dirs.find(model_id);
    return it != agent->options.model_dirs.end() ? it->second
                                                 : r.plan().model_path();
  }

  // Builds the spec from the options against the model's config.
  absl::Status MakeSpec(const ModelConfig& config) {
    if (options.mode != "sl" && options.mode != "psl" &&
        options.mode != "sfl") {
      return absl::InvalidArgumentError(absl::StrCat(
          "TrainingOptions.mode: \"", options.mode, "\" (sl, psl or sfl)"));
    }
    if (options.devices < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("TrainingOptions.devices: ", options.devices));
    }
    if (options.average_every < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TrainingOptions.average_every: ", options.average_every));
    }
    spec.set_job_id(options.job_id);
    spec.set_rank(static_cast<uint32_t>(std::max(options.rank, 0)));
    spec.set_alpha(options.alpha);
    std::vector<std::string> targets = options.target_modules.empty()
                                           ? AllLinearTargets(config)
                                           : options.target_modules;
    for (const std::string& t : targets) spec.add_target_modules(t);
    spec.set_first_trained_block(options.first_trained_block);
    spec.set_last_trained_block(options.last_trained_block < 0
                                    ? config.num_layers
                                    : options.last_trained_block);
    if (options.freeze_ratio >= 0) {
      if (options.freeze_ratio > 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("TrainingOptions.freeze_ratio: ", options.freeze_ratio,
                         " (in [0, 1])"));
      }
      spec.set_first_trained_block(static_cast<int64_t>(
          std::floor(options.freeze_ratio * config.num_layers)));
      spec.set_last_trained_block(config.num_layers);
    }
    spec.set_seed(options.seed);
    v1::OptimizerSpec* o = spec.mutable_optimizer();
    o->set_lr(options.lr);
    o->set_beta1(0.9);
    o->set_beta2(0.999);
    o->set_eps(1e-8);
    o->set_weight_decay(options.weight_decay);
    o->set_warmup_steps(options.warmup_steps);
    o->set_total_steps(options.total_steps);
    o->set_max_grad_norm(options.max_grad_norm);
    spec.set_devices(
        options.mode == "sl" ? 1 : static_cast<uint32_t>(options.devices));
    spec.set_recompute(options.recompute);
    spec.set_keep_checkpoints(
        static_cast<uint32_t>(std::max(options.keep_checkpoints, 0)));
    return ValidateTrainingSpec(spec, config);
  }

  // The spec beside the device's checkpoints: ExportAdapter reopens the
  // job with it.
  std::string SpecPath() const {
    return absl::StrCat(options.checkpoint_dir, "/", options.job_id, "/",
                        model_id, "/spec.binpb");
  }
  absl::Status SaveSpec() const {
    if (options.checkpoint_dir.empty()) return absl::OkStatus();
    std::error_code ec;
    std::filesystem::create_directories(
        std::filesystem::path(SpecPath()).parent_path(), ec);
    return WriteFileAtomically(SpecPath(), spec.SerializeAsString());
  }
  absl::Status LoadSpec() {
    auto bytes = ReadFile(SpecPath());
    if (!bytes.ok() || !spec.ParseFromString(*bytes) || spec.job_id().empty()) {
      return absl::NotFoundError(absl::StrCat(
          SpecPath(), ": no training spec of job \"", options.job_id,
          "\" (train with this --checkpoint-dir first)"));
    }
    return absl::OkStatus();
  }

  // A route from the controller, this device's blocks loaded, the session
  // open on every hop and every shard at the newest common checkpoint.
  absl::Status Open(absl::Time deadline) {
    const int64_t old_first = route.device_first_block();
    const int64_t old_last = route.device_last_block();
    const bool had_route = route.route_size() > 0;
    ES_ASSIGN_OR_RETURN(
        v1::OpenSessionResponse r,
        agent->OpenRoute(model_id, "", {}, deadline,
                         spec.job_id().empty() ? options.job_id : spec.job_id(),
                         options.job_members));
    // The controller's session record ends with this route: now if the
    // route is not taken, else when the next one replaces it (or at ~Impl).
    auto close_unused =
        absl::MakeCleanup([this, &r] { agent->CloseRoute(r.session_id()); });
    // (An export sends the servers nothing of this device's data.)
    if (!export_only) ES_RETURN_IF_ERROR(CheckPlanPrivacy(r, options.privacy));
    if (options.u_shaped && !r.plan().u_shaped()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "u_shaped training needs a U-shaped plan; the plan of ", model_id,
          " ends with the LM head on ", r.route(r.route_size() - 1).node()));
    }
    if (had_route && (r.device_first_block() != old_first ||
                      r.device_last_block() != old_last)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the plan moved this device's blocks from [", old_first, ", ",
          old_last, ") to [", r.device_first_block(), ", ",
          r.device_last_block(),
          "): training resumes only on the split its checkpoints have"));
    }
    if (r.device_last_block() == r.device_first_block()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the plan for model ", r.plan().model_id(),
          " gives the device zero blocks; split training needs at least one "
          "(min_device_blocks: 1 in the plan's planner section, or a device "
          "stage with blocks)"));
    }
    ES_ASSIGN_OR_RETURN(
        model,
        agent->Load(ModelDir(r), r.device_first_block(), r.device_last_block(),
                    r.plan().u_shaped(), DeviceStageWeights(r)));
    if (spec.job_id().empty()) {
      ES_RETURN_IF_ERROR(MakeSpec(model->store->config()));
      ES_RETURN_IF_ERROR(SaveSpec());
    }
    if (options.privacy.epsilon > 0 && privatizer == nullptr) {
      ES_ASSIGN_OR_RETURN(std::unique_ptr<privacy::NoiseSource> noise,
                          privacy::NoiseSource::Secure());
      privatizer = std::make_unique<privacy::TrainingPrivatizer>(
          model->store->config().hidden_size, options.privacy.clip,
          options.privacy.grad_clip, std::move(noise));
    }
    if (options.device_privacy.epsilon > 0 && dp_sgd == nullptr) {
      ES_ASSIGN_OR_RETURN(std::unique_ptr<privacy::NoiseSource> noise,
                          privacy::NoiseSource::Secure());
      dp_sgd = std::make_unique<privacy::DpSgd>(options.device_privacy.clip,
                                                std::move(noise));
    }
    SplitTrainerOptions so;
    so.privatizer = privatizer.get();
    so.dp_sgd = dp_sgd.get();
    so.session_id = absl::StrCat(r.session_id(), "/train/", attempt++);
    so.model_id = model_id;
    so.device = agent->options.device_name;
    so.spec = spec;
    so.codec = agent->codec;
    so.grant = r.grant();
    so.route.assign(r.route().begin(), r.route().end());
    so.deadline = absl::InfiniteFuture();
    so.answer_timeout = options.answer_timeout;
    so.global_norm = spec.devices() == 1;
    so.checkpoint_dir = options.checkpoint_dir;
    so.link_delay = agent->options.training_link_delay;
    trainer.reset();
    ES_ASSIGN_OR_RETURN(
        v1::StageService::Stub * first,
        agent->stubs->Get(so.route[0].address(), so.route[0].node()));
    ES_ASSIGN_OR_RETURN(
        trainer,
        SplitTrainer::Open(model->local.get(), model->head.get(), first, so));
    trainer->set_participants(Participants());
    std::swap(route, r);  // `r`, closed on return, is the old route now.
    if (r.session_id().empty()) std::move(close_unused).Cancel();
    server_step_seen = trainer->server_step();
    const uint64_t target = trainer->LatestCommonCheckpoint();
    if (export_only && trainer->server_step() > target) {
      trainer.reset();
      return absl::FailedPreconditionError(absl::StrCat(
          "job \"", spec.job_id(), "\" is at update ", server_step_seen,
          " on every hop but its newest common checkpoint is ", target,
          ": it still trains, or its last updates were not checkpointed "
          "(edgesplit train saves at its last step); exporting would roll it "
          "back"));
    }
    // Hops already at `target` keep their state; the others (restarted,
    // or ahead of the device's checkpoints) go back to it.
    absl::Status s = trainer->Restore(target);
    if (!s.ok()) trainer.reset();  // Never train on mismatched shards.
    return s;
  }

  // What a private run may release and the noise for it.
  struct ReleasePlan {
    double sigma = 0;
    int64_t releases = 0;  // Of the most exposed unit (rows, or rounds).
    std::map<std::string, privacy::TrainingPrivatizer::Allowance> allowed;
  };

  // The cut (options.privacy): every window of the run's steps from `from`
  // and of its evaluations, each window's gradient uses (plus one replay
  // when failed steps may be resumed), calibrated for the most exposed.
  absl::StatusOr<ReleasePlan> PlanCutPrivacy(const TrainingRunOptions& run,
                                             int64_t from) const {
    if (privatizer->calibrated()) {
      return absl::FailedPreconditionError(
          "privacy: one private run per training session (start a new one: "
          "it is charged to the budget again)");
    }
    ReleasePlan plan;
    const int64_t replays = run.max_resumes > 0 ? 1 : 0;
    for (const auto& [k, uses] : WindowUses(run, from)) {
      auto& a = plan.allowed[k];
      a.rows = static_cast<int64_t>(k.size() / sizeof(int64_t)) - 1;
      a.gradient_uses = uses + replays;
    }
    // Device blocks trained under DP-SGD: every send is a fresh release
    // (each training use, each evaluation).
    const bool fresh = dp_sgd != nullptr;
    const int64_t evals = Evaluations(run, from) + replays;
    for (const auto& w : run.eval_windows) {
      auto& a = plan.allowed[WindowKey(w)];
      a.rows = static_cast<int64_t>(w.size()) - 1;
      if (fresh) a.activation_uses += evals;
    }
    plan.releases = 1;
    for (auto& [k, a] : plan.allowed) {
      if (fresh) a.activation_uses += a.gradient_uses;
      const int64_t sends = fresh ? a.activation_uses : 1;
      plan.releases =
          std::max(plan.releases, a.rows * (sends + a.gradient_uses));
    }
    const PrivacyOptions& p = options.privacy;
    ES_ASSIGN_OR_RETURN(plan.sigma, privacy::RowNoiseForEpsilon(
                                        p.epsilon, p.delta, plan.releases));
    return plan;
  }

  // DP-SGD (options.device_privacy): each window's uses in the run's steps
  // from `from` (plus one replay), calibrated for the most used.
  absl::StatusOr<ReleasePlan> PlanDeviceDpSgd(
      const TrainingRunOptions& run, int64_t from,
      std::map<std::string, int64_t>* uses) const {
    if (dp_sgd->calibrated()) {
      return absl::FailedPreconditionError(
          "device privacy: one private run per training session");
    }
    ReleasePlan plan;
    *uses = WindowUses(run, from);
    for (auto& [k, u] : *uses) {
      u += run.max_resumes > 0 ? 1 : 0;
      plan.releases = std::max(plan.releases, u);
    }
    if (plan.releases == 0) return plan;
    const PrivacyOptions& p = options.device_privacy;
    ES_ASSIGN_OR_RETURN(plan.sigma, privacy::RowNoiseForEpsilon(
                                        p.epsilon, p.delta, plan.releases));
    return plan;
  }

  // Averaging (options.averaging_privacy): the run's rounds from `from`
  // (plus one replay). Runs start at update 0: later factors are no public
  // reference for the updates.
  absl::StatusOr<ReleasePlan> PlanAveragingPrivacy(
      const TrainingRunOptions& run, int64_t from) const {
    if (average_sigma > 0) {
      return absl::FailedPreconditionError(
          "averaging privacy: one private run per training session");
    }
    if (from != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "averaging privacy: the run starts at update ", from,
          "; it must start at 0 (the device's trained factors are not a "
          "public reference for its updates): use a new job"));
    }
    ReleasePlan plan;
    for (int64_t s = from + 1; s <= run.steps; ++s) {
      plan.releases += s % options.average_every == 0;
    }
    if (plan.releases == 0) return plan;
    if (run.max_resumes > 0) ++plan.releases;
    const PrivacyOptions& p = options.averaging_privacy;
    ES_ASSIGN_OR_RETURN(plan.sigma, privacy::RowNoiseForEpsilon(
                                        p.epsilon, p.delta, plan.releases));
    return plan;
  }

  // Both plans, then one charge to the budget, then the noise fixed: a
  // refused run spends nothing.
  absl::Status StartPrivateRun(const TrainingRunOptions& run, int64_t from,
                               TrainingRunResult* result) {
    ReleasePlan cut, avg, sgd;
    if (privatizer != nullptr) {
      ES_ASSIGN_OR_RETURN(cut, PlanCutPrivacy(run, from));
    }
    std::map<std::string, int64_t> sgd_uses;
    if (dp_sgd != nullptr) {
      ES_ASSIGN_OR_RETURN(sgd, PlanDeviceDpSgd(run, from, &sgd_uses));
    }
    std::unique_ptr<privacy::NoiseSource> noise;
    if (options.averaging_privacy.epsilon > 0) {
      ES_ASSIGN_OR_RETURN(avg, PlanAveragingPrivacy(run, from));
      ES_ASSIGN_OR_RETURN(noise, privacy::NoiseSource::Secure());
    }
    if (agent->privacy_budget != nullptr) {
      const std::vector<double>& orders = agent->privacy_budget->orders();
      std::vector<double> rdp(orders.size(), 0.0);
      for (const ReleasePlan* plan : {&cut, &avg, &sgd}) {
        if (plan->releases == 0 || plan->sigma == 0) continue;
        ES_ASSIGN_OR_RETURN(
            std::vector<double> more,
            privacy::RowsRdp(plan->releases, plan->sigma, orders));
        for (size_t i = 0; i < rdp.size(); ++i) rdp[i] += more[i];
      }
      ES_ASSIGN_OR_RETURN(privacy::EpsilonAt total,
                          agent->privacy_budget->Charge(rdp));
      result->budget_epsilon_spent = total.epsilon;
    }
    if (privatizer != nullptr) {
      ES_RETURN_IF_ERROR(
          privatizer->Calibrate(cut.sigma, std::move(cut.allowed)));
      ES_ASSIGN_OR_RETURN(
          privacy_epsilon,
          privacy::RowsEpsilon(cut.releases, cut.sigma, options.privacy.delta));
      result->privacy_epsilon = privacy_epsilon;
      result->noise_multiplier = cut.sigma;
    }
    if (sgd.releases > 0) {
      ES_RETURN_IF_ERROR(dp_sgd->Calibrate(sgd.sigma, std::move(sgd_uses)));
      ES_ASSIGN_OR_RETURN(result->device_epsilon,
                          privacy::RowsEpsilon(sgd.releases, sgd.sigma,
                                               options.device_privacy.delta));
      result->device_noise_multiplier = sgd.sigma;
    }
    if (avg.releases > 0) {
      average_noise = std::move(noise);
      average_sigma = avg.sigma;
      average_rounds_allowed = avg.releases;
      average_reference = trainer->DeviceFactors();
      ES_ASSIGN_OR_RETURN(
          result->averaging_epsilon,
          privacy::RowsEpsilon(avg.releases, avg.sigma,
                               options.averaging_privacy.delta));
      result->averaging_noise_multiplier = avg.sigma;
    }
    return absl::OkStatus();
  }

  // Open, retried while hops are unreachable or still loading.
  absl::Status OpenRetrying(absl::Duration timeout) {
    const absl::Time until = absl::Now() + timeout;
    absl::Duration backoff = absl::Milliseconds(100);
    for (;;) {
      absl::Status s = Open(until);
      // Hops down, restarting, loading their stages or shutting down
      // (their sessions end CANCELLED) come back; bad input does not.
      const bool retry = s.code() == absl::StatusCode::kUnavailable ||
                         s.code() == absl::StatusCode::kNotFound ||
                         s.code() == absl::StatusCode::kCancelled ||
                         s.code() == absl::StatusCode::kDeadlineExceeded;
      if (s.ok() || !retry || absl::Now() + backoff > until) return s;
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Seconds(1));
    }
  }
};

Trainer::Trainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Trainer::~Trainer() = default;

absl::StatusOr<std::vector<int32_t>> Trainer::Tokenize(
    absl::string_view text) const {
  return impl_->model->tokenizer->Encode(text);
}

namespace {

absl::Status PrivateOutsideRun() {
  return absl::FailedPreconditionError(
      "private training runs through Trainer::Run, which calibrates the "
      "noise for the whole run");
}

}  // namespace

absl::StatusOr<TrainingStepStats> Trainer::Step(
    const std::vector<std::vector<int32_t>>& windows, bool checkpoint) {
  if (!impl_->trainer) {
    return absl::FailedPreconditionError("the trainer failed: call Resume");
  }
  if (impl_->Private() && !impl_->in_private_run) return PrivateOutsideRun();
  ES_ASSIGN_OR_RETURN(std::vector<at::Tensor> w, Windows(windows));
  const auto start = std::chrono::steady_clock::now();
  auto fb = impl_->trainer->ForwardBackward(w);
  if (!fb.ok()) {
    impl_->trainer.reset();
    return fb.status();
  }
  const double exchange_ms = std::chrono::duration<double, std::milli>(
                                 std::chrono::steady_clock::now() - start)
                                 .count();
  auto st = impl_->trainer->ApplyStep(checkpoint);
  if (!st.ok()) {
    impl_->trainer.reset();
    return st.status();
  }
  TrainingStepStats out;
  out.step = st->step;
  out.loss = fb->loss;
  out.tokens = fb->tokens;
  out.grad_norm = st->grad_norm;
  out.lr = st->lr;
  out.ms = std::chrono::duration<double, std::milli>(
               std::chrono::steady_clock::now() - start)
               .count();
  out.exchange_ms = exchange_ms;
  out.bytes_sent = fb->bytes_sent + st->bytes_sent;
  out.bytes_received = fb->bytes_received + st->bytes_received;
  return out;
}

absl::StatusOr<double> Trainer::Evaluate(
    const std::vector<std::vector<int32_t>>& windows) {
  if (!impl_->trainer) {
    return absl::FailedPreconditionError("the trainer failed: call Resume");
  }
  if (impl_->privatizer != nullptr && !impl_->in_private_run) {
    return PrivateOutsideRun();
  }
  ES_ASSIGN_OR_RETURN(std::vector<at::Tensor> w, Windows(windows));
  auto r = impl_->trainer->Evaluate(w);
  if (!r.ok()) {
    impl_->trainer.reset();
    return r.status();
  }
  return r->first;
}

absl::StatusOr<TrainingRunResult> Trainer::Run(
    const TrainingRunOptions& run, const TrainingRunCallbacks& callbacks) {
  if (run.batches.empty()) {
    return absl::InvalidArgumentError("TrainingRunOptions.batches: empty");
  }
  if (run.steps < 0 || run.checkpoint_every < 0 || run.eval_every < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TrainingRunOptions: steps ", run.steps, ", checkpoint_every ",
        run.checkpoint_every, ", eval_every ", run.eval_every,
        " (none may be negative)"));
  }
  const TrainingOptions& o = impl_->options;
  auto evaluate = [&](int64_t at) -> absl::Status {
    if (run.eval_windows.empty()) return absl::OkStatus();
    ES_ASSIGN_OR_RETURN(double loss, Evaluate(run.eval_windows));
    if (callbacks.on_eval) callbacks.on_eval(at, loss);
    return absl::OkStatus();
  };
  TrainingRunResult result;
  result.step = step();
  if (impl_->Private()) {
    ES_RETURN_IF_ERROR(impl_->StartPrivateRun(run, result.step, &result));
  }
  impl_->in_private_run = impl_->Private();
  // Every run starts with every device; the controller's selection applies
  // from its answer to the first round (the servers' barrier holds every
  // device to the same view).
  impl_->selected_next.clear();
  if (impl_->trainer) impl_->trainer->set_participants(0);
  absl::Cleanup end_private = [this] {
    impl_->in_private_run = false;
    impl_->selected_next.clear();  // Step() outside a run takes part.
    if (impl_->trainer) impl_->trainer->set_participants(0);
  };
  ES_RETURN_IF_ERROR(evaluate(result.step));
  int64_t since_average = 0;  // Windows trained since the last sfl round.
  absl::Duration step_time;   // And how long their steps took.
  bool skipped_eval = false;  // Sat out past an evaluation point.
  while (result.step < run.steps) {
    const int64_t s = result.step;
    const auto& batch =
        run.batches[static_cast<size_t>(s) % run.batches.size()];
    const bool checkpoint =
        !o.checkpoint_dir.empty() &&
        ((run.checkpoint_every > 0 && (s + 1) % run.checkpoint_every == 0) ||
         s + 1 == run.steps);
    if (o.mode == "sfl" && impl_->LeftOut()) {
      // The controller's selection left this device out of the round: the
      // others train its updates; it waits for their average.
      if (!impl_->trainer) return absl::FailedPreconditionError("no trainer");
      const int64_t end = std::min<int64_t>(
          run.steps, (s / o.average_every + 1) * o.average_every);
      // Its shard is unchanged meanwhile: checkpoints it would have saved
      // hold the same factors (resume and export need them).
      for (int64_t x = s + 1; x <= end; ++x) {
        if (!o.checkpoint_dir.empty() &&
            ((run.checkpoint_every > 0 && x % run.checkpoint_every == 0) ||
             x == run.steps)) {
          ES_RETURN_IF_ERROR(
              impl_->trainer->CheckpointDevice(static_cast<uint64_t>(x)));
        }
      }
      impl_->trainer->SkipTo(static_cast<uint64_t>(end));
      skipped_eval =
          run.eval_every > 0 && end / run.eval_every > s / run.eval_every;
      result.step = end;
      result.skipped += end - s;
    } else {
      auto st = Step(batch, checkpoint);
      // Its own exchange with the servers, not the wait for the others.
      if (st.ok()) step_time += absl::Milliseconds(st->exchange_ms);
      if (!st.ok()) {
        // An allowance used up (privacy, budget) is final: resuming would
        // only be refused again, or release more.
        if (absl::IsResourceExhausted(st.status())) return st.status();
        // A hop went away: continue from the newest checkpoint every shard
        // holds (the step index picks the same batches again).
        if (++result.resumes > run.max_resumes) return st.status();
        if (callbacks.on_failure) callbacks.on_failure(s, st.status());
        ES_ASSIGN_OR_RETURN(result.step, Resume(run.resume_timeout));
        if (callbacks.on_resume) callbacks.on_resume(result.step);
        continue;
      }
      result.step = st->step;
      result.loss = st->loss;
      result.tokens += st->tokens;
      since_average += static_cast<int64_t>(batch.size());
      if (callbacks.on_step) callbacks.on_step(*st);
    }
    if (o.mode == "sfl" && result.step % o.average_every == 0) {
      // The pace of its own steps; a device that trained none this round
      // reports its last (it is as slow as it was).
      if (since_average > 0) {
        impl_->last_pace = absl::ToDoubleSeconds(step_time) / since_average;
      }
      ES_ASSIGN_OR_RETURN(bool averaged, AverageDeviceAdapter(
                                             static_cast<double>(since_average),
                                             impl_->last_pace));
      ++result.rounds;
      result.rounds_averaged += averaged ? 1 : 0;
      since_average = 0;
      step_time = absl::ZeroDuration();
    }
    if (run.eval_every > 0 &&
        (result.step % run.eval_every == 0 || result.step == run.steps ||
         std::exchange(skipped_eval, false))) {
      ES_RETURN_IF_ERROR(evaluate(result.step));
    }
  }
  result.privacy_epsilon_spent = privacy_epsilon_spent();
  result.private_rounds = impl_->average_rounds_sent;
  if (impl_->dp_sgd != nullptr) {
    result.device_clipped = impl_->dp_sgd->clipped();
    result.device_examples = impl_->dp_sgd->examples();
  }
  return result;
}

double Trainer::privacy_epsilon_spent() const {
  const privacy::TrainingPrivatizer* p = impl_->privatizer.get();
  if (p == nullptr || !p->calibrated()) return 0;
  auto e = privacy::RowsEpsilon(p->max_window_rows(), p->sigma(),
                                impl_->options.privacy.delta);
  return e.ok() ? *e : INFINITY;
}

absl::StatusOr<int64_t> Trainer::Resume(absl::Duration timeout) {
  impl_->trainer.reset();
  ES_RETURN_IF_ERROR(impl_->OpenRetrying(timeout));
  return static_cast<int64_t>(impl_->trainer->step());
}

absl::StatusOr<bool> Trainer::AverageDeviceAdapter(double samples,
                                                   double seconds_per_window) {
  if (!impl_->trainer) {
    return absl::FailedPreconditionError("the trainer failed: call Resume");
  }
  v1::AverageAdaptersRequest req;
  req.set_job_id(impl_->spec.job_id());
  req.set_round(impl_->trainer->step());
  req.set_devices(static_cast<uint32_t>(impl_->options.devices));
  req.set_device(impl_->agent->options.device_name);
  req.set_samples(samples);
  req.set_seconds_per_window(seconds_per_window);
  const bool left_out = impl_->LeftOut();
  req.set_participants(impl_->Participants());
  req.set_sat_out(left_out);
  if (left_out) req.set_samples(0);
  AdapterTensors factors;
  if (!left_out) factors = impl_->trainer->DeviceFactors();
  if (impl_->options.averaging_privacy.epsilon > 0) {
    if (!impl_->in_private_run) return PrivateOutsideRun();
    req.set_noise_std(impl_->average_sigma *
                      impl_->options.averaging_privacy.clip);
    if (!left_out) {
      ES_ASSIGN_OR_RETURN(factors, impl_->NoisyUpload(factors));
    }
  }
  for (const auto& [name, t] : factors) {
    v1::NamedTensor* nt = req.add_factors();
    nt->set_name(name);
    ES_RETURN_IF_ERROR(wire::Encode(t, v1::CODEC_FP32, nt->mutable_tensor()));
  }
  v1::AverageAdaptersResponse resp;
  // Sitting out, it asks at the round's start: when its wait runs out
  // before the others' updates are done, it asks again (a few times).
  for (int attempt = 0;; ++attempt) {
    grpc::ClientContext ctx;
    ctx.set_deadline(
        ToChrono(absl::Now() + impl_->agent->options.generation_timeout));
    absl::Status s = FromGrpcStatus(
        impl_->agent->controller->AverageAdapters(&ctx, req, &resp),
        absl::StrCat("controller ", impl_->agent->options.controller));
    if (s.ok()) break;
    if (!left_out || !absl::IsDeadlineExceeded(s) || attempt == 5) return s;
  }
  AdapterTensors averaged;
  for (const v1::NamedTensor& t : resp.factors()) {
    ES_ASSIGN_OR_RETURN(averaged[t.name()],
                        wire::Decode(t.tensor(), 0, t.name()));
  }
  ES_RETURN_IF_ERROR(impl_->trainer->SetDeviceFactors(averaged));
  if (impl_->average_sigma > 0) impl_->average_reference = averaged;
  impl_->selected_next.assign(resp.selected_next().begin(),
                              resp.selected_next().end());
  impl_->trainer->set_participants(impl_->Participants());
  return std::find(resp.averaged().begin(), resp.averaged().end(),
                   req.device()) != resp.averaged().end();
}

absl::Status Trainer::Export(const std::string& dir) {
  if (!impl_->trainer) {
    return absl::FailedPreconditionError("the trainer failed: call Resume");
  }
  AdapterTensors factors;
  ES_RETURN_IF_ERROR(impl_->trainer->Export(&factors, nullptr));
  const ModelConfig& config = impl_->model->store->config();
  LoraConfig lora = LoraConfigFor(impl_->spec, config);
  lora.base_model_name_or_path = impl_->model_id;
  ES_ASSIGN_OR_RETURN(std::unique_ptr<LoraAdapter> adapter,
                      LoraAdapter::Create(config, lora, {0, config.num_layers},
                                          impl_->spec.seed(), "export"));
  size_t used = 0;
  for (auto& [module, f] : adapter->mutable_modules()) {
    for (auto [which, t] : {std::pair<const char*, at::Tensor*>{"lora_A", &f.a},
                            {"lora_B", &f.b}}) {
      const std::string name = PeftTensorName(absl::StrCat(module, ".", which));
      auto it = factors.find(name);
      if (it == factors.end() || it->second.sizes() != t->sizes()) {
        return absl::InternalError(absl::StrCat("no hop returned factor ", name,
                                                " (or its shape is wrong)"));
      }
      *t = it->second.detach().to(at::kFloat).contiguous();
      ++used;
    }
  }
  if (used != factors.size()) {
    return absl::InternalError(absl::StrCat(
        "hops returned ", factors.size(), " factors, the adapter has ", used));
  }
  return adapter->SavePeft(dir);
}

int64_t Trainer::step() const {
  return impl_->trainer ? static_cast<int64_t>(impl_->trainer->step()) : -1;
}

std::string Trainer::route() const { return RouteString(impl_->route); }

std::string Trainer::model_dir() const { return impl_->ModelDir(impl_->route); }

absl::Status DeviceAgent::ExportAdapter(const std::string& model_id,
                                        const std::string& job_id,
                                        const std::string& checkpoint_dir,
                                        const std::string& out_dir) {
  Trainer::Impl impl;
  impl.agent = impl_.get();
  impl.model_id = model_id;
  impl.options.job_id = job_id;
  impl.options.checkpoint_dir = checkpoint_dir;
  impl.export_only = true;
  ES_RETURN_IF_ERROR(impl.LoadSpec());
  ES_RETURN_IF_ERROR(impl.OpenRetrying(impl_->options.rpc_timeout));
  Trainer trainer(std::make_unique<Trainer::Impl>(std::move(impl)));
  return trainer.Export(out_dir);
}

absl::StatusOr<std::unique_ptr<Trainer>> DeviceAgent::StartTraining(
    const std::string& model_id, const TrainingOptions& options) {
  auto impl = std::make_unique<Trainer::Impl>();
  impl->agent = impl_.get();
  impl->model_id = model_id;
  impl->options = options;
  ES_RETURN_IF_ERROR(CheckTrainingPrivacy(options));
  ES_RETURN_IF_ERROR(impl->OpenRetrying(impl_->options.rpc_timeout));
  return std::unique_ptr<Trainer>(new Trainer(std::move(impl)));
}

}  // namespace edgesplit
