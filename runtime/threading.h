// How many threads compute, and who runs them. LibTorch parallelises its
// own kernels with OpenMP while OpenBLAS (pthread build) runs every matmul
// on its own thread pool: both pools on the same cores spin and yield
// against each other. Measured on the 1.1B model with 2 cores: decode at
// 128 tokens of context took 400 ms/token with both pools at 2 threads and
// 249 ms/token (the bandwidth floor) with OpenBLAS at 2 and OpenMP at 1.
// So matmuls get the threads and ATen's intra-op pool stays at one. The
// decode GEMVs (kernels/cpu) run on the kernels' pool of the same size:
// between two GEMMs OpenBLAS's workers spin briefly and then yield.
#ifndef EDGESPLIT_RUNTIME_THREADING_H_
#define EDGESPLIT_RUNTIME_THREADING_H_

#include <chrono>

namespace edgesplit {

// Emulation of a slower machine (what-if runs, tests, benchmarks): sleeps
// (factor - 1) x the time since `start`, so the work since then takes
// `factor` times as long. Nothing when factor <= 1. Returns the time slept.
std::chrono::nanoseconds EmulateSlowdown(
    std::chrono::steady_clock::time_point start, double factor);

// `threads` <= 0 means every core. Call once at start-up, before compute.
// Returns the number of threads the BLAS library will use.
int SetComputeThreads(int threads);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_THREADING_H_
