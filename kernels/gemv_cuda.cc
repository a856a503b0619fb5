// Host-side wrapper of the CUDA GEMV: argument checks, the device probe and
// cudaError_t -> absl::Status. Compiled in every build.
#include "kernels/gemv_cuda.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_device.h"
#include "kernels/gemv_cuda_launch.h"

namespace edgesplit::kernels {
namespace {

absl::Status Check(const char* op, WeightType type, const void* w, int64_t out,
                   int64_t in, bool pointers_ok) {
  if (out < 0 || in < 0 || !CheckCols(type, in)) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": a [", out, ", ", in, "] ", WeightTypeName(type),
        " matrix is not valid (rows of ", BlockWeights(type), ")"));
  }
  if (out > 0 && in > 0 && (w == nullptr || !pointers_ok)) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": null pointer"));
  }
  if (!CudaDeviceAvailable()) {
    return absl::FailedPreconditionError(
        absl::StrCat(op, ": no usable CUDA device"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status GemvCuda(WeightType type, const void* w, int64_t out, int64_t in,
                      const float* x, int64_t rows, float* y,
                      CUstream_st* stream, void* scratch) {
  constexpr char kOp[] = "GemvCuda";
  if (rows < 0 || rows > kGemvCudaMaxRows) {
    return absl::InvalidArgumentError(absl::StrCat(
        kOp, ": ", rows, " rows (at most ", kGemvCudaMaxRows, ")"));
  }
  if (reinterpret_cast<uintptr_t>(w) % 4 != 0 ||
      reinterpret_cast<uintptr_t>(x) % 4 != 0 ||
      reinterpret_cast<uintptr_t>(scratch) % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": w, x and scratch must be 4-byte aligned"));
  }
  if (absl::Status s = Check(kOp, type, w, out, in, rows == 0 || (x && y));
      !s.ok()) {
    return s;
  }
  if (rows == 0 || out == 0) return absl::OkStatus();
#if EDGESPLIT_WITH_CUDA
  return CudaErrorStatus(
      kOp, kernels_internal::LaunchGemv(static_cast<int>(type), w, out, in, x,
                                        rows, y, stream, scratch));
#else
  static_cast<void>(stream);
  static_cast<void>(scratch);
  return absl::InternalError("unreachable: no CUDA device in a CPU build");
#endif
}

int64_t GemvCudaScratchBytes(WeightType type, int64_t rows, int64_t in) {
  return kernels_internal::GemvScratchBytes(static_cast<int>(type), rows, in);
}

absl::Status DequantizeRowsCuda(WeightType type, const void* w, int64_t n,
                                int64_t in, float* out, CUstream_st* stream) {
  constexpr char kOp[] = "DequantizeRowsCuda";
  if (absl::Status s = Check(kOp, type, w, n, in, out != nullptr); !s.ok()) {
    return s;
  }
  if (n == 0 || in == 0) return absl::OkStatus();
#if EDGESPLIT_WITH_CUDA
  return CudaErrorStatus(
      kOp, kernels_internal::LaunchDequantizeRows(static_cast<int>(type), w, n,
                                                  in, out, stream));
#else
  static_cast<void>(stream);
  return absl::InternalError("unreachable: no CUDA device in a CPU build");
#endif
}

}  // namespace edgesplit::kernels
