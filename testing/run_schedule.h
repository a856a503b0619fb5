// Test helper: runs a pipeline schedule's stages in one process, so tests
// check 1F1B against micro-batches run one by one.
#ifndef EDGESPLIT_TESTING_RUN_SCHEDULE_H_
#define EDGESPLIT_TESTING_RUN_SCHEDULE_H_

#include <functional>
#include <set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "runtime/train/pipeline_schedule.h"

namespace edgesplit {
namespace testing {

// Runs `schedule` in an order that respects the data dependencies (a
// forward needs the previous stage's forward of the same micro-batch; a
// backward needs the next stage's backward, or, on the last stage, its own
// forward), calling `run(stage, op)`. Stops at the first error. Returns
// FAILED_PRECONDITION if the schedule deadlocks.
inline absl::Status RunSchedule(
    const std::vector<std::vector<PipelineOp>>& schedule,
    const std::function<absl::Status(int stage, const PipelineOp& op)>& run) {
  const int p = static_cast<int>(schedule.size());
  std::vector<size_t> next(p, 0);
  std::set<std::pair<int, int>> forwarded, backwarded;  // (stage, mb)
  for (;;) {
    bool progressed = false, done = true;
    for (int s = 0; s < p; ++s) {
      if (next[s] == schedule[s].size()) continue;
      done = false;
      const PipelineOp& op = schedule[s][next[s]];
      const bool ready =
          op.forward
              ? (s == 0 || forwarded.count({s - 1, op.micro_batch}) > 0)
              : (forwarded.count({s, op.micro_batch}) > 0 &&
                 (s == p - 1 || backwarded.count({s + 1, op.micro_batch}) > 0));
      if (!ready) continue;
      if (absl::Status st = run(s, op); !st.ok()) return st;
      (op.forward ? forwarded : backwarded).insert({s, op.micro_batch});
      ++next[s];
      progressed = true;
    }
    if (done) return absl::OkStatus();
    if (!progressed) {
      return absl::FailedPreconditionError("pipeline schedule deadlocks");
    }
  }
}

}  // namespace testing
}  // namespace edgesplit

#endif  // EDGESPLIT_TESTING_RUN_SCHEDULE_H_
