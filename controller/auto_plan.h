// The bridge from what the controller knows (model config, nodes' measured
// compute and links) to the planner, and back to a plan. Pure functions;
// `edgesplit plan` uses them too.
#ifndef EDGESPLIT_CONTROLLER_AUTO_PLAN_H_
#define EDGESPLIT_CONTROLLER_AUTO_PLAN_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "controller/plan.h"
#include "edgesplit/v1/controller.pb.h"
#include "planner/planner.h"
#include "runtime/model_config.h"

namespace edgesplit {

struct NodeView {
  std::string name;          // kDeviceNode for the device.
  int64_t memory_bytes = 0;  // 0: unknown (not limited).
  bool has_compute = false;
  v1::ComputeProfile compute;
  std::vector<v1::LinkProfile> links;  // Measured from this node.
  double joules_per_flop = 0;          // Device energy (energy objective).
  double joules_per_bit = 0;
};

// Used where no node measured a link.
struct DefaultLink {
  double bytes_per_s = 125e6;  // 1 Gbit/s
  double rtt_ms = 1;
};

// Profiles come from the network: non-finite, negative or absurd values are
// rejected (INVALID_ARGUMENT naming the field) before they reach a plan.
absl::Status ValidateProfile(const v1::ComputeProfile& c);

absl::Status ValidateLink(const v1::LinkProfile& l);

// The planner solves exactly over at most this many servers.
inline constexpr size_t kMaxPlannedServers = 18;

planner::ModelSpec ModelSpecFor(const ModelConfig& model,
                                const std::string& id);

// The planning problem for `spec` (an automatic plan) over `servers` and
// `device`. A device without a measured compute keeps exactly its minimum
// blocks (its compute is then the same in every plan) and, unless the spec
// demands U-shape, no head.
absl::StatusOr<planner::Problem> BuildProblem(
    const PlanConfig& spec, const ModelConfig& model,
    const std::vector<NodeView>& servers, const NodeView& device,
    const DefaultLink& default_link);

// Solves and converts: the plan (stages from the planner, source and model
// from `spec`) and the planner's predictions.
absl::StatusOr<PlanConfig> PlanAutomatically(
    const PlanConfig& spec, const ModelConfig& model,
    const std::vector<NodeView>& servers, const NodeView& device,
    const DefaultLink& default_link, planner::PlanResult* predictions);

// The predictions for `plan` (the one running) under the current profiles;
// an error when it is no longer feasible (a node gone, memory, pins).
absl::StatusOr<planner::PlanResult> EvaluatePlan(
    const PlanConfig& spec, const ModelConfig& model,
    const std::vector<NodeView>& servers, const NodeView& device,
    const DefaultLink& default_link, const PlanConfig& plan);

}  // namespace edgesplit

#endif  // EDGESPLIT_CONTROLLER_AUTO_PLAN_H_
