// Activations on the wire: encode a 2-D tensor [rows, cols] with a codec
// (fp32, fp16, bf16, int8 per token) into edgesplit.v1.Tensor, and decode
// one received from a peer. A received tensor is untrusted: decoding checks
// the codec, the rank, every dimension against limits and the expected
// width, and that the byte counts match shape x codec, before touching a
// byte; each failure is INVALID_ARGUMENT naming the field and values.
#ifndef EDGESPLIT_PROTO_TENSOR_CODEC_H_
#define EDGESPLIT_PROTO_TENSOR_CODEC_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "edgesplit/v1/tensor.pb.h"

namespace edgesplit {
namespace wire {

struct TensorLimits {
  int64_t max_rows = 1 << 16;     // tokens in one message
  int64_t max_cols = 1 << 20;     // hidden size or vocabulary
  int64_t max_bytes = 256 << 20;  // encoded payload
};

// gRPC message size that carries the largest tensor `limits` allow, plus
// room for the rest of the message (servers and clients use the same).
int MaxMessageBytes(const TensorLimits& limits = {});

// The codecs this build supports, in order of preference.
std::vector<v1::Codec> SupportedCodecs();
absl::string_view CodecName(v1::Codec codec);
absl::StatusOr<v1::Codec> ParseCodec(absl::string_view name);  // "int8", ...
// Encoded bytes of a [rows, cols] tensor (data + scales).
int64_t EncodedBytes(v1::Codec codec, int64_t rows, int64_t cols);

// Encodes a floating tensor of shape [rows, cols] (any float dtype; values
// are converted to float32 first).
absl::Status Encode(const at::Tensor& t, v1::Codec codec, v1::Tensor* out);

// Decodes to float32 [rows, cols]. `expected_cols` > 0 requires that width
// (the hidden size, say); `what` names the tensor in errors.
absl::StatusOr<at::Tensor> Decode(const v1::Tensor& t, int64_t expected_cols,
                                  absl::string_view what,
                                  const TensorLimits& limits = {});

}  // namespace wire
}  // namespace edgesplit

#endif  // EDGESPLIT_PROTO_TENSOR_CODEC_H_
