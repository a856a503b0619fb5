#include "runtime/kv_cache.h"

#include "gtest/gtest.h"

namespace edgesplit {
namespace {

TEST(KvBudgetTest, ReserveAndRelease) {
  KvBudget b(100);
  EXPECT_TRUE(b.Reserve(60).ok());
  EXPECT_EQ(b.Reserve(41).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(b.used(), 60);
  EXPECT_TRUE(b.Reserve(40).ok());
  b.Release(100);
  EXPECT_EQ(b.used(), 0);
}

TEST(SequenceKvCacheTest, GrowsGeometricallyAndKeepsContents) {
  KvBudget budget(1 << 20);
  const int64_t layers = 2, heads = 2, dim = 4;
  SequenceKvCache c(layers, heads, dim, /*max_tokens=*/100, at::kFloat,
                    &budget);
  ASSERT_TRUE(c.Reserve(3).ok());
  EXPECT_EQ(c.capacity(), 16);
  EXPECT_EQ(budget.used(), 16 * 2 * layers * heads * dim * 4);
  at::Tensor k = at::arange(heads * 3 * dim, at::kFloat).view({heads, 3, dim});
  for (int64_t l = 0; l < layers; ++l) {
    auto [keys, values] = c.Append(l, k, k + 1);
    EXPECT_EQ(keys.size(1), 3);
  }
  c.Commit(3);
  ASSERT_TRUE(c.Reserve(20).ok());
  EXPECT_EQ(c.capacity(), 32);
  EXPECT_EQ(budget.used(), c.reserved_bytes());
  at::Tensor k2 = at::ones({heads, 1, dim});
  auto [keys, values] = c.Append(0, k2, k2);
  EXPECT_TRUE(at::equal(keys.narrow(1, 0, 3), k));
  EXPECT_TRUE(at::equal(values.narrow(1, 0, 3), k + 1));
  EXPECT_EQ(keys.size(1), 4);
  // Capacity never exceeds the context.
  ASSERT_TRUE(c.Reserve(90).ok());
  EXPECT_EQ(c.capacity(), 90);
  EXPECT_EQ(c.Reserve(101).code(), absl::StatusCode::kOutOfRange);
  c.Truncate(1);
  EXPECT_EQ(c.length(), 1);
}

TEST(SequenceKvCacheTest, ReleasesItsBudgetOnDestruction) {
  KvBudget budget(1 << 20);
  {
    SequenceKvCache c(1, 1, 8, 64, at::kFloat, &budget);
    ASSERT_TRUE(c.Reserve(10).ok());
    EXPECT_GT(budget.used(), 0);
  }
  EXPECT_EQ(budget.used(), 0);
}

TEST(SequenceKvCacheTest, BudgetFailureLeavesCacheUsable) {
  KvBudget budget(16 * 2 * 8 * 4);  // Exactly 16 tokens of 1 layer x 8 dims.
  SequenceKvCache c(1, 1, 8, 64, at::kFloat, &budget);
  ASSERT_TRUE(c.Reserve(16).ok());
  EXPECT_EQ(c.Reserve(17).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(c.capacity(), 16);
  EXPECT_EQ(budget.used(), c.reserved_bytes());
}

}  // namespace
}  // namespace edgesplit
