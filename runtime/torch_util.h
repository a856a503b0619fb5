// The seam between LibTorch and the rest of edgesplit: c10::Error becomes an
// absl::Status here and nowhere else, plus dtype and safetensors conversions.
#ifndef EDGESPLIT_RUNTIME_TORCH_UTIL_H_
#define EDGESPLIT_RUNTIME_TORCH_UTIL_H_

#include <ATen/ATen.h>

#include <memory>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/dtype.h"
#include "runtime/safetensors.h"

namespace edgesplit {

absl::Status StatusFromTorchError(absl::string_view what,
                                  const std::exception& e);

// Runs `f` (returning absl::Status or absl::StatusOr<T>) and converts any
// LibTorch exception into INTERNAL naming `what`. Public entry points of the
// tensor code wrap their bodies in it; nothing else catches c10::Error.
template <typename F>
auto TorchCall(absl::string_view what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception& e) {
    return StatusFromTorchError(what, e);
  }
}

at::ScalarType ToScalarType(DType dtype);
absl::StatusOr<DType> FromScalarType(at::ScalarType type);
// "float32" / "float16" / "bfloat16" (config.json torch_dtype spelling).
absl::StatusOr<at::ScalarType> ParseTorchDtype(absl::string_view name);

// A tensor over a safetensors file's bytes. Zero-copy (the tensor keeps the
// file mapped) when the dtype already is `want` and the data is aligned;
// otherwise a converted copy. The zero-copy tensor is read-only memory:
// never modify it in place.
absl::StatusOr<at::Tensor> TensorFromSafetensors(
    const std::shared_ptr<const SafetensorsFile>& file, const TensorInfo& info,
    at::ScalarType want);

// Contiguous CPU bytes of `t` for writing (copies only when needed).
at::Tensor ContiguousCpu(const at::Tensor& t);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TORCH_UTIL_H_
