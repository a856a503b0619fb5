// A training session on one hop: one device's stream into a training job
// (training_job.h). Forward micro-batches keep what backward needs,
// backward requests travel to the last hop and come back as each hop's
// input gradient, optimizer steps sum the global gradient norm along the
// chain, restores and exports run on every hop. Compute runs on the job's
// thread, so while the last hop runs micro-batch i the hop before it
// already runs i + 1 (the device issues requests in 1F1B order). Requests
// are numbered as they arrive and answered in that order (RespondAt).
#ifndef EDGESPLIT_EDGE_SERVER_TRAINING_SESSION_H_
#define EDGESPLIT_EDGE_SERVER_TRAINING_SESSION_H_

#include <chrono>
#include <map>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "edge_server/server_session.h"
#include "edge_server/training_job.h"

namespace edgesplit {

class TrainingSession : public ServerSession {
 public:
  // Create with std::make_shared, then Start(). `job` is the job the
  // open's training spec names on this hop's stage.
  TrainingSession(const SessionEnv& env, SessionTransport* transport,
                  absl::Time deadline, OpenedHop hop,
                  std::shared_ptr<TrainingJob> job);

  void OnRequest(const v1::StageRequest& request) override;

 private:
  void Forward(uint64_t seq, const v1::ForwardRequest& forward);
  // On the job's thread.
  void RunForward(uint64_t seq, const v1::ForwardRequest& forward,
                  at::Tensor input, const at::Tensor& labels, int64_t labelled,
                  std::chrono::steady_clock::time_point received);
  void Backward(uint64_t seq, const v1::BackwardRequest& backward);
  void Step(uint64_t seq, const v1::OptimizerStep& step);
  void Restore(uint64_t seq, const v1::RestoreRequest& restore);
  void Export(uint64_t seq, const v1::ExportRequest& request);
  // Answers request `seq` once every earlier one is answered.
  void RespondAt(uint64_t seq, v1::StageResponse response);
  // The job's key of this session's micro-batch.
  uint64_t Key(uint64_t micro_batch) const {
    return (prefix_ << 40) | (micro_batch & ((uint64_t{1} << 40) - 1));
  }
  std::shared_ptr<TrainingSession> Self() {
    return std::static_pointer_cast<TrainingSession>(shared_from_this());
  }

  bool IdleLocked() const override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnEndLocked() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const char* kind() const override { return "training"; }
  // The checkpoints the whole chain holds, and its least advanced job.
  void ConfirmOpen(v1::SessionOpened* mine,
                   const v1::SessionOpened* downstream) override;

  const std::shared_ptr<TrainingJob> job_;
  const uint64_t prefix_;  // This session's micro-batch keys in the job.
  // The next request's number, the next answer to send, and answers
  // waiting for earlier ones.
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_answer_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, v1::StageResponse> answers_ ABSL_GUARDED_BY(mu_);
  // Shares of the server's max_kept_training_tokens, by micro-batch: taken
  // by a training forward, given back by its backward (or the session's
  // end).
  std::map<uint64_t, UsageBudget::Charge> kept_ ABSL_GUARDED_BY(mu_);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_TRAINING_SESSION_H_
