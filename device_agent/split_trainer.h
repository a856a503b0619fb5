// The device's side of split training: the embedding and blocks [0, k) run
// here (training their LoRA factors unless frozen), the servers of the
// route run the rest over one training session, and in a U-shaped split
// the final norm and LM head run here too, so labels never leave the
// device. A step's micro-batches go through the route in 1F1B order: the
// device sends a micro-batch's forward and moves on to the next while the
// servers work, and sends backwards in the schedule's order, so the hops
// compute different micro-batches at the same time.
#ifndef EDGESPLIT_DEVICE_AGENT_SPLIT_TRAINER_H_
#define EDGESPLIT_DEVICE_AGENT_SPLIT_TRAINER_H_

#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "edgesplit/v1/stage.grpc.pb.h"
#include "privacy/dp_sgd.h"
#include "privacy/training_privatizer.h"
#include "proto/stage_stream.h"
#include "runtime/stage_model.h"
#include "runtime/train/checkpoints.h"
#include "runtime/train/stage_trainer.h"

namespace edgesplit {

struct SplitTrainerOptions {
  std::string session_id;
  std::string model_id;
  std::string device = "device";  // Names this device's checkpoints.
  v1::TrainingSpec spec;
  v1::Codec codec = v1::CODEC_FP32;
  std::vector<v1::Hop> route;  // The servers, in order.
  v1::SignedGrant grant;       // The controller's, for this route.
  absl::Time deadline = absl::InfiniteFuture();
  // The longest wait for any one answer (a hop that accepts requests but
  // never answers: stuck, overloaded). Past it the session is closed and
  // the operation fails DEADLINE_EXCEEDED, which callers resume from like
  // a lost hop.
  absl::Duration answer_timeout = absl::Minutes(5);
  // Clipping: true adds this device's squared gradient norm to the chain's
  // (one global norm: split equals whole); false (devices > 1) clips the
  // device's adapter by its own norm and the servers' by theirs.
  bool global_norm = true;
  // Where this device keeps its shard's checkpoints ("" none).
  std::string checkpoint_dir;
  // Private training (U-shaped; device blocks frozen, or trained with
  // dp_sgd): every activation and gradient row sent goes through it. Null:
  // sent as computed. Not owned; outlives the trainer.
  privacy::TrainingPrivatizer* privatizer = nullptr;
  // DP-SGD of this device's factors: each window's gradient is clipped and
  // each update's sum noised by it, and the device's update takes no scale
  // from the servers' norms (nor sends its own). Needs trained device
  // blocks, and servers that learn only from noised rows (privatizer) or
  // train nothing. Null: off. Not owned; outlives the trainer.
  privacy::DpSgd* dp_sgd = nullptr;
  // Emulation (DeviceAgentOptions::training_link_delay): each message
  // waits this long before it is sent.
  absl::Duration link_delay = absl::ZeroDuration();
};

struct SplitStepStats {
  int64_t step = 0;  // Updates done after this one.
  double loss = 0;   // Mean of the micro-batches' mean losses.
  int64_t tokens = 0;
  double grad_norm = 0;  // Global (or, global_norm false, the servers').
  double grad_scale = 1;
  double lr = 0;
  int64_t bytes_sent = 0, bytes_received = 0;  // To/from the first hop.
};

// PEFT tensor name ("base_model.model.<module>.lora_A.weight") -> tensor.
using AdapterTensors = std::map<std::string, at::Tensor>;

// Not thread-safe: one thread drives a trainer.
class SplitTrainer {
 public:
  // `local` (embedding + the device's blocks) and `head` (U-shaped, else
  // null) must outlive the trainer; the trainer attaches its adapter to
  // them under "train:<job>". Opens the session along the route.
  static absl::StatusOr<std::unique_ptr<SplitTrainer>> Open(
      StageModel* local, StageModel* head, v1::StageService::Stub* first_hop,
      const SplitTrainerOptions& options);
  ~SplitTrainer();

  // Updates checkpointed by every hop of the route, ascending, and the
  // least advanced hop's update count.
  const std::vector<uint64_t>& server_checkpoints() const {
    return server_checkpoints_;
  }
  uint64_t server_step() const { return server_step_; }
  // Updates this device has checkpointed, ascending.
  std::vector<uint64_t> DeviceCheckpoints() const;
  // The newest update count every hop and this device can restore (0: the
  // initial factors).
  uint64_t LatestCommonCheckpoint() const;
  // Every hop and this device go back to update `step`.
  absl::Status Restore(uint64_t step);

  // Forward and backward of `windows` (each n + 1 token ids: tokens and
  // their next-token labels), one micro-batch each; gradients accumulate.
  absl::StatusOr<SplitStepStats> ForwardBackward(
      const std::vector<at::Tensor>& windows);
  // The optimizer update of the accumulated gradients on every hop and
  // here; `checkpoint` saves every shard afterwards.
  absl::StatusOr<SplitStepStats> ApplyStep(bool checkpoint);
  // Mean loss per labelled token of `windows`, without training.
  absl::StatusOr<std::pair<double, int64_t>> Evaluate(
      const std::vector<at::Tensor>& windows);

  // The whole adapter (the servers' shards and this device's), with its
  // gradients when asked.
  absl::Status Export(AdapterTensors* factors, AdapterTensors* gradients);
  // This device's factors (PEFT names) and setting them (federated
  // averaging): shapes must match.
  AdapterTensors DeviceFactors() const;
  absl::Status SetDeviceFactors(const AdapterTensors& factors);

  uint64_t step() const { return step_; }
  bool device_trains() const { return device_trains_; }
  // sfl client selection: the devices taking part in the next updates
  // (0: the job's devices), sent with each; and, for a device left out of
  // a round, its update count moved on to `step` (>= step()) without
  // training, as the job's servers did with the others.
  void set_participants(uint32_t n) { participants_ = n; }
  void SkipTo(uint64_t step);
  // Saves this device's shard as the checkpoint after update `step` (a
  // device sitting updates out: its factors did not change).
  absl::Status CheckpointDevice(uint64_t step);
  // Ends the session (every hop frees it).
  void Close();

 private:
  using Future = std::shared_future<absl::StatusOr<v1::StageResponse>>;
  // One ForwardBackward's micro-batches in flight (defined in the .cc).
  struct StepState;
  SplitTrainer() = default;
  Future Send(v1::StageRequest request);
  absl::StatusOr<v1::StageResponse> Call(v1::StageRequest request);
  // `f`'s answer, or DEADLINE_EXCEEDED (closing the session) when none
  // comes within options_.answer_timeout.
  absl::StatusOr<v1::StageResponse> Await(const Future& f);
  // ForwardBackward's parts, on micro-batch `mb` of `s`: this device's
  // forward sent on; the backward request sent (U-shaped: after the head's
  // loss and backward here); U-shaped, the backwards whose forward results
  // are in, up to `upto`; this device's backward once its gradient is back.
  absl::Status SendForward(StepState& s, int mb);
  absl::Status SendBackward(StepState& s, int mb);
  absl::Status PumpBackwards(StepState& s, int upto);
  absl::Status FinishBackward(StepState& s, int mb);
  // The activations `h` of `window` as they may leave the device: through
  // the privatizer (its release for the window), else `h` itself.
  absl::StatusOr<at::Tensor> Sendable(const at::Tensor& h,
                                      const at::Tensor& window);

  StageModel* local_ = nullptr;
  StageModel* head_ = nullptr;
  SplitTrainerOptions options_;
  std::string adapter_name_;
  std::shared_ptr<LoraAdapter> local_adapter_, head_adapter_;
  std::unique_ptr<StageTrainer> local_trainer_;
  bool device_trains_ = false;                  // Else frozen: forwards only.
  std::unique_ptr<StageTrainer> head_trainer_;  // U-shaped only.
  std::unique_ptr<TrainerCheckpoints> checkpoints_;  // local_trainer_'s.
  AdamWOptions adamw_;
  std::shared_ptr<StageStream> stream_;
  std::vector<uint64_t> server_checkpoints_;
  uint64_t server_step_ = 0;
  uint64_t step_ = 0;
  uint32_t participants_ = 0;
  uint64_t next_micro_batch_ = 0;
  int64_t bytes_sent_ = 0, bytes_received_ = 0;
  double last_loss_ = 0;
  int64_t last_tokens_ = 0;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_DEVICE_AGENT_SPLIT_TRAINER_H_
