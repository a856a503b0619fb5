#include "proto/tensor_codec.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/quantize.h"
#include "runtime/torch_util.h"

namespace edgesplit {
namespace wire {
namespace {

int64_t ElementBytes(v1::Codec codec) {
  switch (codec) {
    case v1::CODEC_FP32:
      return 4;
    case v1::CODEC_FP16:
    case v1::CODEC_BF16:
      return 2;
    case v1::CODEC_INT8_PER_TOKEN:
      return 1;
    default:
      return 0;
  }
}

absl::Status Invalid(absl::string_view what, absl::string_view msg) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", msg));
}

}  // namespace

int MaxMessageBytes(const TensorLimits& limits) {
  return static_cast<int>(
      std::min<int64_t>(limits.max_bytes + (1 << 20), INT32_MAX));
}

std::vector<v1::Codec> SupportedCodecs() {
  return {v1::CODEC_FP32, v1::CODEC_FP16, v1::CODEC_BF16,
          v1::CODEC_INT8_PER_TOKEN};
}

absl::string_view CodecName(v1::Codec codec) {
  switch (codec) {
    case v1::CODEC_FP32:
      return "fp32";
    case v1::CODEC_FP16:
      return "fp16";
    case v1::CODEC_BF16:
      return "bf16";
    case v1::CODEC_INT8_PER_TOKEN:
      return "int8";
    default:
      return "unspecified";
  }
}

absl::StatusOr<v1::Codec> ParseCodec(absl::string_view name) {
  for (v1::Codec c : SupportedCodecs()) {
    if (CodecName(c) == name) return c;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown codec \"", name, "\" (fp32, fp16, bf16, int8)"));
}

int64_t EncodedBytes(v1::Codec codec, int64_t rows, int64_t cols) {
  int64_t bytes = rows * cols * ElementBytes(codec);
  if (codec == v1::CODEC_INT8_PER_TOKEN) bytes += rows * 4;
  return bytes;
}

absl::Status Encode(const at::Tensor& t, v1::Codec codec, v1::Tensor* out) {
  if (t.dim() != 2 || !at::isFloatingType(t.scalar_type())) {
    return absl::InvalidArgumentError("wire tensors are 2-D floating tensors");
  }
  if (ElementBytes(codec) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot encode with codec ", static_cast<int>(codec)));
  }
  return TorchCall("wire::Encode", [&]() -> absl::Status {
    at::Tensor f = t.detach().to(at::kCPU, at::kFloat).contiguous();
    const int64_t rows = f.size(0), cols = f.size(1), n = f.numel();
    const float* src = f.data_ptr<float>();
    out->Clear();
    out->add_shape(rows);
    out->add_shape(cols);
    out->set_codec(codec);
    std::string* data = out->mutable_data();
    data->resize(n * ElementBytes(codec));
    switch (codec) {
      case v1::CODEC_FP32:
        std::memcpy(data->data(), src, n * 4);
        break;
      case v1::CODEC_FP16:
        Fp32ToFp16(src, n, reinterpret_cast<uint16_t*>(data->data()));
        break;
      case v1::CODEC_BF16:
        Fp32ToBf16(src, n, reinterpret_cast<uint16_t*>(data->data()));
        break;
      case v1::CODEC_INT8_PER_TOKEN: {
        std::string* scales = out->mutable_scales();
        scales->resize(rows * 4);
        QuantizeInt8PerToken(src, rows, cols,
                             reinterpret_cast<int8_t*>(data->data()),
                             reinterpret_cast<float*>(scales->data()));
        break;
      }
      default:
        break;
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<at::Tensor> Decode(const v1::Tensor& t, int64_t expected_cols,
                                  absl::string_view what,
                                  const TensorLimits& limits) {
  const v1::Codec codec = t.codec();
  const int64_t elem = ElementBytes(codec);
  if (elem == 0) {
    return Invalid(what,
                   absl::StrCat("unknown codec ", static_cast<int>(t.codec())));
  }
  if (t.shape_size() != 2) {
    return Invalid(what, absl::StrCat("expected a 2-D tensor, got shape [",
                                      absl::StrJoin(t.shape(), ", "), "]"));
  }
  const int64_t rows = t.shape(0), cols = t.shape(1);
  if (rows <= 0 || rows > limits.max_rows) {
    return Invalid(what, absl::StrCat("row count ", rows, " outside [1, ",
                                      limits.max_rows, "]"));
  }
  if (cols <= 0 || cols > limits.max_cols) {
    return Invalid(what, absl::StrCat("width ", cols, " outside [1, ",
                                      limits.max_cols, "]"));
  }
  if (expected_cols > 0 && cols != expected_cols) {
    return Invalid(what,
                   absl::StrCat("width ", cols, " but this stage expects ",
                                expected_cols));
  }
  // Both dims are bounded above, so this cannot overflow.
  const int64_t want = rows * cols * elem;
  if (want > limits.max_bytes) {
    return Invalid(what, absl::StrCat(want, " bytes exceed the limit of ",
                                      limits.max_bytes));
  }
  if (static_cast<int64_t>(t.data().size()) != want) {
    return Invalid(
        what,
        absl::StrCat("data has ", t.data().size(), " bytes, shape [", rows,
                     ", ", cols, "] with ", CodecName(codec), " needs ", want));
  }
  const int64_t want_scales = codec == v1::CODEC_INT8_PER_TOKEN ? rows * 4 : 0;
  if (static_cast<int64_t>(t.scales().size()) != want_scales) {
    return Invalid(what, absl::StrCat("scales have ", t.scales().size(),
                                      " bytes, expected ", want_scales));
  }
  return TorchCall(what, [&]() -> absl::StatusOr<at::Tensor> {
    at::Tensor out = at::empty({rows, cols}, at::kFloat);
    float* dst = out.data_ptr<float>();
    const int64_t n = rows * cols;
    const char* src = t.data().data();
    switch (codec) {
      case v1::CODEC_FP32:
        std::memcpy(dst, src, n * 4);
        break;
      case v1::CODEC_FP16: {
        std::vector<uint16_t> bits(n);
        std::memcpy(bits.data(), src, n * 2);
        Fp16ToFp32(bits.data(), n, dst);
        break;
      }
      case v1::CODEC_BF16: {
        std::vector<uint16_t> bits(n);
        std::memcpy(bits.data(), src, n * 2);
        Bf16ToFp32(bits.data(), n, dst);
        break;
      }
      case v1::CODEC_INT8_PER_TOKEN: {
        std::vector<float> scales(rows);
        std::memcpy(scales.data(), t.scales().data(), rows * 4);
        for (float s : scales) {
          if (!std::isfinite(s) || s < 0) {
            return Invalid(what, "int8 scales must be finite and >= 0");
          }
        }
        DequantizeInt8PerToken(reinterpret_cast<const int8_t*>(src),
                               scales.data(), rows, cols, dst);
        break;
      }
      default:
        break;
    }
    return out;
  });
}

}  // namespace wire
}  // namespace edgesplit
