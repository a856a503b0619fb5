#include "runtime/train/pipeline_schedule.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"

namespace edgesplit {

std::vector<std::vector<PipelineOp>> OneFOneBSchedule(int stages,
                                                      int micro_batches) {
  std::vector<std::vector<PipelineOp>> out(stages);
  for (int s = 0; s < stages; ++s) {
    const int warmup = std::min(stages - s, micro_batches);
    int next_forward = 0, next_backward = 0;
    for (; next_forward < warmup; ++next_forward) {
      out[s].push_back({true, next_forward});
    }
    while (next_backward < micro_batches) {
      out[s].push_back({false, next_backward++});
      if (next_forward < micro_batches)
        out[s].push_back({true, next_forward++});
    }
  }
  return out;
}

absl::Status RunSchedule(
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

}  // namespace edgesplit
