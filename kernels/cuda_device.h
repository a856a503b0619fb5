// Whether CUDA kernels can run in this process.
//
// Named cuda_device.h rather than cuda_runtime.h so that it can never be
// mistaken for (or shadow) the CUDA toolkit's <cuda_runtime.h>.
#ifndef EDGESPLIT_KERNELS_CUDA_DEVICE_H_
#define EDGESPLIT_KERNELS_CUDA_DEVICE_H_

#include "absl/status/status.h"

namespace edgesplit {

// The status of a CUDA runtime call `op` that returned `code` (a
// cudaError_t as int; 0 is success): INVALID_ARGUMENT for bad values or
// launch configurations, RESOURCE_EXHAUSTED for allocation failures,
// FAILED_PRECONDITION for a missing device, driver or kernel image, else
// INTERNAL; the message names `op` and the CUDA error.
absl::Status CudaErrorStatus(const char* op, int code);

// True when the kernels were built with CUDA (EDGESPLIT_WITH_CUDA) and the
// CUDA runtime reports at least one usable device. False, silently, on
// machines without a GPU or driver: edge devices are expected to take the
// CPU path, so this is a capability probe, not an error. The answer is
// computed once and cached (the CUDA runtime caches a failed initialisation
// anyway); thread-safe.
bool CudaDeviceAvailable();

}  // namespace edgesplit

#endif  // EDGESPLIT_KERNELS_CUDA_DEVICE_H_
