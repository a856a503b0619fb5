#include "edge_server/adapter_cache.h"

#include <ATen/ATen.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model_store.h"
#include "testing/test_models.h"

namespace edgesplit {
namespace {

AdapterCacheOptions Options(std::string dir, int64_t bytes) {
  AdapterCacheOptions o;
  o.dir = std::move(dir);
  o.memory_bytes = bytes;
  return o;
}

using ::edgesplit::testing::TempDir;
using ::testing::HasSubstr;

class AdapterCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = ModelStore::Open(testing::TinyModel(Arch::kLlama));
    ASSERT_TRUE(store.ok());
    config_ = (*store)->config();
    dir_ = TempDir("adapter_cache");
    for (const char* name : {"a", "b", "c"}) {
      LoraConfig c;
      c.r = 4;
      c.target_modules = {"q_proj", "v_proj"};
      auto a = LoraAdapter::Create(config_, c, {0, config_.num_layers}, name[0],
                                   name, /*zero_b=*/false);
      ASSERT_TRUE(a.ok());
      ASSERT_TRUE((*a)->SavePeft(dir_ + "/" + name).ok());
    }
  }
  // Bytes of one adapter's part on blocks [2, 4): 2 blocks x (q, v) x
  // (A [4, 64] + B [out, 4]) floats.
  int64_t PartBytes() const {
    const int64_t q_out = config_.num_heads * config_.head_dim;
    const int64_t v_out = config_.num_kv_heads * config_.head_dim;
    const int64_t h = config_.hidden_size;
    return 2 * 4 * (2 * 4 * h + 4 * q_out + 4 * v_out);
  }
  ModelConfig config_;
  std::string dir_;
};

TEST_F(AdapterCacheTest, LoadsOnceKeepsTheStagesBlocksAndEvictsLeastRecent) {
  // Room for two adapters' parts.
  AdapterCache cache(config_, {2, 4}, Options(dir_, 2 * PartBytes()));
  auto a = cache.Get("a");
  ASSERT_TRUE(a.ok()) << a.status();
  for (const auto& [module, f] : (*a)->modules()) {
    EXPECT_THAT(module, ::testing::AnyOf(HasSubstr("layers.2."),
                                         HasSubstr("layers.3.")));
  }
  EXPECT_EQ((*a)->modules().size(), 4u);
  auto again = cache.Get("a");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->get(), a->get());  // A hit: the same object.
  ASSERT_TRUE(cache.Get("b").ok());
  ASSERT_TRUE(cache.Get("a").ok());  // a is now the most recent...
  ASSERT_TRUE(cache.Get("c").ok());  // ...so c evicts b.
  AdapterCacheStats s = cache.stats();
  EXPECT_EQ(s.hits, 2);
  EXPECT_EQ(s.misses, 3);
  EXPECT_EQ(s.evictions, 1);
  EXPECT_EQ(s.resident, 2);
  EXPECT_EQ(s.resident_bytes, 2 * PartBytes());
  // b comes back from disk with the same factors; a was kept.
  auto b = cache.Get("b");
  ASSERT_TRUE(b.ok());
  auto fresh = LoraAdapter::LoadPeft(dir_ + "/b", config_, "b");
  ASSERT_TRUE(fresh.ok());
  for (const auto& [module, f] : (*b)->modules()) {
    const LoraFactors* w = (*fresh)->Find(module);
    ASSERT_NE(w, nullptr);
    EXPECT_TRUE(at::equal(f.a, w->a) && at::equal(f.b, w->b)) << module;
  }
  EXPECT_EQ(cache.stats().misses, 4);
  // An evicted adapter a session still holds stays valid.
  ASSERT_TRUE(cache.Get("c").ok());
  EXPECT_EQ((*a)->modules().size(), 4u);
}

TEST_F(AdapterCacheTest, AnAdapterLargerThanTheBudgetIsServedButNotKept) {
  AdapterCache cache(config_, {0, 4}, Options(dir_, 16));
  auto a = cache.Get("a");
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE((*a)->modules().empty());
  EXPECT_EQ(cache.stats().resident, 0);
}

TEST_F(AdapterCacheTest, BadNamesAndMissingAdaptersAreClearErrors) {
  AdapterCache cache(config_, {0, 4}, Options(dir_, 1 << 20));
  for (const char* bad : {"../a", "", ".hidden", "a/b", "train:job"}) {
    EXPECT_EQ(cache.Get(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  auto missing = cache.Get("zzz").status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.message(), HasSubstr("\"zzz\" is not in"));
  AdapterCache none(config_, {0, 4}, Options("", 1 << 20));
  EXPECT_THAT(none.Get("a").status().message(),
              HasSubstr("no adapter directory"));
  // An adapter for another model is refused naming its file.
  ModelConfig other = config_;
  other.hidden_size *= 2;
  other.head_dim *= 2;
  LoraConfig c;
  c.target_modules = {"q_proj"};
  auto wrong = LoraAdapter::Create(other, c, {0, 1}, 1, "w", false);
  ASSERT_TRUE(wrong.ok());
  ASSERT_TRUE((*wrong)->SavePeft(dir_ + "/wrong").ok());
  auto s = cache.Get("wrong").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("adapter_model.safetensors"));
}

}  // namespace
}  // namespace edgesplit
