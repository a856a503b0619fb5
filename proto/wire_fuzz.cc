// libFuzzer target: tensors as a peer sends them (edgesplit.v1.Tensor)
// through wire::Decode with small limits. The first byte picks the width
// the receiver expects (0: any), the rest is the serialized message. A
// tensor that decodes must be float32 [rows, cols] as the message claims
// and must encode again in every codec; nothing may crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "proto/tensor_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  edgesplit::v1::Tensor t;
  if (!t.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  edgesplit::wire::TensorLimits limits;
  limits.max_rows = 64;
  limits.max_cols = 4096;
  limits.max_bytes = 1 << 20;
  const int64_t cols = data[0] % 8 == 0 ? 0 : data[0];
  auto d = edgesplit::wire::Decode(t, cols, "fuzz", limits);
  if (!d.ok()) return 0;
  if (d->dim() != 2 || d->scalar_type() != at::kFloat ||
      (cols > 0 && d->size(1) != cols) || t.shape_size() != 2 ||
      d->size(0) != t.shape(0) || d->size(1) != t.shape(1)) {
    std::abort();
  }
  for (edgesplit::v1::Codec codec : edgesplit::wire::SupportedCodecs()) {
    edgesplit::v1::Tensor again;
    (void)edgesplit::wire::Encode(*d, codec, &again);
  }
  return 0;
}
