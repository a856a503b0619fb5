// The CUDA GEMV and dequantization against their CPU twins, for every
// weight type, when a GPU is present (skipped cleanly otherwise); the
// argument checks run everywhere.
#include "kernels/gemv_cuda.h"

#include <cfloat>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/gemv.h"
#include "kernels/cuda_device.h"
#include "kernels/cuda_test_util.h"
#include "kernels/scalar_codecs.h"
#include "testing/random_floats.h"

namespace edgesplit::kernels {
namespace {

TEST(GemvCudaTest, RejectsBadArgumentsBeforeTouchingTheDevice) {
  float f = 0;
  alignas(4) uint8_t w[64] = {};
  EXPECT_EQ(GemvCuda(WeightType::kQ4_K, w, 1, 32, &f, 1, &f).code(),
            absl::StatusCode::kInvalidArgument);  // Rows of 256.
  EXPECT_EQ(GemvCuda(WeightType::kF32, w, 1, 4, &f, 65, &f).code(),
            absl::StatusCode::kInvalidArgument);  // Too many rows.
  EXPECT_EQ(GemvCuda(WeightType::kF32, nullptr, 1, 4, &f, 1, &f).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GemvCuda(WeightType::kF16, w + 2, 1, 4, &f, 1, &f).code(),
            absl::StatusCode::kInvalidArgument);  // Not 4-byte aligned.
  EXPECT_EQ(DequantizeRowsCuda(WeightType::kQ8_0, w, -1, 32, &f).code(),
            absl::StatusCode::kInvalidArgument);
  if (!CudaDeviceAvailable()) {
    EXPECT_EQ(GemvCuda(WeightType::kF32, w, 1, 4, &f, 1, &f).code(),
              absl::StatusCode::kFailedPrecondition);
  }
}

#if EDGESPLIT_WITH_CUDA
constexpr WeightType kTypes[] = {WeightType::kF32,  WeightType::kF16,
                                 WeightType::kQ8_0, WeightType::kQ4_0,
                                 WeightType::kQ4_K, WeightType::kQ6_K};

std::vector<float> Random(int64_t n, uint32_t seed) {
  return testing::RandomNormal(n, seed);
}

std::vector<uint8_t> Quantized(WeightType type, const std::vector<float>& w,
                               int64_t out, int64_t in) {
  const int64_t rb = RowBytes(type, in);
  std::vector<uint8_t> bytes(static_cast<size_t>(rb * out));
  for (int64_t o = 0; o < out; ++o) {
    QuantizeRow(type, w.data() + o * in, in, bytes.data() + o * rb);
  }
  return bytes;
}

#endif  // EDGESPLIT_WITH_CUDA

// Against the scalar CPU kernel: the same codes and scales (the x blocks
// come from the same scalar code), only the float summation order differs,
// bounded as the CPU variants are (gemv_test.cc); dequantization equals the
// CPU's bit for bit.
TEST(GemvCudaTest, MatchesTheCpuKernelsForEveryType) {
  if (!CudaDeviceAvailable()) {
    GTEST_SKIP() << "no usable CUDA device (or built without CUDA); "
                    "CUDA GEMV not compared with the CPU";
  }
#if EDGESPLIT_WITH_CUDA
  for (WeightType type : kTypes) {
    // Row counts that fill 1-, 4- and 8-row tiles and leave partial ones,
    // output counts that leave a block's warps idle.
    for (auto [out, in, rows] :
         {std::tuple<int64_t, int64_t, int64_t>{37, 256, 1},
          {130, 512, 5},
          {64, 1024, 17},
          {9, 768, 2},
          {33, 2048, kGemvCudaMaxRows}}) {
      const std::vector<uint8_t> w =
          Quantized(type, Random(out * in, 1), out, in);
      const std::vector<float> x = Random(rows * in, 2);
      std::vector<float> want(rows * out), mag(rows * out, 0.0f);
      GemvOn(Isa::kScalar, {type, w.data(), out, in}, x.data(), rows,
             want.data(), 0, out);
      std::vector<float> dense(out * in);
      DequantizeRows({type, w.data(), out, in}, 0, out, dense.data());
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t o = 0; o < out; ++o) {
          for (int64_t i = 0; i < in; ++i) {
            mag[r * out + o] += std::fabs(dense[o * in + i] * x[r * in + i]);
          }
        }
      }
      DeviceArray<uint8_t> d_w(w.size());
      DeviceArray<float> d_x(x.size()), d_y(want.size()), d_dense(dense.size());
      d_w.Upload(w);
      d_x.Upload(x);
      ASSERT_TRUE(
          GemvCuda(type, d_w.get(), out, in, d_x.get(), rows, d_y.get()).ok());
      ASSERT_TRUE(
          DequantizeRowsCuda(type, d_w.get(), out, in, d_dense.get()).ok());
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const std::vector<float> got = d_y.Download();
      // With the caller's scratch: the same kernels, the same bits.
      DeviceArray<uint8_t> scratch(
          static_cast<size_t>(GemvCudaScratchBytes(type, rows, in)));
      DeviceArray<float> d_y2(want.size());
      ASSERT_TRUE(GemvCuda(type, d_w.get(), out, in, d_x.get(), rows,
                           d_y2.get(), nullptr, scratch.get())
                      .ok());
      const std::vector<float> got2 = d_y2.Download();
      ASSERT_EQ(
          0, std::memcmp(got.data(), got2.data(), got.size() * sizeof(float)))
          << WeightTypeName(type);
      const std::vector<float> got_dense = d_dense.Download();
      ASSERT_EQ(0, std::memcmp(got_dense.data(), dense.data(),
                               dense.size() * sizeof(float)))
          << WeightTypeName(type);
      // Q4_K's mins and block scales count like extra terms (gemv_test).
      const double terms = 4.0 * in;
      for (size_t k = 0; k < got.size(); ++k) {
        ASSERT_LE(std::fabs(got[k] - want[k]),
                  2 * terms * FLT_EPSILON * (mag[k] + 1e-6))
            << WeightTypeName(type) << " " << out << "x" << in << " at " << k;
      }
    }
  }
#endif
}

// Float weights whose rows or x are not 16-byte aligned take the one-element
// path: `in` not a multiple of 4, or x starting one float into its buffer.
TEST(GemvCudaTest, FloatWeightsOffTheVectorPathMatchTheCpu) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no usable CUDA device";
#if EDGESPLIT_WITH_CUDA
  for (WeightType type : {WeightType::kF32, WeightType::kF16}) {
    for (auto [out, in, rows, shift] :
         {std::tuple<int64_t, int64_t, int64_t, int64_t>{21, 101, 3, 0},
          {40, 256, 9, 1}}) {
      const std::vector<uint8_t> w =
          Quantized(type, Random(out * in, 5), out, in);
      const std::vector<float> x = Random(rows * in + shift, 6);
      std::vector<float> want(rows * out);
      GemvOn(Isa::kScalar, {type, w.data(), out, in}, x.data() + shift, rows,
             want.data(), 0, out);
      DeviceArray<uint8_t> d_w(w.size());
      DeviceArray<float> d_x(x.size()), d_y(want.size());
      d_w.Upload(w);
      d_x.Upload(x);
      ASSERT_TRUE(
          GemvCuda(type, d_w.get(), out, in, d_x.get() + shift, rows, d_y.get())
              .ok());
      const std::vector<float> got = d_y.Download();
      for (size_t k = 0; k < got.size(); ++k) {
        ASSERT_NEAR(got[k], want[k], 1e-4f * (1 + std::fabs(want[k])))
            << WeightTypeName(type) << " " << in << " at " << k;
      }
    }
  }
#endif
}

}  // namespace
}  // namespace edgesplit::kernels
