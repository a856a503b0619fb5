#include "base/worker_thread.h"

#include <atomic>
#include <memory>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace edgesplit {
namespace {

TEST(TaskQueueThreadTest, RunsTasksInOrderOnOneThread) {
  std::vector<int> order;
  absl::Notification done;
  {
    TaskQueueThread q;
    for (int i = 0; i < 100; ++i) {
      q.Submit([&order, &q, i] {
        EXPECT_TRUE(q.OnThisThread());
        order.push_back(i);
      });
    }
    q.Submit([&done] { done.Notify(); });
    EXPECT_FALSE(q.OnThisThread());
    done.WaitForNotification();
  }
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
}

TEST(TaskQueueThreadTest, DestructorRunsWhatIsQueued) {
  std::atomic<int> ran{0};
  {
    TaskQueueThread q;
    absl::Notification release;
    q.Submit([&release] { release.WaitForNotification(); });
    for (int i = 0; i < 10; ++i) q.Submit([&ran] { ++ran; });
    release.Notify();
  }  // Joins after the queue drains.
  EXPECT_EQ(ran.load(), 10);
}

// The owner of a queue goes inside one of the queue's own tasks (its last
// reference was captured there): the queue detaches instead of joining
// itself, and the tasks queued behind still run.
struct Owner {
  TaskQueueThread queue;
};

TEST(TaskQueueThreadTest, DestroyedFromItsOwnTask) {
  auto owner = std::make_shared<Owner>();
  std::weak_ptr<Owner> weak = owner;
  // Shared: the detached thread may still be inside Notify() when the
  // test returns.
  auto go = std::make_shared<absl::Notification>();
  auto after = std::make_shared<absl::Notification>();
  TaskQueueThread* q = &owner->queue;
  q->Submit([go, owner = std::move(owner)]() mutable {
    go->WaitForNotification();
    owner.reset();  // ~Owner -> ~TaskQueueThread on its own thread.
  });
  q->Submit([after] { after->Notify(); });
  go->Notify();
  after->WaitForNotification();
  EXPECT_TRUE(weak.expired());
}

TEST(WorkerThreadTest, JoinWaitsForTheBody) {
  std::atomic<bool> ran{false};
  WorkerThread t([&ran] { ran = true; });
  EXPECT_FALSE(t.OnThisThread());
  t.Join();
  EXPECT_TRUE(ran.load());
  t.Join();  // A second join is a no-op.
}

TEST(WorkerThreadTest, DestroyedFromItsOwnBody) {
  struct Holder {
    WorkerThread thread;
  };
  auto holder = std::make_shared<Holder>();
  auto started = std::make_shared<absl::Notification>();
  auto destroyed = std::make_shared<absl::Notification>();
  auto shared = std::make_shared<std::atomic<bool>>(false);
  std::shared_ptr<Holder> keep = holder;
  holder->thread = WorkerThread(
      [started, destroyed, shared, keep = std::move(keep)]() mutable {
        started->WaitForNotification();
        keep.reset();         // The last reference: ~Holder joins on itself.
        shared->store(true);  // Only shared state after that point.
        destroyed->Notify();
      });
  holder.reset();
  started->Notify();
  destroyed->WaitForNotification();
  EXPECT_TRUE(shared->load());
}

}  // namespace
}  // namespace edgesplit
