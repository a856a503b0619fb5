#include "kernels/cpu/compute_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace edgesplit::kernels {
namespace {

inline void CpuRelax() {
#if defined(__x86_64__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// How long an idle worker spins before it sleeps: longer than the gap
// between two GEMVs of a decode step (attention, norms), far shorter than
// anything a person would notice as a busy core.
constexpr auto kSpin = std::chrono::microseconds(300);

}  // namespace

ComputePool::ComputePool(int threads) {
  for (int i = 1; i < threads; ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

ComputePool::~ComputePool() {
  stopping_.store(true);
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  cv_.SignalAll();
  for (std::thread& t : workers_) t.join();
}

void ComputePool::Work(Job& job) {
  while (true) {
    const int64_t begin = job.next.fetch_add(job.grain);
    if (begin >= job.n) return;
    job.fn(begin, std::min(job.n, begin + job.grain));
  }
}

void ComputePool::WorkerLoop() {
  uint64_t seen = 0;
  while (true) {
    // Wait for a new generation: spin, then sleep.
    const auto start = std::chrono::steady_clock::now();
    int spins = 0;
    while (generation_.load() == seen) {
      CpuRelax();
      if (++spins % 256 == 0 &&
          std::chrono::steady_clock::now() - start > kSpin) {
        absl::MutexLock lock(&mu_);
        sleepers_.fetch_add(1);
        while (generation_.load() == seen && !stop_) cv_.Wait(&mu_);
        sleepers_.fetch_sub(1);
        break;
      }
    }
    if (stopping_.load()) return;
    seen = generation_.load();
    // Count in before reading the job: the caller clears job_ and then
    // waits for active_ == 0, so a job seen here stays alive until we leave.
    active_.fetch_add(1);
    if (Job* job = job_.load()) Work(*job);
    active_.fetch_sub(1);
  }
}

void ComputePool::Run(int64_t n, int64_t grain,
                      absl::FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  if (workers_.empty() || n <= grain || !run_mu_.TryLock()) {
    for (int64_t b = 0; b < n; b += grain) fn(b, std::min(n, b + grain));
    return;
  }
  Job job{fn, n, grain};
  job_.store(&job);
  generation_.fetch_add(1);
  if (sleepers_.load() > 0) {
    // Taking mu_ orders this wake-up after a worker's check-then-wait.
    { absl::MutexLock lock(&mu_); }
    cv_.SignalAll();
  }
  Work(job);
  job_.store(nullptr);
  while (active_.load() != 0) CpuRelax();
  run_mu_.Unlock();
}

namespace {

absl::Mutex global_mu(absl::kConstInit);
ComputePool* global_pool ABSL_GUARDED_BY(global_mu) = nullptr;

}  // namespace

void SetKernelThreads(int threads) {
  if (threads <= 0) {
    threads =
        std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  }
  absl::MutexLock lock(&global_mu);  // Waits for a running ParallelFor.
  if (global_pool != nullptr && global_pool->threads() == threads) return;
  delete global_pool;
  global_pool = new ComputePool(threads);
}

int KernelThreads() {
  absl::ReaderMutexLock lock(&global_mu);
  return global_pool == nullptr ? 1 : global_pool->threads();
}

void ParallelFor(int64_t n, int64_t grain,
                 absl::FunctionRef<void(int64_t, int64_t)> fn) {
  // Shared: concurrent callers each reach Run (which runs one job at a time
  // on the workers and the rest inline); SetKernelThreads waits for them.
  absl::ReaderMutexLock lock(&global_mu);
  if (global_pool == nullptr) {
    for (int64_t b = 0; b < n; b += std::max<int64_t>(grain, 1)) {
      fn(b, std::min(n, b + std::max<int64_t>(grain, 1)));
    }
    return;
  }
  global_pool->Run(n, grain, fn);
}

}  // namespace edgesplit::kernels
