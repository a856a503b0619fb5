#include "runtime/train/stage_trainer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/torch_util.h"

namespace edgesplit {

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
  at::NoGradGuard no_grad;
  for (auto& [name, p] : params_) {
    const at::Tensor g = p.value.grad();
    if (!g.defined()) continue;  // A factor outside this stage's blocks.
    AdamWUpdate(o, step, g * grad_scale, p.value, p.m, p.v);
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

int64_t StageTrainer::num_params() const {
  int64_t n = 0;
  for (const auto& [name, p] : params_) n += p.value.numel();
  return n;
}

std::vector<float> StageTrainer::FlatGradients() const {
  std::vector<float> out;
  out.reserve(static_cast<size_t>(num_params()));
  for (const auto& [name, p] : params_) {
    const at::Tensor g = p.value.grad();
    if (!g.defined()) {
      out.insert(out.end(), static_cast<size_t>(p.value.numel()), 0.0f);
      continue;
    }
    const at::Tensor c = g.detach().to(at::kFloat).contiguous();
    out.insert(out.end(), c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  }
  return out;
}

absl::Status StageTrainer::SetFlatGradients(const std::vector<float>& flat) {
  if (static_cast<int64_t>(flat.size()) != num_params()) {
    return absl::InvalidArgumentError(
        absl::StrCat("flat gradients: ", flat.size(), " values for ",
                     num_params(), " trainable ones"));
  }
  at::NoGradGuard no_grad;
  size_t offset = 0;
  for (auto& [name, p] : params_) {
    at::Tensor g = at::empty_like(p.value.detach());
    std::copy(flat.begin() + offset, flat.begin() + offset + g.numel(),
              g.data_ptr<float>());
    offset += static_cast<size_t>(g.numel());
    p.value.mutable_grad() = g;
  }
  return absl::OkStatus();
}

}  // namespace edgesplit
