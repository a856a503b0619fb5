// Pipeline schedules for split training: which stage runs which
// micro-batch's forward or backward, in what order. 1F1B (PipeDream-Flush):
// stage s of p first runs p - s forwards (warm-up; the last stage one),
// then alternates one backward and one forward, then drains the
// backwards. Every stage is busy in the steady state while holding at most
// p - s micro-batches' activations, against m for running all forwards
// first (GPipe). Pure; the same schedule drives stages in one process and
// across hops.
#ifndef EDGESPLIT_RUNTIME_TRAIN_PIPELINE_SCHEDULE_H_
#define EDGESPLIT_RUNTIME_TRAIN_PIPELINE_SCHEDULE_H_

#include <functional>
#include <vector>

#include "absl/status/status.h"

namespace edgesplit {

struct PipelineOp {
  bool forward = true;
  int micro_batch = 0;
};

// Per stage, its ops in order. stages >= 1, micro_batches >= 1.
std::vector<std::vector<PipelineOp>> OneFOneBSchedule(int stages,
                                                      int micro_batches);

// Runs `schedule` in one process in an order that respects the data
// dependencies (a forward needs the previous stage's forward of the same
// micro-batch; a backward needs the next stage's backward, or, on the last
// stage, its own forward), calling `run(stage, op)`. Stops at the first
// error. Returns FAILED_PRECONDITION if the schedule deadlocks.
absl::Status RunSchedule(
    const std::vector<std::vector<PipelineOp>>& schedule,
    const std::function<absl::Status(int stage, const PipelineOp& op)>& run);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TRAIN_PIPELINE_SCHEDULE_H_
