#include "controller/adapter_placement.h"

#include "controller/controller.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace edgesplit {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

v1::RegisteredAdapter Adapter(const std::string& model, const std::string& name,
                              const std::string& weights_blob, int64_t bytes,
                              std::vector<std::string> holders = {}) {
  v1::RegisteredAdapter a;
  a.set_model_id(model);
  a.set_name(name);
  v1::AdapterFile* config = a.add_files();
  config->set_name("adapter_config.json");
  config->set_blob("cfg");  // Same config file: stored once.
  config->set_bytes(10);
  v1::AdapterFile* weights = a.add_files();
  weights->set_name("adapter_model.safetensors");
  weights->set_blob(weights_blob);
  weights->set_bytes(bytes);
  for (const std::string& h : holders) a.add_holders(h);
  return a;
}

std::vector<std::string> Names(const v1::ServerPlacement& s) {
  std::vector<std::string> out;
  for (const auto& a : s.adapters()) out.push_back(a.name());
  return out;
}

// Model m runs on servers a and b (two hops), model n on c.
AdapterPlacementInput TwoModels() {
  AdapterPlacementInput in;
  in.adapters = {Adapter("m", "x", "X", 1000), Adapter("m", "y", "Y", 1000),
                 Adapter("m", "z", "Z", 1000), Adapter("n", "w", "W", 500),
                 Adapter("unplanned", "o", "O", 100)};
  in.model_servers = {{"m", {"a", "b"}}, {"n", {"c"}}};
  in.demand = {{{"m", "x"}, 10},
               {{"m", "y"}, 5},
               {{"m", "z"}, 1},
               {{"n", "w"}, 3},
               {{"unplanned", "o"}, 50}};
  in.config.server_storage_bytes = 2100;  // Two of m's adapters, not three.
  return in;
}

TEST(AdapterPlacementTest, EveryHopOfARouteCachesTheMostRequestedThatFit) {
  auto placed = PlaceAdapters(TwoModels());
  ASSERT_TRUE(placed.ok()) << placed.status();
  ASSERT_EQ(placed->servers_size(), 3);
  EXPECT_EQ(placed->servers(0).node(), "a");
  EXPECT_THAT(Names(placed->servers(0)), ElementsAre("x", "y"));
  EXPECT_THAT(Names(placed->servers(1)), ElementsAre("x", "y"));
  EXPECT_THAT(Names(placed->servers(2)), ElementsAre("w"));
  for (const auto& s : placed->servers()) {
    EXPECT_LE(s.stored_bytes(), s.capacity_bytes()) << s.node();
  }
  // The shared config file is stored once per server.
  EXPECT_EQ(placed->servers(0).stored_bytes(), 2010);
  EXPECT_EQ(placed->servers(0).independent_bytes(), 2020);
  // Demand per hop: m's 16 on two hops, n's 3 on one; the unplanned
  // model's adapter cannot be served anywhere and is left out.
  EXPECT_NEAR(placed->hit_ratio(), (2 * 15.0 + 3) / (2 * 16.0 + 3), 1e-12);
  EXPECT_TRUE(placed->exact());
  EXPECT_EQ(placed->held_hit_ratio(), 0);
  EXPECT_EQ(placed->moved_bytes(), 2 * 2010 + 510);
  // Demand is listed for what can be placed only.
  EXPECT_EQ(placed->demand_size(), 4);
}

TEST(AdapterPlacementTest, APopularityShiftMovesOnlyTheAdapterThatChanged) {
  AdapterPlacementInput in = TwoModels();
  in.adapters[0] = Adapter("m", "x", "X", 1000, {"a", "b"});
  in.adapters[1] = Adapter("m", "y", "Y", 1000, {"a", "b"});
  in.adapters[3] = Adapter("n", "w", "W", 500, {"c"});
  auto before = PlaceAdapters(in);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->moved_bytes(), 0);
  EXPECT_NEAR(before->held_hit_ratio(), before->hit_ratio(), 1e-12);
  in.demand[{"m", "z"}] = 8;  // z overtakes y.
  auto after = PlaceAdapters(in);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_THAT(Names(after->servers(0)), ElementsAre("x", "z"));
  EXPECT_THAT(Names(after->servers(1)), ElementsAre("x", "z"));
  // Only z's own file moves, to each of m's hops: x and the shared config
  // stay where they are.
  EXPECT_EQ(after->moved_bytes(), 2 * 1000);
  EXPECT_LT(after->held_hit_ratio(), after->hit_ratio());
}

TEST(AdapterPlacementTest, DemandFadesByHalfEveryHalfLife) {
  AdapterDemand demand(absl::Minutes(10));
  const absl::Time t0 = absl::FromUnixSeconds(1000000);
  for (int i = 0; i < 4; ++i) demand.Record("m", "x", t0);
  EXPECT_NEAR((demand.At(t0)[{"m", "x"}]), 4, 1e-12);
  EXPECT_NEAR((demand.At(t0 + absl::Minutes(10))[{"m", "x"}]), 2, 1e-12);
  demand.Record("m", "x", t0 + absl::Minutes(10));
  EXPECT_NEAR((demand.At(t0 + absl::Minutes(20))[{"m", "x"}]), 1.5, 1e-12);
  EXPECT_EQ(demand.At(t0).count({"m", "y"}), 0u);
}

TEST(AdapterPlacementTest, DemandKeepsABoundedNumberOfNames) {
  // Devices choose the names: a flood of new ones must not grow the table.
  AdapterDemand demand(absl::Minutes(1), /*max_entries=*/3);
  const absl::Time t0 = absl::FromUnixSeconds(1000000);
  for (const char* name : {"a", "b", "c", "d"}) demand.Record("m", name, t0);
  EXPECT_EQ(demand.At(t0).size(), 3u);
  EXPECT_EQ(demand.At(t0).count({"m", "d"}), 0u);
  // Once the old counts faded, new names find room.
  demand.Record("m", "d", t0 + absl::Minutes(10));
  EXPECT_EQ(demand.At(t0 + absl::Minutes(10)).count({"m", "d"}), 1u);
  EXPECT_LE(demand.At(t0).size(), 3u);
}

TEST(AdapterPlacementTest, ConfigSectionParsesAndErrorsNameTheField) {
  auto c = ParseControllerConfig(R"(
insecure: true
adapter_placement:
  server_storage_mb: 64
  nodes: {server-b: 128}
  demand_half_life_s: 600
  interval_s: 5
  what_if: [{model: m, adapter: x, requests: 40}]
)",
                                 "/c/controller.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  const AdapterPlacementConfig& p = c->adapter_placement;
  EXPECT_TRUE(p.enabled());
  EXPECT_EQ(p.StorageOf("server-a"), int64_t{64} << 20);
  EXPECT_EQ(p.StorageOf("server-b"), int64_t{128} << 20);
  EXPECT_EQ(p.half_life, absl::Seconds(600));
  EXPECT_EQ(p.interval, absl::Seconds(5));
  EXPECT_EQ((p.what_if.at({"m", "x"})), 40);
  auto off = ParseControllerConfig("insecure: true\n", "/c/c.yaml");
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->adapter_placement.enabled());

  for (const auto& [yaml, field] :
       std::vector<std::pair<std::string, std::string>>{
           {"adapter_placement: {server_storage_mb: -1}", "server_storage_mb"},
           {"adapter_placement: [1]", "adapter_placement"},
           {"adapter_placement: {nodes: [a]}", "adapter_placement.nodes"},
           {"adapter_placement: {nodes: {a: lots}}", "a"},
           {"adapter_placement: {what_if: [{model: m, adapter: ../x}]}",
            "adapter"},
           {"adapter_placement: {what_if: [{adapter: x}]}", "model"}}) {
    auto bad = ParseControllerConfig(yaml, "/c/controller.yaml");
    ASSERT_FALSE(bad.ok()) << yaml;
    EXPECT_THAT(bad.status().message(), HasSubstr("/c/controller.yaml"));
    EXPECT_THAT(bad.status().message(), HasSubstr(field)) << yaml;
  }
}

}  // namespace
}  // namespace edgesplit
