#include "kernels/cpu/quant_blocks.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/scalar_codecs.h"

namespace edgesplit::kernels {
namespace {

std::vector<uint8_t> Bytes(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  return std::vector<uint8_t>(b, b + n);
}

TEST(QuantBlocksTest, WeightTypeNamesRoundTrip) {
  for (WeightType t :
       {WeightType::kF32, WeightType::kQ8_0, WeightType::kQ4_0}) {
    EXPECT_EQ(ParseWeightType(WeightTypeName(t)), t);
  }
  EXPECT_FALSE(ParseWeightType("q4_1").has_value());
  EXPECT_EQ(RowBytes(WeightType::kQ8_0, 64), 68);
  EXPECT_EQ(RowBytes(WeightType::kQ4_0, 64), 36);
  EXPECT_EQ(RowBytes(WeightType::kF32, 3), 12);
  EXPECT_TRUE(CheckCols(WeightType::kF32, 33));
  EXPECT_FALSE(CheckCols(WeightType::kQ4_0, 33));
}

// A block whose largest magnitude is 127 has scale exactly 1 (fp16 0x3C00,
// stored little-endian), so every byte can be written down by hand.
TEST(QuantBlocksTest, Q8_0BlockMatchesHandComputedGgufBytes) {
  std::vector<float> x(32, 0.0f);
  x[0] = -127.0f;  // amax
  x[1] = 1.5f;     // rounds half away from zero
  x[2] = -2.5f;
  x[3] = 0.49f;
  x[4] = 126.6f;
  x[31] = 3.0f;
  BlockQ8_0 b;
  QuantizeRowQ8_0(x.data(), 32, &b);
  std::vector<uint8_t> want(34, 0);
  want[0] = 0x00;
  want[1] = 0x3C;
  want[2] = static_cast<uint8_t>(-127);
  want[3] = 2;
  want[4] = static_cast<uint8_t>(-3);
  want[5] = 0;
  want[6] = 127;
  want[33] = 3;
  EXPECT_EQ(Bytes(&b, sizeof b), want);
  std::vector<float> back(32);
  DequantizeRowQ8_0(&b, 32, back.data());
  EXPECT_EQ(back[0], -127.0f);
  EXPECT_EQ(back[1], 2.0f);
  EXPECT_EQ(back[4], 127.0f);
}

TEST(QuantBlocksTest, Q4_0BlockMatchesHandComputedGgufBytes) {
  // Largest magnitude +16: d = 16 / -8 = -2 (fp16 0xC000), id = -0.5,
  // q = min(15, trunc(x * id + 8.5)).
  std::vector<float> x(32, 0.0f);
  x[0] = 16.0f;   // 0.5  -> 0
  x[1] = -14.0f;  // 15.5 -> 15
  x[2] = -15.9f;  // 16.45 -> 16 -> capped at 15
  x[3] = 1.0f;    // 8.0  -> 8
  x[16] = -1.0f;  // 9.0  -> 9 (element 16 is the high nibble of byte 0)
  x[17] = 3.0f;   // 7.0  -> 7
  BlockQ4_0 b;
  QuantizeRowQ4_0(x.data(), 32, &b);
  std::vector<uint8_t> want(18);
  want[0] = 0x00;
  want[1] = 0xC0;
  // Byte j: element j in the low nibble, element j + 16 in the high one.
  // Zeros map to 8 (0 * id + 8.5 -> 8).
  want[2] = 0x0 | (0x9 << 4);
  want[3] = 0xF | (0x7 << 4);
  want[4] = 0xF | (0x8 << 4);
  want[5] = 0x8 | (0x8 << 4);
  for (int j = 4; j < 16; ++j) want[2 + j] = 0x88;
  EXPECT_EQ(Bytes(&b, sizeof b), want);
  std::vector<float> back(32);
  DequantizeRowQ4_0(&b, 32, back.data());
  EXPECT_EQ(back[0], 16.0f);   // (0 - 8) * -2
  EXPECT_EQ(back[1], -14.0f);  // (15 - 8) * -2
  EXPECT_EQ(back[2], -14.0f);  // clipped
  EXPECT_EQ(back[16], -2.0f);
  EXPECT_EQ(back[5], 0.0f);
}

TEST(QuantBlocksTest, ZeroAndNonFiniteBlocksAreDefined) {
  std::vector<float> x(32, 0.0f);
  BlockQ8_0 q8;
  BlockQ4_0 q4;
  QuantizeRowQ8_0(x.data(), 32, &q8);
  QuantizeRowQ4_0(x.data(), 32, &q4);
  EXPECT_EQ(q8.d, 0);
  EXPECT_EQ(q4.d, 0x8000);  // 0 / -8 is -0 (as ggml writes it).
  for (int j = 0; j < 32; ++j) EXPECT_EQ(q8.qs[j], 0);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(q4.qs[j], 0x88);
  // Non-finite input is rejected by loaders; here it must merely not be
  // undefined behaviour (UBSan/ASan builds run this).
  x[3] = std::nanf("");
  x[4] = INFINITY;
  QuantizeRowQ8_0(x.data(), 32, &q8);
  QuantizeRowQ4_0(x.data(), 32, &q4);
}

// Round trip error: |x - x'| <= d / 2 from rounding, plus the scale's own
// fp16 rounding (relative 2^-11) times the largest code.
TEST(QuantBlocksTest, RoundTripErrorIsWithinHalfAStep) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n = 32 * 64;
  std::vector<float> x(n), back(n);
  for (float& v : x) v = normal(rng) * 0.05f;
  std::vector<BlockQ8_0> q8(n / 32);
  std::vector<BlockQ4_0> q4(n / 32);
  QuantizeRow(WeightType::kQ8_0, x.data(), n, q8.data());
  DequantizeRow(WeightType::kQ8_0, q8.data(), n, back.data());
  for (int64_t b = 0; b < n / 32; ++b) {
    const float d = std::fabs(Fp16BitsToFp32(q8[b].d));
    for (int j = 0; j < 32; ++j) {
      const int64_t i = b * 32 + j;
      EXPECT_LE(std::fabs(x[i] - back[i]), d * (0.5f + 128.0f / 2048.0f)) << i;
    }
  }
  QuantizeRow(WeightType::kQ4_0, x.data(), n, q4.data());
  DequantizeRow(WeightType::kQ4_0, q4.data(), n, back.data());
  for (int64_t b = 0; b < n / 32; ++b) {
    const float d = std::fabs(Fp16BitsToFp32(q4[b].d));
    for (int j = 0; j < 32; ++j) {
      const int64_t i = b * 32 + j;
      // Codes -8..7 around the extreme: one step of clipping at most on the
      // far side plus half a step of rounding.
      EXPECT_LE(std::fabs(x[i] - back[i]), d * (1.0f + 8.0f / 2048.0f)) << i;
    }
  }
}

}  // namespace
}  // namespace edgesplit::kernels
