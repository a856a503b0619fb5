// Split training on an edge server: one job's LoRA shard on one hosted
// stage. The sessions of a job (one per device) share its adapter and
// optimizer: sequential split learning when devices take turns, parallel
// split learning / split federated learning when `devices` > 1 and every
// optimizer step waits for all of them. Base weights never change: the
// shard is a LoRA adapter attached to the stage under its own name.
//
// Compute runs on the job's own thread in submission order (the trainer is
// single-threaded, and a device's micro-batches must run in its order);
// gRPC threads only enqueue. Checkpoints: after an update the shard and its
// AdamW moments go to <checkpoint_root>/<job>/<model>/blocks-A-B/
// step-NNNNNNNN.safetensors (atomic rename; the newest `keep` are kept), so
// a restarted server resumes from them.
#ifndef EDGESPLIT_EDGE_SERVER_TRAINING_JOB_H_
#define EDGESPLIT_EDGE_SERVER_TRAINING_JOB_H_

#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "base/worker_thread.h"
#include "edge_server/stage_host.h"
#include "edgesplit/v1/stage.pb.h"
#include "runtime/train/checkpoints.h"
#include "runtime/train/stage_trainer.h"

namespace edgesplit {

// What an optimizer update did (every session of the step gets the same).
struct StepOutcome {
  double total_sq_norm = 0;
  double grad_scale = 1;
  double lr = 0;
};

class TrainingJob : public std::enable_shared_from_this<TrainingJob> {
 public:
  // `stage` stays loaded while the job lives. `checkpoint_root` "" keeps
  // no checkpoints (a step asking for one fails).
  static absl::StatusOr<std::shared_ptr<TrainingJob>> Create(
      const v1::TrainingSpec& spec, std::shared_ptr<HostedStage> stage,
      const std::string& checkpoint_root);
  ~TrainingJob();
  TrainingJob(const TrainingJob&) = delete;
  TrainingJob& operator=(const TrainingJob&) = delete;

  // Runs `task` on the job's thread after every task submitted before it.
  void Submit(std::function<void()> task);

  // --- Only on the job's thread (inside Submit tasks). ---
  // Micro-batch `key` (unique per job: sessions prefix their ids).
  // `train` false evaluates without keeping anything.
  absl::StatusOr<at::Tensor> Forward(uint64_t key, StageInput input,
                                     bool train);
  absl::StatusOr<double> ForwardLoss(uint64_t key, StageInput input,
                                     const at::Tensor& labels,
                                     double loss_scale, bool train);
  absl::StatusOr<at::Tensor> Backward(uint64_t key, const at::Tensor& grad);
  // This shard's squared gradient norm, of the gradient averaged over the
  // update's `participants` (0: the job's devices).
  double SquaredNorm(uint32_t participants) const;
  // Update `step` with the global squared norm `total_sq_norm`: the first
  // call applies it (and saves a checkpoint when asked), later calls for
  // the same step (the job's other devices) get the same outcome. A job of
  // one device at a time (sequential split learning) applies every call as
  // its next update, whatever `step` the device counted.
  // The update is the mean over its `participants` (0: the job's devices).
  absl::StatusOr<StepOutcome> ApplyStep(uint64_t step, double total_sq_norm,
                                        bool checkpoint,
                                        uint32_t participants = 0);
  // Back to the checkpoint after `step` updates (0: the initial factors),
  // for every session of the job: their micro-batches in flight and
  // accumulated gradients go. A job already at `step` is left alone (the
  // job's other devices asking for the same restore).
  absl::Status Restore(uint64_t step);
  // Drops the micro-batches of a session that ended (keys with its
  // prefix).
  void AbortSession(uint64_t prefix);
  // The shard in PEFT names (and, with `gradients`, its gradients).
  void Export(bool gradients, v1::AdapterShard* shard) const;

  // --- Thread-safe. ---
  // Step barrier: the job's sessions (by prefix) arrive with their step;
  // `ready` runs (on the job's thread) once `participants` (0: the job's
  // devices; fewer in an sfl round the controller's client selection
  // narrowed) distinct sessions have arrived, for each of them. A session
  // arriving twice replaces its first arrival. INVALID_ARGUMENT (and
  // `ready` dropped) when `participants` exceeds the job's devices or
  // differs from the step's first arrival's. The count comes from the job's
  // own devices (admitted by the controller's grant): a member could step
  // the job alone with participants 1, as it could already train it
  // badly; a mismatch ends only the later session (the earlier ones wait
  // out their answer timeout).
  absl::Status ArriveAtStep(uint64_t step, uint64_t prefix,
                            uint32_t participants, std::function<void()> ready);
  // A session that ended leaves every barrier it waits at.
  void LeaveBarriers(uint64_t prefix);
  // Later updates use `spec` (after the tasks submitted before).
  void SetOptimizer(const v1::OptimizerSpec& spec);
  // Updates checkpointed on disk, ascending.
  std::vector<uint64_t> CheckpointSteps() const;
  uint64_t step() const;
  // The last training micro-batch's loss computed here (NaN: none yet, or
  // this hop has no head). Thread-safe.
  double last_loss() const;
  uint64_t NewSessionPrefix();
  const v1::TrainingSpec& spec() const { return spec_; }
  const std::shared_ptr<HostedStage>& stage() const { return stage_; }

 private:
  TrainingJob(v1::TrainingSpec spec, std::shared_ptr<HostedStage> stage)
      : spec_(std::move(spec)), stage_(std::move(stage)) {}

  const v1::TrainingSpec spec_;
  const std::shared_ptr<HostedStage> stage_;
  std::string adapter_name_;
  std::unique_ptr<TrainerCheckpoints> checkpoints_;
  std::shared_ptr<LoraAdapter> adapter_;
  std::unique_ptr<StageTrainer> trainer_;  // Job thread only.
  AdamWOptions adamw_;                     // Job thread only.

  mutable absl::Mutex mu_;
  uint64_t step_ ABSL_GUARDED_BY(mu_) = 0;  // Updates applied.
  uint64_t next_prefix_ ABSL_GUARDED_BY(mu_) = 1;
  double last_loss_ ABSL_GUARDED_BY(mu_) = std::nan("");
  std::map<uint64_t, StepOutcome> outcomes_ ABSL_GUARDED_BY(mu_);
  struct Barrier {
    uint32_t participants = 0;
    std::map<uint64_t, std::function<void()>> ready;  // By session prefix.
  };
  std::map<uint64_t, Barrier> arrivals_ ABSL_GUARDED_BY(mu_);  // By step.

  // The job's thread and its queue, stopped first by the destructor. The
  // last reference to a job may go inside one of its own tasks (a session
  // ending there); the queue then detaches and finishes alone.
  std::unique_ptr<TaskQueueThread> worker_ =
      std::make_unique<TaskQueueThread>();
};

// A server's jobs, by (job id, model id, first block, last block).
// Thread-safe. Jobs live until the server stops (their state is in memory
// and, checkpointed, on disk), or until room is needed for a new one: then
// the least recently used job that no session holds and whose state is on
// disk (or never changed) is forgotten; opened again, it restores from its
// checkpoint as after a server restart.
inline constexpr size_t kMaxTrainingJobs = 64;

class TrainingJobs {
 public:
  explicit TrainingJobs(std::string checkpoint_root)
      : checkpoint_root_(std::move(checkpoint_root)) {}
  // The job for `spec` on `stage`, created on first use with the initial
  // factors (a session then restores the checkpoint its device chooses).
  // The spec is validated every time; one whose adapter differs from the
  // running job's is refused; at most kMaxTrainingJobs jobs per server.
  absl::StatusOr<std::shared_ptr<TrainingJob>> Get(
      const v1::TrainingSpec& spec, const std::string& model_id,
      std::shared_ptr<HostedStage> stage);

  // The jobs held now (metrics).
  struct Summary {
    std::string job_id, model_id;
    int64_t first_block = 0, last_block = 0;
    uint64_t steps = 0;    // Updates applied.
    double last_loss = 0;  // TrainingJob::last_loss().
  };
  std::vector<Summary> Summaries() const;

 private:
  using Key = std::tuple<std::string, std::string, int64_t, int64_t>;
  const std::string checkpoint_root_;
  mutable absl::Mutex mu_;
  // Forgets one job as described above; false if none may go.
  bool EvictOneLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::map<Key, std::shared_ptr<TrainingJob>> jobs_ ABSL_GUARDED_BY(mu_);
  std::map<Key, absl::Time> last_used_ ABSL_GUARDED_BY(mu_);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_TRAINING_JOB_H_
