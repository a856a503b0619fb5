// Checkpoints of split LoRA training: one stage trainer's factors and
// AdamW moments per file, the newest few kept per shard.
#ifndef EDGESPLIT_RUNTIME_TRAIN_CHECKPOINTS_H_
#define EDGESPLIT_RUNTIME_TRAIN_CHECKPOINTS_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/train/optimizer.h"
#include "runtime/train/stage_trainer.h"

namespace edgesplit {

// A trainer's checkpoint: factors and AdamW moments in one safetensors
// file ("<factor>", "<factor>.exp_avg", "<factor>.exp_avg_sq"; metadata
// "step" = updates done). Written atomically (temporary file + rename).
absl::Status SaveTrainerState(const std::string& path,
                              const std::map<std::string, FactorState>& state,
                              int64_t step);
struct TrainerCheckpoint {
  std::map<std::string, FactorState> state;
  int64_t step = 0;
};
// Errors name the file and the tensor.
absl::StatusOr<TrainerCheckpoint> LoadTrainerState(const std::string& path);

// One stage trainer's checkpoints: <dir>/step-NNNNNNNN.safetensors, the
// newest `keep` kept. Used alike by a server's job shard and the device's.
// An empty `dir` keeps none. Not thread-safe (one trainer's owner).
class TrainerCheckpoints {
 public:
  TrainerCheckpoints(std::string dir, size_t keep)
      : dir_(std::move(dir)), keep_(keep == 0 ? 2 : keep) {}

  bool enabled() const { return !dir_.empty(); }
  std::string Path(uint64_t step) const;
  // Updates checkpointed, ascending (none if the directory is missing),
  // leaving out files that are not readable checkpoints of their step, so
  // a corrupt newest checkpoint makes resume fall back to the one before.
  std::vector<uint64_t> Steps() const;
  // Saves `trainer` as having done `step` updates (durably), then prunes
  // to the newest `keep` readable ones.
  absl::Status Save(const StageTrainer& trainer, uint64_t step) const;
  // Puts `trainer` back to update `step`: 0 is its initial factors, else
  // the checkpoint (DATA_LOSS naming the file if it is not that step's).
  absl::Status Restore(uint64_t step, StageTrainer* trainer) const;

 private:
  std::vector<uint64_t> Files() const;  // Every step-*.safetensors.
  bool Readable(uint64_t step) const;

  std::string dir_;
  size_t keep_;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TRAIN_CHECKPOINTS_H_
