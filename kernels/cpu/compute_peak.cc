#include "kernels/cpu/compute_peak.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/compute_pool.h"
#include "kernels/cpu/gemv_internal.h"
#include "kernels/cpu/isa.h"

namespace edgesplit::kernels {
namespace {

// Operations per second of `fn` run on every pool thread: many small
// chunks, so a thread that starts late leaves its share to the others and
// the wall time still measures all of them working.
double Rate(internal::PeakFn fn, int reps) {
  constexpr int64_t kIters = 100000;  // ~0.3-1 ms per chunk.
  const int64_t chunks = int64_t{32} * KernelThreads();
  double best = 0;
  for (int rep = 0; rep < reps; ++rep) {
    std::atomic<int64_t> ops{0};
    std::atomic<uint32_t> sink_bits{0};
    const auto t0 = std::chrono::steady_clock::now();
    ParallelFor(chunks, 1, [&](int64_t b, int64_t e) {
      float sink = 0;
      int64_t n = 0;
      for (int64_t c = b; c < e; ++c) n += fn(kIters, &sink);
      ops.fetch_add(n, std::memory_order_relaxed);
      // Keeps the sums observable (they are never read).
      uint32_t bits;
      std::memcpy(&bits, &sink, sizeof(bits));
      sink_bits.fetch_xor(bits, std::memory_order_relaxed);
    });
    const double sec =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    best = std::max(best, static_cast<double>(ops.load()) / sec);
  }
  return best;
}

}  // namespace

ComputePeak MeasureComputePeak(int reps) {
  const internal::GemvKernels& k = internal::KernelsFor(ActiveIsa());
  ComputePeak peak;
  peak.f32_fma_per_s = Rate(k.peak_f32, reps);
  peak.i8_mac_per_s = Rate(k.peak_i8, reps);
  return peak;
}

}  // namespace edgesplit::kernels
