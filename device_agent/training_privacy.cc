#include "device_agent/training_privacy.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "privacy/training_privatizer.h"

namespace edgesplit {
namespace {

// One mechanism's settings, named by `field` (the TrainingOptions member)
// and `clip_flag` (the CLI flag of its clip); off when epsilon is 0.
absl::Status CheckMechanism(const std::string& field, const PrivacyOptions& p,
                            const std::string& clip_flag) {
  if (p.epsilon == 0) return absl::OkStatus();
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError("TrainingOptions." + field + ": " + why);
  };
  if (!(p.epsilon > 0) || !std::isfinite(p.epsilon)) {
    return bad(absl::StrCat("epsilon ", p.epsilon, " is not > 0"));
  }
  if (!(p.delta > 0 && p.delta < 1)) {
    return bad(absl::StrCat("delta ", p.delta, " is not in (0, 1)"));
  }
  if (!(p.clip > 0) || !std::isfinite(p.clip)) {
    return bad(absl::StrCat("clip ", p.clip, " must be > 0 (", clip_flag, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckTrainingPrivacy(const TrainingOptions& o) {
  ES_RETURN_IF_ERROR(CheckMechanism("averaging_privacy", o.averaging_privacy,
                                    "--average-privacy-clip"));
  if (o.averaging_privacy.epsilon != 0 && o.mode != "sfl") {
    return absl::InvalidArgumentError(
        "TrainingOptions.averaging_privacy: mode \"" + o.mode +
        "\" averages nothing (sfl does)");
  }
  ES_RETURN_IF_ERROR(CheckMechanism("device_privacy", o.device_privacy,
                                    "--device-privacy-clip"));
  const PrivacyOptions& p = o.privacy;
  ES_RETURN_IF_ERROR(CheckMechanism("privacy", p, "--privacy-clip"));
  if (p.epsilon == 0) return absl::OkStatus();
  if (!(p.grad_clip > 0) || !std::isfinite(p.grad_clip)) {
    return absl::InvalidArgumentError(
        absl::StrCat("TrainingOptions.privacy: grad_clip ", p.grad_clip,
                     " must be > 0 (--privacy-grad-clip)"));
  }
  if (!o.u_shaped) {
    return absl::FailedPreconditionError(
        "private training needs u_shaped (--u-shaped): otherwise the labels "
        "-- the text itself -- go to the last server");
  }
  return absl::OkStatus();
}

std::string WindowKey(const std::vector<int32_t>& window) {
  const std::vector<int64_t> ids(window.begin(), window.end());
  return privacy::TrainingPrivatizer::Key(ids);
}

std::map<std::string, int64_t> WindowUses(const TrainingRunOptions& run,
                                          int64_t from) {
  std::map<std::string, int64_t> uses;
  for (int64_t s = from; s < run.steps; ++s) {
    for (const auto& w : run.batches[s % run.batches.size()]) {
      ++uses[WindowKey(w)];
    }
  }
  return uses;
}

int64_t Evaluations(const TrainingRunOptions& run, int64_t from) {
  if (run.eval_windows.empty()) return 0;
  int64_t n = 1;
  if (run.eval_every == 0) return n;
  for (int64_t s = from + 1; s <= run.steps; ++s) {
    n += s % run.eval_every == 0 || s == run.steps;
  }
  return n;
}

}  // namespace edgesplit
