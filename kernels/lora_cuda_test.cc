// The CUDA mixed-adapter LoRA kernel against its CPU twin when a GPU is
// present (skipped cleanly otherwise); the argument checks run everywhere.
#include "kernels/lora_cuda.h"

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/lora_sgmv.h"
#include "kernels/cuda_device.h"
#include "kernels/cuda_test_util.h"
#include "testing/random_floats.h"

namespace edgesplit::kernels {
namespace {

TEST(LoraCudaTest, RejectsBadArgumentsBeforeTouchingTheDevice) {
  float f = 0;
  LoraSegment ok{0, 1, &f, &f, 1, 1.0f};
  LoraSegment bad_rank = ok;
  bad_rank.rank = kLoraCudaMaxRank + 1;
  EXPECT_EQ(LoraSgmvCuda(&bad_rank, 1, &f, 1, 1, &f, &f).code(),
            absl::StatusCode::kInvalidArgument);
  LoraSegment null_factor = ok;
  null_factor.b = nullptr;
  EXPECT_EQ(LoraSgmvCuda(&null_factor, 1, &f, 1, 1, &f, &f).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<LoraSegment> many(kLoraCudaMaxSegments + 1, ok);
  EXPECT_EQ(LoraSgmvCuda(many.data(), static_cast<int64_t>(many.size()), &f, 1,
                         1, &f, &f)
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoraSgmvCuda(&ok, 1, nullptr, 1, 1, &f, &f).code(),
            absl::StatusCode::kInvalidArgument);
  if (!CudaDeviceAvailable()) {
    EXPECT_EQ(LoraSgmvCuda(&ok, 1, &f, 1, 1, &f, &f).code(),
              absl::StatusCode::kFailedPrecondition);
  }
}

#if EDGESPLIT_WITH_CUDA
std::vector<float> Random(int64_t n, uint32_t seed) {
  return testing::RandomNormal(n, seed);
}

TEST(LoraCudaTest, MatchesTheCpuKernelOnAMixedBatch) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no usable CUDA device";
  const int64_t in = 768, out = 2304, rows = 16;
  // Eight adapters of ranks 16 and 8 over two rows each, one row left to
  // the base model.
  std::vector<std::vector<float>> a_host, b_host;
  std::vector<std::unique_ptr<DeviceArray<float>>> a_dev, b_dev;
  std::vector<LoraSegment> host, dev;
  for (int s = 0; s < 8; ++s) {
    const int64_t rank = s % 2 == 0 ? 16 : 8;
    a_host.push_back(Random(rank * in, 100 + s));
    b_host.push_back(Random(out * rank, 200 + s));
    a_dev.push_back(std::make_unique<DeviceArray<float>>(a_host.back().size()));
    b_dev.push_back(std::make_unique<DeviceArray<float>>(b_host.back().size()));
    a_dev.back()->Upload(a_host.back());
    b_dev.back()->Upload(b_host.back());
    const int64_t begin = s < 7 ? 2 * s : 15, n = s < 7 ? 2 : 1;
    const float scaling = 0.25f * static_cast<float>(s + 1);
    host.push_back(
        {begin, n, a_host.back().data(), b_host.back().data(), rank, scaling});
    dev.push_back(
        {begin, n, a_dev.back()->get(), b_dev.back()->get(), rank, scaling});
  }
  // Row 14 is in no segment.
  const std::vector<float> x = Random(rows * in, 1);
  std::vector<float> want = Random(rows * out, 2);
  DeviceArray<float> x_dev(x.size()), y_dev(want.size());
  x_dev.Upload(x);
  y_dev.Upload(want);
  DeviceArray<float> scratch(static_cast<size_t>(
      LoraSgmvCudaScratch(dev.data(), static_cast<int64_t>(dev.size()))));
  ASSERT_TRUE(LoraSgmvCuda(dev.data(), static_cast<int64_t>(dev.size()),
                           x_dev.get(), in, out, y_dev.get(), scratch.get())
                  .ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> got = y_dev.Download();
  const std::vector<float> before = want;
  LoraSgmv(host.data(), static_cast<int64_t>(host.size()), x.data(), in, out,
           want.data());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], 1e-3f * (1.0f + std::abs(want[i])))
        << "element " << i;
  }
  for (int64_t o = 0; o < out; ++o) {
    EXPECT_EQ(got[14 * out + o], before[14 * out + o]);
  }
}
#endif  // EDGESPLIT_WITH_CUDA

}  // namespace
}  // namespace edgesplit::kernels
