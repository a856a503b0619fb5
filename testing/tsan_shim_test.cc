// Under EDGESPLIT_TSAN: data handed between threads through each of
// Abseil's synchronization primitives is not reported as a race (TSan
// fails the process if it is), so tsan_absl_shim.cc covers what the
// project uses.
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace {

TEST(TsanShimTest, MutexAndReaderLock) {
  absl::Mutex mu;
  int guarded = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        if (i % 2 == 0) {
          absl::MutexLock lock(&mu);
          ++guarded;
        } else {
          absl::ReaderMutexLock lock(&mu);
          EXPECT_GE(guarded, 0);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(guarded, 2000);
}

TEST(TsanShimTest, AwaitCondVarAndNotification) {
  absl::Mutex mu;
  absl::CondVar cv;
  int stage = 0;
  int payload = 0;  // Written before each hand-off, read after it.
  absl::Notification done;
  std::thread worker([&] {
    payload = 1;
    {
      absl::MutexLock lock(&mu);
      stage = 1;
      cv.Signal();
    }
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(
        +[](int* s) { return *s == 2; }, &stage));
    payload = 3;
    done.Notify();
  });
  {
    absl::MutexLock lock(&mu);
    while (stage != 1) cv.Wait(&mu);
  }
  EXPECT_EQ(payload, 1);
  payload = 2;
  {
    absl::MutexLock lock(&mu);
    stage = 2;
  }
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(payload, 3);
  worker.join();
}

}  // namespace
