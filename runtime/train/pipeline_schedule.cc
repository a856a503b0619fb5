#include "runtime/train/pipeline_schedule.h"

#include <algorithm>

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

}  // namespace edgesplit
