#include "edge_server/training_job.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "proto/tensor_codec.h"
#include "proto/training_spec.h"
#include "runtime/threading.h"
#include "runtime/torch_util.h"

namespace edgesplit {
absl::StatusOr<std::shared_ptr<TrainingJob>> TrainingJob::Create(
    const v1::TrainingSpec& spec, std::shared_ptr<HostedStage> stage,
    const std::string& checkpoint_root) {
  const ModelConfig& model = stage->model->config();
  ES_RETURN_IF_ERROR(ValidateTrainingSpec(spec, model));
  std::shared_ptr<TrainingJob> job(new TrainingJob(spec, std::move(stage)));
  const BlockRange blocks = job->stage_->model->spec().blocks;
  job->adapter_name_ = absl::StrCat("train:", spec.job_id());
  job->checkpoints_ = std::make_unique<TrainerCheckpoints>(
      checkpoint_root.empty()
          ? ""
          : absl::StrCat(checkpoint_root, "/", spec.job_id(), "/",
                         job->stage_->model_id, "/blocks-", blocks.first, "-",
                         blocks.last),
      spec.keep_checkpoints());
  LoraConfig lora = LoraConfigFor(spec, model);
  ES_ASSIGN_OR_RETURN(std::unique_ptr<LoraAdapter> adapter,
                      LoraAdapter::Create(model, lora, blocks, spec.seed(),
                                          job->adapter_name_));
  job->adapter_ = std::move(adapter);
  job->adamw_ = AdamWFor(spec.optimizer());
  // A stale adapter of this name (a job that failed to start) goes first.
  (void)job->stage_->model->DetachAdapter(job->adapter_name_);
  ES_RETURN_IF_ERROR(job->stage_->model->AttachAdapter(job->adapter_));
  TrainerOptions to;
  to.recompute = spec.recompute();
  auto trainer =
      StageTrainer::Create(job->stage_->model.get(), job->adapter_, to);
  if (!trainer.ok()) {
    (void)job->stage_->model->DetachAdapter(job->adapter_name_);
    return trainer.status();
  }
  job->trainer_ = *std::move(trainer);
  return job;
}

TrainingJob::~TrainingJob() {
  // Runs what is queued and joins (detaches when this runs on the job's
  // own thread), before the trainer goes.
  worker_.reset();
  trainer_.reset();
  (void)stage_->model->DetachAdapter(adapter_name_);
}

void TrainingJob::Submit(std::function<void()> task) {
  worker_->Submit(std::move(task));
}

namespace {

// Emulated slower machine: the compute in scope takes `slowdown` x as long.
class Slowdown {
 public:
  explicit Slowdown(const HostedStage& stage) : stage_(stage) {}
  ~Slowdown() {
    EmulateSlowdown(start_, stage_.slowdown ? stage_.slowdown->load() : 1.0);
  }

 private:
  const HostedStage& stage_;
  const std::chrono::steady_clock::time_point start_ =
      std::chrono::steady_clock::now();
};

}  // namespace

absl::StatusOr<at::Tensor> TrainingJob::Forward(uint64_t key, StageInput input,
                                                bool train) {
  Slowdown slow(*stage_);
  if (!train) return trainer_->Evaluate(std::move(input));
  return trainer_->Forward(key, std::move(input));
}

absl::StatusOr<double> TrainingJob::ForwardLoss(uint64_t key, StageInput input,
                                                const at::Tensor& labels,
                                                double loss_scale, bool train) {
  Slowdown slow(*stage_);
  if (!train) return trainer_->EvaluateLoss(std::move(input), labels);
  auto loss = trainer_->ForwardLoss(key, std::move(input), labels, loss_scale);
  if (loss.ok()) {
    absl::MutexLock lock(&mu_);
    last_loss_ = *loss;
  }
  return loss;
}

double TrainingJob::last_loss() const {
  absl::MutexLock lock(&mu_);
  return last_loss_;
}

absl::StatusOr<at::Tensor> TrainingJob::Backward(uint64_t key,
                                                 const at::Tensor& grad) {
  Slowdown slow(*stage_);
  return trainer_->Backward(key, grad);
}

double TrainingJob::SquaredNorm(uint32_t participants) const {
  const double n = participants == 0 ? spec_.devices() : participants;
  return trainer_->GradSquaredNorm() / (n * n);
}

absl::StatusOr<StepOutcome> TrainingJob::ApplyStep(uint64_t step,
                                                   double total_sq_norm,
                                                   bool checkpoint,
                                                   uint32_t participants) {
  {
    absl::MutexLock lock(&mu_);
    // Sequential split learning: devices take turns, each counting its own
    // updates; every request is the job's next update.
    if (spec_.devices() == 1) step = step_;
    auto it = outcomes_.find(step);
    if (it != outcomes_.end()) return it->second;
    if (step != step_) {
      return absl::FailedPreconditionError(
          absl::StrCat("optimizer step ", step, " but job ", spec_.job_id(),
                       " has done ", step_, " updates"));
    }
  }
  if (checkpoint && !checkpoints_->enabled()) {
    return absl::FailedPreconditionError(
        "this server keeps no checkpoints (checkpoint_dir is empty)");
  }
  if (!std::isfinite(total_sq_norm) || total_sq_norm < 0) {
    trainer_->ZeroGrad();  // Else every later step would fail too.
    return absl::InvalidArgumentError(
        absl::StrCat("gradient norm is not finite (squared norm ",
                     total_sq_norm, "): update skipped"));
  }
  StepOutcome out;
  out.total_sq_norm = total_sq_norm;
  const double norm = std::sqrt(total_sq_norm);
  out.grad_scale = adamw_.max_grad_norm > 0 && norm > adamw_.max_grad_norm
                       ? adamw_.max_grad_norm / norm
                       : 1.0;
  out.lr = adamw_.LearningRate(static_cast<int64_t>(step));
  // Gradients are summed over the update's devices: step with their mean.
  const double n = participants == 0 ? spec_.devices() : participants;
  trainer_->Step(adamw_, static_cast<int64_t>(step), out.grad_scale / n);
  {
    absl::MutexLock lock(&mu_);
    step_ = step + 1;
    outcomes_[step] = out;
    // Devices of one step ask within moments of each other.
    while (outcomes_.size() > 16) outcomes_.erase(outcomes_.begin());
  }
  if (checkpoint) ES_RETURN_IF_ERROR(checkpoints_->Save(*trainer_, step + 1));
  return out;
}

std::vector<uint64_t> TrainingJob::CheckpointSteps() const {
  return checkpoints_->Steps();
}

absl::Status TrainingJob::Restore(uint64_t step) {
  {
    absl::MutexLock lock(&mu_);
    // Already there (another device of the job restored it, or nothing to
    // roll back): the other sessions' work in flight stays.
    if (step == step_) return absl::OkStatus();
  }
  ES_RETURN_IF_ERROR(checkpoints_->Restore(step, trainer_.get()));
  absl::MutexLock lock(&mu_);
  step_ = step;
  outcomes_.clear();
  return absl::OkStatus();
}

void TrainingJob::Export(bool gradients, v1::AdapterShard* shard) const {
  auto add = [](const std::string& param, const at::Tensor& t,
                google::protobuf::RepeatedPtrField<v1::NamedTensor>* out) {
    v1::NamedTensor* nt = out->Add();
    nt->set_name(PeftTensorName(param));
    // Factors are 2-D ([r, in] and [out, r]): the codec's [rows, cols].
    absl::Status s =
        wire::Encode(t.detach(), v1::CODEC_FP32, nt->mutable_tensor());
    if (!s.ok()) out->RemoveLast();
  };
  for (const auto& [param, st] : trainer_->State()) {
    add(param, st.value, shard->mutable_factors());
  }
  if (gradients) {
    for (const auto& [param, g] : trainer_->Gradients()) {
      add(param, g, shard->mutable_gradients());
    }
  }
  shard->set_job_step(step());
}

absl::Status TrainingJob::ArriveAtStep(uint64_t step, uint64_t prefix,
                                       uint32_t participants,
                                       std::function<void()> ready) {
  if (participants == 0) participants = spec_.devices();
  if (participants > spec_.devices()) {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer_step.participants: ", participants, " but job ",
                     spec_.job_id(), " has ", spec_.devices(), " devices"));
  }
  std::vector<std::function<void()>> go;
  {
    absl::MutexLock lock(&mu_);
    Barrier& barrier = arrivals_[step];
    if (barrier.ready.empty()) barrier.participants = participants;
    if (barrier.participants != participants) {
      return absl::InvalidArgumentError(absl::StrCat(
          "optimizer_step.participants: ", participants, " but update ", step,
          " of job ", spec_.job_id(), " waits for ", barrier.participants));
    }
    barrier.ready[prefix] = std::move(ready);
    if (barrier.ready.size() < participants) return absl::OkStatus();
    for (auto& [p, g] : barrier.ready) go.push_back(std::move(g));
    arrivals_.erase(step);
  }
  for (auto& g : go) Submit(std::move(g));
  return absl::OkStatus();
}

void TrainingJob::LeaveBarriers(uint64_t prefix) {
  absl::MutexLock lock(&mu_);
  for (auto it = arrivals_.begin(); it != arrivals_.end();) {
    it->second.ready.erase(prefix);
    it = it->second.ready.empty() ? arrivals_.erase(it) : std::next(it);
  }
}

void TrainingJob::AbortSession(uint64_t prefix) {
  trainer_->Abort(prefix << 40, (prefix + 1) << 40);
}

void TrainingJob::SetOptimizer(const v1::OptimizerSpec& spec) {
  const AdamWOptions o = AdamWFor(spec);
  Submit([weak = weak_from_this(), o] {
    if (auto job = weak.lock()) job->adamw_ = o;
  });
}

uint64_t TrainingJob::step() const {
  absl::MutexLock lock(&mu_);
  return step_;
}

uint64_t TrainingJob::NewSessionPrefix() {
  absl::MutexLock lock(&mu_);
  return next_prefix_++;
}

std::vector<TrainingJobs::Summary> TrainingJobs::Summaries() const {
  std::vector<std::pair<Key, std::shared_ptr<TrainingJob>>> jobs;
  {
    absl::MutexLock lock(&mu_);
    jobs.assign(jobs_.begin(), jobs_.end());
  }
  std::vector<Summary> out;
  for (const auto& [key, job] : jobs) {
    Summary s;
    std::tie(s.job_id, s.model_id, s.first_block, s.last_block) = key;
    s.steps = job->step();
    s.last_loss = job->last_loss();
    out.push_back(std::move(s));
  }
  return out;
}

absl::StatusOr<std::shared_ptr<TrainingJob>> TrainingJobs::Get(
    const v1::TrainingSpec& spec, const std::string& model_id,
    std::shared_ptr<HostedStage> stage) {
  const BlockRange b = stage->model->spec().blocks;
  const Key key(spec.job_id(), model_id, b.first, b.last);
  ES_RETURN_IF_ERROR(ValidateTrainingSpec(spec, stage->model->config()));
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(key);
  if (it != jobs_.end()) {
    // The adapter's shape and the job's devices are fixed; the optimizer
    // may change (a rerun with more steps stretches the schedule).
    v1::TrainingSpec a = it->second->spec(), b = spec;
    a.clear_optimizer();
    b.clear_optimizer();
    if (a.SerializeAsString() != b.SerializeAsString()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "training job \"", spec.job_id(),
          "\" runs here with another adapter (rank, alpha, targets, blocks, "
          "seed, devices or recompute differ): use another job id"));
    }
    it->second->SetOptimizer(spec.optimizer());
    last_used_[key] = absl::Now();
    return it->second;
  }
  if (jobs_.size() >= kMaxTrainingJobs && !EvictOneLocked()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("this server runs ", jobs_.size(),
                     " training jobs (the most it "
                     "keeps); job \"",
                     spec.job_id(), "\" cannot start"));
  }
  ES_ASSIGN_OR_RETURN(
      auto job, TrainingJob::Create(spec, std::move(stage), checkpoint_root_));
  jobs_[key] = job;
  last_used_[key] = absl::Now();
  return job;
}

bool TrainingJobs::EvictOneLocked() {
  const Key* victim = nullptr;
  absl::Time oldest = absl::InfiniteFuture();
  for (const auto& [key, job] : jobs_) {
    if (job.use_count() > 1) continue;  // A session still holds it.
    const uint64_t step = job->step();
    if (step != 0) {
      const std::vector<uint64_t> saved = job->CheckpointSteps();
      if (std::find(saved.begin(), saved.end(), step) == saved.end()) {
        continue;  // Updates only in memory: forgetting would lose them.
      }
    }
    const absl::Time used = last_used_[key];
    if (used < oldest) {
      oldest = used;
      victim = &key;
    }
  }
  if (victim == nullptr) return false;
  const Key gone = *victim;
  jobs_.erase(gone);
  last_used_.erase(gone);
  return true;
}

}  // namespace edgesplit
