#include "kernels/cpu/read_bandwidth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <vector>

#include "kernels/cpu/compute_pool.h"
#include "kernels/cpu/gemv_internal.h"

namespace edgesplit::kernels {

double MeasureReadBandwidth(int64_t bytes, int reps) {
  const int64_t n = bytes / 8;
  std::vector<uint64_t> buf(static_cast<size_t>(n));
  // Written by the pool's threads, as weights are loaded.
  ParallelFor(n, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) buf[i] = static_cast<uint64_t>(i);
  });
  std::atomic<uint64_t> sink{0};
  // The widest loads the CPU has (as the GEMV kernels use).
  const internal::SumFn sum = internal::KernelsFor(ActiveIsa()).sum_u64;
  double best = 0;
  for (int rep = 0; rep < reps; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    ParallelFor(n, 1 << 16, [&](int64_t b, int64_t e) {
      sink.fetch_add(sum(buf.data() + b, e - b), std::memory_order_relaxed);
    });
    const double sec =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    best = std::max(best, static_cast<double>(n * 8) / sec);
  }
  return best;
}

}  // namespace edgesplit::kernels
