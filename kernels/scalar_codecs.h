// Scalar building blocks of the activation wire codecs: fp32 <-> fp16,
// fp32 <-> bf16, and symmetric int8 quantization with per-row scales.
//
// This header is the single definition of every rounding decision. The CPU
// loops (quantize_cpu.cc) and the CUDA kernels (quantize_cuda.cu) both call
// these functions, so the two paths agree bit for bit. To keep that true:
//   * every step is one IEEE-754 operation in round-to-nearest-even mode
//     (no a*b+c shapes, so FMA contraction on either compiler cannot change
//     a result; division is the correctly rounded one on both: nvcc's default
//     -prec-div=true, and no -ffast-math on the host);
//   * anything order-dependent (the row maximum) is done on integers, where
//     max is exact, associative and commutative.
// It must stay free of absl and of library calls that do not exist on the
// device, because nvcc compiles it too.
#ifndef EDGESPLIT_KERNELS_SCALAR_CODECS_H_
#define EDGESPLIT_KERNELS_SCALAR_CODECS_H_

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define EDGESPLIT_HD __host__ __device__ __forceinline__
#else
#define EDGESPLIT_HD inline
#endif

namespace edgesplit {

// Largest quantized magnitude. The range is symmetric ([-127, 127]); -128 is
// never produced so that negation and dequantization stay symmetric.
inline constexpr int32_t kInt8QuantMax = 127;

EDGESPLIT_HD uint32_t FloatToBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

EDGESPLIT_HD float BitsToFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

// ---- fp16 (IEEE binary16) ---------------------------------------------------

// Rounds to nearest, ties to even. Overflow (|x| >= 65520) becomes +-inf,
// values below half the smallest subnormal become +-0, and NaN stays NaN:
// the sign and the top 10 payload bits are kept with the quiet bit forced on,
// so a signalling NaN whose payload lives only in the low bits cannot turn
// into infinity. Written as straight-line selects so the caller's loop
// vectorises.
EDGESPLIT_HD uint16_t Fp32ToFp16Bits(float f) {
  const uint32_t x = FloatToBits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7fffffffu;
  // Normal results: rebias the exponent (127 -> 15) and round the 13 dropped
  // mantissa bits to nearest even; a carry correctly bumps the exponent.
  // (Wraps for small `a`, but then the select below discards it.)
  const uint32_t normal = (a - 0x38000000u + 0xfffu + ((a >> 13) & 1u)) >> 13;
  // Subnormal results (|x| < 2^-14): adding 0.5 makes the float adder round
  // |x| to a multiple of 2^-24 (the ulp of [0.5, 1)), ties to even, and the
  // low mantissa bits of the sum are then exactly the half's bits. A result
  // of 2^-14 yields 0x0400, the smallest normal half, as it should.
  const uint32_t subnormal = FloatToBits(BitsToFloat(a) + 0.5f) - 0x3f000000u;
  const uint32_t nan = 0x7e00u | ((a >> 13) & 0x3ffu);
  uint32_t h = a < 0x38800000u ? subnormal : normal;
  h = a >= 0x477ff000u ? 0x7c00u : h;  // 65520 and up round to infinity.
  h = a > 0x7f800000u ? nan : h;
  return static_cast<uint16_t>(sign | h);
}

// Exact (every fp16 value is an fp32 value); NaN payloads are kept.
EDGESPLIT_HD float Fp16BitsToFp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  // Normal: rebias the exponent (15 -> 127).
  const uint32_t normal = ((h & 0x7fffu) << 13) + 0x38000000u;
  // Inf/NaN: all-ones exponent, payload shifted into place.
  const uint32_t special = 0x7f800000u | (mant << 13);
  // Subnormal/zero: mant * 2^-24, computed exactly as (0.5 + mant * 2^-24)
  // - 0.5, which avoids an int->float conversion and a variable shift.
  const uint32_t subnormal =
      FloatToBits(BitsToFloat(0x3f000000u | mant) - 0.5f);
  uint32_t bits = exp == 0 ? subnormal : normal;
  bits = exp == 0x1fu ? special : bits;
  return BitsToFloat(sign | bits);
}

// ---- bf16 (bfloat16: the top half of an fp32) ------------------------------

// Rounds to nearest, ties to even (so FLT_MAX becomes +inf, as in PyTorch).
// NaN stays NaN with its sign and top payload bits, quiet bit set.
EDGESPLIT_HD uint16_t Fp32ToBf16Bits(float f) {
  const uint32_t x = FloatToBits(f);
  const uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
  const uint32_t nan = (x >> 16) | 0x0040u;
  return static_cast<uint16_t>((x & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

EDGESPLIT_HD float Bf16BitsToFp32(uint16_t b) {
  return BitsToFloat(static_cast<uint32_t>(b) << 16);
}

// ---- int8, symmetric, one scale per row ------------------------------------

// |x| as ordered bits: for non-NaN floats, comparing these as unsigned
// integers orders them like the magnitudes, and every NaN sorts above +inf.
// Taking the row maximum on these integers makes it exact and independent of
// reduction order, which is what lets a warp-shuffle tree on the GPU match a
// sequential (or SIMD) loop on the CPU.
EDGESPLIT_HD uint32_t AbsBits(float x) { return FloatToBits(x) & 0x7fffffffu; }

// scale = max|x| / 127. An all-zero row gives 0; so does a row of values so
// tiny that the division underflows, and callers then emit q = 0 (a zero scale
// must never be divided by). A row holding inf gets scale inf and one holding
// NaN gets scale NaN.
EDGESPLIT_HD float Int8ScaleFromAbsMaxBits(uint32_t abs_max_bits) {
  return BitsToFloat(abs_max_bits) / static_cast<float>(kInt8QuantMax);
}

// q = clamp(round_half_away_from_zero(x / scale), -127, 127) for a nonzero
// scale. NaN quotients (from a NaN element, or inf/inf in a row whose scale
// is inf) give 0, so non-finite rows come out as q = 0 with a non-finite
// scale and dequantize to NaN. Branch-free: the conversion truncates an
// already clamped value (never out of range, never NaN), and the fraction
// v - trunc(v) is exact, so the half-way test is exact too.
EDGESPLIT_HD int8_t QuantizeToInt8(float x, float scale) {
  float v = x / scale;
  v = v == v ? v : 0.0f;  // NaN -> 0; the comparisons below are false on NaN.
  v = v > 127.0f ? 127.0f : v;
  v = v < -127.0f ? -127.0f : v;
  const int32_t t = static_cast<int32_t>(v);
  const float frac = v - static_cast<float>(t);
  const int32_t q = t + (frac >= 0.5f ? 1 : 0) - (frac <= -0.5f ? 1 : 0);
  return static_cast<int8_t>(q);
}

EDGESPLIT_HD float DequantizeInt8(int8_t q, float scale) {
  return static_cast<float>(q) * scale;
}

}  // namespace edgesplit

#endif  // EDGESPLIT_KERNELS_SCALAR_CODECS_H_
