#include "controller/plan.h"

#include <cmath>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "base/yaml_util.h"
#include "runtime/adapter_name.h"

namespace edgesplit {

namespace {

// A positive finite number at parent[field], if present.
absl::Status PositiveNumber(const YamlReader& r, const YAML::Node& parent,
                            const char* field, double* value) {
  const YAML::Node n = parent[field];
  if (!n.IsDefined()) return absl::OkStatus();
  double v = 0;
  if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) ||
      !std::isfinite(v) || !(v > 0)) {
    return r.Error(n, std::string("privacy.") + field, "expected a number > 0");
  }
  *value = v;
  return absl::OkStatus();
}

absl::Status ParsePrivacy(const YamlReader& r, const YAML::Node& root,
                          PlanPrivacy* privacy) {
  const YAML::Node p = root["privacy"];
  if (!p.IsDefined()) return absl::OkStatus();
  if (!p.IsMap()) {
    return r.Error(p, "privacy", "expected a mapping (max_epsilon, max_delta)");
  }
  for (const auto& kv : p) {
    const std::string key = kv.first.as<std::string>("");
    if (key != "max_epsilon" && key != "max_delta") {
      return r.Error(kv.first, "privacy." + key,
                     "unknown field (max_epsilon, max_delta)");
    }
  }
  if (!p["max_epsilon"].IsDefined()) {
    return r.Error(p, "privacy.max_epsilon", "missing");
  }
  ES_RETURN_IF_ERROR(
      PositiveNumber(r, p, "max_epsilon", &privacy->max_epsilon));
  ES_RETURN_IF_ERROR(PositiveNumber(r, p, "max_delta", &privacy->max_delta));
  if (privacy->max_delta >= 1) {
    return r.Error(p["max_delta"], "privacy.max_delta", "must be < 1");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PlanConfig> ParsePlanYaml(const std::string& text,
                                         const std::string& source) {
  YamlReader r(source);
  ES_ASSIGN_OR_RETURN(YAML::Node root, r.Parse(text));
  PlanConfig plan;
  plan.source = source;
  const YAML::Node model = root["model"];
  if (!model.IsDefined() || !model.IsMap()) {
    return r.Error(root, "model", "missing (a mapping with id and path)");
  }
  ES_ASSIGN_OR_RETURN(plan.model_id, r.String(model, "id"));
  ES_ASSIGN_OR_RETURN(plan.model_path, r.String(model, "path"));
  if (!plan.model_path.empty() && plan.model_path[0] != '/') {
    // Relative paths are relative to the plan file.
    plan.model_path =
        (std::filesystem::path(source).parent_path() / plan.model_path)
            .lexically_normal()
            .string();
  }
  if (model["copy"]) {
    ES_ASSIGN_OR_RETURN(plan.model_copy, r.String(model, "copy"));
    // The name becomes a directory on every server.
    if (absl::Status s = ValidateAdapterName(plan.model_copy); !s.ok()) {
      return r.Error(model["copy"], "model.copy", std::string(s.message()));
    }
  }
  ES_ASSIGN_OR_RETURN(plan.u_shaped, r.Bool(root, "u_shaped", false));
  ES_RETURN_IF_ERROR(ParsePrivacy(r, root, &plan.privacy));
  const YAML::Node planner = root["planner"];
  if (planner.IsDefined()) {
    if (!planner.IsMap())
      return r.Error(planner, "planner", "expected a mapping");
    plan.automatic = true;
    PlannerSettings& ps = plan.planner;
    ES_ASSIGN_OR_RETURN(std::string objective,
                        r.String(planner, "objective", false));
    if (!objective.empty()) ps.objective = objective;
    if (ps.objective != "latency" && ps.objective != "throughput" &&
        ps.objective != "energy") {
      return r.Error(
          planner["objective"], "planner.objective",
          "\"" + ps.objective + "\" is not latency, throughput or energy");
    }
    struct IntField {
      const char* name;
      int64_t* value;
      int64_t min;
    };
    for (const IntField& f :
         {IntField{"prompt_tokens", &ps.prompt_tokens, 1},
          IntField{"output_tokens", &ps.output_tokens, 1},
          IntField{"batch", &ps.batch, 1},
          IntField{"micro_batches", &ps.micro_batches, 1},
          IntField{"min_device_blocks", &ps.min_device_blocks, 0},
          IntField{"max_device_blocks", &ps.max_device_blocks, -1}}) {
      ES_ASSIGN_OR_RETURN(*f.value, r.Int(planner, f.name, *f.value));
      if (*f.value < f.min || *f.value > (int64_t{1} << 20)) {
        return r.Error(planner[f.name], std::string("planner.") + f.name,
                       absl::StrCat(*f.value, " is out of range"));
      }
    }
    if (ps.micro_batches > ps.batch) {
      return r.Error(planner["micro_batches"], "planner.micro_batches",
                     "must not exceed planner.batch");
    }
    const YAML::Node u = planner["u_shaped"];
    if (u.IsDefined()) {
      if (!u.IsScalar() || (u.Scalar() != "true" && u.Scalar() != "false" &&
                            u.Scalar() != "auto")) {
        return r.Error(u, "planner.u_shaped", "expected true, false or auto");
      }
      ps.u_shaped = u.Scalar();
    }
  }
  const YAML::Node stages = root["stages"];
  if (plan.automatic && !stages.IsDefined()) return plan;
  if (!stages.IsDefined() || !stages.IsSequence() ||
      (stages.size() == 0 && !plan.automatic)) {
    return r.Error(root, "stages", "missing (a list of node + blocks)");
  }
  for (size_t i = 0; i < stages.size(); ++i) {
    const YAML::Node s = stages[i];
    const std::string field = absl::StrCat("stages[", i, "]");
    if (!s.IsMap()) return r.Error(s, field, "expected node and blocks");
    PlanStageConfig stage;
    stage.line = s.Mark().line + 1;
    ES_ASSIGN_OR_RETURN(stage.node, r.String(s, "node"));
    const YAML::Node blocks = s["blocks"];
    if (!blocks.IsDefined() || !blocks.IsSequence() || blocks.size() != 2) {
      return r.Error(s, field + ".blocks", "expected [first, last]");
    }
    int64_t b[2];
    for (int k = 0; k < 2; ++k) {
      if (!blocks[k].IsScalar() ||
          !YAML::convert<int64_t>::decode(blocks[k], b[k])) {
        return r.Error(blocks, field + ".blocks", "expected two integers");
      }
    }
    stage.first_block = b[0];
    stage.last_block = b[1];
    ES_ASSIGN_OR_RETURN(stage.weights, r.String(s, "weights", false));
    if (!stage.weights.empty() && PlanWeightBytes(stage.weights) == 0) {
      return r.Error(s["weights"], field + ".weights",
                     absl::StrCat("\"", stage.weights,
                                  "\" is not one of f32, f16, q8_0, q6_k, "
                                  "q4_k, q4_0"));
    }
    if (const YAML::Node sb = s["standby"]; sb.IsDefined()) {
      if (!sb.IsSequence()) {
        return r.Error(sb, field + ".standby", "expected a list of nodes");
      }
      for (size_t k = 0; k < sb.size(); ++k) {
        if (!sb[k].IsScalar() || sb[k].Scalar().empty()) {
          return r.Error(sb, field + ".standby", "expected node names");
        }
        stage.standby.push_back(sb[k].Scalar());
      }
    }
    plan.stages.push_back(std::move(stage));
  }
  return plan;
}

double PlanWeightBytes(const std::string& weights) {
  if (weights.empty() || weights == "f32") return 4;
  if (weights == "f16") return 2;
  if (weights == "q8_0") return 34.0 / 32;
  if (weights == "q6_k") return 210.0 / 256;
  if (weights == "q4_k") return 144.0 / 256;
  if (weights == "q4_0") return 18.0 / 32;
  return 0;
}

absl::StatusOr<PlanConfig> LoadPlanFile(const std::string& path) {
  ES_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParsePlanYaml(text, path);
}

absl::Status ValidateAutomaticPlan(
    const PlanConfig& plan, const ModelConfig& model,
    const std::map<std::string, NodeConfig>& nodes) {
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const PlanStageConfig& s = plan.stages[i];
    auto err = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat(
          plan.source, ":", s.line, ": field \"stages[", i, "]\": ", what));
    };
    if (!s.standby.empty()) {
      return err(
          "standby nodes are for pinned plans (the planner routes around "
          "lost nodes itself)");
    }
    if (s.node != kDeviceNode && nodes.count(s.node) == 0) {
      return err(absl::StrCat("unknown node \"", s.node,
                              "\" (not in the cluster's nodes)"));
    }
    if (s.first_block < 0 || s.first_block > s.last_block ||
        s.last_block > model.num_layers) {
      return err(absl::StrCat("blocks [", s.first_block, ", ", s.last_block,
                              ") are not within the model's ", model.num_layers,
                              " blocks"));
    }
    if (s.node == kDeviceNode && s.first_block != 0) {
      return err("the device's pinned range must start at block 0");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidatePlan(const PlanConfig& plan, const ModelConfig& model,
                          const std::map<std::string, NodeConfig>& nodes) {
  auto err = [&](const PlanStageConfig& s, size_t i, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(
        plan.source, ":", s.line, ": field \"stages[", i, "]\": ", what));
  };
  if (plan.stages.front().node != kDeviceNode) {
    return err(plan.stages.front(), 0,
               absl::StrCat(
                   "the first stage must run on node \"", kDeviceNode,
                   "\" (it holds the text and embeds it, or sends token ids), "
                   "not \"",
                   plan.stages.front().node, "\""));
  }
  if (plan.stages.size() < 2) {
    return err(plan.stages.front(), 0, "a plan needs at least one server");
  }
  std::set<std::string> seen;
  int64_t expected = 0;
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const PlanStageConfig& s = plan.stages[i];
    const std::string range =
        absl::StrCat("blocks [", s.first_block, ", ", s.last_block, ")");
    if (s.first_block > s.last_block) {
      return err(s, i, absl::StrCat(range, " are reversed"));
    }
    if (s.first_block > expected) {
      return err(s, i,
                 absl::StrCat("gap: ", range, " start at block ", s.first_block,
                              " but the previous stage "
                              "ends at ",
                              expected));
    }
    if (s.first_block < expected) {
      return err(
          s, i,
          absl::StrCat("overlap: ", range, " start at block ", s.first_block,
                       " but the previous stage "
                       "ends at ",
                       expected));
    }
    if (s.last_block > model.num_layers) {
      return err(s, i,
                 absl::StrCat(range, " run past the model's ", model.num_layers,
                              " blocks"));
    }
    if (i > 0 && s.first_block == s.last_block &&
        !(i + 1 == plan.stages.size() && !plan.u_shaped)) {
      return err(s, i, absl::StrCat("server stage ", range, " is empty"));
    }
    if (!seen.insert(s.node).second) {
      return err(s, i, absl::StrCat("node \"", s.node, "\" appears twice"));
    }
    if (!s.standby.empty() && (i == 0 || plan.automatic)) {
      return err(s, i,
                 i == 0 ? "the device's stage has no standby"
                        : "standby nodes are for pinned plans (the planner "
                          "routes around lost nodes itself)");
    }
    std::set<std::string> standby;
    for (const std::string& n : s.standby) {
      if (n == s.node || n == kDeviceNode || !standby.insert(n).second) {
        return err(s, i,
                   absl::StrCat("standby \"", n,
                                "\" is the stage's node, the device or "
                                "listed twice"));
      }
    }
    if (i > 0) {
      auto it = nodes.find(s.node);
      if (it == nodes.end()) {
        return err(s, i,
                   absl::StrCat("unknown node \"", s.node,
                                "\" (not in the cluster's nodes)"));
      }
      int64_t params =
          s.last_block > s.first_block
              ? (s.last_block - s.first_block) * model.ParamsPerBlock()
              : 0;
      const bool last = i + 1 == plan.stages.size();
      // A server stage from block 0: the device holds zero blocks and
      // this server embeds. The embedding stays float32 whatever the
      // weight type.
      const bool embeds = s.first_block == 0;
      const bool f32 = PlanWeightBytes(s.weights) == 4;
      if (last && !plan.u_shaped) {
        params += model.HeadParams();
        // A tied head is the embedding matrix: shared with a float32
        // embedding here, else its own copy at the weight type.
        if (model.tie_word_embeddings && !(embeds && f32)) {
          params += model.vocab_size * model.hidden_size;
        }
      }
      const int64_t bytes = static_cast<int64_t>(static_cast<double>(params) *
                                                 PlanWeightBytes(s.weights)) +
                            (embeds ? model.EmbeddingParams() * 4 : 0);
      if (it->second.memory_bytes > 0 && bytes > it->second.memory_bytes) {
        return err(
            s, i,
            absl::StrCat("node \"", s.node, "\" has ", it->second.memory_bytes,
                         " bytes of memory but ", range, " need ", bytes));
      }
      for (const std::string& n : s.standby) {
        auto sb = nodes.find(n);
        if (sb == nodes.end()) {
          return err(s, i,
                     absl::StrCat("unknown standby node \"", n,
                                  "\" (not in the cluster's nodes)"));
        }
        if (sb->second.memory_bytes > 0 && bytes > sb->second.memory_bytes) {
          return err(
              s, i,
              absl::StrCat("standby \"", n, "\" has ", sb->second.memory_bytes,
                           " bytes of memory but ", range, " need ", bytes));
        }
      }
    }
    expected = s.last_block;
  }
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    for (const std::string& n : plan.stages[i].standby) {
      if (seen.count(n) > 0) {
        // A route would pass the same node twice.
        return err(plan.stages[i], i,
                   absl::StrCat("standby \"", n,
                                "\" already runs another stage of this plan"));
      }
    }
  }
  if (expected != model.num_layers) {
    const PlanStageConfig& s = plan.stages.back();
    return err(s, plan.stages.size() - 1,
               absl::StrCat("stages end at block ", expected,
                            " but the model has ", model.num_layers));
  }
  return absl::OkStatus();
}

}  // namespace edgesplit
