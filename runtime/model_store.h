// A Hugging Face model directory: config.json, model.safetensors (or shards
// listed in model.safetensors.index.json) and tokenizer files; or a GGUF
// file (a path ending in .gguf, gguf_model.h), seen as the same checkpoint.
//
// Opening reads config.json and the index only. LoadStageWeights() opens just
// the shards holding the requested tensors and touches just those tensors'
// pages, so a server holding blocks 8-15 never reads blocks 0-7.
#ifndef EDGESPLIT_RUNTIME_MODEL_STORE_H_
#define EDGESPLIT_RUNTIME_MODEL_STORE_H_

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/cpu/quant_blocks.h"
#include "runtime/gguf.h"
#include "runtime/model_config.h"
#include "runtime/safetensors.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/weight_layout.h"

namespace edgesplit {

// Checkpoint names -> tensors.
using WeightMap = std::map<std::string, at::Tensor>;

// Thread-safe.
class ModelStore {
 public:
  static absl::StatusOr<std::unique_ptr<ModelStore>> Open(
      const std::string& dir);

  // The directory, or the .gguf file's path.
  const std::string& dir() const { return dir_; }
  bool is_gguf() const { return gguf_ != nullptr; }
  const ModelConfig& config() const { return config_; }
  // "transformer." or "" for GPT-2 checkpoints (see weight_layout.h).
  const std::string& gpt2_prefix() const { return gpt2_prefix_; }

  // Reads and validates every tensor of `spec` (present, shape the config
  // implies, floating dtype), converted to `dtype` (zero-copy when equal).
  // `copy` forces private copies instead of zero-copy views of the mapping.
  // A weight stored as GGUF blocks (StoredBlocks) comes back as its uint8
  // [rows, row bytes] block matrix, validated against the shape the config
  // implies, never converted.
  absl::StatusOr<WeightMap> LoadStageWeights(const StageSpec& spec,
                                             at::ScalarType dtype,
                                             bool copy = false) const;
  // Bytes the checkpoint stores for the given tensors.
  absl::StatusOr<int64_t> StoredBytes(
      const std::vector<WeightSpec>& weights) const;
  // The block type of a weight `model quantize` stored as GGUF blocks
  // (safetensors metadata "edgesplit.weights.<name>"), or nullopt for a
  // plain tensor. INVALID_ARGUMENT names the file for an unknown type.
  absl::StatusOr<std::optional<kernels::WeightType>> StoredBlocks(
      const std::string& tensor) const;
  // Names of the shard files that were opened so far (for tests).
  std::vector<std::string> OpenedShards() const;

  absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer() const;

 private:
  ModelStore() = default;
  static absl::StatusOr<std::unique_ptr<ModelStore>> OpenGguf(
      const std::string& path);
  // Undoes a GGUF file's q/k row permutation of `name`, if it has one.
  absl::Status Unpermute(const std::string& name, at::Tensor* t) const;
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> Shard(
      const std::string& file) const;
  // Shard file holding `tensor`, or NOT_FOUND naming the tensor.
  absl::StatusOr<std::string> ShardOf(const std::string& tensor) const;

  std::string dir_;
  ModelConfig config_;
  std::string gpt2_prefix_;
  // Tensor name -> shard file name (relative to dir_).
  std::map<std::string, std::string> weight_map_;
  // GGUF only: the file (metadata, tokenizer) and the q/k tensors to
  // un-permute, with their head counts.
  std::shared_ptr<const GgufFile> gguf_;
  std::map<std::string, int64_t> unpermute_heads_;

  mutable absl::Mutex mu_;
  mutable std::map<std::string, std::shared_ptr<const SafetensorsFile>> shards_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_MODEL_STORE_H_
