#include "kernels/cpu/compute_pool.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace edgesplit::kernels {
namespace {

void ExpectCoversOnce(ComputePool& pool, int64_t n, int64_t grain) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
  pool.Run(n, grain, [&](int64_t b, int64_t e) {
    ASSERT_LE(e - b, std::max<int64_t>(grain, 1));
    for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
  });
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << i;
}

TEST(ComputePoolTest, EveryIndexRunsExactlyOnce) {
  ComputePool pool(3);
  EXPECT_EQ(pool.threads(), 3);
  for (int64_t n : {0, 1, 7, 64, 1000, 4097}) {
    for (int64_t grain : {0, 1, 3, 64, 5000}) ExpectCoversOnce(pool, n, grain);
  }
}

TEST(ComputePoolTest, WorkersShareTheWork) {
  ComputePool pool(2);
  std::atomic<int> caller{0}, other{0};
  const auto me = std::this_thread::get_id();
  pool.Run(64, 1, [&](int64_t, int64_t) {
    (std::this_thread::get_id() == me ? caller : other).fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  EXPECT_EQ(caller + other, 64);
  EXPECT_GT(other.load(), 0);
}

TEST(ComputePoolTest, SleepingWorkersWakeAndConcurrentCallersFinish) {
  ComputePool pool(2);
  ExpectCoversOnce(pool, 100, 1);
  // Long enough for the worker to stop spinning and sleep.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ExpectCoversOnce(pool, 100, 1);
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&pool] {
      for (int i = 0; i < 200; ++i) ExpectCoversOnce(pool, 50 + i, 4);
    });
  }
  for (std::thread& t : callers) t.join();
}

TEST(ComputePoolTest, GlobalPoolResizes) {
  SetKernelThreads(3);
  EXPECT_EQ(KernelThreads(), 3);
  std::atomic<int64_t> sum{0};
  ParallelFor(1000, 7, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) sum += i;
  });
  EXPECT_EQ(sum.load(), 999 * 1000 / 2);
  SetKernelThreads(1);
  EXPECT_EQ(KernelThreads(), 1);
}

}  // namespace
}  // namespace edgesplit::kernels
