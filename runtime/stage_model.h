// A pipeline stage of a transformer: blocks [first, last), plus the
// embeddings on a first stage and the final norm + LM head on a last stage.
// Chaining the stages of any split gives exactly the whole model's result.
//
// Inputs are ragged batches: the new tokens of several sequences, each at its
// own position, are concatenated into one [T, hidden] matrix (no padding), so
// prefill and decode steps of different sessions share every projection and
// MLP matmul; only attention runs per sequence, against its own KV cache.
#ifndef EDGESPLIT_RUNTIME_STAGE_MODEL_H_
#define EDGESPLIT_RUNTIME_STAGE_MODEL_H_

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
#include "runtime/kv_cache.h"
#include "runtime/linear_weight.h"
#include "runtime/lora.h"
#include "runtime/model_config.h"
#include "runtime/model_store.h"

namespace edgesplit {

struct StageOptions {
  at::ScalarType dtype = at::kFloat;  // Compute and KV cache dtype.
  // Copy weights into process memory instead of computing straight from the
  // read-only file mapping. Costs RAM and load time; anonymous memory can
  // be backed by transparent huge pages (fewer TLB misses when decoding).
  bool copy_weights = false;
  // How the blocks' linear weights and the LM head are held. Unset: as the
  // checkpoint stores them (float, or the blocks `edgesplit model quantize`
  // wrote). kF32: float in `dtype` (blocks are dequantized). q8_0 / q4_0:
  // GGUF blocks, quantized at load from float (or converted from other
  // blocks), computed in float32 (`dtype` must be kFloat). Embeddings and
  // norms stay in `dtype`.
  std::optional<kernels::WeightType> weights;
  // Decode-sized steps (up to kGemvMaxRows rows, float32, no gradient;
  // inference adapters included) run fused on raw buffers with the GEMV
  // kernels. false keeps every step on ATen ops (at::linear): the reference
  // path tests and benchmarks compare against.
  bool decode_kernels = true;
};

// `num_tokens` new tokens of one sequence, whose cache on this stage is
// `cache` (created by StageModel::NewCache of the same stage).
struct SequenceSlice {
  SequenceKvCache* cache = nullptr;
  int64_t num_tokens = 0;
};

struct StageInput {
  // Row order of the batch: sequence i's tokens follow sequence i-1's.
  std::vector<SequenceSlice> sequences;
  at::Tensor tokens;  // int64 [T] on a stage with the embeddings.
  at::Tensor hidden;  // [T, hidden_size] on other stages.
  // On a stage with the head: logits of each sequence's last token only
  // ([num_sequences, vocab]) instead of every token's ([T, vocab]).
  bool last_token_only = false;
  // An attached LoRA adapter (AttachAdapter) every sequence uses; "" for
  // none. Training names its adapter here (gradients flow into it).
  std::string adapter;
  // Or one adapter per sequence (null: the base model), so sessions of
  // different adapters share a batch: the shared weights are read once
  // and each run of rows adds its own adapter's low-rank delta
  // (kernels/cpu/lora_sgmv.h). Empty, or one per sequence; not with
  // `adapter`. Not owned: the caller keeps them alive during Forward and
  // does not mutate them; factors that do not fit this stage's modules
  // are refused (INVALID_ARGUMENT), never read out of bounds.
  std::vector<const LoraAdapter*> sequence_adapters;
};

class StageModel {
 public:
  static absl::StatusOr<std::unique_ptr<StageModel>> Load(
      const ModelStore& store, const StageSpec& spec,
      const StageOptions& options = {});

  // Runs the batch and advances every sequence's cache by its tokens.
  // Returns hidden states [T, hidden] (dtype of the stage) or, on a stage
  // with the head, float32 logits. Invalid input (shapes, token ids, unknown
  // adapter) gives INVALID_ARGUMENT / NOT_FOUND; a full KV budget gives
  // RESOURCE_EXHAUSTED. On error no cache has advanced.
  // Thread-safe for batches over disjoint sequences.
  absl::StatusOr<at::Tensor> Forward(const StageInput& input) const;

  // A cache for one sequence on this stage; `budget` may be null.
  std::unique_ptr<SequenceKvCache> NewCache(KvBudget* budget) const;

  // LoRA adapters. Several may be attached; each Forward() picks one (or
  // takes one per sequence, StageInput::sequence_adapters). The stage uses
  // only the adapter's modules inside its block range.
  absl::Status AttachAdapter(std::shared_ptr<LoraAdapter> adapter);
  absl::Status DetachAdapter(const std::string& name);
  // Folds an attached adapter into (a private copy of) the base weights and
  // detaches it: afterwards the base model computes what the adapter did.
  // FAILED_PRECONDITION on quantized weights (the merge would be rounded
  // to the block grid: apply the adapter unmerged instead).
  absl::Status MergeAdapter(const std::string& name);

  const ModelConfig& config() const { return config_; }
  const StageSpec& spec() const { return spec_; }
  at::ScalarType dtype() const { return options_.dtype; }
  // The weight type the linear layers are held in (see StageOptions).
  kernels::WeightType weights() const { return weights_; }
  // Bytes of weights this stage holds (as computed in, not as stored).
  int64_t WeightBytes() const;

  // Implementation types, public for the .cc's free functions.
  struct Linear {
    // [out, in]; GPT-2's Conv1D weights ([in, out] in the checkpoint) are
    // transposed into a private copy at load.
    LinearWeight w;
    at::Tensor b;        // Undefined when absent.
    std::string module;  // PEFT module path.
  };
  struct Block {
    int64_t index = 0;
    at::Tensor norm1_w, norm1_b, norm2_w, norm2_b;
    // BlockLinearModules() order: Llama q, k, v, o, gate, up, down;
    // GPT-2 c_attn, attn.c_proj, c_fc, mlp.c_proj.
    std::vector<Linear> linears;
  };
  // The LoRA branch of one forward: consecutive rows [begin, begin + rows)
  // that use one adapter, its factors looked up (and shape-checked) once
  // per linear module of the stage: factors[block * linears + i], null
  // where the adapter leaves the module alone.
  struct AdapterRun {
    int64_t begin = 0, rows = 0;
    const LoraAdapter* adapter = nullptr;
    std::vector<const LoraFactors*> factors;
  };
  using AdapterRuns = std::vector<AdapterRun>;

 private:
  StageModel() = default;
  at::Tensor ForwardLocked(const StageInput& input,
                           const AdapterRuns& runs) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status ValidateInput(const StageInput& input) const;
  // The adapters' runs of rows of `input`, adapters without a module on
  // this stage left out; NOT_FOUND / INVALID_ARGUMENT for an adapter that
  // is not attached or does not fit.
  absl::StatusOr<AdapterRuns> ResolveAdapters(const StageInput& input) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The fused decode path (stage_model_fused.cc).
  bool CanRunFused(const StageInput& input, const AdapterRuns& runs) const;
  at::Tensor ForwardFused(const StageInput& input,
                          const AdapterRuns& runs) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  ModelConfig config_;
  StageSpec spec_;
  StageOptions options_;
  kernels::WeightType weights_ = kernels::WeightType::kF32;
  at::Tensor wte_, wpe_;          // Embeddings (first stage).
  at::Tensor final_w_, final_b_;  // Final norm (last stage).
  LinearWeight head_;             // LM head [vocab, hidden] (last stage).
  // RoPE inverse frequencies [head_dim / 2] (Llama). cos/sin are computed
  // per step from the positions: no table sized by an untrusted config.
  at::Tensor rope_inv_freq_;
  std::vector<Block> blocks_ ABSL_GUARDED_BY(mu_);  // Merge rewrites weights.

  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<LoraAdapter>> adapters_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_STAGE_MODEL_H_
