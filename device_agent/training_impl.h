// Trainer::Impl, the state behind the public Trainer (training.h), shared
// by training.cc (opening, stepping, running, export) and
// training_average.cc (the federated averaging round). Private to those
// files; not thread-safe, like Trainer itself.
#ifndef EDGESPLIT_DEVICE_AGENT_TRAINING_IMPL_H_
#define EDGESPLIT_DEVICE_AGENT_TRAINING_IMPL_H_

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
namespace training_internal {

// Every linear module of a block, by the short names PEFT matches.
inline std::vector<std::string> AllLinearTargets(const ModelConfig& config) {
  std::vector<std::string> names;
  for (const LinearModule& m : BlockLinearModules(config, 0)) {
    if (std::find(names.begin(), names.end(), m.short_name) == names.end()) {
      names.push_back(m.short_name);
    }
  }
  return names;
}

inline absl::Status PrivateOutsideRun() {
  return absl::FailedPreconditionError(
      "private training runs through Trainer::Run, which calibrates the "
      "noise for the whole run");
}

}  // namespace training_internal

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
    return agent->ModelDirFor(model_id, r.plan());
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
    std::vector<std::string> targets =
        options.target_modules.empty()
            ? training_internal::AllLinearTargets(config)
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
    ES_RETURN_IF_ERROR(agent->EnsureModel(model_id, r.plan()));
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

}  // namespace edgesplit

#endif  // EDGESPLIT_DEVICE_AGENT_TRAINING_IMPL_H_
