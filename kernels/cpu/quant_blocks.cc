#include "kernels/cpu/quant_blocks.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

#include "kernels/scalar_codecs.h"

namespace edgesplit::kernels {
namespace {

// Truncation toward zero as C's float-to-int conversion, for the finite,
// in-range values quantization produces; non-finite input (which ggml
// leaves undefined) gives 0 instead of undefined behaviour. Callers that
// load weights reject non-finite values before quantizing.
inline int ToInt(float v) {
  return std::isfinite(v) && std::fabs(v) < 1e6f ? static_cast<int>(v) : 0;
}

}  // namespace

const char* WeightTypeName(WeightType type) {
  switch (type) {
    case WeightType::kF32:
      return "f32";
    case WeightType::kQ8_0:
      return "q8_0";
    case WeightType::kQ4_0:
      return "q4_0";
    case WeightType::kQ4_K:
      return "q4_k";
    case WeightType::kQ6_K:
      return "q6_k";
    case WeightType::kF16:
      return "f16";
  }
  return "?";
}

std::optional<WeightType> ParseWeightType(absl::string_view name) {
  for (WeightType t :
       {WeightType::kF32, WeightType::kQ8_0, WeightType::kQ4_0,
        WeightType::kQ4_K, WeightType::kQ6_K, WeightType::kF16}) {
    if (name == WeightTypeName(t)) return t;
  }
  return std::nullopt;
}

const char* WeightTypeList() { return "f32, f16, q8_0, q4_0, q4_k, q6_k"; }

bool IsBlockType(WeightType type) {
  return type != WeightType::kF32 && type != WeightType::kF16;
}

int64_t BlockWeights(WeightType type) {
  switch (type) {
    case WeightType::kF32:
    case WeightType::kF16:
      return 1;
    case WeightType::kQ8_0:
    case WeightType::kQ4_0:
      return kBlockSize;
    case WeightType::kQ4_K:
    case WeightType::kQ6_K:
      return kSuperBlockSize;
  }
  return 1;
}

bool CheckCols(WeightType type, int64_t cols) {
  return cols >= 0 && cols % BlockWeights(type) == 0;
}

int64_t RowBytes(WeightType type, int64_t cols) {
  switch (type) {
    case WeightType::kF32:
      return cols * 4;
    case WeightType::kF16:
      return cols * 2;
    case WeightType::kQ8_0:
      return cols / kBlockSize * static_cast<int64_t>(sizeof(BlockQ8_0));
    case WeightType::kQ4_0:
      return cols / kBlockSize * static_cast<int64_t>(sizeof(BlockQ4_0));
    case WeightType::kQ4_K:
      return cols / kSuperBlockSize * static_cast<int64_t>(sizeof(BlockQ4_K));
    case WeightType::kQ6_K:
      return cols / kSuperBlockSize * static_cast<int64_t>(sizeof(BlockQ6_K));
  }
  return 0;
}

void QuantizeRowQ8_0(const float* x, int64_t n, BlockQ8_0* y) {
  assert(n % kBlockSize == 0);
  for (int64_t b = 0; b < n / kBlockSize; ++b, x += kBlockSize) {
    float amax = 0.0f;
    for (int j = 0; j < kBlockSize; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = Fp32ToFp16Bits(d);
    for (int j = 0; j < kBlockSize; ++j) {
      y[b].qs[j] = static_cast<int8_t>(ToInt(std::round(x[j] * id)));
    }
  }
}

void QuantizeRowQ4_0(const float* x, int64_t n, BlockQ4_0* y) {
  assert(n % kBlockSize == 0);
  for (int64_t b = 0; b < n / kBlockSize; ++b, x += kBlockSize) {
    // The signed value of largest magnitude maps to -8, so the grid's
    // asymmetric end (-8..7) sits on the side of the extreme value.
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kBlockSize; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = Fp32ToFp16Bits(d);
    for (int j = 0; j < kBlockSize / 2; ++j) {
      // As ggml: truncation of x + 8.5 (a round-half-up onto 0..16), capped.
      const int lo = std::min(15, ToInt(x[j] * id + 8.5f));
      const int hi = std::min(15, ToInt(x[j + kBlockSize / 2] * id + 8.5f));
      y[b].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void DequantizeRowQ8_0(const BlockQ8_0* x, int64_t n, float* y) {
  assert(n % kBlockSize == 0);
  for (int64_t b = 0; b < n / kBlockSize; ++b, y += kBlockSize) {
    const float d = Fp16BitsToFp32(x[b].d);
    for (int j = 0; j < kBlockSize; ++j) y[j] = x[b].qs[j] * d;
  }
}

void DequantizeRowQ4_0(const BlockQ4_0* x, int64_t n, float* y) {
  assert(n % kBlockSize == 0);
  for (int64_t b = 0; b < n / kBlockSize; ++b, y += kBlockSize) {
    const float d = Fp16BitsToFp32(x[b].d);
    // Two loops, not one writing both halves: these vectorize.
    for (int j = 0; j < kBlockSize / 2; ++j) {
      y[j] = ((x[b].qs[j] & 15) - 8) * d;
    }
    for (int j = 0; j < kBlockSize / 2; ++j) {
      y[j + kBlockSize / 2] = ((x[b].qs[j] >> 4) - 8) * d;
    }
  }
}

void QuantizeRow(WeightType type, const float* x, int64_t n, void* dst) {
  switch (type) {
    case WeightType::kF32:
      std::memcpy(dst, x, static_cast<size_t>(n) * 4);
      return;
    case WeightType::kQ8_0:
      return QuantizeRowQ8_0(x, n, static_cast<BlockQ8_0*>(dst));
    case WeightType::kQ4_0:
      return QuantizeRowQ4_0(x, n, static_cast<BlockQ4_0*>(dst));
    case WeightType::kQ4_K:
      return QuantizeRowQ4_K(x, n, static_cast<BlockQ4_K*>(dst));
    case WeightType::kQ6_K:
      return QuantizeRowQ6_K(x, n, static_cast<BlockQ6_K*>(dst));
    case WeightType::kF16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = Fp32ToFp16Bits(x[i]);
      return;
    }
  }
}

void DequantizeRow(WeightType type, const void* src, int64_t n, float* y) {
  switch (type) {
    case WeightType::kF32:
      std::memcpy(y, src, static_cast<size_t>(n) * 4);
      return;
    case WeightType::kQ8_0:
      return DequantizeRowQ8_0(static_cast<const BlockQ8_0*>(src), n, y);
    case WeightType::kQ4_0:
      return DequantizeRowQ4_0(static_cast<const BlockQ4_0*>(src), n, y);
    case WeightType::kQ4_K:
      return DequantizeRowQ4_K(static_cast<const BlockQ4_K*>(src), n, y);
    case WeightType::kQ6_K:
      return DequantizeRowQ6_K(static_cast<const BlockQ6_K*>(src), n, y);
    case WeightType::kF16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) y[i] = Fp16BitsToFp32(h[i]);
      return;
    }
  }
}

}  // namespace edgesplit::kernels
