#include "proto/training_spec.h"

#include <cctype>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace edgesplit {
namespace {

bool SafeName(const std::string& s) {
  if (s.empty() || s.size() > 128 || s == "." || s == "..") return false;
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ||
          c == '.')) {
      return false;
    }
  }
  return true;
}

template <typename T>
absl::Status Field(bool ok, absl::string_view field, const T& value,
                   absl::string_view want) {
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("training.", field, ": ", value, " (", want, ")"));
}

}  // namespace

absl::Status ValidateTrainingSpec(const v1::TrainingSpec& spec,
                                  const ModelConfig& model) {
  ES_RETURN_IF_ERROR(Field(SafeName(spec.job_id()), "job_id",
                           absl::StrCat("\"", spec.job_id(), "\""),
                           "1-128 of [A-Za-z0-9._-]"));
  ES_RETURN_IF_ERROR(Field(spec.rank() >= 1 && spec.rank() <= 1024, "rank",
                           spec.rank(), "1..1024"));
  ES_RETURN_IF_ERROR(Field(std::isfinite(spec.alpha()) && spec.alpha() > 0,
                           "alpha", spec.alpha(), "positive"));
  ES_RETURN_IF_ERROR(
      Field(spec.target_modules_size() >= 1 && spec.target_modules_size() <= 64,
            "target_modules", spec.target_modules_size(), "1..64 names"));
  for (const std::string& t : spec.target_modules()) {
    ES_RETURN_IF_ERROR(Field(!t.empty() && t.size() <= 128, "target_modules",
                             absl::StrCat("\"", t, "\""), "a module name"));
  }
  const int64_t n = model.num_layers;
  ES_RETURN_IF_ERROR(
      Field(spec.first_trained_block() >= 0 &&
                spec.first_trained_block() <= spec.last_trained_block() &&
                spec.last_trained_block() <= n,
            "first_trained_block/last_trained_block",
            absl::StrCat("[", spec.first_trained_block(), ", ",
                         spec.last_trained_block(), ")"),
            absl::StrCat("within [0, ", n, ")")));
  const v1::OptimizerSpec& o = spec.optimizer();
  ES_RETURN_IF_ERROR(Field(std::isfinite(o.lr()) && o.lr() >= 0 && o.lr() < 10,
                           "optimizer.lr", o.lr(), "0 <= lr < 10"));
  ES_RETURN_IF_ERROR(Field(o.beta1() >= 0 && o.beta1() < 1, "optimizer.beta1",
                           o.beta1(), "in [0, 1)"));
  ES_RETURN_IF_ERROR(Field(o.beta2() >= 0 && o.beta2() < 1, "optimizer.beta2",
                           o.beta2(), "in [0, 1)"));
  ES_RETURN_IF_ERROR(Field(std::isfinite(o.eps()) && o.eps() > 0,
                           "optimizer.eps", o.eps(), "positive"));
  ES_RETURN_IF_ERROR(Field(std::isfinite(o.weight_decay()) &&
                               o.weight_decay() >= 0 && o.weight_decay() < 1,
                           "optimizer.weight_decay", o.weight_decay(),
                           "in [0, 1)"));
  ES_RETURN_IF_ERROR(Field(o.warmup_steps() >= 0 && o.total_steps() >= 0,
                           "optimizer.warmup_steps/total_steps",
                           absl::StrCat(o.warmup_steps(), "/", o.total_steps()),
                           "non-negative"));
  ES_RETURN_IF_ERROR(Field(std::isfinite(o.max_grad_norm()),
                           "optimizer.max_grad_norm", o.max_grad_norm(),
                           "finite"));
  ES_RETURN_IF_ERROR(Field(spec.devices() >= 1 && spec.devices() <= 1024,
                           "devices", spec.devices(), "1..1024"));
  ES_RETURN_IF_ERROR(Field(spec.keep_checkpoints() <= 100, "keep_checkpoints",
                           spec.keep_checkpoints(), "at most 100"));
  return absl::OkStatus();
}

LoraConfig LoraConfigFor(const v1::TrainingSpec& spec,
                         const ModelConfig& model) {
  (void)model;
  LoraConfig c;
  c.r = spec.rank();
  c.alpha = spec.alpha();
  c.target_modules.assign(spec.target_modules().begin(),
                          spec.target_modules().end());
  for (int64_t b = spec.first_trained_block(); b < spec.last_trained_block();
       ++b) {
    c.layers_to_transform.push_back(b);
  }
  return c;
}

AdamWOptions AdamWFor(const v1::OptimizerSpec& spec) {
  AdamWOptions o;
  o.lr = spec.lr();
  o.beta1 = spec.beta1();
  o.beta2 = spec.beta2();
  o.eps = spec.eps();
  o.weight_decay = spec.weight_decay();
  o.warmup_steps = spec.warmup_steps();
  o.total_steps = spec.total_steps();
  o.max_grad_norm = spec.max_grad_norm();
  return o;
}

std::string PeftTensorName(const std::string& factor) {
  return absl::StrCat("base_model.model.", factor, ".weight");
}

}  // namespace edgesplit
