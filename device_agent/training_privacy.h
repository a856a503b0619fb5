// What Trainer::Run needs to plan a private run (training.cc): the
// options' checks and how often the run uses each window.
#ifndef EDGESPLIT_DEVICE_AGENT_TRAINING_PRIVACY_H_
#define EDGESPLIT_DEVICE_AGENT_TRAINING_PRIVACY_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "edgesplit/device_agent.h"

namespace edgesplit {

// INVALID_ARGUMENT (or FAILED_PRECONDITION) naming the field for privacy
// settings training cannot honour.
absl::Status CheckTrainingPrivacy(const TrainingOptions& o);

// The privacy mechanisms' key of a window (TrainingPrivatizer::Key).
std::string WindowKey(const std::vector<int32_t>& window);

// How often Run trains on each window (by WindowKey) in its steps from
// `from`.
std::map<std::string, int64_t> WindowUses(const TrainingRunOptions& run,
                                          int64_t from);

// How many evaluations Run makes from update `from` (before the first,
// every eval_every and after the last; none without eval windows).
int64_t Evaluations(const TrainingRunOptions& run, int64_t from);

}  // namespace edgesplit

#endif  // EDGESPLIT_DEVICE_AGENT_TRAINING_PRIVACY_H_
