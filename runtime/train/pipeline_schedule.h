// Pipeline schedules for split training: which stage runs which
// micro-batch's forward or backward, in what order. 1F1B (PipeDream-Flush):
// stage s of p first runs p - s forwards (warm-up; the last stage one),
// then alternates one backward and one forward, then drains the
// backwards. Every stage is busy in the steady state while holding at most
// p - s micro-batches' activations, against m for running all forwards
// first (GPipe). Pure; the same schedule drives stages in one process
// (testing/run_schedule.h) and across hops.
#ifndef EDGESPLIT_RUNTIME_TRAIN_PIPELINE_SCHEDULE_H_
#define EDGESPLIT_RUNTIME_TRAIN_PIPELINE_SCHEDULE_H_

#include <vector>

namespace edgesplit {

struct PipelineOp {
  bool forward = true;
  int micro_batch = 0;
};

// Per stage, its ops in order. stages >= 1, micro_batches >= 1.
std::vector<std::vector<PipelineOp>> OneFOneBSchedule(int stages,
                                                      int micro_batches);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TRAIN_PIPELINE_SCHEDULE_H_
