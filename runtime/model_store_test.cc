#include "runtime/model_store.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/generator.h"
#include "runtime/safetensors.h"
#include "runtime/torch_util.h"
#include "testing/test_models.h"

namespace edgesplit {
namespace {

namespace fs = std::filesystem;
using ::edgesplit::testing::TempDir;
using ::edgesplit::testing::TinyModel;
using ::testing::HasSubstr;

const std::vector<int32_t> kPrompt = {9, 8, 7, 100, 200, 300};

at::Tensor Logits(const std::string& dir, std::vector<int64_t> cuts = {}) {
  auto store = ModelStore::Open(dir);
  EXPECT_TRUE(store.ok()) << store.status();
  auto p = LocalPipeline::Load(**store, cuts);
  EXPECT_TRUE(p.ok()) << p.status();
  auto l = (*p)->NewSequence()->ForwardAll(kPrompt);
  EXPECT_TRUE(l.ok()) << l.status();
  return *l;
}

// Copies a model directory, letting `edit` rewrite the tensors.
std::string CopyModel(
    const std::string& from, const std::string& name,
    const std::function<void(std::map<std::string, at::Tensor>&)>& edit) {
  const std::string to = TempDir(name);
  for (const auto& e : fs::directory_iterator(from)) {
    if (e.path().filename() != "model.safetensors") {
      fs::copy(e.path(), to + "/" + e.path().filename().string());
    }
  }
  auto file = SafetensorsFile::Open(from + "/model.safetensors");
  EXPECT_TRUE(file.ok());
  std::map<std::string, at::Tensor> tensors;
  for (const TensorInfo& t : (*file)->tensors()) {
    tensors[t.name] = TensorFromSafetensors(*file, t, at::kFloat)->clone();
  }
  edit(tensors);
  SafetensorsWriter w;
  for (auto& [n, t] : tensors) {
    t = t.contiguous();
    EXPECT_TRUE(w.Add(n, DType::kF32, t.sizes().vec(),
                      {static_cast<const uint8_t*>(t.data_ptr()), t.nbytes()})
                    .ok());
  }
  EXPECT_TRUE(w.Write(to + "/model.safetensors").ok());
  return to;
}

TEST(ModelStoreTest, ShardedCheckpointEqualsSingleFile) {
  const std::string single = TinyModel(Arch::kLlama);
  const std::string sharded = TinyModel(Arch::kLlama, /*shard_bytes=*/60000);
  ASSERT_TRUE(fs::exists(sharded + "/model.safetensors.index.json"));
  EXPECT_TRUE(at::equal(Logits(single), Logits(sharded, {2})));
}

// A server holding the last blocks opens only the shards holding them, and
// never needs the others at all.
TEST(ModelStoreTest, LoadsOnlyTheShardsOfItsBlocks) {
  const std::string dir = TempDir("sharded_partial");
  for (const auto& e : fs::directory_iterator(TinyModel(Arch::kGpt2, 60000))) {
    fs::copy(e.path(), dir + "/" + e.path().filename().string());
  }
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->OpenedShards().empty());
  StageSpec tail{{3, 4}, false, false};
  auto w = (*store)->LoadStageWeights(tail, at::kFloat);
  ASSERT_TRUE(w.ok()) << w.status();
  for (const auto& [name, t] : *w) {
    EXPECT_THAT(name, HasSubstr("h.3.")) << "loaded a tensor of another block";
  }
  // Exactly the shards the index lists for block 3's tensors were opened.
  std::ifstream in(dir + "/model.safetensors.index.json");
  auto index = nlohmann::json::parse(in);
  std::set<std::string> needed, all;
  for (auto& [name, file] : index["weight_map"].items()) {
    all.insert(file.get<std::string>());
    if (name.find("h.3.") != std::string::npos) needed.insert(file);
  }
  const auto opened = (*store)->OpenedShards();
  EXPECT_EQ(std::set<std::string>(opened.begin(), opened.end()), needed);
  ASSERT_LT(needed.size(), all.size());
  // Delete every other shard: the tail stage still loads.
  for (const std::string& f : all) {
    if (needed.count(f) == 0) fs::remove(dir + "/" + f);
  }
  auto again = ModelStore::Open(dir);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE((*again)->LoadStageWeights(tail, at::kFloat).ok());
  auto head = (*again)->LoadStageWeights({{0, 1}, true, false}, at::kFloat);
  EXPECT_EQ(head.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(head.status().message(), HasSubstr("cannot open"));
}

// The original hub GPT-2 checkpoints have no "transformer." prefix.
TEST(ModelStoreTest, Gpt2WithoutPrefixLoads) {
  const std::string from = TinyModel(Arch::kGpt2);
  const std::string dir = CopyModel(from, "gpt2_noprefix", [](auto& t) {
    std::map<std::string, at::Tensor> renamed;
    for (auto& [n, v] : t) renamed[n.substr(sizeof("transformer.") - 1)] = v;
    t = renamed;
  });
  EXPECT_TRUE(at::equal(Logits(from), Logits(dir, {1})));
}

TEST(ModelStoreTest, Float16CheckpointLoadsConverted) {
  ModelInitOptions o;
  o.arch = Arch::kLlama;
  o.seed = 1234;
  o.dtype = DType::kF16;
  o.out_dir = TempDir("llama_f16");
  ASSERT_TRUE(InitModel(o).ok());
  at::Tensor half = Logits(o.out_dir);
  at::Tensor full = Logits(TinyModel(Arch::kLlama));
  EXPECT_LE((half - full).abs().max().item<double>(), 1e-2);
}

TEST(ModelStoreTest, MissingTensorIsNamed) {
  const std::string dir =
      CopyModel(TinyModel(Arch::kLlama), "missing",
                [](auto& t) { t.erase("model.layers.2.mlp.up_proj.weight"); });
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok());
  auto s = StageModel::Load(**store, {{2, 4}, false, true}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("model.layers.2.mlp.up_proj.weight"));
  // Other blocks still load.
  EXPECT_TRUE(StageModel::Load(**store, {{0, 2}, true, false}).ok());
}

TEST(ModelStoreTest, WrongShapeIsNamed) {
  const std::string dir =
      CopyModel(TinyModel(Arch::kLlama), "wrong_shape", [](auto& t) {
        t["model.layers.1.self_attn.k_proj.weight"] = at::zeros({3, 64});
      });
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok());
  auto s = StageModel::Load(**store, {{0, 4}, true, true}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("model.layers.1.self_attn.k_proj.weight"));
  EXPECT_THAT(s.message(), HasSubstr("[3, 64]"));
  EXPECT_THAT(s.message(), HasSubstr("[32, 64]"));
}

TEST(ModelStoreTest, CorruptFilesGiveErrorsNamingThem) {
  const std::string dir = TempDir("corrupt");
  for (const auto& e : fs::directory_iterator(TinyModel(Arch::kGpt2))) {
    fs::copy(e.path(), dir + "/" + e.path().filename().string());
  }
  const std::string st = dir + "/model.safetensors";
  // Truncated in the data section: offsets now run past the end.
  fs::resize_file(st, fs::file_size(st) / 2);
  auto s = ModelStore::Open(dir).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(st));
  EXPECT_THAT(s.message(), HasSubstr("past end of data"));
  fs::resize_file(st, 3);
  EXPECT_THAT(ModelStore::Open(dir).status().message(), HasSubstr("too short"));

  std::ofstream(dir + "/config.json")
      << "{\"model_type\": \"gpt2\", \"n_embd\": ";
  s = ModelStore::Open(dir).status();
  EXPECT_THAT(s.message(), HasSubstr(dir + "/config.json"));
  EXPECT_THAT(s.message(), HasSubstr("not valid JSON"));
  std::ofstream(dir + "/config.json") << R"({"model_type": "bert"})";
  EXPECT_THAT(ModelStore::Open(dir).status().message(),
              HasSubstr("unsupported model_type \"bert\""));
  EXPECT_EQ(ModelStore::Open(dir + "/nope").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ModelStoreTest, MissingTokenizerIsNamed) {
  const std::string dir =
      CopyModel(TinyModel(Arch::kGpt2), "no_tok", [](auto&) {});
  fs::remove(dir + "/vocab.json");
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok());
  auto tok = (*store)->LoadTokenizer();
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tok.status().message(), HasSubstr(dir));
  EXPECT_THAT(tok.status().message(), HasSubstr("no tokenizer"));
}

}  // namespace
}  // namespace edgesplit
