#include "planner/cache_placement.h"

#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace edgesplit::planner {
namespace {

using ::testing::HasSubstr;

// A base block of `base` bytes shared by `variants` models that each add
// one adapter block of `adapter` bytes.
CacheProblem Variants(int variants, int64_t base, int64_t adapter) {
  CacheProblem p;
  p.blocks.push_back({"base", base});
  for (int v = 0; v < variants; ++v) {
    p.blocks.push_back({"adapter" + std::to_string(v), adapter});
    p.models.push_back({"v" + std::to_string(v), {0, v + 1}});
  }
  return p;
}

// The definition, by brute force: every subset of models at every server.
double BruteForceServed(const CacheProblem& p, bool share) {
  const size_t n = p.servers.size(), m = p.models.size();
  double best = 0;
  for (uint64_t mask = 0; mask < (uint64_t{1} << (n * m)); ++mask) {
    std::vector<std::vector<int>> at(n);
    bool fits = true;
    for (size_t s = 0; s < n && fits; ++s) {
      for (size_t i = 0; i < m; ++i) {
        if (mask >> (s * m + i) & 1) at[s].push_back(static_cast<int>(i));
      }
      fits = StoredBytes(p, at[s], share) <= p.servers[s].capacity_bytes;
    }
    if (fits) best = std::max(best, ServedDemand(p, at));
  }
  return best;
}

CacheProblem Random(std::mt19937& rng) {
  std::uniform_int_distribution<int> coin(0, 1), size(1, 10), count(2, 4);
  std::uniform_real_distribution<double> demand(0, 5);
  CacheProblem p;
  const int blocks = count(rng) + 2, models = count(rng),
            servers = count(rng) - 1;
  for (int b = 0; b < blocks; ++b) {
    p.blocks.push_back({"b" + std::to_string(b), size(rng)});
  }
  for (int i = 0; i < models; ++i) {
    CacheModel m{"m" + std::to_string(i), {}};
    for (int b = 0; b < blocks; ++b) {
      if (coin(rng) || (b == blocks - 1 && m.blocks.empty()))
        m.blocks.push_back(b);
    }
    p.models.push_back(m);
  }
  for (int s = 0; s < servers; ++s) {
    p.servers.push_back({"s" + std::to_string(s), 5 + size(rng) * 2});
  }
  for (int r = 0; r < 3; ++r) {
    CacheRegion region{"r" + std::to_string(r), {}, {}};
    for (int i = 0; i < models; ++i) region.demand.push_back(demand(rng));
    for (int s = 0; s < servers; ++s) {
      if (coin(rng)) region.servers.push_back(s);
    }
    p.regions.push_back(region);
  }
  return p;
}

TEST(CachePlacementTest, ExactEqualsBruteForceAndGreedyStaysWithinStorage) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 60; ++trial) {
    const CacheProblem p = Random(rng);
    for (bool share : {true, false}) {
      CachePlacementOptions o;
      o.share_blocks = share;
      auto exact = PlaceCaches(p, o);
      ASSERT_TRUE(exact.ok()) << exact.status();
      ASSERT_TRUE(exact->exact);
      const double best = BruteForceServed(p, share);
      EXPECT_NEAR(exact->served, best, 1e-9) << "trial " << trial;
      o.exact_max_pairs = 0;  // The greedy passes.
      auto greedy = PlaceCaches(p, o);
      ASSERT_TRUE(greedy.ok());
      EXPECT_FALSE(greedy->exact);
      EXPECT_LE(greedy->served, best + 1e-9);
      for (const auto* placement : {&*exact, &*greedy}) {
        for (size_t s = 0; s < p.servers.size(); ++s) {
          EXPECT_LE(placement->bytes_at[s], p.servers[s].capacity_bytes);
          EXPECT_EQ(placement->bytes_at[s],
                    StoredBytes(p, placement->models_at[s], share));
        }
      }
    }
  }
}

TEST(CachePlacementTest, SharedBlocksAreStoredOnceSoMoreVariantsFit) {
  // One server with room for the base and three adapters: sharing caches
  // three variants, whole-model accounting only one.
  CacheProblem p = Variants(4, 100, 10);
  p.servers.push_back({"edge", 130});
  p.regions.push_back({"city", {4, 3, 2, 1}, {0}});
  for (int max_pairs : {18, 0}) {
    CachePlacementOptions o;
    o.exact_max_pairs = max_pairs;
    auto shared = PlaceCaches(p, o);
    ASSERT_TRUE(shared.ok());
    EXPECT_EQ(shared->models_at[0], (std::vector<int>{0, 1, 2}));
    EXPECT_EQ(shared->bytes_at[0], 130);
    EXPECT_DOUBLE_EQ(shared->hit_ratio, 0.9);
    o.share_blocks = false;
    auto independent = PlaceCaches(p, o);
    ASSERT_TRUE(independent.ok());
    EXPECT_EQ(independent->models_at[0], (std::vector<int>{0}));
    EXPECT_DOUBLE_EQ(independent->hit_ratio, 0.4);
  }
}

TEST(CachePlacementTest, APopularityShiftMovesOnlyAdapterBytes) {
  CacheProblem p = Variants(5, 1000, 8);
  p.servers = {{"a", 1016}, {"b", 1016}};
  p.regions = {{"north", {5, 4, 0, 0, 0}, {0}},
               {"south", {0, 0, 3, 2, 0}, {1}}};
  for (int max_pairs : {18, 0}) {  // Exact, then the greedy passes.
    CachePlacementOptions o;
    o.exact_max_pairs = max_pairs;
    CacheProblem q = p;
    auto before = PlaceCaches(q, o);
    ASSERT_TRUE(before.ok());
    EXPECT_EQ(before->models_at,
              (std::vector<std::vector<int>>{{0, 1}, {2, 3}}));
    EXPECT_EQ(before->moved_bytes, 2 * 1000 + 4 * 8);  // From nothing.
    // North now wants v4 most: re-planned from what the servers hold, only
    // v4's adapter (8 bytes) moves to "a"; the bases stay.
    q.regions[0].demand = {5, 0, 0, 0, 9};
    o.current = &before->models_at;
    auto after = PlaceCaches(q, o);
    ASSERT_TRUE(after.ok());
    EXPECT_EQ(after->models_at[0], (std::vector<int>{0, 4}));
    EXPECT_EQ(after->moved_bytes, 8);
    EXPECT_EQ(TransferBytes(q, before->models_at, after->models_at), 8);
  }
  auto after = PlaceCaches(p, {});
  ASSERT_TRUE(after.ok());
  // From nothing, everything is fetched: base and adapters per server.
  EXPECT_EQ(TransferBytes(p, {{}, {}}, after->models_at), 2 * 1000 + 4 * 8);
  EXPECT_EQ(after->moved_bytes, 2 * 1000 + 4 * 8);
}

TEST(CachePlacementTest, InvalidProblemsNameWhatIsWrong) {
  CacheProblem p = Variants(2, 10, 1);
  p.servers.push_back({"edge", 100});
  p.regions.push_back({"city", {1}, {0}});  // One demand for two models.
  auto s = PlaceCaches(p, {}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("region city"));
  p.regions[0].demand = {1, 1};
  p.regions[0].servers = {3};
  EXPECT_THAT(PlaceCaches(p, {}).status().message(),
              HasSubstr("server index 3"));
  p.regions[0].servers = {0};
  p.models[1].blocks = {0, 0};
  EXPECT_THAT(PlaceCaches(p, {}).status().message(), HasSubstr("model v1"));
}

}  // namespace
}  // namespace edgesplit::planner
