#include "runtime/lora.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "base/json_util.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/safetensors.h"
#include "runtime/torch_util.h"
#include "runtime/weight_layout.h"

namespace edgesplit {
namespace {

using json = nlohmann::json;
constexpr char kPeftPrefix[] = "base_model.model.";

std::string FactorName(const std::string& module, char which) {
  return absl::StrCat(kPeftPrefix, module, ".lora_", std::string(1, which),
                      ".weight");
}

absl::StatusOr<LoraConfig> ParseLoraConfig(const std::string& path) {
  ES_ASSIGN_OR_RETURN(json j, ReadUntrustedJson(path));
  auto err = [&](absl::string_view field, absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": field \"", field, "\": ", what));
  };
  if (j.contains("peft_type") && j["peft_type"] != "LORA") {
    return err("peft_type", absl::StrCat("expected \"LORA\", got ",
                                         DescribeJson(j["peft_type"])));
  }
  LoraConfig c;
  if (!j.contains("r") || !j["r"].is_number_integer()) {
    return err("r", "missing or not an integer");
  }
  c.r = j["r"].get<int64_t>();
  if (j.contains("lora_alpha")) {
    if (!j["lora_alpha"].is_number()) return err("lora_alpha", "not a number");
    c.alpha = j["lora_alpha"].get<double>();
  } else {
    c.alpha = 8;  // PEFT's default.
  }
  // Optional fields: absent or null take PEFT's defaults; a value of the
  // wrong type is an error (a mistyped use_rslora would change scaling).
  auto present = [&](const char* field) {
    auto it = j.find(field);
    return it != j.end() && !it->is_null();
  };
  if (present("lora_dropout")) {
    if (!j["lora_dropout"].is_number())
      return err("lora_dropout", "not a number");
    c.dropout = j["lora_dropout"].get<double>();
  }
  if (present("fan_in_fan_out")) {
    if (!j["fan_in_fan_out"].is_boolean()) {
      return err("fan_in_fan_out", "not a boolean");
    }
    c.fan_in_fan_out = j["fan_in_fan_out"].get<bool>();
  }
  if (present("use_rslora")) {
    if (!j["use_rslora"].is_boolean())
      return err("use_rslora", "not a boolean");
    c.use_rslora = j["use_rslora"].get<bool>();
  }
  // Per-module ranks and alphas would change shapes and scaling per module.
  for (const char* field : {"rank_pattern", "alpha_pattern"}) {
    if (present(field) && !(j[field].is_object() && j[field].empty())) {
      return err(field, "per-module patterns are not supported yet");
    }
  }
  if (present("use_dora") && j["use_dora"] == true) {
    return err("use_dora", "DoRA adapters are not supported");
  }
  static const json kNull;
  auto tm_it = j.find("target_modules");
  const json& tm = tm_it == j.end() ? kNull : *tm_it;
  if (tm.is_array()) {
    for (const json& t : tm) {
      if (!t.is_string())
        return err("target_modules", "entries must be strings");
      c.target_modules.push_back(t.get<std::string>());
    }
  } else if (tm.is_string()) {
    // A single string is a regex in PEFT; "all-linear" means every linear
    // module but the head, which is what an empty list means here.
    if (tm.get<std::string>() != "all-linear") {
      return err("target_modules",
                 "regular-expression targets are not supported; list the "
                 "module names");
    }
  } else if (!tm.is_null()) {
    return err("target_modules", "expected a list of module names");
  }
  auto lt_it = j.find("layers_to_transform");
  const json& lt = lt_it == j.end() ? kNull : *lt_it;
  if (lt.is_number_integer()) {
    c.layers_to_transform.push_back(lt.get<int64_t>());
  } else if (lt.is_array()) {
    for (const json& l : lt) {
      if (!l.is_number_integer()) {
        return err("layers_to_transform", "entries must be integers");
      }
      c.layers_to_transform.push_back(l.get<int64_t>());
    }
  }
  if (j.contains("base_model_name_or_path") &&
      j["base_model_name_or_path"].is_string()) {
    c.base_model_name_or_path = j["base_model_name_or_path"].get<std::string>();
  }
  absl::Status valid = c.Validate();
  if (!valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", valid.message()));
  }
  return c;
}

int64_t BlockOfModule(const std::string& module) {
  // "model.layers.<i>." or "transformer.h.<i>."
  for (absl::string_view p : {"model.layers.", "transformer.h."}) {
    if (absl::StartsWith(module, p)) {
      return std::atoll(module.c_str() + p.size());
    }
  }
  return -1;
}

}  // namespace

double LoraConfig::scaling() const {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / r;
}

absl::Status LoraConfig::Validate() const {
  if (r <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"r\": must be positive, got ", r));
  }
  if (!(dropout >= 0 && dropout < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "field \"lora_dropout\": must be in [0, 1), got ", dropout));
  }
  return absl::OkStatus();
}

bool LoraTargets(const LoraConfig& config, const std::string& module,
                 int64_t block) {
  if (!config.layers_to_transform.empty() &&
      std::find(config.layers_to_transform.begin(),
                config.layers_to_transform.end(),
                block) == config.layers_to_transform.end()) {
    return false;
  }
  if (config.target_modules.empty()) return true;
  for (const std::string& t : config.target_modules) {
    if (module == t || absl::EndsWith(module, absl::StrCat(".", t))) {
      return true;
    }
  }
  return false;
}

const LoraFactors* LoraAdapter::Find(const std::string& module) const {
  auto it = modules_.find(module);
  return it == modules_.end() ? nullptr : &it->second;
}

absl::StatusOr<std::unique_ptr<LoraAdapter>> LoraAdapter::LoadPeft(
    const std::string& dir, const ModelConfig& model, std::string name) {
  ES_ASSIGN_OR_RETURN(LoraConfig config,
                      ParseLoraConfig(dir + "/adapter_config.json"));
  const std::string path = dir + "/adapter_model.safetensors";
  ES_ASSIGN_OR_RETURN(std::shared_ptr<const SafetensorsFile> file,
                      SafetensorsFile::Open(path));
  std::unique_ptr<LoraAdapter> adapter(
      new LoraAdapter(std::move(name), std::move(config)));
  // Walk the model's modules and pick up every factor pair present, so
  // shapes are checked against what the model implies.
  size_t used = 0;
  for (int64_t b = 0; b < model.num_layers; ++b) {
    for (const LinearModule& m : BlockLinearModules(model, b)) {
      const TensorInfo* a = file->Find(FactorName(m.module, 'A'));
      const TensorInfo* bb = file->Find(FactorName(m.module, 'B'));
      if (a == nullptr && bb == nullptr) continue;
      if (a == nullptr || bb == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": module \"", m.module, "\" has only one of lora_A/lora_B"));
      }
      const int64_t r = adapter->config_.r;
      const std::vector<int64_t> want_a = {r, m.in_features};
      const std::vector<int64_t> want_b = {m.out_features, r};
      if (a->shape != want_a || bb->shape != want_b) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": module \"", m.module,
            "\": factor shapes do not match r=", r, " and the model (A [", r,
            ", ", m.in_features, "], B [", m.out_features, ", ", r, "])"));
      }
      for (const TensorInfo* t : {a, bb}) {
        if (t->dtype != DType::kF32 && t->dtype != DType::kF16 &&
            t->dtype != DType::kBF16) {
          return absl::InvalidArgumentError(absl::StrCat(
              path, ": tensor \"", t->name, "\" has dtype ",
              DTypeName(t->dtype), "; LoRA factors must be F32, F16 or BF16"));
        }
      }
      LoraFactors f;
      ES_ASSIGN_OR_RETURN(f.a, TensorFromSafetensors(file, *a, at::kFloat));
      ES_ASSIGN_OR_RETURN(f.b, TensorFromSafetensors(file, *bb, at::kFloat));
      // Own the factors: adapters are small and may be trained in place.
      f.a = f.a.clone();
      f.b = f.b.clone();
      adapter->modules_[m.module] = std::move(f);
      used += 2;
    }
  }
  if (used != file->tensors().size()) {
    for (const TensorInfo& t : file->tensors()) {
      bool known = false;
      for (const auto& [module, f] : adapter->modules_) {
        if (t.name == FactorName(module, 'A') ||
            t.name == FactorName(module, 'B')) {
          known = true;
          break;
        }
      }
      if (!known) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": tensor \"", t.name,
            "\" is not a LoRA factor of a linear module of this model"));
      }
    }
  }
  return adapter;
}

absl::StatusOr<std::unique_ptr<LoraAdapter>> LoraAdapter::Create(
    const ModelConfig& model, const LoraConfig& config, BlockRange blocks,
    uint64_t seed, std::string name, bool zero_b) {
  ES_RETURN_IF_ERROR(config.Validate());
  std::unique_ptr<LoraAdapter> adapter(
      new LoraAdapter(std::move(name), config));
  adapter->config_.fan_in_fan_out = model.arch == Arch::kGpt2;
  return TorchCall(
      "LoraAdapter::Create",
      [&]() -> absl::StatusOr<std::unique_ptr<LoraAdapter>> {
        for (int64_t b = blocks.first; b < blocks.last; ++b) {
          // One stream per block: a stage creating the factors of its own
          // blocks draws what a whole-model adapter holds there (split
          // training starts where single-process training does).
          at::Generator gen = at::detail::createCPUGenerator(
              seed ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(b + 1)));
          for (const LinearModule& m : BlockLinearModules(model, b)) {
            if (!LoraTargets(config, m.module, b)) continue;
            // nn.Linear's default (Kaiming uniform, a = sqrt(5)):
            // bound = 1 / sqrt(fan_in).
            const double bound_a = 1.0 / std::sqrt(double(m.in_features));
            LoraFactors f;
            f.a = at::empty({config.r, m.in_features})
                      .uniform_(-bound_a, bound_a, gen);
            if (zero_b) {
              f.b = at::zeros({m.out_features, config.r});
            } else {
              const double bound_b = 1.0 / std::sqrt(double(config.r));
              f.b = at::empty({m.out_features, config.r})
                        .uniform_(-bound_b, bound_b, gen);
            }
            adapter->modules_[m.module] = std::move(f);
          }
        }
        return std::move(adapter);
      });
}

absl::Status LoraAdapter::SavePeft(const std::string& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat(dir, ": cannot create: ", ec.message()));
  }
  json j;
  j["peft_type"] = "LORA";
  j["task_type"] = "CAUSAL_LM";
  j["r"] = config_.r;
  j["lora_alpha"] = config_.alpha;
  j["lora_dropout"] = config_.dropout;
  j["fan_in_fan_out"] = config_.fan_in_fan_out;
  j["use_rslora"] = config_.use_rslora;
  j["bias"] = "none";
  j["inference_mode"] = true;
  j["base_model_name_or_path"] = config_.base_model_name_or_path;
  std::vector<std::string> targets = config_.target_modules;
  if (targets.empty()) {
    // Spell out every module actually present, as PEFT would save them.
    for (const auto& [module, f] : modules_) {
      std::string leaf = module.substr(module.rfind('.') + 1);
      if (std::find(targets.begin(), targets.end(), leaf) == targets.end()) {
        targets.push_back(leaf);
      }
    }
  }
  j["target_modules"] = targets;
  if (!config_.layers_to_transform.empty()) {
    j["layers_to_transform"] = config_.layers_to_transform;
  } else {
    j["layers_to_transform"] = nullptr;
  }
  {
    ES_RETURN_IF_ERROR(
        WriteFileAtomically(dir + "/adapter_config.json", j.dump(2) + "\n"));
  }
  SafetensorsWriter writer;
  std::vector<at::Tensor> keep;  // Bytes must live until Write().
  ES_RETURN_IF_ERROR(TorchCall("LoraAdapter::SavePeft", [&]() -> absl::Status {
    for (const auto& [module, f] : modules_) {
      for (char which : {'A', 'B'}) {
        at::Tensor t = ContiguousCpu(which == 'A' ? f.a : f.b).to(at::kFloat);
        keep.push_back(t);
        ES_RETURN_IF_ERROR(writer.Add(
            FactorName(module, which), DType::kF32, t.sizes().vec(),
            absl::Span<const uint8_t>(static_cast<const uint8_t*>(t.data_ptr()),
                                      t.nbytes())));
      }
    }
    return absl::OkStatus();
  }));
  writer.SetMetadata("format", "pt");
  return writer.Write(dir + "/adapter_model.safetensors");
}

std::unique_ptr<LoraAdapter> LoraAdapter::Slice(const ModelConfig& model,
                                                BlockRange blocks) const {
  (void)model;
  std::unique_ptr<LoraAdapter> out(new LoraAdapter(name_, config_));
  for (const auto& [module, f] : modules_) {
    if (blocks.Contains(BlockOfModule(module))) out->modules_[module] = f;
  }
  return out;
}

}  // namespace edgesplit
