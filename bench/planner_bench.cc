// Planner solve time: blocks x servers x objective, on random heterogeneous
// clusters (every pair linked, uneven speeds and memory). Prints a table;
// best of several runs per cell.
//
//   build/bench/planner_bench
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "planner/planner.h"

namespace edgesplit {
namespace planner {
namespace {

Problem Cluster(int blocks, int servers, Objective objective, int seed) {
  std::mt19937 rng(seed);
  auto uni = [&](double a, double b) {
    return std::uniform_real_distribution<double>(a, b)(rng);
  };
  Problem p;
  p.model.num_blocks = blocks;
  p.model.activation_bytes = 4096 * 4;
  p.model.logits_bytes = 32000 * 4;
  p.model.block_bytes = 200 << 20;
  p.model.embed_bytes = 250 << 20;
  p.model.head_bytes = 250 << 20;
  p.model.kv_bytes_per_token_per_block = 16384;
  p.model.block_flops_per_token = 4e8;
  p.model.head_flops_per_token = 2.6e8;
  for (int i = 0; i <= servers; ++i) {
    NodeSpec n;
    n.name = i == 0 ? kDevice : "server-" + std::to_string(i);
    n.decode_ms_per_block = i == 0 ? 10 : uni(0.5, 2);
    n.prefill_ms_per_token = n.decode_ms_per_block / 40;
    n.head_ms = 2 * n.decode_ms_per_block;
    n.overhead_ms = 0.3;
    n.joules_per_flop = i == 0 ? 5e-11 : 0;
    n.joules_per_bit = i == 0 ? 1e-8 : 0;
    // Memory for 1/3 .. all of the blocks: plans need several servers.
    n.memory_bytes = int64_t{1} << 30;
    n.memory_bytes +=
        static_cast<int64_t>(uni(0.34, 1.0) * blocks) * (200 << 20);
    p.nodes.push_back(n);
  }
  for (const NodeSpec& a : p.nodes) {
    for (const NodeSpec& b : p.nodes) {
      if (a.name == b.name) continue;
      const bool device = a.name == kDevice || b.name == kDevice;
      p.links.push_back({a.name, b.name,
                         device ? (a.name == kDevice ? 70e6 / 8 : 300e6 / 8)
                                : uni(200e6, 1000e6) / 8,
                         device ? 20 : uni(1, 5)});
    }
  }
  p.request.prompt_tokens = 128;
  p.request.output_tokens = 128;
  p.request.batch = objective == Objective::kThroughput ? 8 : 1;
  p.request.micro_batches = objective == Objective::kThroughput ? 4 : 1;
  p.objective = objective;
  p.constraints.u_shaped = UShape::kAuto;
  return p;
}

double SolveMs(const Problem& p) {
  double best = 1e9;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = Solve(p);
    const auto t1 = std::chrono::steady_clock::now();
    if (!r.ok()) {
      std::fprintf(stderr, "solve failed: %s\n", r.status().ToString().c_str());
      return -1;
    }
    best = std::min(best,
                    std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return best;
}

}  // namespace
}  // namespace planner
}  // namespace edgesplit

int main() {
  using namespace edgesplit::planner;
  std::printf(
      "Solve time (ms, best of 5; both head placements tried; "
      "servers + 1 device)\n\n");
  std::printf("| blocks | servers | latency | throughput | energy |\n");
  std::printf("|---|---|---|---|---|\n");
  for (int blocks : {12, 32, 80}) {
    for (int servers : {2, 4, 8, 16}) {
      std::printf("| %d | %d |", blocks, servers);
      for (Objective o :
           {Objective::kLatency, Objective::kThroughput, Objective::kEnergy}) {
        std::printf(" %.3f |", SolveMs(Cluster(blocks, servers, o,
                                               blocks * 100 + servers)));
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  return 0;
}
