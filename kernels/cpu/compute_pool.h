// The kernels' compute threads: a fixed pool whose workers spin briefly
// between jobs (a decode step runs hundreds of GEMVs a few microseconds
// apart, and waking a sleeping thread costs about as much as one of them),
// then sleep on a condition variable so an idle process uses no CPU.
//
// LibTorch's OpenMP pool stays at one thread and OpenBLAS keeps its own for
// GEMM (runtime/threading.h); this pool runs the GEMV kernels and is sized
// by the same SetComputeThreads call.
#ifndef EDGESPLIT_KERNELS_CPU_COMPUTE_POOL_H_
#define EDGESPLIT_KERNELS_CPU_COMPUTE_POOL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"

namespace edgesplit::kernels {

class ComputePool {
 public:
  // `threads` counts the caller: threads - 1 workers are started.
  explicit ComputePool(int threads);
  ~ComputePool();  // Joins the workers; no Run may be in progress.
  ComputePool(const ComputePool&) = delete;
  ComputePool& operator=(const ComputePool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) on disjoint chunks of at most `grain` indices that
  // together cover [0, n), on the caller and the workers; returns when all
  // are done. Thread-safe: a Run that finds the pool busy with another
  // caller's job runs its whole range on its own thread instead of waiting.
  // `fn` must not call Run on the same pool.
  void Run(int64_t n, int64_t grain,
           absl::FunctionRef<void(int64_t, int64_t)> fn);

 private:
  struct Job {
    absl::FunctionRef<void(int64_t, int64_t)> fn;
    int64_t n, grain;
    std::atomic<int64_t> next{0};
  };
  static void Work(Job& job);
  void WorkerLoop();

  std::vector<std::thread> workers_;
  absl::Mutex run_mu_;  // Held by the caller whose job the pool runs.
  // The job being run, or null; workers count themselves in `active_`
  // before reading it so the caller can wait until none still uses it.
  std::atomic<Job*> job_{nullptr};
  std::atomic<int> active_{0};
  std::atomic<uint64_t> generation_{0};  // Bumped per job (wakes workers).
  std::atomic<int> sleepers_{0};
  absl::Mutex mu_;
  absl::CondVar cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> stopping_{false};
};

// The process-wide pool the kernels use (one thread until configured).
// Thread-safe; SetKernelThreads waits for a running job and replaces the
// pool. `threads` <= 0 means every core.
void SetKernelThreads(int threads);
int KernelThreads();
// Run() on the process-wide pool.
void ParallelFor(int64_t n, int64_t grain,
                 absl::FunctionRef<void(int64_t, int64_t)> fn);

}  // namespace edgesplit::kernels

#endif  // EDGESPLIT_KERNELS_CPU_COMPUTE_POOL_H_
