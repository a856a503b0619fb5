#include "runtime/gguf_model.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "runtime/tokenizer/sentencepiece_model.h"
#include "runtime/tokenizer/sentencepiece_tokenizer.h"

namespace edgesplit {
namespace {

// llama.cpp's per-block tensor names and their Hugging Face counterparts.
constexpr std::pair<const char*, const char*> kBlockNames[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};

// The Hugging Face name of a GGUF tensor, or "" for one edgesplit does not
// know (the caller refuses it: ignoring a tensor could change the model).
std::string HfName(const std::string& name, int64_t layers) {
  if (name == "token_embd.weight") return "model.embed_tokens.weight";
  if (name == "output_norm.weight") return "model.norm.weight";
  if (name == "output.weight") return "lm_head.weight";
  std::vector<std::string> parts =
      absl::StrSplit(name, absl::MaxSplits('.', 2));
  int64_t block = 0;
  if (parts.size() != 3 || parts[0] != "blk" ||
      !absl::SimpleAtoi(parts[1], &block) || block < 0 || block >= layers ||
      parts[1] != absl::StrCat(block)) {
    return "";
  }
  for (const auto& [gguf, hf] : kBlockNames) {
    if (parts[2] == gguf) return absl::StrCat("model.layers.", block, ".", hf);
  }
  return "";
}

absl::StatusOr<ModelConfig> ConfigFromKeys(const GgufFile& f) {
  ES_ASSIGN_OR_RETURN(std::string arch, f.String("general.architecture"));
  if (arch != "llama") {
    return absl::InvalidArgumentError(absl::StrCat(
        f.path(), ": general.architecture \"", arch,
        "\" is not supported (only \"llama\" GGUF files are imported)"));
  }
  auto scaling = f.metadata().find("llama.rope.scaling.type");
  if (scaling != f.metadata().end() && scaling->second.str != "none") {
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), ": llama.rope.scaling.type \"",
                     scaling->second.str, "\" is not supported"));
  }
  ModelConfig c;
  c.arch = Arch::kLlama;
  c.model_type = "llama";
  c.hidden_act = "silu";
  c.torch_dtype = "float32";
  ES_ASSIGN_OR_RETURN(c.hidden_size, f.Int("llama.embedding_length"));
  ES_ASSIGN_OR_RETURN(c.num_layers, f.Int("llama.block_count"));
  ES_ASSIGN_OR_RETURN(c.intermediate_size, f.Int("llama.feed_forward_length"));
  ES_ASSIGN_OR_RETURN(c.num_heads, f.Int("llama.attention.head_count"));
  ES_ASSIGN_OR_RETURN(c.num_kv_heads,
                      f.Int("llama.attention.head_count_kv", c.num_heads));
  ES_ASSIGN_OR_RETURN(c.max_positions, f.Int("llama.context_length"));
  const int64_t head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  ES_ASSIGN_OR_RETURN(c.head_dim,
                      f.Int("llama.attention.key_length", head_dim));
  ES_ASSIGN_OR_RETURN(int64_t rope_dims,
                      f.Int("llama.rope.dimension_count", c.head_dim));
  if (rope_dims != c.head_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), ": llama.rope.dimension_count ", rope_dims,
                     " differs from the head size ", c.head_dim,
                     " (partial rotary "
                     "embeddings are not supported)"));
  }
  ES_ASSIGN_OR_RETURN(c.norm_eps,
                      f.Float("llama.attention.layer_norm_rms_epsilon", 1e-5));
  ES_ASSIGN_OR_RETURN(c.rope_theta, f.Float("llama.rope.freq_base", 10000.0));
  ES_ASSIGN_OR_RETURN(c.bos_token_id, f.Int("tokenizer.ggml.bos_token_id", 1));
  ES_ASSIGN_OR_RETURN(c.eos_token_id, f.Int("tokenizer.ggml.eos_token_id", 2));
  const GgufTensor* embd = f.Find("token_embd.weight");
  if (embd == nullptr || embd->ne.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        f.path(), ": no 2-D tensor \"token_embd.weight\" (the embeddings)"));
  }
  ES_ASSIGN_OR_RETURN(c.vocab_size, f.Int("llama.vocab_size", embd->ne[1]));
  c.tie_word_embeddings = f.Find("output.weight") == nullptr;
  absl::Status valid = c.Validate();
  if (!valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), ": ", valid.message()));
  }
  return c;
}

DType PlainDType(GgmlType t) {
  return t == GgmlType::kF16    ? DType::kF16
         : t == GgmlType::kBF16 ? DType::kBF16
                                : DType::kF32;
}

bool IsBlocks(GgmlType t) {
  return t != GgmlType::kF32 && t != GgmlType::kF16 && t != GgmlType::kBF16;
}

}  // namespace

int64_t UnpermuteRowIndex(int64_t hf_row, int64_t rows, int64_t heads) {
  const int64_t per_head = rows / heads, half = per_head / 2;
  const int64_t h = hf_row / per_head, r = hf_row % per_head;
  const int64_t j = r / half, i = r % half;
  return h * per_head + 2 * i + j;
}

absl::StatusOr<GgufModel> ImportGguf(const std::string& path) {
  GgufModel m;
  ES_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::Open(path));
  m.file = std::move(file);
  const GgufFile& f = *m.file;
  ES_ASSIGN_OR_RETURN(m.config, ConfigFromKeys(f));
  SafetensorsHeader header;
  std::map<std::string, int> block_types;
  for (const GgufTensor& t : f.tensors()) {
    const std::string hf = HfName(t.name, m.config.num_layers);
    if (hf.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor \"", t.name,
          "\" is not one of a Llama model's (unsupported variant?)"));
    }
    TensorInfo info;
    info.name = hf;
    info.begin = t.offset;
    info.end = t.offset + t.nbytes;
    if (IsBlocks(t.type)) {
      // As `model quantize` stores blocks: [rows, bytes per row].
      info.dtype = DType::kU8;
      info.shape = {t.rows(), static_cast<int64_t>(t.nbytes) / t.rows()};
      header.metadata[absl::StrCat("edgesplit.weights.", hf)] =
          GgmlTypeName(t.type);
      if (hf != "model.embed_tokens.weight")
        ++block_types[GgmlTypeName(t.type)];
    } else {
      info.dtype = PlainDType(t.type);
      info.shape.assign(t.ne.rbegin(), t.ne.rend());  // Outermost first.
    }
    if (absl::EndsWith(hf, "q_proj.weight")) {
      m.unpermute_heads[hf] = m.config.num_heads;
    } else if (absl::EndsWith(hf, "k_proj.weight")) {
      m.unpermute_heads[hf] = m.config.num_kv_heads;
    }
    header.tensors.push_back(std::move(info));
  }
  // The stage's default weight type: the most common block type among the
  // linears (llama.cpp mixes, e.g. Q4_K with Q6_K); each tensor still loads
  // as stored unless a type is asked for.
  int best = 0;
  for (const auto& [name, n] : block_types) {
    if (n > best) {
      best = n;
      m.config.quantized_weights = name;
    }
  }
  ES_ASSIGN_OR_RETURN(
      m.view, SafetensorsFile::FromMapping(path, std::move(header), f.mapping(),
                                           f.data_offset()));
  return m;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufTokenizer(
    const GgufFile& f) {
  ES_ASSIGN_OR_RETURN(std::string model, f.String("tokenizer.ggml.model"));
  if (model != "llama") {
    return absl::InvalidArgumentError(absl::StrCat(
        f.path(), ": tokenizer.ggml.model \"", model,
        "\" is not supported (only \"llama\", SentencePiece BPE)"));
  }
  ES_ASSIGN_OR_RETURN(const std::vector<std::string>* tokens,
                      f.Strings("tokenizer.ggml.tokens"));
  const std::vector<double>* scores = nullptr;
  const std::vector<double>* types = nullptr;
  if (f.metadata().count("tokenizer.ggml.scores") > 0) {
    ES_ASSIGN_OR_RETURN(scores, f.Numbers("tokenizer.ggml.scores"));
  }
  if (f.metadata().count("tokenizer.ggml.token_type") > 0) {
    ES_ASSIGN_OR_RETURN(types, f.Numbers("tokenizer.ggml.token_type"));
  }
  const size_t n = tokens->size();
  if ((scores && scores->size() != n) || (types && types->size() != n)) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(),
                     ": tokenizer.ggml.scores / token_type lengths differ from "
                     "tokenizer.ggml.tokens (",
                     n, ")"));
  }
  spm::ModelProto proto;
  proto.has_trainer_spec = true;
  proto.trainer_spec.model_type = spm::kBpe;
  proto.trainer_spec.vocab_size = static_cast<int32_t>(n);
  for (size_t i = 0; i < n; ++i) {
    spm::ModelPiece p;
    p.piece = (*tokens)[i];
    p.score = scores ? static_cast<float>((*scores)[i]) : 0.0f;
    const double t = types ? (*types)[i] : 1;
    if (t < 1 || t > 6 || t != static_cast<int>(t)) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.path(), ": tokenizer.ggml.token_type[", i, "] = ", t,
                       " is not a SentencePiece piece type (1..6)"));
    }
    p.type = static_cast<spm::PieceType>(static_cast<int>(t));
    if (p.type == spm::PieceType::kByte)
      proto.trainer_spec.byte_fallback = true;
    proto.pieces.push_back(std::move(p));
  }
  ES_ASSIGN_OR_RETURN(int64_t unk, f.Int("tokenizer.ggml.unknown_token_id", 0));
  ES_ASSIGN_OR_RETURN(int64_t bos, f.Int("tokenizer.ggml.bos_token_id", 1));
  ES_ASSIGN_OR_RETURN(int64_t eos, f.Int("tokenizer.ggml.eos_token_id", 2));
  for (int64_t id : {unk, bos, eos}) {
    if (id >= static_cast<int64_t>(n)) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.path(), ": special token id ", id,
                       " is past the vocabulary (", n, ")"));
    }
  }
  proto.trainer_spec.unk_id = static_cast<int32_t>(unk);
  proto.trainer_spec.bos_id = static_cast<int32_t>(bos);
  proto.trainer_spec.eos_id = static_cast<int32_t>(eos);
  proto.normalizer_spec.name = "identity";
  ES_ASSIGN_OR_RETURN(proto.normalizer_spec.add_dummy_prefix,
                      f.Bool("tokenizer.ggml.add_space_prefix", true));
  // llama.cpp's SentencePiece vocabulary keeps runs of spaces.
  proto.normalizer_spec.remove_extra_whitespaces = false;
  ES_ASSIGN_OR_RETURN(
      std::unique_ptr<Tokenizer> tok,
      ParseSentencePieceTokenizer(spm::SerializeModelProto(proto), f.path()));
  ES_ASSIGN_OR_RETURN(bool add_bos,
                      f.Bool("tokenizer.ggml.add_bos_token", true));
  tok->set_special_tokens(static_cast<int32_t>(bos), static_cast<int32_t>(eos),
                          add_bos);
  return tok;
}

}  // namespace edgesplit
