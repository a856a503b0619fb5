#include "kernels/cuda_device.h"

#if EDGESPLIT_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace edgesplit {
namespace {

bool ProbeCudaDevice() {
#if EDGESPLIT_WITH_CUDA
  int count = 0;
  // Without a driver this returns cudaErrorInsufficientDriver or
  // cudaErrorNoDevice; it neither prints nor aborts.
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    // Clear the per-thread last error so later, unrelated cudaGetLastError()
    // checks on this thread don't report our probe's failure.
    cudaGetLastError();
    return false;
  }
  return count > 0;
#else
  return false;
#endif
}

}  // namespace

bool CudaDeviceAvailable() {
  static const bool available = ProbeCudaDevice();
  return available;
}

}  // namespace edgesplit
