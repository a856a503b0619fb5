// The split planner: which node runs which contiguous range of transformer
// blocks, chosen to minimise generation latency, maximise pipeline
// throughput, or minimise the device's energy, under memory, privacy and
// pinning constraints. Pure computation on numbers (no LibTorch, no I/O):
// the controller feeds it measured profiles, `edgesplit plan` feeds it a
// cluster file, tests feed it random instances.
//
// Cost model. The device embeds the tokens and runs blocks [0, k0), or,
// with k0 = 0, holds no block and sends token ids: the first server
// embeds. Servers follow as a path, each running a non-empty contiguous
// range; the final norm + LM head run on the last server, or on the device
// in a U-shaped plan. Every block emits the same activation (hidden_size
// per token), so the bytes crossing a cut do not depend on where it is,
// except the cut before block 0 (token ids); results travel back along the
// path (that is how the stage streams work: each hop answers its caller).
//   * Latency (interactive): prefill + (output_tokens - 1) x decode step,
//     each the sum of compute on every stage, one-way transfers with half
//     an RTT each way on every link, and a fixed overhead per server hop.
//   * Throughput (batched): micro-batches flow through the path as a
//     pipeline; the objective is the bottleneck - the slowest stage or the
//     slowest link direction, per micro-batch. Compute and communication
//     overlap (each link direction is its own pipeline stage, as in
//     PipeEdge); RTT adds latency but not occupancy, so it is not counted.
//   * Energy: the device's joules (its compute FLOPs x J/FLOP plus the bits
//     it sends and receives x J/bit); ties broken by latency.
//
// Thread-safe: every function is pure.
#ifndef EDGESPLIT_PLANNER_PLANNER_H_
#define EDGESPLIT_PLANNER_PLANNER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace edgesplit {
namespace planner {

inline constexpr char kDevice[] = "device";

struct ModelSpec {
  std::string id;
  int num_blocks = 0;
  // Bytes per token crossing any cut (hidden_size x codec bytes).
  int64_t activation_bytes = 0;
  // Bytes per token the last server returns: logits (vocab x 4).
  int64_t logits_bytes = 0;
  int64_t block_bytes = 0;  // Weights of one block (all blocks are equal).
  // Embedding: on the device, or on the first server when the device
  // holds zero blocks (then token ids, not activations, go up).
  int64_t embed_bytes = 0;
  int64_t head_bytes = 0;  // Final norm + LM head, on the head's node.
  int64_t kv_bytes_per_token_per_block = 0;
  double block_flops_per_token = 0;  // Energy only.
  double head_flops_per_token = 0;   // Energy only.
};

// A node's measured profile. The device's name is kDevice.
struct NodeSpec {
  std::string name;
  double decode_ms_per_block = 0;   // One token, batch 1.
  double prefill_ms_per_token = 0;  // Per block, per prompt token.
  double head_ms = 0;               // Norm + LM head for one token.
  double overhead_ms = 0;           // Fixed cost per request at this hop.
  int64_t memory_bytes = 0;         // For weights and KV; must be > 0.
  double joules_per_flop = 0;       // Device energy.
  double joules_per_bit = 0;        // Device radio energy, per bit.
};

// One direction of a link. A missing link means the pair cannot talk.
struct LinkSpec {
  std::string from, to;
  double bytes_per_s = 0;
  double rtt_ms = 0;
};

struct RequestShape {
  int prompt_tokens = 128;
  int output_tokens = 128;
  int batch = 1;          // Sequences generated together.
  int micro_batches = 1;  // Throughput: the batch is split into these.
};

enum class Objective { kLatency, kThroughput, kEnergy };
enum class UShape { kNo, kYes, kAuto };

struct PinnedStage {
  std::string node;
  int first_block = 0;
  int last_block = 0;  // Exclusive.
};

struct Constraints {
  int min_device_blocks = 0;   // Privacy: raw activations stay local.
  int max_device_blocks = -1;  // -1: no limit but memory.
  UShape u_shaped = UShape::kAuto;
  // Stages the plan must contain exactly (e.g. from YAML); for the device,
  // its range must start at 0.
  std::vector<PinnedStage> pinned;
};

struct Problem {
  ModelSpec model;
  std::vector<NodeSpec> nodes;  // Exactly one named kDevice.
  std::vector<LinkSpec> links;
  RequestShape request;
  Objective objective = Objective::kLatency;
  Constraints constraints;

  // Names the first bad field ("nodes[2].memory_bytes: must be > 0").
  absl::Status Validate() const;
};

struct StagePlan {
  std::string node;
  int first_block = 0;
  int last_block = 0;
  bool head = false;            // Runs the final norm + LM head.
  double prefill_ms = 0;        // Compute (+ overhead) for the prompt.
  double decode_ms = 0;         // Compute (+ overhead) per decode step.
  double transfer_ms = 0;       // Per decode step, to the next stage and
                                // back (0 for the last).
  int64_t memory_bytes = 0;     // Weights + KV for the request.
  int64_t bytes_to_next = 0;    // Per decode step.
  int64_t bytes_from_next = 0;  // Per decode step.
};

struct PlanResult {
  std::vector<StagePlan> stages;  // stages[0] is the device.
  bool u_shaped = false;
  double prefill_ms = 0;        // Time to first token.
  double decode_step_ms = 0;    // Per token after the first.
  double latency_ms = 0;        // prefill + (output - 1) x decode step.
  double bottleneck_ms = 0;     // Slowest pipeline stage per micro-batch.
  double throughput_tok_s = 0;  // Decode tokens/s with a full pipeline.
  double device_joules = 0;
  double objective_value = 0;  // What the solver minimised.
};

// The optimal plan, or an error naming the constraint that cannot be met
// (INVALID_ARGUMENT for a bad problem, FAILED_PRECONDITION when no plan
// satisfies the constraints).
absl::StatusOr<PlanResult> Solve(const Problem& problem);

// A given plan's predictions (hand-written plans, what-if, and the
// brute-force reference in tests). `ranges` lists (node, first, last) in
// path order, the device first. Errors say which constraint it breaks.
struct Assignment {
  std::string node;
  int first_block = 0;
  int last_block = 0;
};
absl::StatusOr<PlanResult> Evaluate(const Problem& problem,
                                    const std::vector<Assignment>& ranges,
                                    bool u_shaped);

const char* ObjectiveName(Objective o);
absl::StatusOr<Objective> ParseObjective(const std::string& name);

}  // namespace planner
}  // namespace edgesplit

#endif  // EDGESPLIT_PLANNER_PLANNER_H_
