#include "runtime/model_quantize.h"

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "gtest/gtest.h"
#include "runtime/generator.h"
#include "runtime/linear_weight.h"
#include "runtime/model_store.h"
#include "runtime/safetensors.h"
#include "testing/test_models.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using kernels::WeightType;

// The K formats need widths of 256: they quantize the "mini" preset.
const std::string& Source(Arch arch, WeightType type) {
  return testing::TinyModel(
      arch, 0, kernels::BlockWeights(type) == 256 ? "mini" : "tiny");
}

std::string Quantized(Arch arch, WeightType type) {
  QuantizeOptions o;
  o.model_dir = Source(arch, type);
  o.out_dir = testing::TempDir(absl::StrCat("quantized_", ArchName(arch), "_",
                                            kernels::WeightTypeName(type)));
  o.type = type;
  auto r = QuantizeModel(o);
  EXPECT_TRUE(r.ok()) << r.status();
  if (r.ok()) {
    EXPECT_GT(r->quantized, 0);
    EXPECT_LT(r->bytes_after, r->bytes_before);
  }
  return o.out_dir;
}

at::Tensor Logits(const std::string& dir, StageOptions so,
                  std::vector<int64_t> cuts = {}) {
  auto store = ModelStore::Open(dir);
  EXPECT_TRUE(store.ok()) << store.status();
  auto p = LocalPipeline::Load(**store, cuts, so);
  EXPECT_TRUE(p.ok()) << p.status();
  auto l = (*p)->NewSequence()->ForwardAll({5, 17, 99, 3, 250, 41});
  EXPECT_TRUE(l.ok()) << l.status();
  return *l;
}

class ModelQuantizeTest
    : public ::testing::TestWithParam<std::tuple<Arch, WeightType>> {};

// A quantized directory loads as stored and computes exactly what quantizing
// the float model at load computes (the same blocks), whole or split.
TEST_P(ModelQuantizeTest, StoredBlocksEqualQuantizingAtLoad) {
  const auto [arch, type] = GetParam();
  const std::string dir = Quantized(arch, type);
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->config().quantized_weights,
            kernels::WeightTypeName(type));
  StageOptions at_load;
  at_load.weights = type;
  const at::Tensor want = Logits(Source(arch, type), at_load);
  EXPECT_TRUE(at::equal(Logits(dir, {}), want))
      << (Logits(dir, {}) - want).abs().max().item<double>();
  EXPECT_TRUE(at::equal(Logits(dir, {}, {1, 3}), want));
  // The file holds exactly the GGUF blocks of the float rows.
  auto src = ModelStore::Open(Source(arch, type));
  ASSERT_TRUE(src.ok());
  const std::string name = arch == Arch::kLlama
                               ? "model.layers.1.mlp.up_proj.weight"
                               : (*src)->gpt2_prefix() + "h.1.mlp.c_fc.weight";
  auto stored = (*store)->StoredBlocks(name);
  ASSERT_TRUE(stored.ok() && stored->has_value()) << name;
  EXPECT_EQ(**stored, type);  // Every width of "mini" holds K blocks.
  auto file = SafetensorsFile::Open(dir + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  const TensorInfo* info = (*file)->Find(name);
  ASSERT_NE(info, nullptr);
  auto w = (*src)->LoadStageWeights({{1, 2}, false, false}, at::kFloat);
  ASSERT_TRUE(w.ok());
  at::Tensor rows = (*w)[name];
  if (arch == Arch::kGpt2) rows = rows.t().contiguous();  // Conv1D.
  auto lw = MakeLinearWeight(rows, type, name);
  ASSERT_TRUE(lw.ok());
  auto bytes = (*file)->Data(*info);
  ASSERT_EQ(static_cast<int64_t>(bytes.size()), lw->blocks.nbytes());
  EXPECT_EQ(0, std::memcmp(bytes.data(), lw->blocks.data_ptr(), bytes.size()));
}

// Asking for another type converts on load: f32 dequantizes the blocks,
// another block type requantizes them.
TEST_P(ModelQuantizeTest, ConvertsOnLoadWhenAnotherTypeIsAsked) {
  const auto [arch, type] = GetParam();
  const std::string dir = Quantized(arch, type);
  StageOptions f32;
  f32.weights = WeightType::kF32;
  const at::Tensor dequantized = Logits(dir, f32);
  const at::Tensor as_stored = Logits(dir, {});
  // The same weights; only the activations' rounding (Q8_0 blocks for the
  // block GEMV, float for the dequantized weights) tells them apart, which
  // on these random models' near-uniform logits is 1% (q8_0) to 9% (q4_0)
  // of their norm.
  EXPECT_LT(
      ((dequantized - as_stored).norm() / as_stored.norm()).item<double>(),
      type == WeightType::kQ8_0 || type == WeightType::kQ6_K ? 0.03 : 0.2);
  StageOptions other;
  other.weights =
      type == WeightType::kQ8_0 ? WeightType::kQ4_0 : WeightType::kQ8_0;
  EXPECT_TRUE(Logits(dir, other).defined());
}

INSTANTIATE_TEST_SUITE_P(
    Types, ModelQuantizeTest,
    ::testing::Combine(::testing::Values(Arch::kGpt2, Arch::kLlama),
                       ::testing::Values(WeightType::kQ8_0, WeightType::kQ4_0,
                                         WeightType::kQ4_K, WeightType::kQ6_K)),
    [](const auto& info) {
      return absl::StrCat(ArchName(std::get<0>(info.param)), "_",
                          kernels::WeightTypeName(std::get<1>(info.param)));
    });

// Rewrites the quantized file with one change and returns the store error.
absl::Status LoadWith(const std::string& dir, const std::string& target,
                      const std::string& meta_value, int64_t row_bytes_delta) {
  const std::string bad = dir + "_bad";
  std::filesystem::remove_all(bad);
  std::filesystem::create_directories(bad);
  for (const char* f : {"config.json", "tokenizer.model"}) {
    if (std::filesystem::exists(dir + "/" + f)) {
      std::filesystem::copy_file(dir + "/" + f, bad + "/" + f);
    }
  }
  auto file = SafetensorsFile::Open(dir + "/model.safetensors");
  if (!file.ok()) return file.status();
  SafetensorsWriter w;
  std::vector<std::vector<uint8_t>> keep;
  for (const TensorInfo& t : (*file)->tensors()) {
    auto data = (*file)->Data(t);
    std::vector<int64_t> shape = t.shape;
    keep.emplace_back(data.begin(), data.end());
    if (t.name == target && row_bytes_delta != 0) {
      shape[1] += row_bytes_delta;
      keep.back().resize(static_cast<size_t>(shape[0] * shape[1]));
    }
    EXPECT_TRUE(w.Add(t.name, t.dtype, shape, keep.back()).ok());
  }
  for (const auto& [k, v] : (*file)->metadata()) w.SetMetadata(k, v);
  if (!meta_value.empty()) {
    w.SetMetadata("edgesplit.weights." + target, meta_value);
  }
  EXPECT_TRUE(w.Write(bad + "/model.safetensors").ok());
  auto store = ModelStore::Open(bad);
  if (!store.ok()) return store.status();
  auto stage = StageModel::Load(**store, {{0, 2}, true, false});
  return stage.status();
}

TEST(ModelQuantizeErrorsTest, BadBlocksFailNamingFileAndTensor) {
  const std::string dir = Quantized(Arch::kLlama, WeightType::kQ4_0);
  const std::string t = "model.layers.1.self_attn.q_proj.weight";
  EXPECT_TRUE(LoadWith(dir, t, "", 0).ok());
  absl::Status s = LoadWith(dir, t, "q5_9", 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("q5_9"), std::string::npos) << s;
  EXPECT_NE(s.message().find("model.safetensors"), std::string::npos) << s;
  s = LoadWith(dir, t, "", 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find(t), std::string::npos) << s;
  // A float tensor declared as blocks.
  s = LoadWith(dir, "model.layers.1.input_layernorm.weight", "q8_0", 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("input_layernorm"), std::string::npos) << s;
}

TEST(ModelQuantizeErrorsTest, OtherQuantizationMethodsAreRefusedByName) {
  auto c = ParseModelConfig(
      R"({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 4, "intermediate_size": 128,
          "vocab_size": 100, "max_position_embeddings": 64,
          "quantization_config": {"quant_method": "gptq", "bits": 4}})",
      "config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("quant_method"), std::string::npos)
      << c.status();
  EXPECT_NE(c.status().message().find("gptq"), std::string::npos);
  QuantizeOptions same;
  same.model_dir = same.out_dir = testing::TinyModel(Arch::kLlama);
  EXPECT_FALSE(QuantizeModel(same).ok());
}

}  // namespace
}  // namespace edgesplit
