#include "runtime/model_config.h"

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "base/json_util.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace edgesplit {
namespace {

using json = nlohmann::json;

class FieldReader {
 public:
  FieldReader(const json& root, absl::string_view source)
      : root_(root), source_(source) {}

  absl::Status Error(absl::string_view field, absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": field \"", field, "\": ", what));
  }

  // Reads an integer field; `fallback` < 0 with a missing field is an error.
  absl::StatusOr<int64_t> Int(absl::string_view field,
                              int64_t fallback = -1) const {
    auto it = root_.find(field);
    if (it == root_.end() || it->is_null()) {
      if (fallback >= 0) return fallback;
      return Error(field, "missing");
    }
    if (!it->is_number_integer()) {
      return Error(
          field, absl::StrCat("expected an integer, got ", DescribeJson(*it)));
    }
    return it->get<int64_t>();
  }

  absl::StatusOr<double> Double(absl::string_view field,
                                double fallback) const {
    auto it = root_.find(field);
    if (it == root_.end() || it->is_null()) return fallback;
    if (!it->is_number()) {
      return Error(field,
                   absl::StrCat("expected a number, got ", DescribeJson(*it)));
    }
    return it->get<double>();
  }

  absl::StatusOr<bool> Bool(absl::string_view field, bool fallback) const {
    auto it = root_.find(field);
    if (it == root_.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) {
      return Error(field,
                   absl::StrCat("expected a boolean, got ", DescribeJson(*it)));
    }
    return it->get<bool>();
  }

  absl::StatusOr<std::string> String(absl::string_view field,
                                     std::string fallback) const {
    auto it = root_.find(field);
    if (it == root_.end() || it->is_null()) return fallback;
    if (!it->is_string()) {
      return Error(field,
                   absl::StrCat("expected a string, got ", DescribeJson(*it)));
    }
    return it->get<std::string>();
  }

  // Token ids may be an integer or a list (the first is used).
  absl::StatusOr<int64_t> TokenId(absl::string_view field) const {
    auto it = root_.find(field);
    if (it == root_.end() || it->is_null()) return -1;
    if (it->is_array() && !it->empty()) {
      if (!(*it)[0].is_number_integer()) return Error(field, "not an integer");
      return (*it)[0].get<int64_t>();
    }
    if (!it->is_number_integer()) return Error(field, "not an integer");
    return it->get<int64_t>();
  }

 private:
  const json& root_;
  absl::string_view source_;
};

absl::Status ParseGpt2(const FieldReader& r, ModelConfig& c) {
  ES_ASSIGN_OR_RETURN(c.hidden_size, r.Int("n_embd"));
  ES_ASSIGN_OR_RETURN(c.num_layers, r.Int("n_layer"));
  ES_ASSIGN_OR_RETURN(c.num_heads, r.Int("n_head"));
  c.num_kv_heads = c.num_heads;
  ES_ASSIGN_OR_RETURN(c.vocab_size, r.Int("vocab_size"));
  ES_ASSIGN_OR_RETURN(c.max_positions, r.Int("n_positions"));
  ES_ASSIGN_OR_RETURN(
      c.intermediate_size,
      r.Int("n_inner", 4 * std::max<int64_t>(c.hidden_size, 0)));
  ES_ASSIGN_OR_RETURN(c.norm_eps, r.Double("layer_norm_epsilon", 1e-5));
  ES_ASSIGN_OR_RETURN(c.hidden_act,
                      r.String("activation_function", "gelu_new"));
  if (c.hidden_act != "gelu_new") {
    return r.Error("activation_function",
                   absl::StrCat("unsupported value \"", c.hidden_act,
                                "\" (supported: gelu_new)"));
  }
  ES_ASSIGN_OR_RETURN(c.tie_word_embeddings,
                      r.Bool("tie_word_embeddings", true));
  c.attention_bias = true;
  c.attention_output_bias = true;
  ES_ASSIGN_OR_RETURN(bool scale, r.Bool("scale_attn_weights", true));
  if (!scale) return r.Error("scale_attn_weights", "false is not supported");
  ES_ASSIGN_OR_RETURN(bool by_layer,
                      r.Bool("scale_attn_by_inverse_layer_idx", false));
  if (by_layer) {
    return r.Error("scale_attn_by_inverse_layer_idx", "true is not supported");
  }
  return absl::OkStatus();
}

absl::Status ParseLlama(const FieldReader& r, ModelConfig& c) {
  ES_ASSIGN_OR_RETURN(c.hidden_size, r.Int("hidden_size"));
  ES_ASSIGN_OR_RETURN(c.num_layers, r.Int("num_hidden_layers"));
  ES_ASSIGN_OR_RETURN(c.num_heads, r.Int("num_attention_heads"));
  ES_ASSIGN_OR_RETURN(c.num_kv_heads, r.Int("num_key_value_heads",
                                            std::max<int64_t>(c.num_heads, 0)));
  ES_ASSIGN_OR_RETURN(c.intermediate_size, r.Int("intermediate_size"));
  ES_ASSIGN_OR_RETURN(c.vocab_size, r.Int("vocab_size"));
  ES_ASSIGN_OR_RETURN(c.max_positions, r.Int("max_position_embeddings"));
  ES_ASSIGN_OR_RETURN(c.norm_eps, r.Double("rms_norm_eps", 1e-6));
  ES_ASSIGN_OR_RETURN(c.rope_theta, r.Double("rope_theta", 10000.0));
  ES_ASSIGN_OR_RETURN(c.hidden_act, r.String("hidden_act", "silu"));
  if (c.hidden_act != "silu") {
    return r.Error("hidden_act",
                   absl::StrCat("unsupported value \"", c.hidden_act,
                                "\" (supported: silu)"));
  }
  ES_ASSIGN_OR_RETURN(c.tie_word_embeddings,
                      r.Bool("tie_word_embeddings", false));
  // Qwen2 always has q/k/v biases; Llama may (attention_bias).
  ES_ASSIGN_OR_RETURN(c.attention_bias,
                      r.Bool("attention_bias", c.model_type == "qwen2"));
  c.attention_output_bias = c.attention_bias && c.model_type != "qwen2";
  ES_ASSIGN_OR_RETURN(bool mlp_bias, r.Bool("mlp_bias", false));
  if (mlp_bias) return r.Error("mlp_bias", "MLP biases are not supported yet");
  // Sliding-window attention (Mistral) equals full attention while the
  // sequence fits in the window: limit the context to it until windowed
  // KV caches exist, rather than compute something else past it.
  ES_ASSIGN_OR_RETURN(int64_t window, r.Int("sliding_window", 0));
  if (window > 0 && window < c.max_positions) c.max_positions = window;
  const int64_t default_head_dim =
      c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  ES_ASSIGN_OR_RETURN(c.head_dim, r.Int("head_dim", default_head_dim));
  // Rope scaling variants (llama3, yarn, ...) change the frequencies.
  auto rs = r.String("rope_scaling", "");
  if (!rs.ok() || !rs->empty()) {
    return r.Error("rope_scaling", "rope scaling is not supported yet");
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view ArchName(Arch arch) {
  return arch == Arch::kGpt2 ? "gpt2" : "llama";
}

absl::StatusOr<Arch> ParseArch(absl::string_view name) {
  if (name == "gpt2") return Arch::kGpt2;
  if (name == "llama" || name == "mistral" || name == "qwen2") {
    return Arch::kLlama;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported model_type \"", name,
                   "\" (supported: gpt2, llama, mistral, qwen2)"));
}

absl::Status ModelConfig::Validate() const {
  auto positive = [](absl::string_view field, int64_t v) -> absl::Status {
    if (v <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("field \"", field, "\" must be positive, got ", v));
    }
    return absl::OkStatus();
  };
  const bool gpt2 = arch == Arch::kGpt2;
  ES_RETURN_IF_ERROR(positive(gpt2 ? "n_embd" : "hidden_size", hidden_size));
  ES_RETURN_IF_ERROR(
      positive(gpt2 ? "n_layer" : "num_hidden_layers", num_layers));
  ES_RETURN_IF_ERROR(
      positive(gpt2 ? "n_head" : "num_attention_heads", num_heads));
  ES_RETURN_IF_ERROR(positive("num_key_value_heads", num_kv_heads));
  ES_RETURN_IF_ERROR(positive("head_dim", head_dim));
  ES_RETURN_IF_ERROR(
      positive(gpt2 ? "n_inner" : "intermediate_size", intermediate_size));
  ES_RETURN_IF_ERROR(positive("vocab_size", vocab_size));
  ES_RETURN_IF_ERROR(positive(gpt2 ? "n_positions" : "max_position_embeddings",
                              max_positions));
  if (num_heads % num_kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"num_key_value_heads\": ", num_kv_heads,
                     " does not divide num_attention_heads ", num_heads));
  }
  if (gpt2 && head_dim * num_heads != hidden_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"n_head\": ", num_heads,
                     " does not divide n_embd ", hidden_size));
  }
  if (!gpt2 && head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_dim ", head_dim, " must be even for RoPE"));
  }
  if (!(norm_eps > 0)) {
    return absl::InvalidArgumentError("norm epsilon must be positive");
  }
  if (bos_token_id >= vocab_size || eos_token_id >= vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("bos/eos token ids (", bos_token_id, ", ", eos_token_id,
                     ") outside vocab_size ", vocab_size));
  }
  return absl::OkStatus();
}

int64_t ModelConfig::ParamsPerBlock() const {
  const int64_t h = hidden_size, q = num_heads * head_dim,
                kv = num_kv_heads * head_dim, i = intermediate_size;
  if (arch == Arch::kGpt2) {
    // ln_1, ln_2 (w+b), c_attn, attn c_proj, c_fc, mlp c_proj with biases.
    return 4 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * i + i) +
           (i * h + h);
  }
  int64_t attn = h * q + 2 * h * kv + q * h;
  if (attention_bias) attn += q + 2 * kv;
  if (attention_output_bias) attn += h;
  return 2 * h + attn + 3 * h * i;
}

int64_t ModelConfig::EmbeddingParams() const {
  int64_t p = vocab_size * hidden_size;
  if (arch == Arch::kGpt2) p += max_positions * hidden_size;
  return p;
}

int64_t ModelConfig::HeadParams() const {
  int64_t norm = arch == Arch::kGpt2 ? 2 * hidden_size : hidden_size;
  return norm + (tie_word_embeddings ? 0 : vocab_size * hidden_size);
}

int64_t ModelConfig::TotalParams() const {
  return EmbeddingParams() + num_layers * ParamsPerBlock() + HeadParams();
}

// quantization_config: only edgesplit's own (GGUF blocks) is understood;
// other methods (GPTQ, AWQ, bitsandbytes...) store weights differently
// and are refused by name rather than misread.
absl::StatusOr<std::string> ParseQuantization(const json& root,
                                              absl::string_view source) {
  auto it = root.find("quantization_config");
  if (it == root.end() || it->is_null()) return std::string();
  FieldReader q(*it, source);
  if (!it->is_object()) {
    return q.Error("quantization_config",
                   absl::StrCat("expected an object, got ", DescribeJson(*it)));
  }
  ES_ASSIGN_OR_RETURN(std::string method, q.String("quant_method", ""));
  if (method != "edgesplit") {
    return q.Error("quantization_config.quant_method",
                   absl::StrCat("\"", method,
                                "\" is not supported (only \"edgesplit\", "
                                "written by `edgesplit model quantize`)"));
  }
  ES_ASSIGN_OR_RETURN(std::string weights, q.String("weights", ""));
  // The block types of kernels/cpu/quant_blocks.h (this library does not
  // link the kernels; model_store checks each tensor's type again).
  if (weights != "q8_0" && weights != "q4_0" && weights != "q4_k" &&
      weights != "q6_k") {
    return q.Error(
        "quantization_config.weights",
        absl::StrCat("\"", weights, "\" is not one of q8_0, q4_0, q4_k, q6_k"));
  }
  return weights;
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text,
                                             absl::string_view source) {
  ES_ASSIGN_OR_RETURN(json root, ParseUntrustedJson(json_text, source));
  FieldReader r(root, source);
  ModelConfig c;
  ES_ASSIGN_OR_RETURN(c.model_type, r.String("model_type", ""));
  if (c.model_type.empty()) return r.Error("model_type", "missing");
  auto arch = ParseArch(c.model_type);
  if (!arch.ok()) return r.Error("model_type", arch.status().message());
  c.arch = *arch;
  if (c.arch == Arch::kGpt2) {
    ES_RETURN_IF_ERROR(ParseGpt2(r, c));
    c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  } else {
    ES_RETURN_IF_ERROR(ParseLlama(r, c));
  }
  ES_ASSIGN_OR_RETURN(c.bos_token_id, r.TokenId("bos_token_id"));
  ES_ASSIGN_OR_RETURN(c.eos_token_id, r.TokenId("eos_token_id"));
  ES_ASSIGN_OR_RETURN(c.torch_dtype, r.String("torch_dtype", "float32"));
  ES_ASSIGN_OR_RETURN(c.quantized_weights, ParseQuantization(root, source));
  absl::Status valid = c.Validate();
  if (!valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", valid.message()));
  }
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  ES_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseModelConfig(text, path);
}

std::string ModelConfigToJson(const ModelConfig& c) {
  json j;
  j["model_type"] =
      c.model_type.empty() ? std::string(ArchName(c.arch)) : c.model_type;
  if (c.arch == Arch::kGpt2) {
    j["architectures"] = {"GPT2LMHeadModel"};
    j["n_embd"] = c.hidden_size;
    j["n_layer"] = c.num_layers;
    j["n_head"] = c.num_heads;
    j["n_inner"] = c.intermediate_size;
    j["n_positions"] = c.max_positions;
    j["n_ctx"] = c.max_positions;
    j["layer_norm_epsilon"] = c.norm_eps;
    j["activation_function"] = "gelu_new";
  } else {
    j["architectures"] = {"LlamaForCausalLM"};
    j["hidden_size"] = c.hidden_size;
    j["num_hidden_layers"] = c.num_layers;
    j["num_attention_heads"] = c.num_heads;
    j["num_key_value_heads"] = c.num_kv_heads;
    j["head_dim"] = c.head_dim;
    j["intermediate_size"] = c.intermediate_size;
    j["max_position_embeddings"] = c.max_positions;
    j["rms_norm_eps"] = c.norm_eps;
    j["rope_theta"] = c.rope_theta;
    j["hidden_act"] = "silu";
    j["attention_bias"] = c.attention_bias;
  }
  j["vocab_size"] = c.vocab_size;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_id >= 0) j["eos_token_id"] = c.eos_token_id;
  j["torch_dtype"] = c.torch_dtype.empty() ? "float32" : c.torch_dtype;
  if (!c.quantized_weights.empty()) {
    j["quantization_config"] = {{"quant_method", "edgesplit"},
                                {"weights", c.quantized_weights}};
  }
  return j.dump(2) + "\n";
}

absl::Status ValidateStageSpec(const ModelConfig& config,
                               const StageSpec& spec) {
  const BlockRange& b = spec.blocks;
  if (b.first < 0 || b.last < b.first || b.last > config.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block range [", b.first, ", ", b.last, ") is outside the model's ",
        config.num_layers, " blocks"));
  }
  if (b.size() == 0 && !spec.embedding && !spec.head) {
    return absl::InvalidArgumentError("stage holds nothing");
  }
  return absl::OkStatus();
}

}  // namespace edgesplit
