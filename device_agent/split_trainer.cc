#include "device_agent/split_trainer.h"

#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "proto/tensor_codec.h"
#include "proto/training_spec.h"
#include "runtime/torch_util.h"
#include "runtime/train/pipeline_schedule.h"

namespace edgesplit {
namespace {

absl::Status Unexpected(const v1::StageResponse& r, absl::string_view want) {
  return absl::InternalError(absl::StrCat("first hop answered ",
                                          static_cast<int>(r.kind_case()),
                                          " where ", want, " was due"));
}

// The privacy mechanisms' key of a window (its token ids).
std::string WindowKey(const at::Tensor& window) {
  const at::Tensor ids = window.to(at::kLong).contiguous();
  return privacy::TrainingPrivatizer::Key(
      {ids.data_ptr<int64_t>(), static_cast<size_t>(ids.numel())});
}

// `rows` ([n, hidden]) as sent with privacy: a private float copy, through
// `release` (the privatizer's Activations or Gradients for the window).
template <typename Release>
absl::StatusOr<at::Tensor> Privatized(const at::Tensor& rows,
                                      const at::Tensor& window, int64_t cols,
                                      Release release) {
  at::Tensor copy;
  std::string key;
  ES_RETURN_IF_ERROR(TorchCall("privacy", [&]() -> absl::Status {
    if (rows.dim() != 2 || rows.size(0) != window.size(0) - 1 ||
        rows.size(1) != cols) {
      return absl::InternalError("rows to privatize are not [tokens, hidden]");
    }
    copy = rows.detach().to(at::kFloat).contiguous().clone();
    key = WindowKey(window);
    return absl::OkStatus();
  }));
  ES_RETURN_IF_ERROR(release(key, copy.data_ptr<float>(), copy.size(0)));
  return copy;
}

// The window's next-token labels (its ids after the first) on `f`.
void AddLabels(const at::Tensor& window, v1::ForwardRequest* f) {
  const at::Tensor labels = window.slice(0, 1).to(at::kLong).contiguous();
  const int64_t* l = labels.data_ptr<int64_t>();
  f->mutable_labels()->Add(l, l + labels.numel());
}

// The privacy settings this split can honour.
absl::Status CheckPrivacy(const SplitTrainerOptions& o, BlockRange device,
                          bool device_trains, bool u_shaped) {
  if (o.privatizer != nullptr && !u_shaped) {
    // Labels would leave the device in plain.
    return absl::FailedPreconditionError(
        "private training needs a U-shaped plan: otherwise the labels -- "
        "the text itself -- go to the last server (u_shaped, --u-shaped)");
  }
  if (o.privatizer != nullptr && device_trains && o.dp_sgd == nullptr) {
    // The device's activations would depend on every window it trained on
    // (its factors), not only on the one they are released for.
    return absl::FailedPreconditionError(absl::StrCat(
        "private training needs this device's blocks [", device.first, ", ",
        device.last,
        ") frozen (first_trained_block, --train-blocks or --freeze-ratio) "
        "or trained with device privacy (DP-SGD, --device-privacy-epsilon): "
        "otherwise their activations carry every earlier window"));
  }
  if (o.dp_sgd == nullptr) return absl::OkStatus();
  if (!device_trains) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device privacy (DP-SGD) needs trained blocks on this device; its "
        "blocks [",
        device.first, ", ", device.last, ") are frozen"));
  }
  const int64_t first = std::max(o.spec.first_trained_block(), device.last);
  if (o.privatizer == nullptr && first < o.spec.last_trained_block()) {
    // The servers' factors would learn from this device's raw data, and
    // the device's gradients read them: no guarantee would hold.
    return absl::FailedPreconditionError(absl::StrCat(
        "device privacy (DP-SGD) with servers that train (blocks ", first,
        " to ", o.spec.last_trained_block(),
        ") needs cut privacy too (privacy, --privacy-epsilon), or train "
        "only this device's blocks (--train-blocks)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SplitTrainer>> SplitTrainer::Open(
    StageModel* local, StageModel* head, v1::StageService::Stub* first_hop,
    const SplitTrainerOptions& options) {
  if (options.route.empty()) {
    return absl::InvalidArgumentError("a split trainer needs a route");
  }
  const ModelConfig& model = local->config();
  ES_RETURN_IF_ERROR(ValidateTrainingSpec(options.spec, model));
  auto t = std::unique_ptr<SplitTrainer>(new SplitTrainer());
  t->local_ = local;
  t->head_ = head;
  t->options_ = options;
  t->adamw_ = AdamWFor(options.spec.optimizer());
  // Per session: this device's stage models are shared (the agent caches
  // them), and another trainer of the job (an export) attaches its own.
  t->adapter_name_ =
      absl::StrCat("train:", options.spec.job_id(), "/", options.session_id);
  const LoraConfig lora = LoraConfigFor(options.spec, model);
  ES_ASSIGN_OR_RETURN(
      std::unique_ptr<LoraAdapter> a,
      LoraAdapter::Create(model, lora, local->spec().blocks,
                          options.spec.seed(), t->adapter_name_));
  t->local_adapter_ = std::move(a);
  (void)local->DetachAdapter(t->adapter_name_);
  ES_RETURN_IF_ERROR(local->AttachAdapter(t->local_adapter_));
  const BlockRange b = local->spec().blocks;
  t->checkpoints_ = std::make_unique<TrainerCheckpoints>(
      options.checkpoint_dir.empty()
          ? ""
          : absl::StrFormat("%s/%s/%s/%s-blocks-%d-%d", options.checkpoint_dir,
                            options.spec.job_id(), options.model_id,
                            options.device, b.first, b.last),
      options.spec.keep_checkpoints());
  TrainerOptions to;
  to.recompute = options.spec.recompute();
  // Frozen (no factors on the device's blocks), it only runs forwards.
  t->device_trains_ = !t->local_adapter_->modules().empty();
  ES_RETURN_IF_ERROR(
      CheckPrivacy(options, b, t->device_trains_, head != nullptr));
  ES_ASSIGN_OR_RETURN(t->local_trainer_,
                      StageTrainer::Create(local, t->local_adapter_, to));
  if (head != nullptr) {
    // The head has no LoRA modules; its trainer carries the loss's
    // gradient back to the last server's output.
    ES_ASSIGN_OR_RETURN(
        std::unique_ptr<LoraAdapter> h,
        LoraAdapter::Create(model, lora, head->spec().blocks,
                            options.spec.seed(), t->adapter_name_));
    t->head_adapter_ = std::move(h);
    (void)head->DetachAdapter(t->adapter_name_);
    ES_RETURN_IF_ERROR(head->AttachAdapter(t->head_adapter_));
    ES_ASSIGN_OR_RETURN(t->head_trainer_,
                        StageTrainer::Create(head, t->head_adapter_, to));
  }

  t->stream_ =
      StageStream::Start(first_hop, options.deadline, options.route[0].node(),
                         options.route[0].address());
  v1::StageRequest req =
      OpenRequest(options.session_id, options.model_id, options.codec,
                  options.route, head != nullptr);
  *req.mutable_open()->mutable_training() = options.spec;
  *req.mutable_open()->mutable_grant() = options.grant;
  ES_ASSIGN_OR_RETURN(v1::StageResponse r, t->Call(std::move(req)));
  if (!r.has_opened()) return Unexpected(r, "the session's confirmation");
  t->server_checkpoints_.assign(r.opened().checkpoint_steps().begin(),
                                r.opened().checkpoint_steps().end());
  t->server_step_ = r.opened().job_step();
  return t;
}

absl::StatusOr<at::Tensor> SplitTrainer::Sendable(const at::Tensor& h,
                                                  const at::Tensor& window) {
  if (options_.privatizer == nullptr) return h;
  return Privatized(h, window, local_->config().hidden_size,
                    [&](const std::string& key, float* d, int64_t rows) {
                      return options_.privatizer->Activations(key, d, rows);
                    });
}

SplitTrainer::~SplitTrainer() {
  Close();
  local_trainer_.reset();
  head_trainer_.reset();
  (void)local_->DetachAdapter(adapter_name_);
  if (head_ != nullptr) (void)head_->DetachAdapter(adapter_name_);
}

void SplitTrainer::Close() {
  if (!stream_) return;
  stream_->Close();
  // Until gRPC is done with the call: a process that exits right after
  // (the CLI) must not tear gRPC down under a finishing reactor (it
  // tripped a refcount assertion in 1 of 20 runs).
  (void)stream_->Wait();
  stream_.reset();
}

SplitTrainer::Future SplitTrainer::Send(v1::StageRequest request) {
  auto promise =
      std::make_shared<std::promise<absl::StatusOr<v1::StageResponse>>>();
  Future f = promise->get_future().share();
  bytes_sent_ += static_cast<int64_t>(request.ByteSizeLong());
  if (options_.link_delay > absl::ZeroDuration()) {
    absl::SleepFor(options_.link_delay);
  }
  stream_->Send(std::move(request),
                [promise](absl::StatusOr<v1::StageResponse> r) {
                  promise->set_value(std::move(r));
                });
  return f;
}

absl::StatusOr<v1::StageResponse> SplitTrainer::Await(const Future& f) {
  const auto until = std::chrono::steady_clock::now() +
                     absl::ToChronoNanoseconds(options_.answer_timeout);
  if (f.wait_until(until) == std::future_status::timeout) {
    // Cancels the chain hop by hop; every answer still owed fails.
    if (stream_) stream_->Close();
    return absl::DeadlineExceededError(absl::StrCat(
        "training session ", options_.session_id, ": no answer from ",
        options_.route.empty() ? "the route" : options_.route[0].node(),
        "'s route within ", absl::FormatDuration(options_.answer_timeout)));
  }
  return f.get();
}

absl::StatusOr<v1::StageResponse> SplitTrainer::Call(v1::StageRequest request) {
  absl::StatusOr<v1::StageResponse> r = Await(Send(std::move(request)));
  if (r.ok()) bytes_received_ += static_cast<int64_t>(r->ByteSizeLong());
  return r;
}

std::vector<uint64_t> SplitTrainer::DeviceCheckpoints() const {
  return checkpoints_->Steps();
}

uint64_t SplitTrainer::LatestCommonCheckpoint() const {
  // A frozen device has nothing to restore: the servers decide.
  const std::vector<uint64_t> mine = DeviceCheckpoints();
  uint64_t best = 0;
  for (uint64_t s : server_checkpoints_) {
    if (!device_trains_ ||
        std::find(mine.begin(), mine.end(), s) != mine.end()) {
      best = std::max(best, s);
    }
  }
  return best;
}

absl::Status SplitTrainer::Restore(uint64_t step) {
  if (device_trains_) {
    ES_RETURN_IF_ERROR(checkpoints_->Restore(step, local_trainer_.get()));
  }
  if (head_trainer_) head_trainer_->Abort();
  if (options_.dp_sgd != nullptr) options_.dp_sgd->Abort();
  v1::StageRequest req;
  req.mutable_restore()->set_step(step);
  ES_ASSIGN_OR_RETURN(v1::StageResponse r, Call(std::move(req)));
  if (r.kind_case() != v1::StageResponse::kRestored) {
    return Unexpected(r, "the restore's confirmation");
  }
  step_ = step;
  return absl::OkStatus();
}

absl::Status SplitTrainer::CheckpointDevice(uint64_t step) {
  if (!device_trains_ || !checkpoints_->enabled()) return absl::OkStatus();
  return checkpoints_->Save(*local_trainer_, step);
}

void SplitTrainer::SkipTo(uint64_t step) {
  if (step < step_) std::abort();  // The caller goes back.
  step_ = step;
}

struct SplitTrainer::StepState {
  explicit StepState(const std::vector<at::Tensor>& w)
      : windows(w),
        scale(1.0 / static_cast<double>(w.size())),
        ids(w.size()),
        forwards(w.size()),
        backwards(w.size()) {}
  const std::vector<at::Tensor>& windows;
  const double scale;  // Each micro-batch's share of the step's loss.
  std::vector<uint64_t> ids;
  std::vector<Future> forwards, backwards;
  int next_backward = 0;  // Backward requests are sent in order.
  double loss_sum = 0;
  int64_t tokens = 0;
};

absl::Status SplitTrainer::SendForward(StepState& s, int mb) {
  const at::Tensor& w = s.windows[mb];
  if (w.dim() != 1 || w.size(0) < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("micro-batch ", mb, ": a window needs at least 2 tokens"));
  }
  const int64_t n = w.size(0) - 1;
  s.ids[mb] = next_micro_batch_++;
  StageInput in;
  in.tokens = w.slice(0, 0, n).to(at::kLong);
  // A frozen device keeps no graph and runs no backward.
  ES_ASSIGN_OR_RETURN(at::Tensor h, device_trains_
                                        ? local_trainer_->Forward(s.ids[mb], in)
                                        : local_trainer_->Evaluate(in));
  v1::StageRequest req;
  v1::ForwardRequest* f = req.mutable_forward();
  f->set_step(s.ids[mb]);
  f->set_train(true);
  f->set_loss_scale(s.scale);
  ES_ASSIGN_OR_RETURN(h, Sendable(h, w));
  ES_RETURN_IF_ERROR(wire::Encode(h, options_.codec, f->mutable_hidden()));
  if (head_ == nullptr) AddLabels(w, f);
  s.forwards[mb] = Send(std::move(req));
  return absl::OkStatus();
}

// With labels the backward request needs nothing here and goes out right
// behind the forward: every hop then runs it as soon as the hop after it
// answers, overlapping with the next micro-batches' forwards. U-shaped, it
// waits for the forward's hidden states and runs the head and loss here
// first.
absl::Status SplitTrainer::SendBackward(StepState& s, int mb) {
  v1::StageRequest req;
  req.mutable_backward()->set_step(s.ids[mb]);
  if (head_ != nullptr) {
    const at::Tensor& w = s.windows[mb];
    const int64_t n = w.size(0) - 1;
    absl::StatusOr<v1::StageResponse> fr = Await(s.forwards[mb]);
    if (!fr.ok()) return fr.status();
    bytes_received_ += static_cast<int64_t>(fr->ByteSizeLong());
    if (!fr->has_forward()) return Unexpected(*fr, "a forward result");
    ES_ASSIGN_OR_RETURN(
        at::Tensor hidden,
        wire::Decode(fr->forward().output(), local_->config().hidden_size,
                     "forward.output"));
    StageInput in;
    in.hidden = hidden;
    at::Tensor labels = w.slice(0, 1, n + 1).to(at::kLong);
    ES_ASSIGN_OR_RETURN(double loss, head_trainer_->ForwardLoss(
                                         s.ids[mb], in, labels, s.scale));
    ES_ASSIGN_OR_RETURN(at::Tensor g,
                        head_trainer_->Backward(s.ids[mb], at::Tensor()));
    if (options_.privatizer != nullptr) {
      ES_ASSIGN_OR_RETURN(
          g, Privatized(g, w, local_->config().hidden_size,
                        [&](const std::string& key, float* d, int64_t rows) {
                          return options_.privatizer->Gradients(key, d, rows);
                        }));
    }
    ES_RETURN_IF_ERROR(wire::Encode(
        g, options_.codec, req.mutable_backward()->mutable_grad_output()));
    s.loss_sum += loss;
    s.tokens += (labels != -100).sum().item<int64_t>();
  }
  s.backwards[mb] = Send(std::move(req));
  ++s.next_backward;
  return absl::OkStatus();
}

absl::Status SplitTrainer::PumpBackwards(StepState& s, int upto) {
  while (s.next_backward < upto &&
         s.forwards[s.next_backward].wait_for(std::chrono::seconds(0)) ==
             std::future_status::ready) {
    ES_RETURN_IF_ERROR(SendBackward(s, s.next_backward));
  }
  return absl::OkStatus();
}

absl::Status SplitTrainer::FinishBackward(StepState& s, int mb) {
  while (s.next_backward <= mb) {
    ES_RETURN_IF_ERROR(SendBackward(s, s.next_backward));
  }
  if (head_ == nullptr) {
    absl::StatusOr<v1::StageResponse> fr = Await(s.forwards[mb]);
    if (!fr.ok()) return fr.status();
    bytes_received_ += static_cast<int64_t>(fr->ByteSizeLong());
    if (!fr->has_forward() || !fr->forward().has_loss()) {
      return absl::InternalError("the last hop returned no loss");
    }
    s.loss_sum += fr->forward().loss().loss();
    s.tokens += fr->forward().loss().tokens();
  }
  absl::StatusOr<v1::StageResponse> br = Await(s.backwards[mb]);
  if (!br.ok()) return br.status();
  bytes_received_ += static_cast<int64_t>(br->ByteSizeLong());
  if (!br->has_backward()) return Unexpected(*br, "a backward result");
  if (!device_trains_) return absl::OkStatus();
  ES_ASSIGN_OR_RETURN(at::Tensor g, wire::Decode(br->backward().grad_input(),
                                                 local_->config().hidden_size,
                                                 "backward.grad_input"));
  ES_RETURN_IF_ERROR(local_trainer_->Backward(s.ids[mb], g).status());
  if (options_.dp_sgd == nullptr) return absl::OkStatus();
  // Micro-batch mb is one window: the gradients now held are its own.
  std::vector<float> own;
  std::string key;
  ES_RETURN_IF_ERROR(TorchCall("device privacy", [&]() -> absl::Status {
    own = local_trainer_->FlatGradients();
    key = WindowKey(s.windows[mb]);
    return absl::OkStatus();
  }));
  local_trainer_->ZeroGrad();
  return options_.dp_sgd->AddExample(key, own, s.scale);
}

absl::StatusOr<SplitStepStats> SplitTrainer::ForwardBackward(
    const std::vector<at::Tensor>& windows) {
  const int m = static_cast<int>(windows.size());
  if (m == 0) return absl::InvalidArgumentError("a step needs micro-batches");
  const int p = static_cast<int>(options_.route.size()) + 1;
  const int64_t sent0 = bytes_sent_, received0 = bytes_received_;
  StepState s(windows);
  // This device is stage 0 of p and runs its part in 1F1B order (p
  // forwards, then one backward and one forward): at most p micro-batches
  // are in flight anywhere. The servers run requests as they arrive.
  const std::vector<std::vector<PipelineOp>> schedule = OneFOneBSchedule(p, m);
  for (const PipelineOp& op : schedule[0]) {
    const int mb = op.micro_batch;
    absl::Status st;
    if (op.forward) {
      st = SendForward(s, mb);
      if (st.ok()) {
        st = head_ != nullptr ? PumpBackwards(s, mb + 1) : SendBackward(s, mb);
      }
    } else {
      st = FinishBackward(s, mb);
    }
    if (!st.ok()) {
      local_trainer_->Abort();
      if (head_trainer_) head_trainer_->Abort();
      if (options_.dp_sgd != nullptr) options_.dp_sgd->Abort();
      return st;
    }
  }
  SplitStepStats stats;
  stats.step = static_cast<int64_t>(step_);
  stats.loss = s.loss_sum / m;
  stats.tokens = s.tokens;
  stats.bytes_sent = bytes_sent_ - sent0;
  stats.bytes_received = bytes_received_ - received0;
  last_loss_ = stats.loss;
  last_tokens_ = s.tokens;
  return stats;
}

absl::StatusOr<SplitStepStats> SplitTrainer::ApplyStep(bool checkpoint) {
  const int64_t sent0 = bytes_sent_, received0 = bytes_received_;
  // DP-SGD: the step's clipped sum, noised, is the device's gradient.
  const bool dp_sgd = options_.dp_sgd != nullptr && device_trains_;
  if (dp_sgd) {
    ES_ASSIGN_OR_RETURN(std::vector<float> g, options_.dp_sgd->Release());
    ES_RETURN_IF_ERROR(local_trainer_->SetFlatGradients(g));
  }
  double device_sq = 0;
  device_sq += local_trainer_->GradSquaredNorm();
  if (head_trainer_) device_sq += head_trainer_->GradSquaredNorm();
  v1::StageRequest req;
  v1::OptimizerStep* s = req.mutable_optimizer_step();
  s->set_step(step_);
  // Private training sends no norm of its own (a data-dependent scalar
  // would leave un-noised), nor does DP-SGD take one back (the servers'
  // norms depend on the batch).
  const bool own_norm = options_.privatizer == nullptr && !dp_sgd;
  s->set_upstream_sq_norm(options_.global_norm && own_norm ? device_sq : 0.0);
  s->set_checkpoint(checkpoint);
  s->set_participants(participants_);
  ES_ASSIGN_OR_RETURN(v1::StageResponse r, Call(std::move(req)));
  if (!r.has_step()) return Unexpected(r, "an optimizer step's result");
  double scale = r.step().grad_scale();
  if (dp_sgd) {
    scale = 1;  // Clipped per window already.
  } else if (!options_.global_norm) {
    const double norm = std::sqrt(device_sq);
    scale = adamw_.max_grad_norm > 0 && norm > adamw_.max_grad_norm
                ? adamw_.max_grad_norm / norm
                : 1.0;
  }
  if (device_trains_) local_trainer_->Step(adamw_, step_, scale);
  if (head_trainer_) head_trainer_->ZeroGrad();
  ++step_;
  if (checkpoint && device_trains_ && checkpoints_->enabled()) {
    ES_RETURN_IF_ERROR(checkpoints_->Save(*local_trainer_, step_));
  }
  SplitStepStats stats;
  stats.step = static_cast<int64_t>(step_);
  stats.loss = last_loss_;
  stats.tokens = last_tokens_;
  stats.grad_norm = std::sqrt(r.step().total_sq_norm());
  stats.grad_scale = scale;
  stats.lr = r.step().lr();
  stats.bytes_sent = bytes_sent_ - sent0;
  stats.bytes_received = bytes_received_ - received0;
  return stats;
}

absl::StatusOr<std::pair<double, int64_t>> SplitTrainer::Evaluate(
    const std::vector<at::Tensor>& windows) {
  const bool u_shaped = head_ != nullptr;
  std::vector<Future> results;
  // Windows' forwards go out ahead of the answers read (up to a bound the
  // servers accept): the hops work on different windows at once.
  constexpr size_t kAhead = 64;
  double sum = 0;
  int64_t tokens = 0;
  size_t read = 0;
  auto read_one = [&]() -> absl::Status {
    const size_t i = read++;
    absl::StatusOr<v1::StageResponse> r = Await(results[i]);
    if (!r.ok()) return r.status();
    if (!r->has_forward()) return Unexpected(*r, "a forward result");
    const int64_t n = windows[i].size(0) - 1;
    at::Tensor labels = windows[i].slice(0, 1, n + 1).to(at::kLong);
    if (u_shaped) {
      ES_ASSIGN_OR_RETURN(
          at::Tensor hidden,
          wire::Decode(r->forward().output(), local_->config().hidden_size,
                       "forward.output"));
      StageInput in;
      in.hidden = hidden;
      ES_ASSIGN_OR_RETURN(double loss, head_trainer_->EvaluateLoss(in, labels));
      const int64_t counted = (labels != -100).sum().item<int64_t>();
      sum += loss * counted;
      tokens += counted;
    } else {
      sum += r->forward().loss().loss() * r->forward().loss().tokens();
      tokens += r->forward().loss().tokens();
    }
    return absl::OkStatus();
  };
  for (size_t i = 0; i < windows.size(); ++i) {
    if (i >= read + kAhead) ES_RETURN_IF_ERROR(read_one());
    const at::Tensor& w = windows[i];
    if (w.dim() != 1 || w.size(0) < 2) {
      return absl::InvalidArgumentError("a window needs at least 2 tokens");
    }
    const int64_t n = w.size(0) - 1;
    StageInput in;
    in.tokens = w.slice(0, 0, n).to(at::kLong);
    ES_ASSIGN_OR_RETURN(at::Tensor h, local_trainer_->Evaluate(in));
    ES_ASSIGN_OR_RETURN(h, Sendable(h, w));
    v1::StageRequest req;
    v1::ForwardRequest* f = req.mutable_forward();
    f->set_step(next_micro_batch_++);
    f->set_train(false);
    ES_RETURN_IF_ERROR(wire::Encode(h, options_.codec, f->mutable_hidden()));
    if (!u_shaped) AddLabels(w, f);
    results.push_back(Send(std::move(req)));
  }
  while (read < results.size()) ES_RETURN_IF_ERROR(read_one());
  if (tokens == 0) return absl::InvalidArgumentError("no labelled tokens");
  return std::make_pair(sum / tokens, tokens);
}

absl::Status SplitTrainer::Export(AdapterTensors* factors,
                                  AdapterTensors* gradients) {
  v1::StageRequest req;
  req.mutable_export_()->set_gradients(gradients != nullptr);
  ES_ASSIGN_OR_RETURN(v1::StageResponse r, Call(std::move(req)));
  if (!r.has_shard()) return Unexpected(r, "an adapter shard");
  auto take = [](const google::protobuf::RepeatedPtrField<v1::NamedTensor>& in,
                 AdapterTensors* out) -> absl::Status {
    for (const v1::NamedTensor& t : in) {
      ES_ASSIGN_OR_RETURN(at::Tensor v, wire::Decode(t.tensor(), 0, t.name()));
      (*out)[t.name()] = v;
    }
    return absl::OkStatus();
  };
  ES_RETURN_IF_ERROR(take(r.shard().factors(), factors));
  if (gradients != nullptr) {
    ES_RETURN_IF_ERROR(take(r.shard().gradients(), gradients));
  }
  if (device_trains_) {
    for (const auto& [name, st] : local_trainer_->State()) {
      (*factors)[PeftTensorName(name)] = st.value;
    }
    if (gradients != nullptr) {
      for (const auto& [name, g] : local_trainer_->Gradients()) {
        (*gradients)[PeftTensorName(name)] = g.detach().clone();
      }
    }
  }
  return absl::OkStatus();
}

AdapterTensors SplitTrainer::DeviceFactors() const {
  AdapterTensors out;
  if (!device_trains_) return out;
  for (const auto& [name, st] : local_trainer_->State()) {
    out[PeftTensorName(name)] = st.value;
  }
  return out;
}

absl::Status SplitTrainer::SetDeviceFactors(const AdapterTensors& factors) {
  if (!device_trains_) return absl::OkStatus();
  // Factors change; the moments stay (each device keeps its optimizer).
  std::map<std::string, FactorState> state = local_trainer_->State();
  for (auto& [name, st] : state) {
    auto it = factors.find(PeftTensorName(name));
    if (it == factors.end() || it->second.sizes() != st.value.sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("averaged adapter lacks factor ", PeftTensorName(name),
                       " or has the wrong shape"));
    }
    st.value = it->second.to(at::kFloat);
  }
  return local_trainer_->SetState(state);
}

}  // namespace edgesplit
