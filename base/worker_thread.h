// A thread owned by an object that its own work may destroy.
//
// Servers hand work to a thread of their own (a stage's batcher, a training
// job's queue), and that work ends in callbacks which may drop the last
// reference to the very object that owns the thread: a session finishing
// inside its batch's callback, a job going with its last session inside one
// of its own tasks. Joining there would wait forever on itself. So the rule
// lives here, once: a WorkerThread destroyed (or joined) on the thread it
// runs detaches instead, and its body must then touch only state it holds
// by shared_ptr, never the owner. Both classes state what they keep.
#ifndef EDGESPLIT_BASE_WORKER_THREAD_H_
#define EDGESPLIT_BASE_WORKER_THREAD_H_

#include <deque>
#include <functional>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace edgesplit {

// One thread running `body` until it returns. Not copyable; Join() and the
// destructor may be called from any thread, the worker's own included.
class WorkerThread {
 public:
  WorkerThread() = default;
  explicit WorkerThread(std::function<void()> body);
  WorkerThread(WorkerThread&&) = default;
  WorkerThread& operator=(WorkerThread&& other);
  ~WorkerThread() { Join(); }

  // Waits for `body` to return; on the worker itself, detaches instead (the
  // body then finishes on its own after the caller returns to it).
  void Join();
  // True when the caller runs on this worker.
  bool OnThisThread() const;

 private:
  std::thread thread_;
};

// A serial executor: tasks run one at a time on one WorkerThread, in the
// order submitted. Thread-safe. The destructor runs the tasks already
// queued, then ends the thread (it joins, or detaches when the queue is
// destroyed by one of its own tasks: the remaining tasks then still run,
// since the queue's state is shared with the thread, not owned by `this`).
class TaskQueueThread {
 public:
  TaskQueueThread();
  ~TaskQueueThread();
  TaskQueueThread(const TaskQueueThread&) = delete;
  TaskQueueThread& operator=(const TaskQueueThread&) = delete;

  void Submit(std::function<void()> task);
  bool OnThisThread() const { return thread_.OnThisThread(); }

 private:
  struct State {
    absl::Mutex mu;
    std::deque<std::function<void()>> queue ABSL_GUARDED_BY(mu);
    bool stopping ABSL_GUARDED_BY(mu) = false;
  };
  static void Loop(const std::shared_ptr<State>& state);

  std::shared_ptr<State> state_ = std::make_shared<State>();
  WorkerThread thread_;  // Last: starts after state_ exists.
};

}  // namespace edgesplit

#endif  // EDGESPLIT_BASE_WORKER_THREAD_H_
