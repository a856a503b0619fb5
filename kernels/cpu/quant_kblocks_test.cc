#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/scalar_codecs.h"

namespace edgesplit::kernels {
namespace {

TEST(QuantKBlocksTest, NamesSizesAndWidths) {
  EXPECT_EQ(ParseWeightType("q4_k"), WeightType::kQ4_K);
  EXPECT_EQ(ParseWeightType("q6_k"), WeightType::kQ6_K);
  EXPECT_EQ(RowBytes(WeightType::kQ4_K, 512), 288);
  EXPECT_EQ(RowBytes(WeightType::kQ6_K, 256), 210);
  EXPECT_TRUE(CheckCols(WeightType::kQ4_K, 768));
  EXPECT_FALSE(CheckCols(WeightType::kQ4_K, 224));
  EXPECT_FALSE(CheckCols(WeightType::kQ6_K, 32));
}

// Scales and mins written bit by bit as GGUF packs them (6 bits each; the
// high two bits of sub-blocks 4..7 ride on bytes 0..7), then elements
// checked against d * sc * q - dmin * m worked out by hand.
TEST(QuantKBlocksTest, Q4_KLayoutMatchesHandComputedValues) {
  BlockQ4_K b;
  std::memset(&b, 0, sizeof(b));
  b.d = Fp32ToFp16Bits(0.5f);
  b.dmin = Fp32ToFp16Bits(0.25f);
  // sc = {1, 2, 3, 4, 5, 6, 7, 63}, m = {0, 1, 2, 3, 4, 5, 6, 40}.
  const uint8_t scales[12] = {1,
                              2,
                              3,
                              4 | (3 << 6),
                              0,
                              1,
                              2,
                              3 | (2 << 6),
                              5 | (4 << 4),
                              6 | (5 << 4),
                              7 | (6 << 4),
                              15 | (8 << 4)};
  std::memcpy(b.scales, scales, 12);
  b.qs[0] = 0x5A;    // element 0: 10 (sub-block 0), element 32: 5 (1).
  b.qs[127] = 0xF3;  // element 223: 3 (sub-block 6), element 255: 15 (7).
  int sc, m;
  Q4KScaleMin(b.scales, 7, &sc, &m);
  EXPECT_EQ(sc, 63);
  EXPECT_EQ(m, 40);
  std::vector<float> y(256);
  DequantizeRowQ4_K(&b, 256, y.data());
  EXPECT_EQ(y[0], 5.0f);  // 0.5 * 1 * 10 - 0.25 * 0
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[32], 4.75f);  // 0.5 * 2 * 5 - 0.25 * 1
  EXPECT_EQ(y[33], -0.25f);
  EXPECT_EQ(y[223], 9.0f);    // 0.5 * 7 * 3 - 0.25 * 6
  EXPECT_EQ(y[255], 462.5f);  // 0.5 * 63 * 15 - 0.25 * 40
  EXPECT_EQ(y[254], -10.0f);
}

TEST(QuantKBlocksTest, Q6_KLayoutMatchesHandComputedValues) {
  BlockQ6_K b;
  std::memset(&b, 0, sizeof(b));
  b.d = Fp32ToFp16Bits(0.5f);
  for (int g = 0; g < 16; ++g) b.scales[g] = static_cast<int8_t>(g - 8);
  b.ql[0] = 0x21;
  b.ql[32] = 0x43;
  b.qh[0] = 0xE4;  // two-bit fields 0, 1, 2, 3 from the bottom.
  std::vector<float> y(256);
  DequantizeRowQ6_K(&b, 256, y.data());
  EXPECT_EQ(y[0], 124.0f);     // 0.5 * -8 * ((1 | 0 << 4) - 32)
  EXPECT_EQ(y[32], 39.0f);     // 0.5 * -6 * ((3 | 1 << 4) - 32)
  EXPECT_EQ(y[64], -4.0f);     // 0.5 * -4 * ((2 | 2 << 4) - 32)
  EXPECT_EQ(y[96], -20.0f);    // 0.5 * -2 * ((4 | 3 << 4) - 32)
  EXPECT_EQ(y[1], 128.0f);     // 0.5 * -8 * -32
  EXPECT_EQ(y[16], 112.0f);    // 0.5 * -7 * -32
  EXPECT_EQ(y[128], 0.0f);     // scale 0
  EXPECT_EQ(y[255], -112.0f);  // 0.5 * 7 * -32
}

// Quantizing and dequantizing Gaussian weights: the relative RMS error is
// what 4 and 6 bits allow (measured 0.072 and 0.019; bounds with margin),
// and the Q4_K codes are the nearest on the block's own grid.
TEST(QuantKBlocksTest, RoundTripsStayWithinTheirBitBudgets) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const int64_t n = 256 * 64;
  std::vector<float> x(n), y(n);
  for (float& v : x) v = normal(rng);
  const std::pair<WeightType, double> cases[] = {{WeightType::kQ4_K, 0.11},
                                                 {WeightType::kQ6_K, 0.04}};
  for (const auto& [type, bound] : cases) {
    std::vector<uint8_t> blocks(RowBytes(type, n));
    QuantizeRow(type, x.data(), n, blocks.data());
    DequantizeRow(type, blocks.data(), n, y.data());
    double err = 0, ref = 0;
    for (int64_t i = 0; i < n; ++i) {
      err += (x[i] - y[i]) * (x[i] - y[i]);
      ref += x[i] * x[i];
    }
    const double rel = std::sqrt(err / ref);
    std::printf("%s relative RMS error %.4f\n", WeightTypeName(type), rel);
    EXPECT_LT(rel, bound) << WeightTypeName(type);
    EXPECT_GT(rel, 0.0) << WeightTypeName(type);
    if (type != WeightType::kQ4_K) continue;
    const auto* b = reinterpret_cast<const BlockQ4_K*>(blocks.data());
    for (int64_t s = 0; s < n / 256; ++s) {
      for (int j = 0; j < 8; ++j) {
        int sc, m;
        Q4KScaleMin(b[s].scales, j, &sc, &m);
        const float d = Fp16BitsToFp32(b[s].d) * sc;
        const float dm = Fp16BitsToFp32(b[s].dmin) * m;
        for (int i = 0; i < 32; ++i) {
          const int64_t k = s * 256 + j * 32 + i;
          // Each code is the nearest of 0..15 to (x + dm) / d.
          const float q = (y[k] + dm) / d;
          ASSERT_LE(std::fabs(q - std::round(q)), 1e-3);
          const float t = std::min(15.0f, std::max(0.0f, (x[k] + dm) / d));
          ASSERT_LE(std::fabs(t - q), 0.5f + 1e-3f) << k;
        }
      }
    }
  }
}

TEST(QuantKBlocksTest, ZeroAndNonFiniteBlocksAreDefined) {
  std::vector<float> x(256, 0.0f), y(256, 1.0f);
  for (WeightType type : {WeightType::kQ4_K, WeightType::kQ6_K}) {
    std::vector<uint8_t> blocks(RowBytes(type, 256), 0xFF);
    QuantizeRow(type, x.data(), 256, blocks.data());
    DequantizeRow(type, blocks.data(), 256, y.data());
    for (float v : y) EXPECT_EQ(v, 0.0f) << WeightTypeName(type);
    std::vector<float> bad(256, NAN);
    bad[3] = INFINITY;
    QuantizeRow(type, bad.data(), 256, blocks.data());  // Defined, no UB.
  }
}

}  // namespace
}  // namespace edgesplit::kernels
