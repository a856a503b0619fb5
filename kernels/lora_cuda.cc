// Host-side wrapper of the CUDA LoRA kernel: argument checks, the device
// probe and cudaError_t -> absl::Status. Compiled in every build.
#include "kernels/lora_cuda.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda_device.h"

#if EDGESPLIT_WITH_CUDA
#include "kernels/lora_cuda_launch.h"
#endif

namespace edgesplit::kernels {

int64_t LoraSgmvCudaScratch(const LoraSegment* segments, int64_t count) {
  int64_t n = 0;
  for (int64_t s = 0; s < count; ++s) n += segments[s].rows * segments[s].rank;
  return n;
}

absl::Status LoraSgmvCuda(const LoraSegment* segments, int64_t count,
                          const float* x, int64_t in, int64_t out, float* y,
                          float* scratch, CUstream_st* stream) {
  constexpr char kOp[] = "LoraSgmvCuda";
  if (count < 0 || count > kLoraCudaMaxSegments || in < 0 || out < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": ", count, " segments (at most ",
                     kLoraCudaMaxSegments, "), in ", in, ", out ", out));
  }
  bool any_rows = false;
  int64_t total_rows = 0;
  for (int64_t s = 0; s < count; ++s) {
    const LoraSegment& g = segments[s];
    if (g.rows < 0 || g.rows > kLoraCudaMaxRows || g.row_begin < 0 ||
        g.rank < 1 || g.rank > kLoraCudaMaxRank) {
      return absl::InvalidArgumentError(absl::StrCat(
          kOp, ": segment ", s, " has rows ", g.rows, " from ", g.row_begin,
          " and rank ", g.rank, " (1 to ", kLoraCudaMaxRank, ")"));
    }
    if (g.rows > 0 && (g.a == nullptr || g.b == nullptr)) {
      return absl::InvalidArgumentError(
          absl::StrCat(kOp, ": segment ", s, " has a null factor"));
    }
    any_rows = any_rows || g.rows > 0;
    total_rows += g.rows;
  }
  if (total_rows > kLoraCudaMaxRows) {
    return absl::InvalidArgumentError(absl::StrCat(
        kOp, ": ", total_rows, " rows (at most ", kLoraCudaMaxRows, ")"));
  }
  if (any_rows && in > 0 && out > 0 &&
      (x == nullptr || y == nullptr || scratch == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": null pointer"));
  }
  if (!CudaDeviceAvailable()) {
    return absl::FailedPreconditionError(
        absl::StrCat(kOp, ": no usable CUDA device"));
  }
  if (!any_rows || in == 0 || out == 0) return absl::OkStatus();
#if EDGESPLIT_WITH_CUDA
  kernels_internal::LoraSeg segs[kLoraCudaMaxSegments];
  for (int64_t s = 0; s < count; ++s) {
    const LoraSegment& g = segments[s];
    segs[s] = {g.row_begin, g.rows, g.a, g.b, g.rank, g.scaling};
  }
  return CudaErrorStatus(
      kOp, kernels_internal::LaunchLoraSgmv(segs, static_cast<int>(count), x,
                                            in, out, y, scratch, stream));
#else
  static_cast<void>(stream);
  return absl::InternalError("unreachable: no CUDA device in a CPU build");
#endif
}

}  // namespace edgesplit::kernels
