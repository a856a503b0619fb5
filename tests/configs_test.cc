// The YAML files shipped in configs/ parse and validate: a broken example
// is a broken product.
#include <filesystem>

#include "controller/auto_plan.h"
#include "controller/cluster_file.h"
#include "controller/controller.h"
#include "controller/plan.h"
#include "edge_server/server_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model_init.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;

std::string Configs() { return testing::SourceDir() + "/configs"; }

TEST(ConfigsTest, ClusterConfigsAreValid) {
  auto controller =
      LoadControllerConfig(Configs() + "/cluster/controller.yaml");
  ASSERT_TRUE(controller.ok()) << controller.status();
  EXPECT_EQ(controller->nodes.size(), 2u);
  EXPECT_EQ(controller->plan_files.size(), 2u);
  for (const auto& f : controller->plan_files) {
    EXPECT_TRUE(std::filesystem::exists(f)) << f;
  }
  for (std::string s : {"a", "b"}) {
    auto c = LoadServerConfig(Configs() + "/cluster/server-" + s + ".yaml");
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_TRUE(c->Validate().ok()) << c->Validate();
    EXPECT_EQ(c->name, "server-" + s);
  }
}

TEST(ConfigsTest, PlansValidateAgainstTheirModels) {
  auto controller =
      LoadControllerConfig(Configs() + "/cluster/controller.yaml");
  ASSERT_TRUE(controller.ok());
  std::map<std::string, NodeConfig> nodes;
  for (const auto& n : controller->nodes) nodes[n.name] = n;
  nodes["server-c"] = {"server-c", 0};  // The 3-hop example's extra node.
  auto tiny = PresetConfig(Arch::kLlama, "tiny");
  ASSERT_TRUE(tiny.ok());
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(Configs() + "/plans")) {
    if (entry.path().extension() != ".yaml") continue;
    auto plan = LoadPlanFile(entry.path().string());
    ASSERT_TRUE(plan.ok()) << plan.status();
    // The demo's model is written by `model init` (llama tiny); the others
    // are the real model in ../shared.
    ModelConfig model = *tiny;
    if (plan->model_id.rfind("demo-", 0) != 0) {
      auto real = LoadModelConfig(plan->model_path + "/config.json");
      ASSERT_TRUE(real.ok()) << plan->source << ": " << real.status();
      model = *real;
    }
    const absl::Status valid = plan->automatic
                                   ? ValidateAutomaticPlan(*plan, model, nodes)
                                   : ValidatePlan(*plan, model, nodes);
    EXPECT_TRUE(valid.ok()) << valid;
  }
}

TEST(ConfigsTest, WhatIfClusterParsesAndPlans) {
  auto cluster = LoadClusterFile(Configs() + "/cluster/what-if.yaml");
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  EXPECT_EQ(cluster->servers.size(), 3u);
  EXPECT_TRUE(cluster->device.has_compute);
  EXPECT_EQ(cluster->spec.planner.prompt_tokens, 128);
  // Directed links: the device's uplink and downlink differ.
  ASSERT_EQ(cluster->device.links.size(), 3u);
  EXPECT_EQ(cluster->device.links[0].up_bytes_per_s(), 70e6 / 8);
  EXPECT_EQ(cluster->device.links[0].down_bytes_per_s(), 300e6 / 8);
  auto gpt2 = PresetConfig(Arch::kGpt2, "small");
  ASSERT_TRUE(gpt2.ok());
  planner::PlanResult r;
  auto plan = PlanAutomatically(cluster->spec, *gpt2, cluster->servers,
                                cluster->device, cluster->default_link, &r);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->stages.front().last_block, 1);  // The device's minimum.
  EXPECT_GT(r.latency_ms, 0);
}

TEST(ConfigsTest, ClusterFileErrorsNameTheField) {
  auto bad = ParseClusterFile(
      "servers:\n  - {name: a, decode_ms_per_block: fast}\n", "c.yaml");
  EXPECT_THAT(bad.status().message(), HasSubstr("c.yaml:2"));
  EXPECT_THAT(bad.status().message(),
              HasSubstr("servers[0].decode_ms_per_block"));
  bad = ParseClusterFile(
      "servers:\n  - {name: a, decode_ms_per_block: 1}\nlinks:\n"
      "  - {from: a, to: z, mbit_s: 5}\n",
      "c.yaml");
  EXPECT_THAT(bad.status().message(), HasSubstr("unknown node \"z\""));
  bad = ParseClusterFile("servers: []\n", "c.yaml");
  EXPECT_THAT(bad.status().message(), HasSubstr("servers"));
}

TEST(ConfigsTest, ServerConfigErrorsNameTheField) {
  auto c = ParseServerConfig("name: x\nkv_budget_mb: many\n", "s.yaml");
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("s.yaml:2: field \"kv_budget_mb\""),
            std::string::npos)
      << c.status();
  auto d = ParseServerConfig("name: device\n", "s.yaml");
  ASSERT_TRUE(d.ok());
  EXPECT_NE(d->Validate().message().find("reserved"), std::string::npos);
  auto q =
      ParseServerConfig("name: a\nweights: q4_0\ninsecure: true\n", "s.yaml");
  ASSERT_TRUE(q.ok());
  EXPECT_TRUE(q->Validate().ok()) << q->Validate();
  // No transport security configured: refused, saying what to add.
  auto plain = ParseServerConfig("name: a\n", "s.yaml");
  ASSERT_TRUE(plain.ok());
  EXPECT_THAT(std::string(plain->Validate().message()),
              HasSubstr("s.yaml: field \"tls\": missing"));
  auto named = ParseServerConfig("name: a/b\ninsecure: true\n", "s.yaml");
  EXPECT_THAT(std::string(named->Validate().message()),
              HasSubstr("field \"name\""));
  EXPECT_EQ(q->weights, "q4_0");
  auto bad = ParseServerConfig("name: a\nweights: q3_k\n", "s.yaml");
  ASSERT_TRUE(bad.ok());
  EXPECT_NE(bad->Validate().message().find("weights"), std::string::npos)
      << bad->Validate();
  EXPECT_NE(bad->Validate().message().find("q3_k"), std::string::npos);
}

}  // namespace
}  // namespace edgesplit
