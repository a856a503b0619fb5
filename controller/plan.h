// Split plans: which node runs which contiguous blocks of a model.
// Operators pin them in YAML (configs/plans/*.yaml):
//
//   model:
//     id: stories260K
//     path: ../shared/models/stories260K   # relative to the plan file
//     copy: q4_0           # optional: servers get the model as this copy
//                          # registered with the controller (`edgesplit
//                          # model register`), fetched from the nearest
//                          # server holding it, else the controller (and
//                          # devices into their model_cache_dir); the
//                          # path is then the controller's only
//   u_shaped: false        # true: the device also runs the norm and head
//   stages:
//     - node: device       # the first stage is always the device
//       blocks: [0, 1]     # [first, last): blocks 0 .. last-1
//     - node: server-a
//       blocks: [1, 3]
//       weights: q4_0      # optional: this stage's weight type (f32, f16,
//                          # q8_0, q6_k, q4_k, q4_0), converted on load
//                          # from the model's one copy; default: the
//                          # node's own setting. Pinned in an automatic
//                          # plan, the node profiles the type and the
//                          # planner prices the stage with it.
//     - node: server-b
//       blocks: [3, 5]
//       standby: [server-c]  # optional: nodes that load the stage too and
//                            # take server-b's place in new routes and
//                            # reroutes while it is down, draining or
//                            # suspected (first usable one, in order)
//
// Or let the controller plan it from measured profiles, pinning some
// stages (or none) and leaving the rest to the planner:
//
//   model: {id: stories260K, path: ../shared/models/stories260K}
//   planner:
//     objective: latency     # latency | throughput | energy
//     prompt_tokens: 64      # the request shape planned for
//     output_tokens: 64
//     batch: 1
//     micro_batches: 1
//     min_device_blocks: 1   # privacy: the device keeps at least these
//     max_device_blocks: -1
//     u_shaped: auto         # true | false | auto
//   stages:                  # optional: pinned stages
//     - {node: server-a, blocks: [2, 4]}
//
// Either kind may require privacy of every session (the device agent
// refuses generations and training runs without it):
//
//   privacy: {max_epsilon: 8, max_delta: 1e-5}
//
// Parsing yields typed structs; Validate() checks them against the model's
// config.json and the cluster's nodes. Every error names the file, line
// and field.
#ifndef EDGESPLIT_CONTROLLER_PLAN_H_
#define EDGESPLIT_CONTROLLER_PLAN_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model_config.h"

namespace edgesplit {

inline constexpr char kDeviceNode[] = "device";

struct PlanStageConfig {
  std::string node;
  int64_t first_block = 0;
  int64_t last_block = 0;
  int line = 0;              // Where the stage is in the file (1-based).
  std::string weights = "";  // "" = the node's own setting.
  // Pinned server stages: nodes that load the stage too and stand in for
  // `node` while it is unusable (in this order).
  std::vector<std::string> standby = {};
};

// The `planner:` section of an automatic plan.
struct PlannerSettings {
  std::string objective = "latency";
  int64_t prompt_tokens = 64;
  int64_t output_tokens = 64;
  int64_t batch = 1;
  int64_t micro_batches = 1;
  int64_t min_device_blocks = 0;
  int64_t max_device_blocks = -1;
  std::string u_shaped = "auto";  // "true", "false" or "auto".
};

// The plan's `privacy:` section; max_epsilon 0: none required.
struct PlanPrivacy {
  double max_epsilon = 0;
  double max_delta = 1e-5;
};

struct PlanConfig {
  std::string source;  // The file.
  std::string model_id;
  std::string model_path;  // Resolved against the file's directory.
  std::string model_copy;  // "" = servers read model_path.
  bool u_shaped = false;
  // Pinned plans: every stage. Automatic plans (`planner` set): the
  // pinned stages only; the controller fills in the rest.
  std::vector<PlanStageConfig> stages;
  bool automatic = false;
  PlannerSettings planner;
  PlanPrivacy privacy;
};

struct NodeConfig {
  std::string name;
  int64_t memory_bytes = 0;  // For weights; 0 = unknown (not checked).
};

absl::StatusOr<PlanConfig> ParsePlanYaml(const std::string& text,
                                         const std::string& source);
absl::StatusOr<PlanConfig> LoadPlanFile(const std::string& path);

// Checks: stages contiguous from block 0 to the model's last, the first on
// the device, nodes known and not repeated, and each node's weights fit
// its memory at the stage's weight type (fp32 when the plan leaves it to
// the node).
absl::Status ValidatePlan(const PlanConfig& plan, const ModelConfig& model,
                          const std::map<std::string, NodeConfig>& nodes);
// For automatic plans: pinned stages name known nodes and lie within the
// model (the planner checks the rest).
// Bytes per weight of a plan's weight type ("" counts as f32): 4, 2, 34/32
// (q8_0), 210/256 (q6_k), 144/256 (q4_k), 18/32 (q4_0); 0 for an unknown
// name. The controller links no kernels: tests keep this in step with
// kernels::RowBytes.
double PlanWeightBytes(const std::string& weights);

absl::Status ValidateAutomaticPlan(
    const PlanConfig& plan, const ModelConfig& model,
    const std::map<std::string, NodeConfig>& nodes);

}  // namespace edgesplit

#endif  // EDGESPLIT_CONTROLLER_PLAN_H_
