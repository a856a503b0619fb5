// Element types of tensors in checkpoints and on the wire.
#ifndef EDGESPLIT_RUNTIME_DTYPE_H_
#define EDGESPLIT_RUNTIME_DTYPE_H_

#include <cstddef>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace edgesplit {

enum class DType { kF32, kF16, kBF16, kF64, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element.
size_t DTypeSize(DType dtype);
// Safetensors spelling: "F32", "BF16", ...
absl::string_view DTypeName(DType dtype);
// Parses the safetensors spelling; INVALID_ARGUMENT names the value.
absl::StatusOr<DType> ParseDType(absl::string_view name);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_DTYPE_H_
