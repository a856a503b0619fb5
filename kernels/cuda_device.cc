#include "kernels/cuda_device.h"

#include <string>

#include "absl/strings/str_cat.h"

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

absl::Status CudaErrorStatus(const char* op, int code) {
  if (code == 0) return absl::OkStatus();
#if EDGESPLIT_WITH_CUDA
  const auto err = static_cast<cudaError_t>(code);
  std::string message = absl::StrCat(op, ": ", cudaGetErrorName(err), ": ",
                                     cudaGetErrorString(err));
  switch (err) {
    case cudaErrorInvalidValue:
    case cudaErrorInvalidConfiguration:
      return absl::InvalidArgumentError(message);
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorNoKernelImageForDevice:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
#else
  return absl::InternalError(
      absl::StrCat(op, ": CUDA error ", code, " in a build without CUDA"));
#endif
}

bool CudaDeviceAvailable() {
  static const bool available = ProbeCudaDevice();
  return available;
}

}  // namespace edgesplit
