// Reference kernels: the plainest loops, in the order the SIMD variants
// are checked against (float sums sequential per output).
#include <cmath>

#include "kernels/cpu/gemv_internal.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/scalar_codecs.h"

namespace edgesplit::kernels::internal {
namespace {

void GemvF32(const uint8_t* w, int64_t row_bytes, int64_t in, const void* x,
             int64_t rows, float* y, int64_t ldy, int64_t o0, int64_t o1) {
  const float* xf = static_cast<const float*>(x);
  for (int64_t o = o0; o < o1; ++o) {
    const float* wr = reinterpret_cast<const float*>(w + o * row_bytes);
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = xf + r * in;
      float acc = 0.0f;
      for (int64_t i = 0; i < in; ++i) acc += wr[i] * xr[i];
      y[r * ldy + o] = acc;
    }
  }
}

int32_t DotQ8(const int8_t* a, const int8_t* b) {
  int32_t s = 0;
  for (int j = 0; j < kBlockSize; ++j) s += a[j] * b[j];
  return s;
}

int32_t DotQ4(const uint8_t* a, const int8_t* b) {
  int32_t s = 0;
  for (int j = 0; j < kBlockSize / 2; ++j) {
    s += ((a[j] & 15) - 8) * b[j] + ((a[j] >> 4) - 8) * b[j + kBlockSize / 2];
  }
  return s;
}

template <typename Block>
void GemvQ(const uint8_t* w, int64_t row_bytes, int64_t in, const void* x,
           int64_t rows, float* y, int64_t ldy, int64_t o0, int64_t o1) {
  const int64_t nb = in / kBlockSize;
  const QuantizedRows& xq = *static_cast<const QuantizedRows*>(x);
  for (int64_t o = o0; o < o1; ++o) {
    const Block* wb = reinterpret_cast<const Block*>(w + o * row_bytes);
    for (int64_t r = 0; r < rows; ++r) {
      const BlockQ8_0* xb = xq.q + r * nb;
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t s;
        if constexpr (sizeof(Block) == sizeof(BlockQ8_0)) {
          s = DotQ8(wb[b].qs, xb[b].qs);
        } else {
          s = DotQ4(wb[b].qs, xb[b].qs);
        }
        const float d = Fp16BitsToFp32(wb[b].d) * Fp16BitsToFp32(xb[b].d);
        acc += d * static_cast<float>(s);
      }
      y[r * ldy + o] = acc;
    }
  }
}

// Q4_K: per sub-block j of 32, d * sc_j * (q . x) - dmin * m_j * sum(x),
// each scaled by x's block scale.
void GemvQ4K(const uint8_t* w, int64_t row_bytes, int64_t in, const void* x,
             int64_t rows, float* y, int64_t ldy, int64_t o0, int64_t o1) {
  const int64_t nb = in / kBlockSize;
  const QuantizedRows& xq = *static_cast<const QuantizedRows*>(x);
  for (int64_t o = o0; o < o1; ++o) {
    const BlockQ4_K* wb = reinterpret_cast<const BlockQ4_K*>(w + o * row_bytes);
    for (int64_t r = 0; r < rows; ++r) {
      float acc = 0.0f;
      for (int64_t s = 0; s < nb / 8; ++s) {
        const float d = Fp16BitsToFp32(wb[s].d);
        const float dmin = Fp16BitsToFp32(wb[s].dmin);
        for (int j = 0; j < 8; ++j) {
          const int64_t b = r * nb + s * 8 + j;
          const uint8_t* q = wb[s].qs + 32 * (j / 2);
          const int shift = 4 * (j % 2);
          int32_t dot = 0;
          for (int l = 0; l < 32; ++l) {
            dot += ((q[l] >> shift) & 15) * xq.q[b].qs[l];
          }
          int sc, m;
          Q4KScaleMin(wb[s].scales, j, &sc, &m);
          acc += xq.d[b] * (d * sc * static_cast<float>(dot) -
                            dmin * m * static_cast<float>(xq.sum[b]));
        }
      }
      y[r * ldy + o] = acc;
    }
  }
}

// Q6_K: per 16 weights d * scale_g * ((q - 32) . x).
void GemvQ6K(const uint8_t* w, int64_t row_bytes, int64_t in, const void* x,
             int64_t rows, float* y, int64_t ldy, int64_t o0, int64_t o1) {
  const int64_t nb = in / kBlockSize;
  const QuantizedRows& xq = *static_cast<const QuantizedRows*>(x);
  for (int64_t o = o0; o < o1; ++o) {
    const BlockQ6_K* wb = reinterpret_cast<const BlockQ6_K*>(w + o * row_bytes);
    for (int64_t r = 0; r < rows; ++r) {
      float acc = 0.0f;
      for (int64_t s = 0; s < nb / 8; ++s) {
        const float d = Fp16BitsToFp32(wb[s].d);
        for (int c = 0; c < 8; ++c) {
          const int64_t b = r * nb + s * 8 + c;
          const int half = c / 4, part = c % 4;
          const uint8_t* ql = wb[s].ql + 64 * half + 32 * (part % 2);
          const uint8_t* qh = wb[s].qh + 32 * half;
          const int8_t* sc = wb[s].scales + 8 * half + 2 * part;
          int32_t dot[2] = {0, 0};
          for (int l = 0; l < 32; ++l) {
            const int lo = part < 2 ? ql[l] & 0xF : ql[l] >> 4;
            const int q = (lo | (((qh[l] >> (2 * part)) & 3) << 4)) - 32;
            dot[l / 16] += q * xq.q[b].qs[l];
          }
          acc += xq.d[b] * d *
                 (sc[0] * static_cast<float>(dot[0]) +
                  sc[1] * static_cast<float>(dot[1]));
        }
      }
      y[r * ldy + o] = acc;
    }
  }
}

void GemvF16(const uint8_t* w, int64_t row_bytes, int64_t in, const void* x,
             int64_t rows, float* y, int64_t ldy, int64_t o0, int64_t o1) {
  const float* xf = static_cast<const float*>(x);
  for (int64_t o = o0; o < o1; ++o) {
    const auto* wr = reinterpret_cast<const uint16_t*>(w + o * row_bytes);
    for (int64_t r = 0; r < rows; ++r) {
      float acc = 0.0f;
      for (int64_t i = 0; i < in; ++i) {
        acc += Fp16BitsToFp32(wr[i]) * xf[r * in + i];
      }
      y[r * ldy + o] = acc;
    }
  }
}

// One row's block of a group (`lane`) against x's block: the exact
// integer dot product.
int32_t GroupDot(const BlockQ4_0x16& g, int lane, const int8_t* xs,
                 int32_t xsum) {
  int32_t dot = -8 * xsum;
  for (int j = 0; j < 4; ++j) {
    for (int k = 0; k < 4; ++k) {
      const uint8_t v = g.qs[64 * j + 4 * lane + k];
      dot += (v & 15) * xs[4 * j + k] + (v >> 4) * xs[16 + 4 * j + k];
    }
  }
  return dot;
}

int32_t GroupDot(const BlockQ8_0x16& g, int lane, const int8_t* xs,
                 int32_t /*xsum*/) {
  int32_t dot = 0;
  for (int j = 0; j < 8; ++j) {
    for (int k = 0; k < 4; ++k)
      dot += g.qs[64 * j + 4 * lane + k] * xs[4 * j + k];
  }
  return dot;
}

// y[r * ldy + o] = row(group blocks of row o, its lane, r) for o in
// [o0, o1) and r in [0, rows).
template <typename Group, typename Row>
void ForGroupRows(const uint8_t* w, int64_t row_bytes, int64_t rows, float* y,
                  int64_t ldy, int64_t o0, int64_t o1, Row row) {
  for (int64_t o = o0; o < o1; ++o) {
    const auto* group =
        reinterpret_cast<const Group*>(w + (o / 16) * 16 * row_bytes);
    const int lane = static_cast<int>(o % 16);
    for (int64_t r = 0; r < rows; ++r) y[r * ldy + o] = row(group, lane, r);
  }
}

template <typename Group>
void GemvGroups(const uint8_t* w, int64_t row_bytes, int64_t in, const void* x,
                int64_t rows, float* y, int64_t ldy, int64_t o0, int64_t o1) {
  const auto& xq = *static_cast<const QuantizedRows*>(x);
  const int64_t nb = in / kBlockSize;
  ForGroupRows<Group>(
      w, row_bytes, rows, y, ldy, o0, o1,
      [&](const Group* group, int lane, int64_t r) {
        float acc = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          const int64_t xb = r * nb + b;
          const int32_t dot = GroupDot(group[b], lane, xq.q[xb].qs, xq.sum[xb]);
          const float scale = Fp16BitsToFp32(group[b].d[lane]) * xq.d[xb];
          acc = std::fma(scale, static_cast<float>(dot), acc);
        }
        return acc;
      });
}

}  // namespace

void GemvQ4_0x16Scalar(const uint8_t* w, int64_t row_bytes, int64_t in,
                       const void* x, int64_t rows, float* y, int64_t ldy,
                       int64_t o0, int64_t o1) {
  GemvGroups<BlockQ4_0x16>(w, row_bytes, in, x, rows, y, ldy, o0, o1);
}

void GemvQ4_Kx16Scalar(const uint8_t* w, int64_t row_bytes, int64_t in,
                       const void* x, int64_t rows, float* y, int64_t ldy,
                       int64_t o0, int64_t o1) {
  const auto& xq = *static_cast<const QuantizedRows*>(x);
  const int64_t nb = in / kBlockSize;
  ForGroupRows<BlockQ4_Kx16>(
      w, row_bytes, rows, y, ldy, o0, o1,
      [&](const BlockQ4_Kx16* group, int lane, int64_t r) {
        float acc = 0.0f, mins = 0.0f;
        for (int64_t s = 0; s < nb / 8; ++s) {
          const BlockQ4_Kx16& g = group[s];
          uint8_t packed[12];
          for (int i = 0; i < 12; ++i) packed[i] = g.scales[i][lane];
          for (int j = 0; j < 8; ++j) {
            int sc, m;
            Q4KScaleMin(packed, j, &sc, &m);
            const int64_t xb = r * nb + 8 * s + j;
            const int8_t* xs = xq.q[xb].qs;
            int32_t dot = 0;
            for (int i = 0; i < 8; ++i) {
              for (int t = 0; t < 4; ++t) {
                const uint8_t v = g.qs[8 * (j / 2) + i][4 * lane + t];
                dot += (j % 2 == 0 ? v & 15 : v >> 4) * xs[4 * i + t];
              }
            }
            const float scale =
                Fp16BitsToFp32(g.d[lane]) * static_cast<float>(sc);
            const float min =
                Fp16BitsToFp32(g.dmin[lane]) * static_cast<float>(m);
            acc = std::fma(scale * xq.d[xb], static_cast<float>(dot), acc);
            mins =
                std::fma(min, xq.d[xb] * static_cast<float>(xq.sum[xb]), mins);
          }
        }
        return acc - mins;
      });
}

void GemvQ6_Kx16Scalar(const uint8_t* w, int64_t row_bytes, int64_t in,
                       const void* x, int64_t rows, float* y, int64_t ldy,
                       int64_t o0, int64_t o1) {
  const auto& xq = *static_cast<const QuantizedRows*>(x);
  const int64_t nb = in / kBlockSize;
  ForGroupRows<BlockQ6_Kx16>(
      w, row_bytes, rows, y, ldy, o0, o1,
      [&](const BlockQ6_Kx16* group, int lane, int64_t r) {
        float acc = 0.0f, offs = 0.0f;
        for (int64_t s = 0; s < nb / 8; ++s) {
          const BlockQ6_Kx16& g = group[s];
          for (int j = 0; j < 16; ++j) {
            // Weights 16 j .. 16 j + 15: half h, quarter k of it, and from
            // x's block 8 s + j / 2 codes 16 (j % 2) ..
            const int h = j / 8, k = (j % 8) / 2, t = j % 2;
            const int64_t xb = r * nb + 8 * s + j / 2;
            const int8_t* xs = xq.q[xb].qs + 16 * t;
            int32_t dot = 0;
            for (int l = 16 * t; l < 16 * t + 16; ++l) {
              const int ql = 64 * h + 32 * (k % 2) + l, qh = 32 * h + l;
              const uint8_t lo = g.ql[ql / 4][4 * lane + ql % 4];
              const uint8_t hi = g.qh[qh / 4][4 * lane + qh % 4];
              const int code =
                  ((k < 2 ? lo : lo >> 4) & 15) | (((hi >> (2 * k)) & 3) << 4);
              dot += code * xs[l - 16 * t];
            }
            const float sc = Fp16BitsToFp32(g.d[lane]) *
                             static_cast<float>(g.scales[j][lane]);
            acc = std::fma(sc * xq.d[xb], static_cast<float>(dot), acc);
            offs = std::fma(
                sc, HalfDsum(xq.d[xb], FirstHalfSum(xq.q[xb]), xq.sum[xb], t),
                offs);
          }
        }
        return acc - 32.0f * offs;
      });
}

void GemvQ8_0x16Scalar(const uint8_t* w, int64_t row_bytes, int64_t in,
                       const void* x, int64_t rows, float* y, int64_t ldy,
                       int64_t o0, int64_t o1) {
  GemvGroups<BlockQ8_0x16>(w, row_bytes, in, x, rows, y, ldy, o0, o1);
}

namespace {

uint64_t SumU64(const uint64_t* p, int64_t n) {
  uint64_t s = 0;
  for (int64_t i = 0; i < n; ++i) s += p[i];
  return s;
}

// Plain C++ at the baseline level (the compiler may use SSE2 for it).
int64_t PeakF32(int64_t iters, float* sink) {
  float acc[8];
  for (int k = 0; k < 8; ++k) acc[k] = 0.5f + k;
  for (int64_t i = 0; i < iters; ++i) {
    for (float& v : acc) v = v * 0.999f + 0.001f;
  }
  for (float v : acc) *sink += v;
  return iters * 8;
}

int64_t PeakI8(int64_t iters, float* sink) {
  int32_t acc[8];
  for (int k = 0; k < 8; ++k) acc[k] = k;
  // A multiply and an add per step (wrapping), chained so that no closed
  // form replaces the loop.
  for (int64_t i = 0; i < iters; ++i) {
    for (int32_t& v : acc) {
      v = static_cast<int32_t>(static_cast<uint32_t>(v) * 3u + 0xFFFFFFFBu);
    }
  }
  for (int32_t v : acc) *sink += static_cast<float>(v);
  return iters * 8;
}

}  // namespace

const GemvKernels kScalarKernels = {GemvF32, GemvQ<BlockQ8_0>, GemvQ<BlockQ4_0>,
                                    GemvQ4K, GemvQ6K,          GemvF16,
                                    SumU64,  PeakF32,          PeakI8};

}  // namespace edgesplit::kernels::internal
