// The planner's cost model, precomputed for one problem and one choice of
// U-shape: per-node coefficients and per-link costs, in the decomposed form
// the dynamic programs need (linear in a node's block count, additive or
// max-combined over the path). Evaluate() and both DPs use this one model,
// so a plan's prediction and the DP's optimum are the same numbers.
// Internal to the planner.
#ifndef EDGESPLIT_PLANNER_COST_MODEL_H_
#define EDGESPLIT_PLANNER_COST_MODEL_H_

#include <limits>
#include <string>
#include <vector>

#include "planner/planner.h"

namespace edgesplit {
namespace planner {
namespace internal {

inline constexpr double kInf = std::numeric_limits<double>::infinity();

struct NodeCost {
  int index = 0;  // In Problem::nodes.
  bool device = false;
  // Latency: a generation costs fixed + per_block x k (+ head if it runs
  // the head).
  double lat_per_block = 0, lat_fixed = 0, lat_head = 0;
  // Throughput: one micro-batch's stage time is fixed + per_block x k
  // (+ head).
  double tp_per_block = 0, tp_fixed = 0, tp_head = 0;
  // Prefill / decode step split of the latency terms (for reporting).
  double pre_block = 0, dec_block = 0, head_pre = 0, head_dec = 0;
  // Blocks that fit, without and with the head (and, on the device, the
  // embedding). -1 = none fit.
  int cap = 0, cap_head = 0;
  int64_t bytes_per_block = 0, extra_bytes = 0, head_bytes = 0;
};

// Bytes per token id the device sends when it holds zero blocks (a
// packed varint of an id below 2^21 is at most 3; 4 is the int32 bound).
inline constexpr double kTokenIdBytes = 4;

class CostModel {
 public:
  // `problem` must be valid and outlive the model. `zero_device`: the
  // plans where the device holds no block; the first server then embeds,
  // and only token ids go up the device's link. Else the device embeds and
  // holds at least one block. A plan is one or the other, so the planner
  // solves each and keeps the better.
  CostModel(const Problem& problem, bool u_shaped, bool zero_device);

  bool u_shaped() const { return u_shaped_; }
  bool zero_device() const { return zero_device_; }
  int num_blocks() const { return problem_.model.num_blocks; }
  const NodeCost& device() const { return nodes_[device_]; }
  int device_index() const { return device_; }
  // Servers: every node except the device, in problem order.
  const std::vector<int>& servers() const { return servers_; }
  const NodeCost& node(int i) const { return nodes_[i]; }
  int NodeIndex(const std::string& name) const;  // -1 if unknown.
  const std::string& NodeName(int i) const { return problem_.nodes[i].name; }

  // Latency of the link u -> v for a whole generation (prefill transfer +
  // decode steps, both directions, RTT per request); kInf if unlinked.
  double LinkLatency(int u, int v) const { return link_lat_[u * n_ + v]; }
  // Slowest direction of u <-> v per micro-batch (pipeline occupancy).
  double LinkOccupancy(int u, int v) const { return link_tp_[u * n_ + v]; }
  // Per decode step (for reporting).
  double LinkDecodeMs(int u, int v) const { return link_dec_[u * n_ + v]; }
  double LinkPrefillMs(int u, int v) const { return link_pre_[u * n_ + v]; }

  int min_device_blocks() const { return min_dev_; }
  int max_device_blocks() const { return max_dev_; }  // Includes memory.

  // Device joules for a generation with k0 device blocks.
  double DeviceJoules(int k0) const;

  // Full predictions for a plan; the assignment must be structurally valid
  // (checked by Evaluate in planner.cc).
  PlanResult Predict(const std::vector<Assignment>& ranges) const;

 private:
  const Problem& problem_;
  const bool u_shaped_;
  const bool zero_device_;
  int n_ = 0, device_ = 0, min_dev_ = 0, max_dev_ = 0;
  std::vector<NodeCost> nodes_;
  std::vector<int> servers_;
  std::vector<double> link_lat_, link_tp_, link_dec_, link_pre_;
  // Per decode step: bytes to the next hop (from the device: token ids
  // when it holds zero blocks) and back.
  int64_t dec_fwd_bytes_ = 0, dev_fwd_bytes_ = 0, dec_ret_bytes_ = 0;
  double up_bytes_per_token_ = 0;  // On the device's link.
};

// The two exact solvers (dp.cc). Both return the optimal plan's ranges for
// `objective` (kLatency or kThroughput) or an empty vector when no plan
// satisfies the constraints.
//
// SetDp: no pinned stages. Uses the equal-size blocks: compute cost depends
// only on which nodes run how many blocks, communication only on the order
// of the nodes. Held-Karp over server subsets gives the best path for
// every subset; a greedy (latency) or monotone feasibility search
// (throughput) gives the best block counts. O(2^S S^2 + 2^S S log(SL)).
// `bound`: an objective value already achieved elsewhere (the other head
// placement); plans that cannot beat it are pruned, and an empty result
// then may also mean "none better".
std::vector<Assignment> SolveSetDp(const CostModel& m, Objective objective,
                                   double bound = kInf);
// RangeDp: any constraints, including pinned stages. DP over (blocks done,
// servers used, last node), choosing the next node and its range.
// O(2^S S^2 L^2); the controller uses it only when stages are pinned.
std::vector<Assignment> SolveRangeDp(const CostModel& m, Objective objective,
                                     const std::vector<PinnedStage>& pinned);
// RangeDp's state count for the size check.
double RangeDpWork(const CostModel& m);

}  // namespace internal
}  // namespace planner
}  // namespace edgesplit

#endif  // EDGESPLIT_PLANNER_COST_MODEL_H_
