// A what-if cluster for `edgesplit plan`: nodes with their compute and
// memory, links, and the planner settings, in YAML:
//
//   device: {decode_ms_per_block: 28, prefill_ms_per_token: 1.2,
//            head_ms: 40, memory_mb: 4096,
//            pj_per_flop: 5, nj_per_bit: 100}   # energy objective
//   servers:
//     - {name: server-a, decode_ms_per_block: 2.8, prefill_ms_per_token: 0.12,
//        head_ms: 4, overhead_ms: 0.3, memory_mb: 16384}
//   links:                       # directed; the reverse defaults to the same
//     - {from: device, to: server-a, mbit_s: 70, rtt_ms: 20}
//     - {from: server-a, to: device, mbit_s: 300, rtt_ms: 20}
//   default_link: {mbit_s: 400, rtt_ms: 4}   # pairs not listed
//   planner: {objective: latency, prompt_tokens: 128, output_tokens: 128,
//             min_device_blocks: 1, u_shaped: auto}   # as in plan files
//   stages: [{node: server-b, blocks: [10, 12]}]       # optional pins
//
// Errors name the file, line and field.
#ifndef EDGESPLIT_CONTROLLER_CLUSTER_FILE_H_
#define EDGESPLIT_CONTROLLER_CLUSTER_FILE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "controller/auto_plan.h"
#include "controller/plan.h"

namespace edgesplit {

struct ClusterFile {
  NodeView device;
  std::vector<NodeView> servers;
  DefaultLink default_link;
  // Planner settings and pinned stages (model fields unset).
  PlanConfig spec;
};

absl::StatusOr<ClusterFile> ParseClusterFile(const std::string& text,
                                             const std::string& source);
absl::StatusOr<ClusterFile> LoadClusterFile(const std::string& path);

// The plan as a pinned plan file (configs/plans format).
std::string PlanToYaml(const PlanConfig& plan);

}  // namespace edgesplit

#endif  // EDGESPLIT_CONTROLLER_CLUSTER_FILE_H_
