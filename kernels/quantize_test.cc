#include "kernels/quantize.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cuda_device.h"
#include "kernels/cuda_test_util.h"
#include "kernels/quantize_cuda.h"
#include "kernels/scalar_codecs.h"

#if EDGESPLIT_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace edgesplit {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

float F(uint32_t bits) { return BitsToFloat(bits); }

// ---- Helpers ----------------------------------------------------------------

struct Quantized {
  std::vector<int8_t> q;
  std::vector<float> scales;
};

Quantized QuantizeCpu(const std::vector<float>& x, int64_t rows, int64_t cols) {
  Quantized out;
  out.q.assign(static_cast<size_t>(rows * cols), int8_t{99});
  out.scales.assign(static_cast<size_t>(rows), -1.0f);
  QuantizeInt8PerToken(x.data(), rows, cols, out.q.data(), out.scales.data());
  return out;
}

std::vector<float> DequantizeCpu(const Quantized& qz, int64_t rows,
                                 int64_t cols) {
  std::vector<float> x(static_cast<size_t>(rows * cols), -1.0f);
  DequantizeInt8PerToken(qz.q.data(), qz.scales.data(), rows, cols, x.data());
  return x;
}

// Random activations whose rows span many orders of magnitude, so scales
// range from subnormal-adjacent to huge; some rows carry an outlier, the
// shape per-token quantization exists for.
std::vector<float> RandomMatrix(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-30, 30);
  std::uniform_int_distribution<int> coin(0, 3);
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float magnitude = std::ldexp(1.0f, exponent(rng));
    const bool outlier = coin(rng) == 0;
    for (int64_t j = 0; j < cols; ++j) {
      x[r * cols + j] = normal(rng) * magnitude;
    }
    if (outlier && cols > 0) x[r * cols + (r % cols)] *= 50.0f;
  }
  return x;
}

// ---- int8 per-token, CPU ----------------------------------------------------

TEST(QuantizeInt8Test, KnownValuesRoundHalfAwayFromZero) {
  // Row 0 has scale exactly 1, row 1 exactly 2, so every quotient is exact
  // and the .5 cases really are ties.
  const std::vector<float> x = {127.0f,  -63.5f, 0.5f, -0.49f, 1.5f, 2.5f,
                                -254.0f, 1.0f,   3.0f, -5.0f,  0.0f, 253.0f};
  const Quantized qz = QuantizeCpu(x, 2, 6);
  EXPECT_THAT(qz.scales, ::testing::ElementsAre(1.0f, 2.0f));
  EXPECT_THAT(qz.q, ::testing::ElementsAre(127, -64, 1, 0, 2, 3,  //
                                           -127, 1, 2, -3, 0, 127));
  EXPECT_THAT(DequantizeCpu(qz, 2, 6),
              ::testing::ElementsAre(127.0f, -64.0f, 1.0f, 0.0f, 2.0f, 3.0f,
                                     -254.0f, 2.0f, 4.0f, -6.0f, 0.0f, 254.0f));
}

TEST(QuantizeInt8Test, ScaleIsAbsMaxOver127) {
  const std::vector<float> x = {0.1f, -0.7f, 0.3f};
  const Quantized qz = QuantizeCpu(x, 1, 3);
  EXPECT_EQ(FloatToBits(qz.scales[0]), FloatToBits(0.7f / 127.0f));
  EXPECT_THAT(qz.q, ::testing::ElementsAre(18, -127, 54));
}

TEST(QuantizeInt8Test, ZeroRowsStoreZeroScaleAndZeroQ) {
  const float tiny = F(0x00000001);  // Smallest subnormal; /127 underflows.
  const std::vector<float> x = {0.0f, -0.0f, 0.0f,    //
                                tiny, -tiny, 0.0f,    //
                                1.0f, 0.0f,  -0.0f};  //
  const Quantized qz = QuantizeCpu(x, 3, 3);
  EXPECT_EQ(FloatToBits(qz.scales[0]), 0u);  // +0, not -0.
  EXPECT_EQ(FloatToBits(qz.scales[1]), 0u);
  EXPECT_THAT(qz.q, ::testing::ElementsAre(0, 0, 0, 0, 0, 0, 127, 0, 0));
  const std::vector<float> back = DequantizeCpu(qz, 3, 3);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(FloatToBits(back[i]), 0u) << i;
}

TEST(QuantizeInt8Test, ExtremeFiniteValues) {
  // Row 0: scale near the top of the range. Row 1: small entries vanish
  // next to a huge one. Row 2: subnormal scale (FLT_MIN / 127). Row 3:
  // subnormal inputs whose scale is still nonzero.
  const std::vector<float> x = {3e38f,         -3e38f,        3e38f / 4,    //
                                3e38f,         1.0f,          -1.0e30f,     //
                                FLT_MIN,       -FLT_MIN,      FLT_MIN / 4,  //
                                F(0x00000400), F(0x00000200), 0.0f};
  const Quantized qz = QuantizeCpu(x, 4, 3);
  EXPECT_EQ(qz.scales[0], 3e38f / 127.0f);
  EXPECT_EQ(qz.scales[2], FLT_MIN / 127.0f);
  EXPECT_GT(qz.scales[3], 0.0f);
  EXPECT_THAT(qz.q, ::testing::ElementsAre(127, -127, 32,  //
                                           127, 0, 0,      //
                                           127, -127, 32,  //
                                           127, 64, 0));
  const std::vector<float> back = DequantizeCpu(qz, 4, 3);
  for (float v : back) EXPECT_TRUE(std::isfinite(v)) << v;
  EXPECT_FLOAT_EQ(back[0], 3e38f);
}

TEST(QuantizeInt8Test, FltMaxQuantizesButMayDequantizeToInf) {
  // The documented edge: FLT_MAX / 127 rounds up, so 127 * scale overflows.
  const std::vector<float> x = {FLT_MAX, -FLT_MAX, FLT_MAX / 4};
  const Quantized qz = QuantizeCpu(x, 1, 3);
  EXPECT_EQ(qz.scales[0], FLT_MAX / 127.0f);
  EXPECT_THAT(qz.q, ::testing::ElementsAre(127, -127, 32));
  EXPECT_THAT(DequantizeCpu(qz, 1, 3),
              ::testing::ElementsAre(kInf, -kInf, 32 * (FLT_MAX / 127.0f)));
}

TEST(QuantizeInt8Test, NonFiniteRowsPoisonOnlyThemselves) {
  const std::vector<float> x = {0.5f, -2.0f, 1.5f,  //
                                1.0f, kNaN,  3.0f,  //
                                1.0f, -kInf, 3.0f,  //
                                kInf, kNaN,  0.0f};
  const Quantized qz = QuantizeCpu(x, 4, 3);
  EXPECT_EQ(qz.scales[0], 2.0f / 127.0f);
  EXPECT_TRUE(std::isnan(qz.scales[1]));  // NaN sorts above inf.
  EXPECT_EQ(qz.scales[2], kInf);
  EXPECT_TRUE(std::isnan(qz.scales[3]));
  EXPECT_THAT(qz.q,
              ::testing::ElementsAre(32, -127, 95, 0, 0, 0, 0, 0, 0, 0, 0, 0));
  const std::vector<float> back = DequantizeCpu(qz, 4, 3);
  EXPECT_FLOAT_EQ(back[1], -2.0f);
  for (int i = 3; i < 12; ++i) EXPECT_TRUE(std::isnan(back[i])) << i;
}

TEST(QuantizeInt8Test, EmptyShapes) {
  QuantizeInt8PerToken(nullptr, 0, 5, nullptr, nullptr);
  DequantizeInt8PerToken(nullptr, nullptr, 0, 5, nullptr);
  std::vector<float> scales(3, -1.0f);
  QuantizeInt8PerToken(nullptr, 3, 0, nullptr, scales.data());
  EXPECT_THAT(scales, ::testing::Each(0.0f));
  DequantizeInt8PerToken(nullptr, scales.data(), 3, 0, nullptr);
}

TEST(QuantizeInt8Test, MatchesRoundfReferenceAndRoundTripsWithinHalfScale) {
  for (const auto& [rows, cols] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {5, 17}, {33, 1000}}) {
    SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols));
    const std::vector<float> x = RandomMatrix(rows, cols, 1234);
    const Quantized qz = QuantizeCpu(x, rows, cols);
    const std::vector<float> back = DequantizeCpu(qz, rows, cols);
    for (int64_t r = 0; r < rows; ++r) {
      float abs_max = 0.0f;
      for (int64_t j = 0; j < cols; ++j) {
        abs_max = std::max(abs_max, std::fabs(x[r * cols + j]));
      }
      const float scale = qz.scales[r];
      ASSERT_EQ(scale, abs_max / 127.0f);
      bool hit_max = false;
      for (int64_t j = 0; j < cols; ++j) {
        const size_t i = static_cast<size_t>(r * cols + j);
        // Independent reference for the rounding step: libm's roundf.
        const float ref =
            std::fmin(std::fmax(std::round(x[i] / scale), -127.0f), 127.0f);
        ASSERT_EQ(static_cast<int>(qz.q[i]), static_cast<int>(ref))
            << "r=" << r << " j=" << j;
        hit_max |= qz.q[i] == 127 || qz.q[i] == -127;
        // |x - q*scale| <= scale/2, plus the few ulps the two float
        // roundings (x/scale and q*scale) can add: 254 * 2^-24 < 2e-5.
        const double err = std::fabs(static_cast<double>(x[i]) - back[i]);
        ASSERT_LE(err, 0.50002 * scale) << "r=" << r << " j=" << j;
      }
      EXPECT_TRUE(hit_max) << "row " << r;
    }
  }
}

// ---- fp16 -------------------------------------------------------------------

TEST(Fp16Test, KnownBitPatterns) {
  struct Case {
    float in;
    uint16_t out;
  };
  const Case cases[] = {
      {0.0f, 0x0000},
      {-0.0f, 0x8000},
      {1.0f, 0x3c00},
      {-2.0f, 0xc000},
      {0.1f, 0x2e66},
      {65504.0f, 0x7bff},   // Largest finite half.
      {65519.99f, 0x7bff},  // Just below the tie: stays finite.
      {65520.0f, 0x7c00},   // Tie with an odd max: up to inf.
      {FLT_MAX, 0x7c00},
      {-FLT_MAX, 0xfc00},
      {kInf, 0x7c00},
      {-kInf, 0xfc00},
      {1.0f + 0x1p-11f, 0x3c00},             // Tie: to even (down).
      {1.0f + 3 * 0x1p-11f, 0x3c02},         // Tie: to even (up).
      {1.0f + 0x1p-11f + 0x1p-20f, 0x3c01},  // Above the tie: up.
      {0x1p-14f, 0x0400},                    // Smallest normal.
      {0x1p-14f - 0x1p-25f, 0x0400},  // Tie below it rounds up to normal.
      {0x1p-24f, 0x0001},             // Smallest subnormal.
      {1023 * 0x1p-24f, 0x03ff},      // Largest subnormal.
      {0x1p-25f, 0x0000},             // Tie: to even (zero).
      {-0x1p-25f, 0x8000},
      {0x1p-25f + 0x1p-40f, 0x0001},  // Above the tie: up.
      {3 * 0x1p-25f, 0x0002},         // Tie: to even (up).
      {5 * 0x1p-25f, 0x0002},         // Tie: to even (down).
      {1e-10f, 0x0000},
      {FLT_MIN, 0x0000},
      {F(0x00000001), 0x0000},  // fp32 subnormal.
      {F(0x7fc00000), 0x7e00},  // Quiet NaN.
      {F(0xffc00000), 0xfe00},  // Sign kept.
      {F(0x7f800001), 0x7e00},  // Signalling NaN: quieted, not inf.
      {F(0x7fa02000), 0x7f01},  // Payload's top bits kept.
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Fp32ToFp16Bits(c.in), c.out)
        << std::hexfloat << c.in << " (0x" << std::hex << FloatToBits(c.in)
        << ")";
  }
}

TEST(Fp16Test, DecodeKnownBitPatterns) {
  EXPECT_EQ(FloatToBits(Fp16BitsToFp32(0x0000)), 0x00000000u);
  EXPECT_EQ(FloatToBits(Fp16BitsToFp32(0x8000)), 0x80000000u);
  EXPECT_EQ(Fp16BitsToFp32(0x3c00), 1.0f);
  EXPECT_EQ(Fp16BitsToFp32(0xc000), -2.0f);
  EXPECT_EQ(Fp16BitsToFp32(0x7bff), 65504.0f);
  EXPECT_EQ(Fp16BitsToFp32(0x0400), 0x1p-14f);
  EXPECT_EQ(Fp16BitsToFp32(0x0001), 0x1p-24f);
  EXPECT_EQ(Fp16BitsToFp32(0x8001), -0x1p-24f);
  EXPECT_EQ(Fp16BitsToFp32(0x03ff), 1023 * 0x1p-24f);
  EXPECT_EQ(Fp16BitsToFp32(0x7c00), kInf);
  EXPECT_EQ(Fp16BitsToFp32(0xfc00), -kInf);
  EXPECT_EQ(FloatToBits(Fp16BitsToFp32(0x7e00)), 0x7fc00000u);
  EXPECT_EQ(FloatToBits(Fp16BitsToFp32(0x7c01)), 0x7f802000u);  // sNaN kept.
  EXPECT_EQ(FloatToBits(Fp16BitsToFp32(0xfe01)), 0xffc02000u);
}

TEST(Fp16Test, EveryHalfRoundTripsExactly) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float f = Fp16BitsToFp32(static_cast<uint16_t>(h));
    const bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
    EXPECT_EQ(std::isnan(f), nan) << std::hex << h;
    // NaNs come back quieted, everything else unchanged.
    const uint32_t expected = nan ? (h | 0x0200) : h;
    ASSERT_EQ(Fp32ToFp16Bits(f), expected) << std::hex << h;
  }
}

#if defined(__FLT16_MANT_DIG__)
// GCC 12+ on x86-64 (and AArch64) has _Float16, converted by the compiler
// runtime with round-to-nearest-even: an independent reference.
TEST(Fp16Test, MatchesCompilerFloat16OnRandomAndBoundaryInputs) {
  std::mt19937 rng(42);
  std::vector<uint32_t> inputs;
  for (int i = 0; i < 200000; ++i) inputs.push_back(rng());
  // Dense around the fp16 range: exponents 100..145 cover zero-rounding,
  // subnormals, normals, and overflow.
  for (uint32_t e = 100; e <= 145; ++e) {
    for (uint32_t k = 0; k < 4096; ++k) {
      const uint32_t mantissa = (k * 2053u) & 0x7fffffu;
      inputs.push_back((e << 23) | mantissa);
      inputs.push_back((e << 23) | (mantissa & ~0x1fffu) | 0x1000u);  // Tie.
    }
  }
  int mismatches = 0;
  for (uint32_t bits : inputs) {
    const float f = F(bits);
    if (std::isnan(f)) continue;
    const _Float16 ref = static_cast<_Float16>(f);
    uint16_t ref_bits;
    std::memcpy(&ref_bits, &ref, sizeof(ref_bits));
    if (Fp32ToFp16Bits(f) != ref_bits && ++mismatches < 10) {
      ADD_FAILURE() << std::hex << "0x" << bits << ": got 0x"
                    << Fp32ToFp16Bits(f) << ", want 0x" << ref_bits;
    }
  }
  EXPECT_EQ(mismatches, 0);
}
#endif

// ---- bf16 -------------------------------------------------------------------

TEST(Bf16Test, KnownBitPatterns) {
  struct Case {
    uint32_t in;
    uint16_t out;
  };
  const Case cases[] = {
      {0x00000000, 0x0000},  // +0
      {0x80000000, 0x8000},  // -0
      {0x3f800000, 0x3f80},  // 1
      {0x3f808000, 0x3f80},  // Tie: to even (down).
      {0x3f818000, 0x3f82},  // Tie: to even (up).
      {0x3f808001, 0x3f81},  // Above the tie.
      {0x3f807fff, 0x3f80},  // Below the tie.
      {0xbf818000, 0xbf82},  // Negative tie.
      {0x7f7fffff, 0x7f80},  // FLT_MAX rounds to inf.
      {0x7f7f7fff, 0x7f7f},  // Largest value that stays finite.
      {0x7f800000, 0x7f80},  // inf
      {0xff800000, 0xff80},  // -inf
      {0x00008000, 0x0000},  // Subnormal tie: to even (zero).
      {0x00018000, 0x0002},  // Subnormal tie: to even (up).
      {0x0000ffff, 0x0001},  // Subnormal: up.
      {0x007fffff, 0x0080},  // Largest subnormal rounds to smallest normal.
      {0x7fc00000, 0x7fc0},  // Quiet NaN.
      {0xffc00001, 0xffc0},  // Sign kept.
      {0x7f800001, 0x7fc0},  // Signalling NaN: quieted, not inf.
      {0x7f810000, 0x7fc1},  // Payload's top bits kept.
      {0x7fffffff, 0x7fff},  // Must not carry into the sign.
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Fp32ToBf16Bits(F(c.in)), c.out) << std::hex << "0x" << c.in;
  }
}

TEST(Bf16Test, EveryBf16RoundTripsExactly) {
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    const float f = Bf16BitsToFp32(static_cast<uint16_t>(b));
    ASSERT_EQ(FloatToBits(f), b << 16);
    const bool nan = (b & 0x7f80) == 0x7f80 && (b & 0x7f) != 0;
    ASSERT_EQ(Fp32ToBf16Bits(f), nan ? (b | 0x0040) : b) << std::hex << b;
  }
}

// Reference: pick the nearer of the two bf16 neighbours in double, ties to
// the even one, treating the value past the largest finite as 2^128 (the
// IEEE overflow rule).
uint16_t ReferenceBf16(float f) {
  const uint32_t bits = FloatToBits(f);
  const uint32_t lo = bits & 0xffff0000u;
  const uint32_t hi = lo + 0x10000u;
  const auto value = [](uint32_t b) {
    if ((b & 0x7fffffffu) == 0x7f800000u) {
      return std::copysign(std::ldexp(1.0, 128), static_cast<double>(F(b)));
    }
    return static_cast<double>(F(b));
  };
  const double d = f;
  const double dlo = std::fabs(d - value(lo));
  const double dhi = std::fabs(value(hi) - d);
  if (dlo < dhi) return static_cast<uint16_t>(lo >> 16);
  if (dhi < dlo) return static_cast<uint16_t>(hi >> 16);
  return static_cast<uint16_t>(((lo >> 16) & 1u) ? hi >> 16 : lo >> 16);
}

TEST(Bf16Test, MatchesNearestEvenReference) {
  std::mt19937 rng(7);
  int mismatches = 0;
  for (int i = 0; i < 300000; ++i) {
    uint32_t bits = rng();
    if (i % 3 == 0) bits = (bits & 0xffff0000u) | 0x8000u;  // Force ties.
    const float f = F(bits);
    if (std::isnan(f) || std::isinf(f)) continue;
    if (Fp32ToBf16Bits(f) != ReferenceBf16(f) && ++mismatches < 10) {
      ADD_FAILURE() << std::hex << "0x" << bits;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

// ---- Array entry points (the vectorised loops) ------------------------------

TEST(ArrayCodecsTest, MatchScalarCodecs) {
  std::mt19937 rng(99);
  // Odd length so vector loops also run their scalar tails.
  std::vector<float> f(1237);
  for (float& v : f) v = F(rng());
  f[0] = kNaN;
  f[1] = -kInf;
  f[2] = 65520.0f;
  f[3] = 0x1p-25f;
  const int64_t n = static_cast<int64_t>(f.size());

  std::vector<uint16_t> h(f.size()), b(f.size());
  Fp32ToFp16(f.data(), n, h.data());
  Fp32ToBf16(f.data(), n, b.data());
  std::vector<float> fh(f.size()), fb(f.size());
  Fp16ToFp32(h.data(), n, fh.data());
  Bf16ToFp32(b.data(), n, fb.data());
  for (size_t i = 0; i < f.size(); ++i) {
    ASSERT_EQ(h[i], Fp32ToFp16Bits(f[i])) << i;
    ASSERT_EQ(b[i], Fp32ToBf16Bits(f[i])) << i;
    ASSERT_EQ(FloatToBits(fh[i]), FloatToBits(Fp16BitsToFp32(h[i]))) << i;
    ASSERT_EQ(FloatToBits(fb[i]), FloatToBits(Bf16BitsToFp32(b[i]))) << i;
  }
}

// ---- CUDA -------------------------------------------------------------------

TEST(CudaTest, DeviceProbeIsStableAndQuiet) {
  const bool first = CudaDeviceAvailable();
  EXPECT_EQ(CudaDeviceAvailable(), first);
#if !EDGESPLIT_WITH_CUDA
  EXPECT_FALSE(first);
#endif
}

TEST(CudaTest, RejectsBadArgumentsBeforeTouchingTheDevice) {
  float f = 0.0f;
  int8_t q = 0;
  EXPECT_EQ(QuantizeInt8PerTokenCuda(&f, -1, 1, &q, &f).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeInt8PerTokenCuda(nullptr, 1, 1, &q, &f).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeInt8PerTokenCuda(&f, 1, 0, &q, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DequantizeInt8PerTokenCuda(&q, &f, 1, -3, &f).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DequantizeInt8PerTokenCuda(&q, nullptr, 1, 1, &f).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CudaTest, WithoutDeviceReportsFailedPrecondition) {
  if (CudaDeviceAvailable()) GTEST_SKIP() << "a CUDA device is available";
  float f = 1.0f;
  int8_t q = 0;
  const absl::Status s = QuantizeInt8PerTokenCuda(&f, 1, 1, &q, &f);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(DequantizeInt8PerTokenCuda(&q, &f, 1, 1, &f).code(),
            absl::StatusCode::kFailedPrecondition);
}

#if EDGESPLIT_WITH_CUDA
// Bitwise equality, except that any two NaNs match: NaN payloads produced by
// arithmetic differ between x86 and GPUs (and are not part of the contract).
::testing::AssertionResult SameFloat(float a, float b) {
  if ((std::isnan(a) && std::isnan(b)) || FloatToBits(a) == FloatToBits(b)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << a << " (0x" << std::hex << FloatToBits(a) << ") vs " << b << " (0x"
         << FloatToBits(b) << ")";
}

#endif  // EDGESPLIT_WITH_CUDA

struct Shape {
  int64_t rows;
  int64_t cols;
};

class CudaMatchesCpuTest : public ::testing::TestWithParam<Shape> {};

TEST_P(CudaMatchesCpuTest, QuantizeAndDequantizeAreBitExact) {
  if (!CudaDeviceAvailable()) {
    GTEST_SKIP() << "no usable CUDA device (or built without CUDA); "
                    "CUDA-vs-CPU bit-exactness not checked";
  }
#if EDGESPLIT_WITH_CUDA
  const int64_t rows = GetParam().rows;
  const int64_t cols = GetParam().cols;
  const size_t n = static_cast<size_t>(rows * cols);
  std::vector<float> x = RandomMatrix(rows, cols, 2024);
  // Plant the rows that exercise every branch: zero, exact ties, an
  // underflowing scale, and non-finite values.
  const auto row = [&](int64_t r) { return x.begin() + r * cols; };
  if (rows > 1 && cols > 0) std::fill(row(1), row(2), -0.0f);
  if (rows > 2 && cols > 0) {
    for (int64_t j = 0; j < cols; ++j) row(2)[j] = (j % 254) - 127 + 0.5f;
    row(2)[0] = 127.0f;  // Scale exactly 1, so every .5 is a true tie.
  }
  if (rows > 3 && cols > 0) std::fill(row(3), row(4), F(0x00000001));
  if (rows > 4 && cols > 0) row(4)[cols / 2] = kNaN;
  if (rows > 5 && cols > 0) row(5)[cols - 1] = -kInf;

  const Quantized cpu = QuantizeCpu(x, rows, cols);
  const std::vector<float> cpu_back = DequantizeCpu(cpu, rows, cols);

  DeviceArray<float> d_x(n);
  DeviceArray<int8_t> d_q(n);
  DeviceArray<float> d_scales(static_cast<size_t>(rows));
  DeviceArray<float> d_back(n);
  d_x.Upload(x);
  ASSERT_TRUE(
      QuantizeInt8PerTokenCuda(d_x.get(), rows, cols, d_q.get(), d_scales.get())
          .ok());
  ASSERT_TRUE(DequantizeInt8PerTokenCuda(d_q.get(), d_scales.get(), rows, cols,
                                         d_back.get())
                  .ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  const std::vector<int8_t> q = d_q.Download();
  const std::vector<float> scales = d_scales.Download();
  const std::vector<float> back = d_back.Download();
  for (int64_t r = 0; r < rows; ++r) {
    ASSERT_TRUE(SameFloat(scales[r], cpu.scales[r])) << "row " << r;
  }
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(static_cast<int>(q[i]), static_cast<int>(cpu.q[i]))
        << "row " << i / cols << " col " << i % cols;
    ASSERT_TRUE(SameFloat(back[i], cpu_back[i]))
        << "row " << i / cols << " col " << i % cols;
  }
#endif
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaMatchesCpuTest,
    ::testing::Values(Shape{1, 1}, Shape{7, 129}, Shape{64, 4096}, Shape{6, 31},
                      Shape{3, 0}, Shape{70000, 3}),  // More rows than blocks.
    [](const ::testing::TestParamInfo<Shape>& info) {
      return std::to_string(info.param.rows) + "x" +
             std::to_string(info.param.cols);
    });

}  // namespace
}  // namespace edgesplit
