// GGUF import against GGUF files written here from known values by an
// independent writer (testing/gguf_writer.h, which follows the format
// description and llama.cpp's converter, not gguf.cc): the same weights
// give the same logits and token ids as the safetensors model. Malformed
// files: gguf_parse_test.cc (run under ASan).
#include "runtime/gguf.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "gtest/gtest.h"
#include "kernels/cpu/quant_blocks.h"
#include "runtime/generator.h"
#include "runtime/gguf_model.h"
#include "runtime/model_quantize.h"
#include "runtime/model_store.h"
#include "runtime/safetensors.h"
#include "runtime/tokenizer/sentencepiece_model.h"
#include "testing/gguf_writer.h"
#include "testing/test_models.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using kernels::WeightType;
using testing::GgufWriter;

// llama.cpp's converter: within each head, rows (j, i) -> (i, j).
std::string PermuteRows(const std::string& rows_bytes, int64_t rows,
                        int64_t heads) {
  const size_t row = rows_bytes.size() / rows;
  const int64_t hd = rows / heads, half = hd / 2;
  std::string out;
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        out += rows_bytes.substr((h * hd + j * half + i) * row, row);
      }
    }
  }
  return out;
}

std::string GgufName(const std::string& hf) {
  const std::pair<const char*, const char*> names[] = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"}};
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  const std::string layers = "model.layers.";
  const size_t dot = hf.find('.', layers.size());
  const std::string block = hf.substr(layers.size(), dot - layers.size());
  for (const auto& [h, g] : names) {
    if (hf.substr(dot + 1) == h) return "blk." + block + "." + g;
  }
  ADD_FAILURE() << "no GGUF name for " << hf;
  return "";
}

uint32_t GgmlTypeOf(WeightType t) {
  switch (t) {
    case WeightType::kQ8_0:
      return 8;
    case WeightType::kQ4_0:
      return 2;
    case WeightType::kQ4_K:
      return 12;
    case WeightType::kQ6_K:
      return 14;
    default:
      return 0;
  }
}

std::string Bytes(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

void WriteHyperParameters(const ModelConfig& c, GgufWriter* w) {
  w->KvString("general.architecture", "llama");
  w->KvU32("general.alignment", 32);
  w->KvU32("llama.context_length", static_cast<uint32_t>(c.max_positions));
  w->KvU32("llama.embedding_length", static_cast<uint32_t>(c.hidden_size));
  w->KvU32("llama.block_count", static_cast<uint32_t>(c.num_layers));
  w->KvU32("llama.feed_forward_length",
           static_cast<uint32_t>(c.intermediate_size));
  w->KvU32("llama.attention.head_count", static_cast<uint32_t>(c.num_heads));
  w->KvU32("llama.attention.head_count_kv",
           static_cast<uint32_t>(c.num_kv_heads));
  w->KvU32("llama.rope.dimension_count", static_cast<uint32_t>(c.head_dim));
  w->KvF32("llama.attention.layer_norm_rms_epsilon",
           static_cast<float>(c.norm_eps));
  w->KvF32("llama.rope.freq_base", static_cast<float>(c.rope_theta));
}

// The weights of the model in `dir` as a GGUF file: float tensors as F32
// (or F16 when `f16`), block tensors as they are stored, q/k rows permuted.
// `quantize` (optional) names a block type to quantize a float tensor to
// here (kF32: keep it).
std::string WriteGguf(
    const std::string& dir, const std::string& out, bool f16 = false,
    bool tokenizer = true,
    std::function<WeightType(const std::string&)> quantize = nullptr) {
  auto store = ModelStore::Open(dir);
  EXPECT_TRUE(store.ok()) << store.status();
  const ModelConfig& c = (*store)->config();
  auto weights =
      (*store)->LoadStageWeights({{0, c.num_layers}, true, true}, at::kFloat);
  EXPECT_TRUE(weights.ok()) << weights.status();
  GgufWriter w;
  WriteHyperParameters(c, &w);
  if (tokenizer) {
    auto proto_bytes = ReadFile(dir + "/tokenizer.model");
    EXPECT_TRUE(proto_bytes.ok());
    auto proto = spm::ParseModelProto(*proto_bytes, "tokenizer.model");
    EXPECT_TRUE(proto.ok());
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<int32_t> types;
    for (const spm::ModelPiece& p : proto->pieces) {
      tokens.push_back(p.piece);
      scores.push_back(p.score);
      types.push_back(static_cast<int32_t>(p.type));
    }
    w.KvString("tokenizer.ggml.model", "llama");
    w.KvStrings("tokenizer.ggml.tokens", tokens);
    w.KvArray("tokenizer.ggml.scores", 6, scores);
    w.KvArray("tokenizer.ggml.token_type", 5, types);
    w.KvU32("tokenizer.ggml.bos_token_id", 1);
    w.KvU32("tokenizer.ggml.eos_token_id", 2);
    w.KvU32("tokenizer.ggml.unknown_token_id", 0);
    w.KvBool("tokenizer.ggml.add_bos_token", true);
  }
  for (const auto& [name, t] : *weights) {
    auto blocks = (*store)->StoredBlocks(name);
    EXPECT_TRUE(blocks.ok());
    std::vector<uint64_t> ne;
    uint32_t type = 0;
    std::string bytes;
    int64_t rows = t.size(0), cols = t.dim() == 2 ? t.size(1) : 0;
    if (blocks->has_value()) {
      type = GgmlTypeOf(**blocks);
      bytes = Bytes(t);
      // The logical width: down_proj reads the MLP; the rest the model.
      cols = name.find("down_proj") != std::string::npos ? c.intermediate_size
                                                         : c.hidden_size;
    } else if (quantize && quantize(name) != WeightType::kF32) {
      const WeightType q = quantize(name);
      type = GgmlTypeOf(q);
      const int64_t rb = kernels::RowBytes(q, cols);
      bytes.resize(rows * rb);
      at::Tensor f = t.contiguous();
      for (int64_t r = 0; r < rows; ++r) {
        kernels::QuantizeRow(q, f.data_ptr<float>() + r * cols, cols,
                             &bytes[r * rb]);
      }
    } else if (f16 && t.dim() == 2) {
      type = 1;
      bytes = Bytes(t.to(at::kHalf));
    } else {
      bytes = Bytes(t);
    }
    ne = t.dim() == 2 ? std::vector<uint64_t>{static_cast<uint64_t>(cols),
                                              static_cast<uint64_t>(rows)}
                      : std::vector<uint64_t>{static_cast<uint64_t>(rows)};
    if (name.find("q_proj") != std::string::npos) {
      bytes = PermuteRows(bytes, rows, c.num_heads);
    } else if (name.find("k_proj") != std::string::npos) {
      bytes = PermuteRows(bytes, rows, c.num_kv_heads);
    }
    w.Tensor(GgufName(name), ne, type, bytes);
  }
  EXPECT_TRUE(WriteFileAtomically(out, w.Build()).ok());
  return out;
}

at::Tensor Logits(const std::string& model, const std::vector<int32_t>& ids,
                  StageOptions o = {}, std::vector<int64_t> cuts = {}) {
  auto store = ModelStore::Open(model);
  EXPECT_TRUE(store.ok()) << store.status();
  auto p = LocalPipeline::Load(**store, cuts, o);
  EXPECT_TRUE(p.ok()) << p.status();
  auto l = (*p)->NewSequence()->ForwardAll(ids);
  EXPECT_TRUE(l.ok()) << l.status();
  return *l;
}

const std::string& Stories() {
  static const std::string dir = testing::SharedDir() + "/models/stories260K";
  return dir;
}

// The real model as F32 GGUF: the same logits bit for bit (q/k rows
// un-permuted exactly), whole and split, the same hyper-parameters, and a
// tokenizer from the GGUF keys that encodes and decodes as tokenizer.model.
TEST(GgufTest, RealModelAsF32GgufMatchesSafetensors) {
  const std::string path =
      WriteGguf(Stories(), testing::TempDir("stories_f32") + ".gguf");
  auto store = ModelStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->is_gguf());
  auto ref = ModelStore::Open(Stories());
  ASSERT_TRUE(ref.ok());
  const ModelConfig& a = (*store)->config();
  const ModelConfig& b = (*ref)->config();
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.num_kv_heads, b.num_kv_heads);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.quantized_weights, "");
  auto tok = (*store)->LoadTokenizer();
  auto ref_tok = (*ref)->LoadTokenizer();
  ASSERT_TRUE(tok.ok() && ref_tok.ok()) << tok.status();
  auto text =
      ReadFile(testing::SharedDir() + "/data/tinystories_valid_sample.txt");
  ASSERT_TRUE(text.ok());
  const std::string sample = text->substr(0, 3000);
  auto ids = (*tok)->EncodePrompt(sample);
  auto ref_ids = (*ref_tok)->EncodePrompt(sample);
  ASSERT_TRUE(ids.ok() && ref_ids.ok());
  EXPECT_EQ(*ids, *ref_ids);
  EXPECT_EQ(*(*tok)->Decode(*ids), *(*ref_tok)->Decode(*ids));
  std::vector<int32_t> prompt(ids->begin(), ids->begin() + 40);
  const at::Tensor want = Logits(Stories(), prompt);
  EXPECT_TRUE(at::equal(Logits(path, prompt), want));
  EXPECT_TRUE(at::equal(Logits(path, prompt, {}, {2, 4}), want));
}

// F16 tensors load as float (exact widening): the same logits bit for bit
// as a safetensors copy of the model whose 2-D tensors are F16.
TEST(GgufTest, F16TensorsEqualAnF16Checkpoint) {
  const std::string path = WriteGguf(
      Stories(), testing::TempDir("stories_f16") + ".gguf", /*f16=*/true);
  const std::string dir = testing::TempDir("stories_f16_dir");
  auto src = ModelStore::Open(Stories());
  ASSERT_TRUE(src.ok());
  const ModelConfig& c = (*src)->config();
  auto weights =
      (*src)->LoadStageWeights({{0, c.num_layers}, true, true}, at::kFloat);
  ASSERT_TRUE(weights.ok());
  SafetensorsWriter writer;
  std::vector<at::Tensor> keep;
  for (const auto& [name, t] : *weights) {
    keep.push_back(t.dim() == 2 ? t.to(at::kHalf).contiguous() : t);
    ASSERT_TRUE(writer
                    .Add(name, t.dim() == 2 ? DType::kF16 : DType::kF32,
                         t.sizes().vec(),
                         {static_cast<const uint8_t*>(keep.back().data_ptr()),
                          static_cast<size_t>(keep.back().nbytes())})
                    .ok());
  }
  ASSERT_TRUE(writer.Write(dir + "/model.safetensors").ok());
  auto config = ReadFile(Stories() + "/config.json");
  ASSERT_TRUE(config.ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/config.json", *config).ok());
  std::vector<int32_t> prompt = {1, 403, 407, 261, 378, 259, 1};
  const at::Tensor want = Logits(dir, prompt);
  EXPECT_TRUE(at::equal(Logits(path, prompt), want));
  EXPECT_FALSE(at::equal(want, Logits(Stories(), prompt)));
}

// A quantized model as GGUF blocks (q/k block rows permuted): the same
// logits as the quantized directory it came from, every tensor loaded as
// stored, whole and split.
TEST(GgufTest, QuantizedBlocksMatchTheQuantizedDirectory) {
  for (WeightType type : {WeightType::kQ8_0, WeightType::kQ4_K}) {
    QuantizeOptions q;
    q.model_dir = testing::TinyModel(Arch::kLlama, 0, "mini");
    q.out_dir =
        testing::TempDir(absl::StrCat("gguf_src_", WeightTypeName(type)));
    q.type = type;
    ASSERT_TRUE(QuantizeModel(q).ok());
    const std::string path =
        WriteGguf(q.out_dir, q.out_dir + ".gguf", false, /*tokenizer=*/false);
    auto store = ModelStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_EQ((*store)->config().quantized_weights, WeightTypeName(type));
    auto stored =
        (*store)->StoredBlocks("model.layers.2.self_attn.k_proj.weight");
    ASSERT_TRUE(stored.ok() && stored->has_value());
    EXPECT_EQ(**stored, type);
    std::vector<int32_t> prompt = {5, 17, 99, 3, 250, 41};
    const at::Tensor want = Logits(q.out_dir, prompt);
    EXPECT_TRUE(at::equal(Logits(path, prompt), want)) << WeightTypeName(type);
    EXPECT_TRUE(at::equal(Logits(path, prompt, {}, {1, 3}), want));
    // No tokenizer keys: the model runs, the tokenizer is refused clearly.
    auto tok = (*store)->LoadTokenizer();
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
    EXPECT_NE(tok.status().message().find("tokenizer.ggml.model"),
              std::string::npos);
  }
}

// llama.cpp's usual mix (Q4_K with Q6_K, quantized token embeddings): each
// tensor loads as stored, the embeddings dequantized to a float table;
// split equals whole and the logits stay near the float model's.
TEST(GgufTest, MixedBlockTypesLoadAsStored) {
  const std::string& dir = testing::TinyModel(Arch::kLlama, 0, "mini");
  auto pick = [](const std::string& name) {
    if (name == "model.embed_tokens.weight") return WeightType::kQ8_0;
    if (name.find("down_proj") != std::string::npos) return WeightType::kQ6_K;
    if (name.find("norm") != std::string::npos) return WeightType::kF32;
    return WeightType::kQ4_K;
  };
  const std::string path =
      WriteGguf(dir, testing::TempDir("mixed") + ".gguf", false, false, pick);
  auto store = ModelStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->config().quantized_weights, "q4_k");
  auto down = (*store)->StoredBlocks("model.layers.1.mlp.down_proj.weight");
  ASSERT_TRUE(down.ok() && down->has_value());
  EXPECT_EQ(**down, WeightType::kQ6_K);
  std::vector<int32_t> prompt = {5, 17, 99, 3, 250, 41};
  const at::Tensor whole = Logits(path, prompt);
  EXPECT_TRUE(at::equal(Logits(path, prompt, {}, {1, 2, 3}), whole));
  const at::Tensor f32 = Logits(dir, prompt);
  const double rel = ((whole - f32).norm() / f32.norm()).item<double>();
  EXPECT_GT(rel, 0.0);
  EXPECT_LT(rel, 0.2);
  // A float linear in the file stays float (not the majority block type):
  // v_proj as F32 holds exactly its 4 - 144/256 bytes per weight more.
  auto pick_f32_v = [&](const std::string& name) {
    return name.find("v_proj") != std::string::npos ? WeightType::kF32
                                                    : pick(name);
  };
  const std::string f32_v = WriteGguf(
      dir, testing::TempDir("mixed_f32v") + ".gguf", false, false, pick_f32_v);
  auto held = [](const std::string& model) {
    auto s = ModelStore::Open(model);
    EXPECT_TRUE(s.ok()) << s.status();
    auto p = LocalPipeline::Load(**s, {});
    EXPECT_TRUE(p.ok()) << p.status();
    return (*p)->stages()[0]->WeightBytes();
  };
  const ModelConfig& c = (*store)->config();
  const int64_t v_params =
      c.num_layers * c.num_kv_heads * c.head_dim * c.hidden_size;
  EXPECT_EQ(held(f32_v) - held(path), v_params * 4 - v_params / 256 * 144);
  // Asking for one type converts every linear to it.
  StageOptions q8;
  q8.weights = WeightType::kQ8_0;
  EXPECT_FALSE(at::equal(Logits(path, prompt, q8), whole));
}

// A q/k tensor whose shape disagrees with the keys is refused naming it.
TEST(GgufTest, ShapeMismatchNamesTheTensor) {
  const std::string path =
      WriteGguf(Stories(), testing::TempDir("stories_shape") + ".gguf");
  auto bytes = ReadFile(path);
  ASSERT_TRUE(bytes.ok());
  // llama.feed_forward_length 172 -> 160: every ffn tensor disagrees.
  std::string s = *bytes;
  const size_t at = s.find("llama.feed_forward_length") + 25 + 4;
  uint32_t v = 160;
  std::memcpy(&s[at], &v, 4);
  const std::string bad = testing::TempDir("stories_badshape") + ".gguf";
  ASSERT_TRUE(WriteFileAtomically(bad, s).ok());
  auto store = ModelStore::Open(bad);
  ASSERT_TRUE(store.ok()) << store.status();
  auto p = LocalPipeline::Load(**store, {});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find(bad), std::string::npos) << p.status();
  EXPECT_NE(p.status().message().find("mlp"), std::string::npos) << p.status();
}

}  // namespace
}  // namespace edgesplit
