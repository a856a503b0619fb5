#include "base/worker_thread.h"

#include <utility>

namespace edgesplit {

WorkerThread::WorkerThread(std::function<void()> body)
    : thread_(std::move(body)) {}

WorkerThread& WorkerThread::operator=(WorkerThread&& other) {
  if (this != &other) {
    Join();
    thread_ = std::move(other.thread_);
  }
  return *this;
}

void WorkerThread::Join() {
  if (!thread_.joinable()) return;
  if (OnThisThread()) {
    thread_.detach();
  } else {
    thread_.join();
  }
}

bool WorkerThread::OnThisThread() const {
  return thread_.joinable() && thread_.get_id() == std::this_thread::get_id();
}

TaskQueueThread::TaskQueueThread()
    : thread_([state = state_] { Loop(state); }) {}

TaskQueueThread::~TaskQueueThread() {
  {
    absl::MutexLock lock(&state_->mu);
    state_->stopping = true;
  }
  thread_.Join();
}

void TaskQueueThread::Submit(std::function<void()> task) {
  absl::MutexLock lock(&state_->mu);
  state_->queue.push_back(std::move(task));
}

void TaskQueueThread::Loop(const std::shared_ptr<State>& state) {
  for (;;) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&state->mu);
      state->mu.Await(absl::Condition(
          +[](State* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu) {
            return s->stopping || !s->queue.empty();
          },
          state.get()));
      if (state->queue.empty()) return;  // Stopping with nothing left.
      task = std::move(state->queue.front());
      state->queue.pop_front();
    }
    task();
    // What the task captured goes here, outside the lock: it may be the
    // last reference to the queue's owner (see the header).
    task = nullptr;
  }
}

}  // namespace edgesplit
