// Host-side wrapper for the CUDA codec: argument checks, the device probe
// and cudaError_t -> absl::Status. Compiled in every build; without CUDA the
// entry points only report that the path is unavailable.
#include "kernels/quantize_cuda.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda_device.h"

#if EDGESPLIT_WITH_CUDA
#include <cuda_runtime_api.h>

#include "kernels/quantize_cuda_launch.h"
#endif

namespace edgesplit {
namespace {

#if EDGESPLIT_WITH_CUDA
constexpr char kNoDeviceDetail[] = "";
#else
constexpr char kNoDeviceDetail[] = " (edgesplit was built without CUDA)";
#endif

absl::Status CheckArgs(const char* op, int64_t rows, int64_t cols,
                       bool pointers_ok) {
  if (rows < 0 || cols < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": negative shape [", rows, ", ", cols, "]"));
  }
  if (!pointers_ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": null pointer for a [", rows, ", ", cols, "] matrix"));
  }
  if (!CudaDeviceAvailable()) {
    return absl::FailedPreconditionError(
        absl::StrCat(op, ": no usable CUDA device", kNoDeviceDetail));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status QuantizeInt8PerTokenCuda(const float* x, int64_t rows,
                                      int64_t cols, int8_t* q, float* scales,
                                      CUstream_st* stream) {
  constexpr char kOp[] = "QuantizeInt8PerTokenCuda";
  // scales is written for every row, even when cols == 0.
  const bool pointers_ok =
      (rows == 0 || scales != nullptr) &&
      (rows == 0 || cols == 0 || (x != nullptr && q != nullptr));
  if (absl::Status s = CheckArgs(kOp, rows, cols, pointers_ok); !s.ok()) {
    return s;
  }
  if (rows == 0) return absl::OkStatus();
#if EDGESPLIT_WITH_CUDA
  return CudaErrorStatus(kOp, kernels_internal::LaunchQuantizeInt8PerToken(
                                  x, rows, cols, q, scales, stream));
#else
  static_cast<void>(stream);
  return absl::InternalError("unreachable: no CUDA device in a CPU build");
#endif
}

absl::Status DequantizeInt8PerTokenCuda(const int8_t* q, const float* scales,
                                        int64_t rows, int64_t cols, float* x,
                                        CUstream_st* stream) {
  constexpr char kOp[] = "DequantizeInt8PerTokenCuda";
  const bool pointers_ok = rows == 0 || cols == 0 ||
                           (q != nullptr && scales != nullptr && x != nullptr);
  if (absl::Status s = CheckArgs(kOp, rows, cols, pointers_ok); !s.ok()) {
    return s;
  }
  if (rows == 0 || cols == 0) return absl::OkStatus();
#if EDGESPLIT_WITH_CUDA
  return CudaErrorStatus(kOp, kernels_internal::LaunchDequantizeInt8PerToken(
                                  q, scales, rows, cols, x, stream));
#else
  static_cast<void>(stream);
  return absl::InternalError("unreachable: no CUDA device in a CPU build");
#endif
}

}  // namespace edgesplit
