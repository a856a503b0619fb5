#include "controller/plan.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/quant_blocks.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;

ModelConfig SixBlocks() {
  ModelConfig c;
  c.arch = Arch::kLlama;
  c.hidden_size = 64;
  c.num_layers = 6;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.intermediate_size = 128;
  c.vocab_size = 100;
  c.max_positions = 64;
  return c;
}

std::map<std::string, NodeConfig> Nodes() {
  return {{"a", {"a", 0}},
          {"b", {"b", 0}},
          {"small", {"small", 1000}},
          {"mid", {"mid", 200000}}};
}

absl::Status Check(const std::string& stages, bool u_shaped = false) {
  std::string yaml = "model:\n  id: m\n  path: /models/m\n";
  if (u_shaped) yaml += "u_shaped: true\n";
  yaml += "stages:\n" + stages;
  auto plan = ParsePlanYaml(yaml, "plans/p.yaml");
  if (!plan.ok()) return plan.status();
  return ValidatePlan(*plan, SixBlocks(), Nodes());
}

TEST(PlanTest, ValidPlans) {
  EXPECT_TRUE(Check("  - {node: device, blocks: [0, 2]}\n"
                    "  - {node: a, blocks: [2, 4]}\n"
                    "  - {node: b, blocks: [4, 6]}\n")
                  .ok());
  auto plan = ParsePlanYaml(
      "model: {id: m, path: rel/m}\nstages:\n  - {node: device, blocks: [0, "
      "1]}\n",
      "/etc/edgesplit/plans/p.yaml");
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->model_path, "/etc/edgesplit/plans/rel/m");
  EXPECT_EQ(plan->stages[0].line, 3);
}

TEST(PlanTest, ModelCopies) {
  const std::string stages = "\nstages:\n  - {node: device, blocks: [0, 6]}\n";
  auto plan =
      ParsePlanYaml("model: {id: m, path: /m, copy: q8_0}" + stages, "p.yaml");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->model_copy, "q8_0");
  plan = ParsePlanYaml("model: {id: m, path: /m}" + stages, "p.yaml");
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->model_copy, "");
  // The name becomes a directory on every server.
  for (const char* bad : {"../up", "\"\"", ".hidden"}) {
    plan = ParsePlanYaml(
        absl::StrCat("model: {id: m, path: /m, copy: ", bad, "}", stages),
        "p.yaml");
    ASSERT_FALSE(plan.ok()) << bad;
    EXPECT_THAT(plan.status().message(), HasSubstr("p.yaml"));
    EXPECT_THAT(plan.status().message(), HasSubstr("model.copy"));
  }
}

TEST(PlanTest, GapOverlapAndCoverage) {
  auto s = Check(
      "  - {node: device, blocks: [0, 2]}\n"
      "  - {node: a, blocks: [3, 6]}\n");
  EXPECT_THAT(s.message(), HasSubstr("plans/p.yaml:6: field \"stages[1]\""));
  EXPECT_THAT(s.message(), HasSubstr("gap: blocks [3, 6)"));
  s = Check(
      "  - {node: device, blocks: [0, 2]}\n"
      "  - {node: a, blocks: [1, 6]}\n");
  EXPECT_THAT(s.message(), HasSubstr("overlap"));
  s = Check(
      "  - {node: device, blocks: [0, 2]}\n"
      "  - {node: a, blocks: [2, 5]}\n");
  EXPECT_THAT(s.message(), HasSubstr("stages end at block 5 but the model "
                                     "has 6"));
  s = Check(
      "  - {node: device, blocks: [0, 2]}\n"
      "  - {node: a, blocks: [2, 8]}\n");
  EXPECT_THAT(s.message(), HasSubstr("run past the model's 6 blocks"));
}

TEST(PlanTest, NodesAndMemory) {
  auto s = Check(
      "  - {node: device, blocks: [0, 2]}\n"
      "  - {node: ghost, blocks: [2, 6]}\n");
  EXPECT_THAT(s.message(), HasSubstr("unknown node \"ghost\""));
  s = Check(
      "  - {node: device, blocks: [0, 2]}\n"
      "  - {node: small, blocks: [2, 6]}\n");
  EXPECT_THAT(s.message(),
              HasSubstr("node \"small\" has 1000 bytes of memory"));
  s = Check("  - {node: a, blocks: [0, 6]}\n");
  EXPECT_THAT(s.message(),
              HasSubstr("first stage must run on node \"device\""));
  s = Check(
      "  - {node: device, blocks: [0, 2]}\n"
      "  - {node: a, blocks: [2, 4]}\n"
      "  - {node: a, blocks: [4, 6]}\n");
  EXPECT_THAT(s.message(), HasSubstr("appears twice"));
}

// Zero device blocks: valid; the first server then embeds, and its memory
// check counts the embedding.
TEST(PlanTest, ZeroDeviceBlocksPutTheEmbeddingOnTheFirstServer) {
  EXPECT_TRUE(Check("  - {node: device, blocks: [0, 0]}\n"
                    "  - {node: a, blocks: [0, 6]}\n")
                  .ok());
  const ModelConfig c = SixBlocks();
  const int64_t need =
      (6 * c.ParamsPerBlock() + c.HeadParams() + c.EmbeddingParams()) * 4;
  EXPECT_THAT(Check("  - {node: device, blocks: [0, 0]}\n"
                    "  - {node: mid, blocks: [0, 6]}\n")
                  .message(),
              HasSubstr(absl::StrCat("need ", need)));
}

// Standby nodes: parsed per server stage, checked like the stage's node
// (known, memory), never the device, the stage's node, a node of another
// stage, or in an automatic plan.
TEST(PlanTest, StandbyNodes) {
  auto plan = ParsePlanYaml(
      "model: {id: m, path: /m}\nstages:\n"
      "  - {node: device, blocks: [0, 2]}\n"
      "  - {node: a, blocks: [2, 6], standby: [b]}\n",
      "p.yaml");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->stages[1].standby, (std::vector<std::string>{"b"}));
  EXPECT_TRUE(ValidatePlan(*plan, SixBlocks(), Nodes()).ok());
  const std::string head =
      "  - {node: device, blocks: [0, 2]}\n  - {node: a, blocks: [2, 4]}\n";
  for (const auto& [stages, message] :
       std::vector<std::pair<std::string, std::string>>{
           {head + "  - {node: b, blocks: [4, 6], standby: [ghost]}\n",
            "unknown standby node \"ghost\""},
           {head + "  - {node: b, blocks: [4, 6], standby: [small]}\n",
            "standby \"small\" has 1000 bytes"},
           {head + "  - {node: b, blocks: [4, 6], standby: [a]}\n",
            "already runs another stage"},
           {head + "  - {node: b, blocks: [4, 6], standby: [b]}\n",
            "is the stage's node"},
           {"  - {node: device, blocks: [0, 2], standby: [a]}\n"
            "  - {node: b, blocks: [2, 6]}\n",
            "the device's stage has no standby"},
           {head + "  - {node: b, blocks: [4, 6], standby: mid}\n",
            "stages[2].standby"}}) {
    EXPECT_THAT(std::string(Check(stages).message()), HasSubstr(message))
        << stages;
  }
}

// A stage's weight type travels with it, and the memory check counts the
// stage at that type: blocks [2, 6) and the head are ~154k weights, 618 kB
// in f32 but 87 kB in q4_0, against a node with 200 kB.
TEST(PlanTest, PerStageWeightTypes) {
  const std::string stages =
      "  - {node: device, blocks: [0, 2], weights: q8_0}\n"
      "  - {node: mid, blocks: [2, 6]";
  auto plan = ParsePlanYaml(
      "model: {id: m, path: x}\nstages:\n" + stages + ", weights: q4_0}\n",
      "p.yaml");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->stages[0].weights, "q8_0");
  EXPECT_EQ(plan->stages[1].weights, "q4_0");
  EXPECT_TRUE(Check(stages + ", weights: q4_0}\n").ok());
  EXPECT_THAT(Check(stages + "}\n").message(),
              HasSubstr("node \"mid\" has 200000 bytes of memory"));
  EXPECT_THAT(Check(stages + ", weights: f16}\n").message(),
              HasSubstr("need 308864"));
  auto bad = ParsePlanYaml(
      "model: {id: m, path: x}\nstages:\n" + stages + ", weights: q3_k}\n",
      "p.yaml");
  EXPECT_THAT(bad.status().message(),
              HasSubstr("p.yaml:4: field \"stages[1].weights\""));
  EXPECT_THAT(bad.status().message(), HasSubstr("\"q3_k\" is not one of"));
}

// The controller's bytes per weight equal the kernels' block sizes.
TEST(PlanTest, WeightBytesMatchTheBlockFormats) {
  for (const char* name : {"f32", "f16", "q8_0", "q6_k", "q4_k", "q4_0"}) {
    auto type = kernels::ParseWeightType(name);
    ASSERT_TRUE(type.has_value()) << name;
    EXPECT_EQ(PlanWeightBytes(name) * 1024,
              static_cast<double>(kernels::RowBytes(*type, 1024)))
        << name;
  }
  EXPECT_EQ(PlanWeightBytes(""), 4);
  EXPECT_EQ(PlanWeightBytes("q5_k"), 0);
}

TEST(PlanTest, PrivacyFloor) {
  const std::string base =
      "model: {id: m, path: x}\nstages: [{node: device, blocks: [0, 1]}]\n";
  auto plan = ParsePlanYaml(base, "p.yaml");
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->privacy.max_epsilon, 0);  // None unless asked.
  plan = ParsePlanYaml(base + "privacy: {max_epsilon: 8}\n", "p.yaml");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->privacy.max_epsilon, 8);
  EXPECT_EQ(plan->privacy.max_delta, 1e-5);
  plan = ParsePlanYaml(base + "privacy: {max_epsilon: 2.5, max_delta: 1e-6}\n",
                       "p.yaml");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->privacy.max_epsilon, 2.5);
  EXPECT_EQ(plan->privacy.max_delta, 1e-6);
  for (const auto& [yaml, error] :
       std::vector<std::pair<std::string, std::string>>{
           {"privacy: 8\n", "field \"privacy\": expected a mapping"},
           {"privacy: {max_delta: 1e-5}\n",
            "field \"privacy.max_epsilon\": missing"},
           {"privacy: {max_epsilon: -1}\n",
            "field \"privacy.max_epsilon\": expected a number > 0"},
           {"privacy: {max_epsilon: nan}\n", "privacy.max_epsilon"},
           {"privacy: {max_epsilon: 8, max_delta: 1}\n",
            "field \"privacy.max_delta\": must be < 1"},
           {"privacy: {max_epsilon: 8, epsilon: 1}\n",
            "field \"privacy.epsilon\": unknown field"}}) {
    auto bad = ParsePlanYaml(base + yaml, "p.yaml");
    EXPECT_THAT(bad.status().message(), HasSubstr(error)) << yaml;
    EXPECT_THAT(bad.status().message(), HasSubstr("p.yaml:")) << yaml;
  }
}

TEST(PlanTest, MalformedYaml) {
  EXPECT_THAT(ParsePlanYaml("model: [", "p.yaml").status().message(),
              HasSubstr("p.yaml:"));
  EXPECT_THAT(ParsePlanYaml("stages: []", "p.yaml").status().message(),
              HasSubstr("field \"model\""));
  auto s = ParsePlanYaml(
      "model: {id: m, path: x}\nstages:\n  - {node: a, blocks: [0, x]}\n",
      "p.yaml");
  EXPECT_THAT(s.status().message(), HasSubstr("p.yaml:3: field "
                                              "\"stages[0].blocks\""));
  s = ParsePlanYaml("model: {path: x}\nstages: [{node: a, blocks: [0, 1]}]\n",
                    "p.yaml");
  EXPECT_THAT(s.status().message(), HasSubstr("field \"id\": missing"));
}

}  // namespace
}  // namespace edgesplit
