#include "kernels/cpu/read_bandwidth.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>

#include "kernels/cpu/compute_pool.h"
#include "kernels/cpu/gemv_internal.h"

namespace edgesplit::kernels {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

ReadBandwidthProbe::ReadBandwidthProbe(int64_t bytes) {
  const size_t size =
      (static_cast<size_t>(bytes) + kHugePage - 1) / kHugePage * kHugePage;
  words_ = static_cast<uint64_t*>(std::aligned_alloc(kHugePage, size));
  if (words_ == nullptr) std::abort();  // As operator new would.
#ifdef MADV_HUGEPAGE
  madvise(words_, size, MADV_HUGEPAGE);  // A hint; failure is harmless.
#endif
  n_ = static_cast<int64_t>(size / 8);
  // Written by the pool's threads, as weights are loaded.
  ParallelFor(n_, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) words_[i] = static_cast<uint64_t>(i);
  });
}

ReadBandwidthProbe::~ReadBandwidthProbe() { std::free(words_); }

double ReadBandwidthProbe::Measure(int reps) {
  // The widest loads the CPU has (as the GEMV kernels use).
  const internal::SumFn sum = internal::KernelsFor(ActiveIsa()).sum_u64;
  std::atomic<uint64_t> sink{0};
  double best = 0;
  for (int rep = 0; rep < reps; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    ParallelFor(n_, 1 << 16, [&](int64_t b, int64_t e) {
      sink.fetch_add(sum(words_ + b, e - b), std::memory_order_relaxed);
    });
    const double sec =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    best = std::max(best, static_cast<double>(n_ * 8) / sec);
  }
  return best;
}

double MeasureReadBandwidth(int64_t bytes, int reps) {
  return ReadBandwidthProbe(bytes).Measure(reps);
}

}  // namespace edgesplit::kernels
