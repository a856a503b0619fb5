#include "runtime/threading.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <thread>

#include "kernels/cpu/compute_pool.h"

namespace edgesplit {

std::chrono::nanoseconds EmulateSlowdown(
    std::chrono::steady_clock::time_point start, double factor) {
  if (!(factor > 1.0)) return std::chrono::nanoseconds(0);
  const auto extra = std::chrono::duration_cast<std::chrono::nanoseconds>(
      (std::chrono::steady_clock::now() - start) * (factor - 1.0));
  std::this_thread::sleep_for(extra);
  return extra;
}

int SetComputeThreads(int threads) {
  if (threads <= 0) {
    threads = static_cast<int>(std::thread::hardware_concurrency());
    if (threads <= 0) threads = 1;
  }
  // OpenBLAS's thread API, when the BLAS behind LibTorch is OpenBLAS (looked
  // up at run time: Debian selects the BLAS through alternatives).
  using SetFn = void (*)(int);
  auto set_blas =
      reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set_blas != nullptr) {
    set_blas(threads);
    at::set_num_threads(1);
  } else {
    at::set_num_threads(threads);
  }
  // The decode GEMVs run on the kernels' own pool (see compute_pool.h).
  kernels::SetKernelThreads(threads);
  return threads;
}

}  // namespace edgesplit
