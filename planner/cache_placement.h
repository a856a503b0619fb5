// Parameter-sharing edge model caching (TrimCaching, Qu et al. 2024): which
// models each edge server stores so that as much of the request demand as
// possible is served within its latency bound.
//
// Models are sets of content-addressed blocks: fine-tuned variants of one
// base share the base's blocks (a LoRA variant adds only its adapter's
// factors; a fully fine-tuned one shares the blocks it did not change). A
// server stores each distinct block once, so caching a second variant of a
// base it already holds costs only that variant's own blocks. A region's
// request for model i is a hit when a server that region reaches within
// the latency bound caches i.
//
// The objective (demand served) is monotone submodular in the set of
// (server, model) pairs, but shared blocks make the storage constraint
// non-linear. PlaceCaches solves small instances exactly (search over
// every per-server subset) and larger ones with the best of greedy passes
// (largest gain; largest gain per byte stored; re-planning, largest gain
// per byte fetched), each adding the feasible (server, model) pair that is
// best by its rule until none adds demand. Pure computation: no I/O,
// thread-compatible.
#ifndef EDGESPLIT_PLANNER_CACHE_PLACEMENT_H_
#define EDGESPLIT_PLANNER_CACHE_PLACEMENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace edgesplit::planner {

struct CacheBlock {
  std::string id;  // Content hash (or any unique name).
  int64_t bytes = 0;
};

struct CacheModel {
  std::string name;
  std::vector<int> blocks;  // Indices into CacheProblem::blocks.
};

struct CacheServer {
  std::string name;
  int64_t capacity_bytes = 0;
};

struct CacheRegion {
  std::string name;
  std::vector<double> demand;  // Requests per model (CacheProblem order).
  std::vector<int> servers;    // Servers within the latency bound.
};

struct CacheProblem {
  std::vector<CacheBlock> blocks;
  std::vector<CacheModel> models;
  std::vector<CacheServer> servers;
  std::vector<CacheRegion> regions;

  // Indices in range, sizes and demands non-negative, no duplicates
  // within a model's blocks or a region's servers; INVALID_ARGUMENT
  // naming the model, region or server otherwise.
  absl::Status Validate() const;
};

struct CachePlacement {
  std::vector<std::vector<int>> models_at;  // Per server, sorted.
  std::vector<int64_t> bytes_at;            // Stored bytes per server.
  double served = 0;                        // Demand served.
  double hit_ratio = 0;                     // served / total demand.
  bool exact = false;                       // Proven optimal.
  int64_t moved_bytes = 0;  // Fetched to get here from options.current.
};

struct CachePlacementOptions {
  // false: each cached model is stored whole (no block sharing), as
  // caching without TrimCaching's accounting does.
  bool share_blocks = true;
  // Exhaustive search while (server, model) pairs <= this many.
  int exact_max_pairs = 18;
  // Re-planning: what each server caches now (model indices; null: an
  // empty cluster). Among placements serving the same demand the one that
  // fetches fewer bytes wins, and the per-byte greedy pass counts only
  // bytes a server would have to fetch, so what is held stays while it
  // still serves demand and a popularity shift moves only what differs.
  const std::vector<std::vector<int>>* current = nullptr;
};

absl::StatusOr<CachePlacement> PlaceCaches(
    const CacheProblem& problem, const CachePlacementOptions& options = {});

// Bytes server storage holds for `models` (shared blocks once when
// `share_blocks`).
int64_t StoredBytes(const CacheProblem& problem, const std::vector<int>& models,
                    bool share_blocks);

// The demand `models_at` serves, and its share of all demand.
double ServedDemand(const CacheProblem& problem,
                    const std::vector<std::vector<int>>& models_at);

// Bytes servers must fetch to go from placement `before` to `after`:
// blocks `after` needs at a server that `before` did not store there
// (migration moves only what a variant does not share).
int64_t TransferBytes(const CacheProblem& problem,
                      const std::vector<std::vector<int>>& before,
                      const std::vector<std::vector<int>>& after);

}  // namespace edgesplit::planner

#endif  // EDGESPLIT_PLANNER_CACHE_PLACEMENT_H_
