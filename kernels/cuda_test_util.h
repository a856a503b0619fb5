// Test helper: device memory for the CUDA kernels' tests.
#ifndef EDGESPLIT_KERNELS_CUDA_TEST_UTIL_H_
#define EDGESPLIT_KERNELS_CUDA_TEST_UTIL_H_

#if EDGESPLIT_WITH_CUDA
#include <cuda_runtime_api.h>

#include <cstddef>
#include <vector>

#include "gtest/gtest.h"

namespace edgesplit {

// Owns a device allocation; test-only, failures are fatal to the test.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    if (n_ > 0) {
      EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&ptr_), n_ * sizeof(T)),
                cudaSuccess);
    }
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }

  T* get() { return ptr_; }
  void Upload(const std::vector<T>& v) {
    ASSERT_EQ(v.size(), n_);
    if (n_ == 0) return;
    ASSERT_EQ(
        cudaMemcpy(ptr_, v.data(), n_ * sizeof(T), cudaMemcpyHostToDevice),
        cudaSuccess);
  }
  std::vector<T> Download() const {
    std::vector<T> v(n_);
    if (n_ > 0) {
      EXPECT_EQ(
          cudaMemcpy(v.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost),
          cudaSuccess);
    }
    return v;
  }

 private:
  size_t n_;
  T* ptr_ = nullptr;
};
}  // namespace edgesplit

#endif  // EDGESPLIT_WITH_CUDA
#endif  // EDGESPLIT_KERNELS_CUDA_TEST_UTIL_H_
