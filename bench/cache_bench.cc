// Parameter-sharing edge caching (issue 15's what-if): hit ratio and
// storage of TrimCaching-style placement (shared base blocks stored once,
// planner/cache_placement.h) against independent caching (each cached
// variant stored whole), at equal storage per server, on a cluster of 10
// edge servers and 20 fine-tuned variants: two base models of 475 MiB
// (GPT-2 small in float32) with 10 LoRA adapters each (9 MiB: rank 16 on
// every linear). Ten regions each reach their own server and its two ring
// neighbours within the latency bound; each region's requests follow a
// Zipf law over the 20 variants in its own random order (seeded). Also the
// placement's solve time and, after a popularity shift in one region, the
// bytes a migration moves.
//
//   cache_bench [--zipf 0.8] [--seed 1]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "planner/cache_placement.h"

namespace edgesplit::planner {
namespace {

constexpr int kServers = 10, kBases = 2, kAdaptersPerBase = 10;
constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kBaseBytes = 475 * kMiB, kAdapterBytes = 9 * kMiB;

CacheProblem Cluster(int64_t capacity, double zipf, uint32_t seed) {
  CacheProblem p;
  for (int b = 0; b < kBases; ++b) {
    p.blocks.push_back({"base" + std::to_string(b), kBaseBytes});
  }
  for (int b = 0; b < kBases; ++b) {
    for (int a = 0; a < kAdaptersPerBase; ++a) {
      const int block = static_cast<int>(p.blocks.size());
      p.blocks.push_back(
          {"adapter" + std::to_string(b) + "." + std::to_string(a),
           kAdapterBytes});
      p.models.push_back({"variant" + std::to_string(block), {b, block}});
    }
  }
  for (int s = 0; s < kServers; ++s) {
    p.servers.push_back({"edge" + std::to_string(s), capacity});
  }
  std::mt19937 rng(seed);
  const int m = static_cast<int>(p.models.size());
  for (int r = 0; r < kServers; ++r) {
    std::vector<int> order(m);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    CacheRegion region{"region" + std::to_string(r),
                       std::vector<double>(m),
                       {r, (r + 1) % kServers, (r + kServers - 1) % kServers}};
    for (int k = 0; k < m; ++k) {
      region.demand[order[k]] = 1.0 / std::pow(k + 1.0, zipf);
    }
    p.regions.push_back(region);
  }
  return p;
}

int64_t Stored(const CachePlacement& p) {
  int64_t total = 0;
  for (int64_t b : p.bytes_at) total += b;
  return total;
}

int Main(int argc, char** argv) {
  double zipf = 0.8;
  uint32_t seed = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i], v = argv[i + 1];
    if (f == "--zipf") {
      zipf = std::stod(v);
    } else if (f == "--seed") {
      seed = static_cast<uint32_t>(std::stoul(v));
    } else {
      std::cerr << "unknown flag " << f << "\n";
      return 2;
    }
  }
  std::printf(
      "%d servers, %d variants (%d bases of %lld MiB x %d adapters of %lld "
      "MiB), Zipf %.2f per region, 3 servers per region within the bound\n\n"
      "| storage per server MiB | shared: hit ratio | shared: stored MiB | "
      "independent: hit ratio | independent: stored MiB | hit ratio shared "
      "/ independent | solve ms |\n|---|---|---|---|---|---|---|\n",
      kServers, kBases * kAdaptersPerBase, kBases,
      static_cast<long long>(kBaseBytes / kMiB), kAdaptersPerBase,
      static_cast<long long>(kAdapterBytes / kMiB), zipf);
  for (int64_t mib : {500, 600, 1000, 1200}) {
    const CacheProblem p = Cluster(mib * kMiB, zipf, seed);
    const auto t0 = std::chrono::steady_clock::now();
    auto shared = PlaceCaches(p, {});
    const double ms = std::chrono::duration<double, std::milli>(
                          std::chrono::steady_clock::now() - t0)
                          .count();
    CachePlacementOptions independent_options;
    independent_options.share_blocks = false;
    auto independent = PlaceCaches(p, independent_options);
    if (!shared.ok() || !independent.ok()) {
      std::cerr << shared.status() << independent.status() << "\n";
      return 1;
    }
    std::printf("| %lld | %.3f | %lld | %.3f | %lld | **%.2f** | %.1f |\n",
                static_cast<long long>(mib), shared->hit_ratio,
                static_cast<long long>(Stored(*shared) / kMiB),
                independent->hit_ratio,
                static_cast<long long>(Stored(*independent) / kMiB),
                shared->hit_ratio / independent->hit_ratio, ms);
  }
  // Migration at 500 MiB per server (not everything fits): re-planned
  // from what the servers hold vs from scratch, after two shifts: within
  // each base's variants (each region's demand rotated among them: the
  // bases stay as popular), and every region's order reshuffled.
  std::printf(
      "\npopularity shifts at 500 MiB per server; adapters %lld MiB, bases "
      "%lld MiB; MiB fetched to reach the new placement\n\n"
      "| shift | re-plan | hit ratio | MiB fetched |\n|---|---|---|---|\n",
      static_cast<long long>(kAdapterBytes / kMiB),
      static_cast<long long>(kBaseBytes / kMiB));
  const CacheProblem p = Cluster(500 * kMiB, zipf, seed);
  auto before = PlaceCaches(p, {});
  if (!before.ok()) return 1;
  CacheProblem within = p;
  for (CacheRegion& r : within.regions) {
    for (int b = 0; b < kBases; ++b) {
      auto first = r.demand.begin() + b * kAdaptersPerBase;
      std::rotate(first, first + 3, first + kAdaptersPerBase);
    }
  }
  const CacheProblem reshuffled = Cluster(500 * kMiB, zipf, seed + 1000);
  const std::pair<const char*, const CacheProblem*> shifts[] = {
      {"within bases", &within}, {"reshuffled", &reshuffled}};
  for (const auto& [shift, q] : shifts) {
    CachePlacementOptions sticky;
    sticky.current = &before->models_at;
    auto kept = PlaceCaches(*q, sticky);
    auto fresh = PlaceCaches(*q, {});
    if (!kept.ok() || !fresh.ok()) return 1;
    std::printf("| %s | from the current placement | %.3f | %.1f |\n", shift,
                kept->hit_ratio, kept->moved_bytes / static_cast<double>(kMiB));
    std::printf("| %s | from scratch | %.3f | %.1f |\n", shift,
                fresh->hit_ratio,
                TransferBytes(*q, before->models_at, fresh->models_at) /
                    static_cast<double>(kMiB));
  }
  return 0;
}

}  // namespace
}  // namespace edgesplit::planner

int main(int argc, char** argv) { return edgesplit::planner::Main(argc, argv); }
