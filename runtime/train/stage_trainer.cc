#include "runtime/train/stage_trainer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/safetensors.h"
#include "base/status_macros.h"
#include "runtime/torch_util.h"

namespace edgesplit {

double AdamWOptions::LearningRate(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps) {
    return lr * static_cast<double>(step + 1) / warmup_steps;
  }
  if (total_steps <= warmup_steps) return lr;
  const double progress =
      std::min(1.0, static_cast<double>(step - warmup_steps) /
                        static_cast<double>(total_steps - warmup_steps));
  return lr * 0.5 * (1.0 + std::cos(M_PI * progress));
}

absl::StatusOr<at::Tensor> CausalLmLoss(const at::Tensor& logits,
                                        const at::Tensor& labels) {
  if (logits.dim() != 2 || labels.dim() != 1 ||
      logits.size(0) != labels.size(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("loss: logits [T, vocab] and labels [T] disagree (",
                     logits.dim(), "-d logits, ", labels.dim(), "-d labels)"));
  }
  return TorchCall("loss", [&]() -> absl::StatusOr<at::Tensor> {
    return at::cross_entropy_loss(logits.to(at::kFloat), labels.to(at::kLong),
                                  /*weight=*/{}, at::Reduction::Mean,
                                  /*ignore_index=*/-100);
  });
}

absl::StatusOr<std::unique_ptr<StageTrainer>> StageTrainer::Create(
    const StageModel* stage, std::shared_ptr<LoraAdapter> adapter,
    TrainerOptions options) {
  if (stage == nullptr || adapter == nullptr) {
    return absl::InvalidArgumentError(
        "StageTrainer needs a stage and an adapter");
  }
  auto t = std::unique_ptr<StageTrainer>(new StageTrainer());
  t->stage_ = stage;
  t->adapter_ = std::move(adapter);
  t->options_ = options;
  ES_RETURN_IF_ERROR(TorchCall("trainable factors", [&]() -> absl::Status {
    for (auto& [module, f] : t->adapter_->mutable_modules()) {
      for (auto [name, tensor] :
           {std::pair<const char*, at::Tensor*>{"lora_A", &f.a},
            {"lora_B", &f.b}}) {
        // Trained in fp32 whatever the stage computes in.
        if (tensor->scalar_type() != at::kFloat)
          *tensor = tensor->to(at::kFloat);
        tensor->set_requires_grad(true);
        Param& p = t->params_[absl::StrCat(module, ".", name)];
        p.value = *tensor;
        p.m = at::zeros_like(*tensor).set_requires_grad(false);
        p.v = at::zeros_like(*tensor).set_requires_grad(false);
      }
    }
    return absl::OkStatus();
  }));
  t->initial_ = t->State();
  return t;
}

absl::Status StageTrainer::RunForward(Pending& p, StageInput input) const {
  p.cache = stage_->NewCache(nullptr);
  const int64_t n = input.tokens.defined()
                        ? input.tokens.size(0)
                        : (input.hidden.defined() ? input.hidden.size(0) : 0);
  if (n == 0) return absl::InvalidArgumentError("empty micro-batch");
  input.sequences = {{p.cache.get(), n}};
  input.adapter = adapter_->name();
  if (input.hidden.defined()) {
    ES_RETURN_IF_ERROR(TorchCall("stage input", [&]() -> absl::Status {
      p.input = input.hidden.detach().clone().set_requires_grad(true);
      input.hidden = p.input;
      return absl::OkStatus();
    }));
  }
  ES_ASSIGN_OR_RETURN(p.output, stage_->Forward(input));
  if (p.loss) {
    ES_ASSIGN_OR_RETURN(at::Tensor loss, CausalLmLoss(p.output, p.labels));
    p.loss_value = loss.item<double>();
    p.output = loss * p.loss_scale;
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> StageTrainer::Forward(uint64_t id,
                                                 StageInput input) {
  if (pending_.count(id) > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("micro-batch ", id, " is already in flight"));
  }
  Pending p;
  if (options_.recompute) {
    // Keep the input only; Backward runs the forward again with a graph.
    ES_ASSIGN_OR_RETURN(at::Tensor out, Evaluate(input));
    p.replay = std::move(input);
    pending_[id] = std::move(p);
    return out;
  }
  ES_RETURN_IF_ERROR(RunForward(p, std::move(input)));
  at::Tensor out = p.output.detach();
  pending_[id] = std::move(p);
  return out;
}

absl::StatusOr<double> StageTrainer::ForwardLoss(uint64_t id, StageInput input,
                                                 const at::Tensor& labels,
                                                 double loss_scale) {
  if (pending_.count(id) > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("micro-batch ", id, " is already in flight"));
  }
  Pending p;
  p.labels = labels;
  p.loss_scale = loss_scale;
  p.loss = true;
  if (options_.recompute) {
    ES_ASSIGN_OR_RETURN(double loss, EvaluateLoss(input, labels));
    p.replay = std::move(input);
    pending_[id] = std::move(p);
    return loss;
  }
  ES_RETURN_IF_ERROR(RunForward(p, std::move(input)));
  const double loss = p.loss_value;
  pending_[id] = std::move(p);
  return loss;
}

absl::StatusOr<at::Tensor> StageTrainer::Backward(
    uint64_t id, const at::Tensor& grad_output) {
  auto it = pending_.find(id);
  if (it == pending_.end()) {
    return absl::NotFoundError(
        absl::StrCat("micro-batch ", id, " is not in flight"));
  }
  Pending p = std::move(it->second);
  pending_.erase(it);
  if (options_.recompute) {
    StageInput replay = std::move(p.replay);
    ES_RETURN_IF_ERROR(RunForward(p, std::move(replay)));
  }
  if (p.loss) {
    if (grad_output.defined()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "micro-batch ", id, " ends in its loss here: no gradient expected"));
    }
  } else if (!grad_output.defined() ||
             grad_output.sizes() != p.output.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gradient for micro-batch ", id, " has the wrong shape (output is [",
        p.output.size(0), ", ", p.output.size(1), "])"));
  }
  return TorchCall("stage backward", [&]() -> absl::StatusOr<at::Tensor> {
    if (p.loss) {
      p.output.backward();
    } else {
      p.output.backward(grad_output.to(p.output.scalar_type()));
    }
    return p.input.defined() ? p.input.grad().detach() : at::Tensor();
  });
}

absl::StatusOr<double> StageTrainer::ForwardBackwardLoss(
    uint64_t id, StageInput input, const at::Tensor& labels,
    at::Tensor* grad_input) {
  ES_ASSIGN_OR_RETURN(double loss, ForwardLoss(id, std::move(input), labels));
  ES_ASSIGN_OR_RETURN(at::Tensor grad, Backward(id, at::Tensor()));
  if (grad_input != nullptr) *grad_input = grad;
  return loss;
}

absl::StatusOr<at::Tensor> StageTrainer::Evaluate(StageInput input) const {
  auto cache = stage_->NewCache(nullptr);
  const int64_t n = input.tokens.defined()
                        ? input.tokens.size(0)
                        : (input.hidden.defined() ? input.hidden.size(0) : 0);
  if (n == 0) return absl::InvalidArgumentError("empty micro-batch");
  input.sequences = {{cache.get(), n}};
  input.adapter = adapter_->name();
  at::NoGradGuard no_grad;
  return stage_->Forward(input);
}

absl::StatusOr<double> StageTrainer::EvaluateLoss(
    StageInput input, const at::Tensor& labels) const {
  ES_ASSIGN_OR_RETURN(at::Tensor logits, Evaluate(std::move(input)));
  at::NoGradGuard no_grad;
  ES_ASSIGN_OR_RETURN(at::Tensor loss, CausalLmLoss(logits, labels));
  return loss.item<double>();
}

double StageTrainer::GradSquaredNorm() const {
  double sum = 0;
  for (const auto& [name, p] : params_) {
    if (p.value.grad().defined())
      sum += p.value.grad().pow(2).sum().item<double>();
  }
  return sum;
}

void StageTrainer::Step(const AdamWOptions& o, int64_t step,
                        double grad_scale) {
  const double lr = o.LearningRate(step);
  const double bc1 = 1 - std::pow(o.beta1, static_cast<double>(step + 1));
  const double bc2 = 1 - std::pow(o.beta2, static_cast<double>(step + 1));
  at::NoGradGuard no_grad;
  for (auto& [name, p] : params_) {
    at::Tensor g = p.value.grad();
    if (!g.defined()) continue;  // A factor outside this stage's blocks.
    g = g * grad_scale;
    p.m.mul_(o.beta1).add_(g, 1 - o.beta1);
    p.v.mul_(o.beta2).addcmul_(g, g, 1 - o.beta2);
    // Decoupled weight decay, then the Adam step.
    if (o.weight_decay > 0) p.value.mul_(1 - lr * o.weight_decay);
    at::Tensor denom = (p.v / bc2).sqrt_().add_(o.eps);
    p.value.addcdiv_(p.m, denom, -lr / bc1);
  }
  ZeroGrad();
}

void StageTrainer::ZeroGrad() {
  for (auto& [name, p] : params_) {
    if (p.value.grad().defined()) p.value.mutable_grad() = at::Tensor();
  }
}

std::map<std::string, FactorState> StageTrainer::State() const {
  std::map<std::string, FactorState> out;
  at::NoGradGuard no_grad;
  for (const auto& [name, p] : params_) {
    out[name] = {p.value.detach().clone(), p.m.clone(), p.v.clone()};
  }
  return out;
}

absl::Status StageTrainer::SetState(
    const std::map<std::string, FactorState>& state) {
  for (const auto& [name, p] : params_) {
    auto it = state.find(name);
    if (it == state.end()) {
      return absl::NotFoundError(absl::StrCat("no state for factor ", name));
    }
    for (const at::Tensor* t :
         {&it->second.value, &it->second.m, &it->second.v}) {
      if (!t->defined() || t->sizes() != p.value.sizes()) {
        return absl::InvalidArgumentError(
            absl::StrCat("state of factor ", name, " has the wrong shape"));
      }
    }
  }
  if (state.size() != params_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "state holds ", state.size(), " factors, this stage ", params_.size()));
  }
  at::NoGradGuard no_grad;
  for (auto& [name, p] : params_) {
    const FactorState& s = state.at(name);
    p.value.copy_(s.value);
    p.m.copy_(s.m);
    p.v.copy_(s.v);
  }
  ZeroGrad();
  pending_.clear();
  return absl::OkStatus();
}

std::map<std::string, at::Tensor> StageTrainer::Gradients() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, p] : params_) {
    if (p.value.grad().defined()) out[name] = p.value.grad();
  }
  return out;
}

absl::Status SaveTrainerState(const std::string& path,
                              const std::map<std::string, FactorState>& state,
                              int64_t step) {
  SafetensorsWriter writer;
  std::vector<at::Tensor> keep;  // Bytes must live until Write().
  ES_RETURN_IF_ERROR(TorchCall("SaveTrainerState", [&]() -> absl::Status {
    for (const auto& [name, s] : state) {
      for (auto [suffix, t] :
           {std::pair<const char*, const at::Tensor*>{"", &s.value},
            {".exp_avg", &s.m},
            {".exp_avg_sq", &s.v}}) {
        at::Tensor c = ContiguousCpu(t->detach()).to(at::kFloat);
        keep.push_back(c);
        ES_RETURN_IF_ERROR(writer.Add(
            absl::StrCat(name, suffix), DType::kF32, c.sizes().vec(),
            absl::Span<const uint8_t>(static_cast<const uint8_t*>(c.data_ptr()),
                                      c.nbytes())));
      }
    }
    return absl::OkStatus();
  }));
  writer.SetMetadata("step", absl::StrCat(step));
  return writer.Write(path);
}

absl::StatusOr<TrainerCheckpoint> LoadTrainerState(const std::string& path) {
  ES_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
  TrainerCheckpoint out;
  auto it = file->metadata().find("step");
  if (it == file->metadata().end() ||
      !absl::SimpleAtoi(it->second, &out.step) || out.step < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": metadata \"step\" missing or not a count"));
  }
  auto read = [&](const std::string& name) -> absl::StatusOr<at::Tensor> {
    const TensorInfo* info = file->Find(name);
    if (info == nullptr || info->dtype != DType::kF32) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor \"", name, "\" missing or not F32"));
    }
    auto data = file->Data(*info);
    return TorchCall("LoadTrainerState", [&]() -> absl::StatusOr<at::Tensor> {
      return at::from_blob(const_cast<uint8_t*>(data.data()), info->shape,
                           at::kFloat)
          .clone();
    });
  };
  for (const TensorInfo& info : file->tensors()) {
    absl::string_view name = info.name;
    if (absl::EndsWith(name, ".exp_avg") ||
        absl::EndsWith(name, ".exp_avg_sq")) {
      continue;
    }
    FactorState s;
    ES_ASSIGN_OR_RETURN(s.value, read(info.name));
    ES_ASSIGN_OR_RETURN(s.m, read(absl::StrCat(info.name, ".exp_avg")));
    ES_ASSIGN_OR_RETURN(s.v, read(absl::StrCat(info.name, ".exp_avg_sq")));
    if (s.m.sizes() != s.value.sizes() || s.v.sizes() != s.value.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": moments of \"", info.name, "\" have the wrong shape"));
    }
    out.state[info.name] = std::move(s);
  }
  return out;
}

std::string TrainerCheckpoints::Path(uint64_t step) const {
  return absl::StrFormat("%s/step-%08d.safetensors", dir_, step);
}

std::vector<uint64_t> TrainerCheckpoints::Steps() const {
  std::vector<uint64_t> steps;
  if (dir_.empty()) return steps;
  static const std::regex kName("step-([0-9]{8})\\.safetensors");
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, m, kName)) steps.push_back(std::stoull(m[1]));
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

absl::Status TrainerCheckpoints::Save(const StageTrainer& trainer,
                                      uint64_t step) const {
  if (dir_.empty()) {
    return absl::FailedPreconditionError(
        "no checkpoint directory configured (checkpoint_dir is empty)");
  }
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat(dir_, ": cannot create: ", ec.message()));
  }
  ES_RETURN_IF_ERROR(SaveTrainerState(Path(step), trainer.State(),
                                      static_cast<int64_t>(step)));
  const std::vector<uint64_t> steps = Steps();
  for (size_t i = 0; i + keep_ < steps.size(); ++i) {
    std::filesystem::remove(Path(steps[i]), ec);
  }
  return absl::OkStatus();
}

absl::Status TrainerCheckpoints::Restore(uint64_t step,
                                         StageTrainer* trainer) const {
  if (step == 0) return trainer->Reset();
  if (dir_.empty()) {
    return absl::FailedPreconditionError(
        "no checkpoint directory configured (checkpoint_dir is empty)");
  }
  const std::string path = Path(step);
  ES_ASSIGN_OR_RETURN(TrainerCheckpoint c, LoadTrainerState(path));
  if (c.step != static_cast<int64_t>(step)) {
    return absl::DataLossError(
        absl::StrCat(path, ": holds step ", c.step, ", not ", step));
  }
  absl::Status s = trainer->SetState(c.state);
  if (!s.ok())
    return absl::DataLossError(absl::StrCat(path, ": ", s.message()));
  return absl::OkStatus();
}

}  // namespace edgesplit
