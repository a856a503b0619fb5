#include "runtime/lora_trainer.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"
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
    const StageModel* stage, std::shared_ptr<LoraAdapter> adapter) {
  if (stage == nullptr || adapter == nullptr) {
    return absl::InvalidArgumentError(
        "StageTrainer needs a stage and an adapter");
  }
  auto t = std::unique_ptr<StageTrainer>(new StageTrainer());
  t->stage_ = stage;
  t->adapter_ = std::move(adapter);
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
  return t;
}

absl::StatusOr<at::Tensor> StageTrainer::Forward(uint64_t id,
                                                 StageInput input) {
  if (pending_.count(id) > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("micro-batch ", id, " is already in flight"));
  }
  Pending p;
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
  at::Tensor out = p.output.detach();
  pending_[id] = std::move(p);
  return out;
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
  if (!grad_output.defined() || grad_output.sizes() != p.output.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gradient for micro-batch ", id, " has the wrong shape (output is [",
        p.output.size(0), ", ", p.output.size(1), "])"));
  }
  return TorchCall("stage backward", [&]() -> absl::StatusOr<at::Tensor> {
    p.output.backward(grad_output.to(p.output.scalar_type()));
    return p.input.defined() ? p.input.grad().detach() : at::Tensor();
  });
}

absl::StatusOr<double> StageTrainer::ForwardBackwardLoss(
    uint64_t id, StageInput input, const at::Tensor& labels,
    at::Tensor* grad_input) {
  ES_RETURN_IF_ERROR(Forward(id, std::move(input)).status());
  Pending& p = pending_.at(id);
  ES_ASSIGN_OR_RETURN(at::Tensor loss, CausalLmLoss(p.output, labels));
  Pending done = std::move(p);
  pending_.erase(id);
  return TorchCall("loss backward", [&]() -> absl::StatusOr<double> {
    loss.backward();
    if (grad_input != nullptr) {
      *grad_input =
          done.input.defined() ? done.input.grad().detach() : at::Tensor();
    }
    return loss.item<double>();
  });
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

std::map<std::string, at::Tensor> StageTrainer::Gradients() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, p] : params_) {
    if (p.value.grad().defined()) out[name] = p.value.grad();
  }
  return out;
}

}  // namespace edgesplit
