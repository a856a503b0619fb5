// The 256-weight "K" formats of quant_blocks.h: Q4_K (ggml's reference
// quantizer, byte for byte) and Q6_K (dequantization as ggml; a plain
// absmax quantizer).
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

#include "kernels/cpu/quant_blocks.h"
#include "kernels/scalar_codecs.h"

namespace edgesplit::kernels {
namespace {

// ggml's nearest_int: round half to even through the float mantissa, exact
// for |v| <= 2^22. Values outside (only from non-finite input, which
// callers reject before quantizing) give 0 instead of garbage.
inline int NearestInt(float v) {
  if (!(std::fabs(v) <= 4194303.0f)) return 0;
  const float t = v + 12582912.0f;
  int32_t i;
  std::memcpy(&i, &t, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

// ggml's make_qkx2_quants: the scale and (negated) min of n values on the
// grid 0..nmax that minimise the weighted squared error, searching nstep + 1
// candidate scales around (max - min) / nmax. L receives the codes.
float MakeQkx2Quants(int n, int nmax, const float* x, const float* weights,
                     uint8_t* L, float* the_min, uint8_t* Laux, float rmin,
                     float rdelta, int nstep) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += weights[i];
    sum_x += weights[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    std::fill(L, L + n, 0);
    *the_min = -min;
    return 0.0f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best = 0;
  for (int i = 0; i < n; ++i) {
    const int l = NearestInt(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    const float diff = scale * L[i] + min - x[i];
    best += weights[i] * diff * diff;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = NearestInt(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float err = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = this_scale * Laux[i] + this_min - x[i];
        err += weights[i] * diff * diff;
      }
      if (err < best) {
        std::memcpy(L, Laux, static_cast<size_t>(n));
        best = err;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

void QuantizeBlockQ4_K(const float* x, BlockQ4_K* y) {
  uint8_t L[kSuperBlockSize], Laux[32];
  float weights[32], mins[8], scales[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = MakeQkx2Quants(32, 15, x + 32 * j, weights, L + 32 * j,
                               &mins[j], Laux, -1.0f, 0.1f, 20);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  std::memset(y->scales, 0, sizeof(y->scales));
  for (int j = 0; j < 8; ++j) {
    // As ggml: the int narrows to uint8 before the cap.
    const int ls = std::min<int>(
        63, static_cast<uint8_t>(NearestInt(inv_scale * scales[j])));
    const int lm =
        std::min<int>(63, static_cast<uint8_t>(NearestInt(inv_min * mins[j])));
    if (j < 4) {
      y->scales[j] = static_cast<uint8_t>(ls);
      y->scales[j + 4] = static_cast<uint8_t>(lm);
    } else {
      y->scales[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      y->scales[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      y->scales[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  y->d = Fp32ToFp16Bits(max_scale / 63.0f);
  y->dmin = Fp32ToFp16Bits(max_min / 63.0f);
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    Q4KScaleMin(y->scales, j, &sc, &m);
    const float d = Fp16BitsToFp32(y->d) * sc;
    if (d == 0.0f) continue;
    const float dm = Fp16BitsToFp32(y->dmin) * m;
    for (int i = 0; i < 32; ++i) {
      const int l = NearestInt((x[32 * j + i] + dm) / d);
      L[32 * j + i] = static_cast<uint8_t>(std::max(0, std::min(15, l)));
    }
  }
  for (int j = 0; j < kSuperBlockSize; j += 64) {
    for (int l = 0; l < 32; ++l) {
      y->qs[j / 2 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    }
  }
}

// Per 16 weights: the signed extreme maps to -32 (the grid's long end);
// the 16 group scales are then quantized to int8 against the largest.
void QuantizeBlockQ6_K(const float* x, BlockQ6_K* y) {
  float group[16];
  float max_scale = 0, max_abs = 0;
  for (int g = 0; g < 16; ++g) {
    float amax = 0, max = 0;
    for (int i = 0; i < 16; ++i) {
      if (std::fabs(x[16 * g + i]) > amax) {
        amax = std::fabs(x[16 * g + i]);
        max = x[16 * g + i];
      }
    }
    group[g] = max / -32.0f;
    if (std::fabs(group[g]) > max_abs) {
      max_abs = std::fabs(group[g]);
      max_scale = group[g];
    }
  }
  uint8_t L[kSuperBlockSize];
  if (max_abs == 0.0f) {
    std::memset(y, 0, sizeof(*y));
    std::fill(L, L + kSuperBlockSize, 32);
  } else {
    const float iscale = -128.0f / max_scale;
    y->d = Fp32ToFp16Bits(1 / iscale);
    for (int g = 0; g < 16; ++g) {
      y->scales[g] =
          static_cast<int8_t>(std::min(127, NearestInt(iscale * group[g])));
    }
    for (int g = 0; g < 16; ++g) {
      const float d = Fp16BitsToFp32(y->d) * y->scales[g];
      for (int i = 0; i < 16; ++i) {
        int l = d != 0.0f ? NearestInt(x[16 * g + i] / d) : 0;
        l = std::max(-32, std::min(31, l));
        L[16 * g + i] = static_cast<uint8_t>(l + 32);
      }
    }
  }
  for (int j = 0; j < kSuperBlockSize; j += 128) {
    uint8_t* ql = y->ql + j / 2;
    uint8_t* qh = y->qh + j / 4;
    for (int l = 0; l < 32; ++l) {
      const uint8_t* q = L + j + l;
      ql[l] = static_cast<uint8_t>((q[0] & 0xF) | ((q[64] & 0xF) << 4));
      ql[l + 32] = static_cast<uint8_t>((q[32] & 0xF) | ((q[96] & 0xF) << 4));
      qh[l] = static_cast<uint8_t>((q[0] >> 4) | ((q[32] >> 4) << 2) |
                                   ((q[64] >> 4) << 4) | ((q[96] >> 4) << 6));
    }
  }
}

}  // namespace

void QuantizeRowQ4_K(const float* x, int64_t n, BlockQ4_K* y) {
  assert(n % kSuperBlockSize == 0);
  for (int64_t b = 0; b < n / kSuperBlockSize; ++b) {
    QuantizeBlockQ4_K(x + b * kSuperBlockSize, y + b);
  }
}

void QuantizeRowQ6_K(const float* x, int64_t n, BlockQ6_K* y) {
  assert(n % kSuperBlockSize == 0);
  for (int64_t b = 0; b < n / kSuperBlockSize; ++b) {
    QuantizeBlockQ6_K(x + b * kSuperBlockSize, y + b);
  }
}

void DequantizeRowQ4_K(const BlockQ4_K* x, int64_t n, float* y) {
  assert(n % kSuperBlockSize == 0);
  for (int64_t b = 0; b < n / kSuperBlockSize; ++b) {
    const float d = Fp16BitsToFp32(x[b].d);
    const float dmin = Fp16BitsToFp32(x[b].dmin);
    const uint8_t* q = x[b].qs;
    for (int j = 0; j < 8; j += 2, q += 32) {
      int sc, m;
      Q4KScaleMin(x[b].scales, j, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      Q4KScaleMin(x[b].scales, j + 1, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
    }
  }
}

void DequantizeRowQ6_K(const BlockQ6_K* x, int64_t n, float* y) {
  assert(n % kSuperBlockSize == 0);
  for (int64_t b = 0; b < n / kSuperBlockSize; ++b) {
    const float d = Fp16BitsToFp32(x[b].d);
    const uint8_t* ql = x[b].ql;
    const uint8_t* qh = x[b].qh;
    const int8_t* sc = x[b].scales;
    for (int half = 0; half < 2;
         ++half, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[is] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
    }
  }
}

}  // namespace edgesplit::kernels
