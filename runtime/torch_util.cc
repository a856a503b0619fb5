#include "runtime/torch_util.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace edgesplit {

absl::Status StatusFromTorchError(absl::string_view what,
                                  const std::exception& e) {
  // c10::Error::what() carries a backtrace; its first line is the message.
  absl::string_view msg = e.what();
  if (auto* ce = dynamic_cast<const c10::Error*>(&e)) {
    msg = ce->msg();
  }
  msg = msg.substr(0, msg.find('\n'));
  return absl::InternalError(absl::StrCat(what, ": ", msg));
}

at::ScalarType ToScalarType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return at::kFloat;
    case DType::kF16:
      return at::kHalf;
    case DType::kBF16:
      return at::kBFloat16;
    case DType::kF64:
      return at::kDouble;
    case DType::kI64:
      return at::kLong;
    case DType::kI32:
      return at::kInt;
    case DType::kI16:
      return at::kShort;
    case DType::kI8:
      return at::kChar;
    case DType::kU8:
      return at::kByte;
    case DType::kBool:
      return at::kBool;
  }
  return at::kFloat;  // Unreachable: the switch is exhaustive.
}

absl::StatusOr<DType> FromScalarType(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return DType::kF32;
    case at::kHalf:
      return DType::kF16;
    case at::kBFloat16:
      return DType::kBF16;
    case at::kDouble:
      return DType::kF64;
    case at::kLong:
      return DType::kI64;
    case at::kInt:
      return DType::kI32;
    case at::kShort:
      return DType::kI16;
    case at::kChar:
      return DType::kI8;
    case at::kByte:
      return DType::kU8;
    case at::kBool:
      return DType::kBool;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unsupported tensor type ", c10::toString(type)));
  }
}

absl::StatusOr<at::ScalarType> ParseTorchDtype(absl::string_view name) {
  if (name == "float32" || name == "fp32" || name == "f32") return at::kFloat;
  if (name == "float16" || name == "fp16" || name == "f16") return at::kHalf;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  return absl::InvalidArgumentError(absl::StrCat(
      "unsupported dtype \"", name, "\" (float32, float16, bfloat16)"));
}

absl::StatusOr<at::Tensor> TensorFromSafetensors(
    const std::shared_ptr<const SafetensorsFile>& file, const TensorInfo& info,
    at::ScalarType want) {
  return TorchCall(absl::StrCat(file->path(), ": tensor \"", info.name, "\""),
                   [&]() -> absl::StatusOr<at::Tensor> {
                     absl::Span<const uint8_t> bytes = file->Data(info);
                     const at::ScalarType have = ToScalarType(info.dtype);
                     const auto opts = at::TensorOptions().dtype(have);
                     const bool aligned =
                         reinterpret_cast<uintptr_t>(bytes.data()) %
                             DTypeSize(info.dtype) ==
                         0;
                     if (have == want && aligned && info.numel() > 0) {
                       // The deleter holds the file (and its mapping) alive.
                       std::shared_ptr<const SafetensorsFile> keep = file;
                       return at::from_blob(
                           const_cast<uint8_t*>(bytes.data()), info.shape,
                           [keep](void*) {}, opts);
                     }
                     at::Tensor copy = at::empty(info.shape, opts);
                     if (!bytes.empty()) {
                       std::memcpy(copy.data_ptr(), bytes.data(), bytes.size());
                     }
                     return copy.to(want);
                   });
}

at::Tensor ContiguousCpu(const at::Tensor& t) {
  return t.detach().to(at::kCPU).contiguous();
}

}  // namespace edgesplit
