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
#include "device_agent/training_impl.h"
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

Trainer::Trainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Trainer::~Trainer() = default;

absl::StatusOr<std::vector<int32_t>> Trainer::Tokenize(
    absl::string_view text) const {
  return impl_->model->tokenizer->Encode(text);
}

absl::StatusOr<TrainingStepStats> Trainer::Step(
    const std::vector<std::vector<int32_t>>& windows, bool checkpoint) {
  if (!impl_->trainer) {
    return absl::FailedPreconditionError("the trainer failed: call Resume");
  }
  if (impl_->Private() && !impl_->in_private_run)
    return training_internal::PrivateOutsideRun();
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
    return training_internal::PrivateOutsideRun();
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
