#include "runtime/lora.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/generator.h"
#include "runtime/safetensors.h"
#include "testing/test_models.h"

namespace edgesplit {
namespace {

using ::edgesplit::testing::TempDir;
using ::edgesplit::testing::TinyModel;
using ::testing::HasSubstr;

const std::vector<int32_t> kPrompt = {5, 17, 42, 99, 3, 250};

class LoraTest : public ::testing::TestWithParam<Arch> {
 protected:
  void SetUp() override {
    auto store = ModelStore::Open(TinyModel(GetParam()));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }
  LoraConfig Config() const {
    LoraConfig c;
    c.r = 4;
    c.alpha = 8;
    if (GetParam() == Arch::kLlama) {
      c.target_modules = {"q_proj", "v_proj", "down_proj"};
    } else {
      c.target_modules = {"c_attn", "c_proj"};
    }
    return c;
  }
  std::shared_ptr<LoraAdapter> Make(BlockRange blocks, bool zero_b,
                                    std::string name = "a") {
    auto a = LoraAdapter::Create(store_->config(), Config(), blocks, 7,
                                 std::move(name), zero_b);
    EXPECT_TRUE(a.ok()) << a.status();
    return std::shared_ptr<LoraAdapter>(std::move(*a));
  }
  // Logits of kPrompt through a pipeline with `adapter` attached and used.
  at::Tensor Logits(std::vector<int64_t> cuts,
                    std::shared_ptr<LoraAdapter> adapter) {
    auto p = LocalPipeline::Load(*store_, cuts);
    EXPECT_TRUE(p.ok());
    std::string name;
    if (adapter) {
      name = adapter->name();
      EXPECT_TRUE((*p)->AttachAdapter(adapter).ok());
    }
    auto seq = (*p)->NewSequence(nullptr, name);
    auto l = seq->ForwardAll(kPrompt);
    EXPECT_TRUE(l.ok()) << l.status();
    return *l;
  }
  std::unique_ptr<ModelStore> store_;
};

TEST_P(LoraTest, ZeroBGivesBaseOutput) {
  const int64_t n = store_->config().num_layers;
  at::Tensor base = Logits({}, nullptr);
  at::Tensor with = Logits({}, Make({0, n}, /*zero_b=*/true));
  EXPECT_TRUE(at::equal(base, with));
}

TEST_P(LoraTest, NonZeroAdapterChangesOutputAndSplitEqualsWhole) {
  const int64_t n = store_->config().num_layers;
  auto adapter = Make({0, n}, false);
  at::Tensor base = Logits({}, nullptr);
  at::Tensor whole = Logits({}, adapter);
  at::Tensor split = Logits({1, 3}, adapter);
  EXPECT_GT((whole - base).abs().max().item<double>(), 1e-4);
  EXPECT_LE((whole - split).abs().max().item<double>(), 1e-5);
}

TEST_P(LoraTest, MergedEqualsUnmerged) {
  const int64_t n = store_->config().num_layers;
  auto adapter = Make({0, n}, false);
  at::Tensor unmerged = Logits({2}, adapter);
  auto p = LocalPipeline::Load(*store_, {2});
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE((*p)->AttachAdapter(adapter).ok());
  for (auto& s : (*p)->stages()) ASSERT_TRUE(s->MergeAdapter("a").ok());
  auto seq = (*p)->NewSequence();
  auto merged = seq->ForwardAll(kPrompt);
  ASSERT_TRUE(merged.ok());
  EXPECT_LE((*merged - unmerged).abs().max().item<double>(), 1e-5);
  // Merging must not touch the shared, memory-mapped base weights.
  EXPECT_TRUE(at::equal(Logits({2}, nullptr), Logits({}, nullptr)));
}

TEST_P(LoraTest, SaveLoadRoundTripIsExact) {
  const int64_t n = store_->config().num_layers;
  auto adapter = Make({0, n}, false);
  const std::string dir = TempDir("lora_roundtrip");
  ASSERT_TRUE(adapter->SavePeft(dir).ok());
  auto loaded = LoraAdapter::LoadPeft(dir, store_->config(), "b");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->config().r, 4);
  EXPECT_EQ((*loaded)->config().alpha, 8);
  EXPECT_EQ((*loaded)->config().target_modules, Config().target_modules);
  ASSERT_EQ((*loaded)->modules().size(), adapter->modules().size());
  for (const auto& [module, f] : adapter->modules()) {
    const LoraFactors* g = (*loaded)->Find(module);
    ASSERT_NE(g, nullptr) << module;
    EXPECT_TRUE(at::equal(f.a, g->a)) << module;
    EXPECT_TRUE(at::equal(f.b, g->b)) << module;
  }
  EXPECT_TRUE(
      at::equal(Logits({}, adapter),
                Logits({}, std::shared_ptr<LoraAdapter>(std::move(*loaded)))));
}

// The on-disk names are Hugging Face PEFT's, so PEFT loads our adapters.
TEST_P(LoraTest, WritesPeftNames) {
  auto adapter = Make({0, 1}, false);
  const std::string dir = TempDir("lora_names");
  ASSERT_TRUE(adapter->SavePeft(dir).ok());
  auto file = SafetensorsFile::Open(dir + "/adapter_model.safetensors");
  ASSERT_TRUE(file.ok());
  const ModelConfig& c = store_->config();
  if (GetParam() == Arch::kLlama) {
    const TensorInfo* a = (*file)->Find(
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->shape, (std::vector<int64_t>{4, c.hidden_size}));
    const TensorInfo* b = (*file)->Find(
        "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(b->shape, (std::vector<int64_t>{c.hidden_size, 4}));
  } else {
    const TensorInfo* a = (*file)->Find(
        "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight");
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->shape, (std::vector<int64_t>{4, c.hidden_size}));
    const TensorInfo* b = (*file)->Find(
        "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight");
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(b->shape, (std::vector<int64_t>{3 * c.hidden_size, 4}));
    EXPECT_NE((*file)->Find(
                  "base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight"),
              nullptr);
  }
  std::ifstream in(dir + "/adapter_config.json");
  auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j["peft_type"], "LORA");
  EXPECT_EQ(j["r"], 4);
  EXPECT_EQ(j["fan_in_fan_out"], GetParam() == Arch::kGpt2);
}

// An adapter on blocks [1, 2) changes nothing before block 1.
TEST_P(LoraTest, AdapterAppliesOnlyToItsBlocks) {
  auto adapter = Make({1, 2}, false);
  for (const auto& [module, f] : adapter->modules()) {
    EXPECT_THAT(module,
                ::testing::AnyOf(HasSubstr("layers.1."), HasSubstr("h.1.")));
  }
  auto p = LocalPipeline::Load(*store_, {1});
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE((*p)->AttachAdapter(adapter).ok());
  const StageModel& first = *(*p)->stages()[0];
  auto run_first = [&](const std::string& name) {
    auto cache = first.NewCache(nullptr);
    StageInput in;
    in.sequences = {{cache.get(), static_cast<int64_t>(kPrompt.size())}};
    in.tokens = at::tensor(std::vector<int64_t>(kPrompt.begin(), kPrompt.end()),
                           at::kLong);
    in.adapter = name;
    auto out = first.Forward(in);
    EXPECT_TRUE(out.ok());
    return *out;
  };
  EXPECT_TRUE(at::equal(run_first(""), run_first("a")));
  EXPECT_GT(
      (Logits({1}, adapter) - Logits({1}, nullptr)).abs().max().item<double>(),
      1e-4);
  auto slice = adapter->Slice(store_->config(), {0, 1});
  EXPECT_TRUE(slice->modules().empty());
}

TEST_P(LoraTest, SeveralAdaptersOverOneBase) {
  const int64_t n = store_->config().num_layers;
  auto a = Make({0, n}, false, "a");
  auto b =
      LoraAdapter::Create(store_->config(), Config(), {0, n}, 99, "b", false);
  ASSERT_TRUE(b.ok());
  auto p = LocalPipeline::Load(*store_, {2});
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE((*p)->AttachAdapter(a).ok());
  ASSERT_TRUE((*p)->AttachAdapter(std::move(*b)).ok());
  EXPECT_EQ((*p)->AttachAdapter(a).code(), absl::StatusCode::kAlreadyExists);
  auto run = [&](const std::string& name) {
    auto s = (*p)->NewSequence(nullptr, name);
    auto l = s->ForwardAll(kPrompt);
    EXPECT_TRUE(l.ok());
    return *l;
  };
  at::Tensor base = run(""), la = run("a"), lb = run("b");
  EXPECT_TRUE(at::equal(base, Logits({}, nullptr)));
  EXPECT_TRUE(at::equal(la, Logits({}, a)));
  EXPECT_GT((la - lb).abs().max().item<double>(), 1e-4);
}

TEST_P(LoraTest, MalformedAdaptersAreRejected) {
  const std::string dir = TempDir("lora_bad");
  EXPECT_EQ(LoraAdapter::LoadPeft(dir, store_->config(), "x").status().code(),
            absl::StatusCode::kNotFound);
  // Save an adapter for a model with another hidden size.
  ModelConfig other = store_->config();
  other.hidden_size *= 2;
  other.head_dim *= 2;
  auto wrong = LoraAdapter::Create(other, Config(), {0, 1}, 1, "w", false);
  ASSERT_TRUE(wrong.ok());
  ASSERT_TRUE((*wrong)->SavePeft(dir).ok());
  auto s = LoraAdapter::LoadPeft(dir, store_->config(), "x").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("factor shapes do not match"));
  std::ofstream(dir + "/adapter_config.json")
      << R"({"peft_type":"LORA","r":0})";
  s = LoraAdapter::LoadPeft(dir, store_->config(), "x").status();
  EXPECT_THAT(s.message(), HasSubstr("field \"r\""));
  EXPECT_THAT(s.message(), HasSubstr("adapter_config.json"));
}

INSTANTIATE_TEST_SUITE_P(Archs, LoraTest,
                         ::testing::Values(Arch::kGpt2, Arch::kLlama),
                         [](const auto& info) {
                           return std::string(ArchName(info.param));
                         });

}  // namespace
}  // namespace edgesplit
