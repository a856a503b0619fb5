// The YAML files shipped in configs/ parse and validate: a broken example
// is a broken product.
#include <filesystem>
#include <functional>

#include "base/file_util.h"
#include "controller/auto_plan.h"
#include "controller/cluster_file.h"
#include "controller/controller.h"
#include "controller/plan.h"
#include "edge_server/server_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model_init.h"
#include "testing/test_paths.h"
#include "yaml-cpp/yaml.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

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
  // Fetched adapters and model copies may not share a directory.
  auto shared = ParseServerConfig(
      "name: a\ninsecure: true\nadapter_dir: /x/a\nmodel_dir: /x/a/\n"
      "adapter_disk_mb: 64\n",
      "s.yaml");
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_EQ(shared->adapter_disk_bytes, int64_t{64} << 20);
  EXPECT_THAT(std::string(shared->Validate().message()),
              HasSubstr("s.yaml: field \"model_dir\""));
  shared->model_dir = "/x/models";
  EXPECT_TRUE(shared->Validate().ok()) << shared->Validate();
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

TEST(ConfigsTest, ServerAdmissionLimits) {
  auto c = ParseServerConfig(
      "name: a\ninsecure: true\nmax_sessions: 10\nmax_sessions_per_device: 2\n"
      "max_unsent_mb: 3\nmax_pending_input_mb: 5\n"
      "max_kept_training_tokens: 7000\nmax_concurrent_streams: 99\n"
      "grpc_memory_mb: 256\n",
      "s.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->admission.max_sessions, 10);
  EXPECT_EQ(c->admission.max_sessions_per_device, 2);
  EXPECT_EQ(c->admission.max_unsent_bytes, 3 << 20);
  EXPECT_EQ(c->admission.max_pending_input_bytes, 5 << 20);
  EXPECT_EQ(c->admission.max_kept_training_tokens, 7000);
  EXPECT_EQ(c->admission.max_concurrent_streams, 99);
  EXPECT_EQ(c->admission.grpc_memory_bytes, int64_t{256} << 20);
  auto d = ParseServerConfig("name: a\ninsecure: true\n", "s.yaml");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->admission.max_unsent_bytes, AdmissionLimits().max_unsent_bytes);
  for (const std::string bad :
       {"max_unsent_mb: 0", "max_pending_input_mb: -1",
        "max_concurrent_streams: 0", "grpc_memory_mb: 99999999999"}) {
    auto e = ParseServerConfig("name: a\n" + bad + "\n", "s.yaml");
    EXPECT_FALSE(e.ok()) << bad;
    const std::string field = bad.substr(0, bad.find(':'));
    EXPECT_THAT(std::string(e.status().message()),
                HasSubstr("field \"" + field + "\""))
        << e.status();
  }
}

// A server unit that makes the file system read-only must still give the
// server somewhere to write its training checkpoints (the default
// checkpoint_dir is relative to the working directory).
TEST(ConfigsTest, TheServerUnitCanWriteCheckpoints) {
  const std::string unit = *ReadFile(
      testing::SourceDir() + "/deploy/systemd/edgesplit-server@.service");
  ASSERT_THAT(unit, HasSubstr("ProtectSystem=strict"));
  EXPECT_THAT(unit, HasSubstr("\nStateDirectory=edgesplit/server-%i\n"));
  EXPECT_THAT(unit,
              HasSubstr("\nWorkingDirectory=/var/lib/edgesplit/server-%i\n"));
  EXPECT_THAT(unit, Not(HasSubstr("DynamicUser=yes")));
  const std::string controller_unit = *ReadFile(
      testing::SourceDir() + "/deploy/systemd/edgesplit-controller.service");
  EXPECT_THAT(controller_unit,
              HasSubstr("\nStateDirectory=edgesplit/controller\n"));
  auto defaults = ParseServerConfig("name: a\ninsecure: true\n", "s.yaml");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->checkpoint_dir, "checkpoints");  // Relative.
}

// Every shipped config with each of its nodes replaced by a value of the
// wrong shape or range (a scalar where a map or list belongs, a map where
// a number belongs, huge and negative numbers, null): each parser must
// return an error or a config that validates or not, never throw or crash
// (the ASan + UBSan build runs this too, catching bad shifts).
struct Step {
  bool is_key;
  std::string key;
  size_t index;
};
using Path = std::vector<Step>;

void CollectPaths(const YAML::Node& node, Path* at, std::vector<Path>* out) {
  if (node.IsMap()) {
    for (const auto& kv : node) {
      at->push_back({true, kv.first.as<std::string>(), 0});
      out->push_back(*at);
      CollectPaths(kv.second, at, out);
      at->pop_back();
    }
  } else if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) {
      at->push_back({false, "", i});
      out->push_back(*at);
      CollectPaths(node[i], at, out);
      at->pop_back();
    }
  }
}

std::string Mutated(const YAML::Node& root, const Path& path,
                    const YAML::Node& value) {
  YAML::Node copy = YAML::Clone(root);
  std::vector<YAML::Node> chain = {copy};
  for (size_t k = 0; k + 1 < path.size(); ++k) {
    const Step& s = path[k];
    chain.push_back(s.is_key ? chain.back()[s.key] : chain.back()[s.index]);
  }
  const Step& last = path.back();
  if (last.is_key) {
    chain.back()[last.key] = value;
  } else {
    chain.back()[last.index] = value;
  }
  YAML::Emitter e;
  e << copy;
  return e.c_str();
}

TEST(ConfigsTest, MisshapenConfigsAreRefusedNeverThrown) {
  using Parser = std::function<absl::Status(const std::string&)>;
  auto validated = [](auto parsed) -> absl::Status {
    if (!parsed.ok()) return parsed.status();
    return absl::OkStatus();
  };
  const std::vector<std::pair<std::string, Parser>> files = {
      {"/cluster/controller.yaml",
       [&](const std::string& t) {
         auto c = ParseControllerConfig(t, Configs() + "/cluster/c.yaml");
         return c.ok() ? c->Validate() : c.status();
       }},
      {"/cluster/server-a.yaml",
       [&](const std::string& t) {
         auto c = ParseServerConfig(t, Configs() + "/cluster/s.yaml");
         return c.ok() ? c->Validate() : c.status();
       }},
      {"/cluster/what-if.yaml",
       [&](const std::string& t) {
         return validated(ParseClusterFile(t, "w.yaml"));
       }},
      {"/plans/stories260K.yaml",
       [&](const std::string& t) {
         return validated(ParsePlanYaml(t, "p.yaml"));
       }},
      {"/plans/examples/stories260K-mixed-precision.yaml",
       [&](const std::string& t) {
         return validated(ParsePlanYaml(t, "p.yaml"));
       }},
      {"/plans/examples/stories260K-zero-device.yaml",
       [&](const std::string& t) {
         return validated(ParsePlanYaml(t, "p.yaml"));
       }},
      {"/plans/examples/stories260K-private.yaml",
       [&](const std::string& t) {
         return validated(ParsePlanYaml(t, "p.yaml"));
       }},
  };
  const std::vector<std::string> values = {"5",
                                           "-1",
                                           "99999999999999999999",
                                           "9223372036854775807",
                                           "-9223372036854775808",
                                           "64",
                                           "1e308",
                                           "{a: 1}",
                                           "[1, 2]",
                                           "~",
                                           "''"};
  int mutations = 0, refused = 0;
  for (const auto& [file, parse] : files) {
    const std::string text = *ReadFile(Configs() + file);
    const YAML::Node root = YAML::Load(text);
    std::vector<Path> paths;
    Path at;
    CollectPaths(root, &at, &paths);
    ASSERT_GT(paths.size(), 3u) << file;
    for (const Path& path : paths) {
      for (const std::string& v : values) {
        const std::string doc = Mutated(root, path, YAML::Load(v));
        absl::Status s;
        try {
          s = parse(doc);
        } catch (const std::exception& e) {
          ADD_FAILURE() << file << " mutated to\n"
                        << doc << "\nthrew " << e.what();
          continue;
        }
        ++mutations;
        if (!s.ok()) {
          ++refused;
          // Refusals say where.
          EXPECT_THAT(std::string(s.message()), HasSubstr(".yaml")) << doc;
        }
      }
    }
  }
  std::printf("%d mutated configs, %d refused\n", mutations, refused);
  EXPECT_GT(refused, mutations / 4);
}

}  // namespace
}  // namespace edgesplit
