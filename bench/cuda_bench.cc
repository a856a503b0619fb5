// The CUDA kernels' speed on a GPU (absolute times are allowed there), each
// against an honest limit measured in the same run:
//   - the device's memory bandwidth, from a device-to-device copy (bytes
//     read + written per second);
//   - GemvCuda per weight type at 1, 16 and 64 rows on an FFN-sized matrix,
//     as weight bytes streamed per second and as a share of that bandwidth;
//   - DequantizeRowsCuda (prefill's path) as bytes read + written;
//   - LoraSgmvCuda over 16 rows mixing 8 rank-16 adapters, as the time it
//     adds to the 16-row base product (issue 15's aim: with adapters >= 0.90x
//     the tokens/s without).
// Each weight matrix is replicated until the copies exceed 512 MiB and the
// timed calls rotate through them, so no call finds its weights in L2
// (60 MB on an H200). Prints "no usable CUDA device" and exits 0 elsewhere.
//
//   cuda_bench [--out 14336] [--in 4096] [--iters 50]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/lora_sgmv.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cuda_device.h"
#include "kernels/gemv_cuda.h"
#include "kernels/lora_cuda.h"
#include "testing/random_floats.h"

namespace edgesplit::kernels {
namespace {

void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
    std::exit(1);
  }
}

int64_t FlagInt(int argc, char** argv, const std::string& name, int64_t def) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == "--" + name) return std::atoll(argv[i + 1]);
  }
  return def;
}

std::vector<float> Random(int64_t n, uint32_t seed) {
  return testing::RandomNormal(n, seed);
}

// Device memory owned for the program's life (a benchmark frees at exit).
template <typename T>
T* DeviceAlloc(int64_t n) {
  void* p = nullptr;
  Check(
      cudaMalloc(&p, static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T)),
      "cudaMalloc");
  return static_cast<T*>(p);
}

template <typename T>
T* Upload(const std::vector<T>& v) {
  T* d = DeviceAlloc<T>(static_cast<int64_t>(v.size()));
  Check(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice),
        "upload");
  return d;
}

// Mean seconds per call of `fn(i)` over `iters` calls after 3 warm-ups.
template <typename Fn>
double TimePerCall(int iters, Fn fn) {
  for (int i = 0; i < 3; ++i) fn(i);
  cudaEvent_t start, stop;
  Check(cudaEventCreate(&start), "event");
  Check(cudaEventCreate(&stop), "event");
  Check(cudaEventRecord(start), "record");
  for (int i = 0; i < iters; ++i) fn(i);
  Check(cudaEventRecord(stop), "record");
  Check(cudaEventSynchronize(stop), "sync");
  float ms = 0;
  Check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms * 1e-3 / iters;
}

double CopyBandwidth(int iters) {
  const int64_t bytes = int64_t{1} << 30;
  char* a = DeviceAlloc<char>(bytes);
  char* b = DeviceAlloc<char>(bytes);
  Check(cudaMemset(a, 1, bytes), "memset");
  const double t = TimePerCall(iters, [&](int) {
    Check(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice), "copy");
  });
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / t;
}

// `copies` device copies of one [out, in] matrix of `type`: 256 distinct
// quantized rows repeated (their content does not change the kernels' work).
std::vector<const void*> Weights(WeightType type, int64_t out, int64_t in,
                                 int64_t* bytes) {
  const int64_t rb = RowBytes(type, in);
  const std::vector<float> src = Random(256 * in, 1);
  std::vector<uint8_t> host(static_cast<size_t>(rb * out));
  for (int64_t o = 0; o < out; ++o) {
    if (o < 256) {
      QuantizeRow(type, src.data() + o * in, in, host.data() + o * rb);
    } else {
      std::copy_n(host.data() + (o % 256) * rb, rb, host.data() + o * rb);
    }
  }
  *bytes = rb * out;
  const int64_t copies =
      std::max<int64_t>(2, ((int64_t{512} << 20) + *bytes - 1) / *bytes);
  std::vector<const void*> w;
  for (int64_t c = 0; c < copies; ++c) w.push_back(Upload(host));
  return w;
}

void GemvTable(int64_t out, int64_t in, int iters, double bw) {
  std::printf("\nGemvCuda, %lldx%lld (weights rotated past L2), %d calls\n",
              static_cast<long long>(out), static_cast<long long>(in), iters);
  std::printf("%-6s %5s %10s %10s %8s %12s\n", "type", "rows", "us/call",
              "weight GB/s", "of copy", "dequant GB/s");
  const float* x = Upload(Random(kGemvCudaMaxRows * in, 2));
  float* y = DeviceAlloc<float>(kGemvCudaMaxRows * out);
  const int64_t dq_rows = 1024;
  float* dense = DeviceAlloc<float>(dq_rows * in);
  // One scratch for x's blocks, as a server keeps per stream.
  void* scratch = DeviceAlloc<char>(
      GemvCudaScratchBytes(WeightType::kQ8_0, kGemvCudaMaxRows, in));
  for (WeightType type :
       {WeightType::kF32, WeightType::kF16, WeightType::kQ8_0,
        WeightType::kQ4_0, WeightType::kQ4_K, WeightType::kQ6_K}) {
    int64_t bytes = 0;
    const std::vector<const void*> w = Weights(type, out, in, &bytes);
    const double dq = TimePerCall(iters, [&](int i) {
      Check(DequantizeRowsCuda(type, w[i % w.size()], dq_rows, in, dense),
            "dequantize");
    });
    const double dq_bytes =
        static_cast<double>(bytes) * dq_rows / out + 4.0 * dq_rows * in;
    for (int64_t rows : {int64_t{1}, int64_t{16}, kGemvCudaMaxRows}) {
      const double t = TimePerCall(iters, [&](int i) {
        Check(GemvCuda(type, w[i % w.size()], out, in, x, rows, y, nullptr,
                       scratch),
              "gemv");
      });
      std::printf("%-6s %5lld %10.1f %10.0f %7.0f%% %12.0f\n",
                  WeightTypeName(type), static_cast<long long>(rows), t * 1e6,
                  bytes / t * 1e-9, 100.0 * bytes / t / bw,
                  dq_bytes / dq * 1e-9);
      if (type == WeightType::kQ4_0 && rows == 1) {
        const double own = TimePerCall(iters, [&](int i) {
          Check(GemvCuda(type, w[i % w.size()], out, in, x, rows, y), "gemv");
        });
        std::printf("%-6s %5lld %10.1f   (scratch allocated per call)\n",
                    WeightTypeName(type), static_cast<long long>(rows),
                    own * 1e6);
      }
    }
    for (const void* p : w) cudaFree(const_cast<void*>(p));
  }
}

void LoraTable(int64_t dim, int iters) {
  const int64_t rows = 16, adapters = 8, rank = 16;
  std::printf("\nLoraSgmvCuda: %lld rows, %lld rank-%lld adapters, %lldx%lld\n",
              static_cast<long long>(rows), static_cast<long long>(adapters),
              static_cast<long long>(rank), static_cast<long long>(dim),
              static_cast<long long>(dim));
  std::vector<LoraSegment> seg;
  for (int64_t s = 0; s < adapters; ++s) {
    LoraSegment g;
    g.row_begin = s * rows / adapters;
    g.rows = rows / adapters;
    g.a = Upload(Random(rank * dim, 10 + s));
    g.b = Upload(Random(dim * rank, 20 + s));
    g.rank = rank;
    g.scaling = 2.0f;
    seg.push_back(g);
  }
  const float* x = Upload(Random(rows * dim, 3));
  float* y = DeviceAlloc<float>(rows * dim);
  float* scratch = DeviceAlloc<float>(
      LoraSgmvCudaScratch(seg.data(), static_cast<int64_t>(seg.size())));
  const double lora = TimePerCall(iters, [&](int) {
    Check(LoraSgmvCuda(seg.data(), static_cast<int64_t>(seg.size()), x, dim,
                       dim, y, scratch),
          "lora");
  });
  std::printf("%-6s %12s %12s %14s\n", "base", "base us", "+lora us",
              "with/without");
  void* gemv_scratch =
      DeviceAlloc<char>(GemvCudaScratchBytes(WeightType::kQ4_0, rows, dim));
  for (WeightType type : {WeightType::kF16, WeightType::kQ4_0}) {
    int64_t bytes = 0;
    const std::vector<const void*> w = Weights(type, dim, dim, &bytes);
    const double base = TimePerCall(iters, [&](int i) {
      Check(GemvCuda(type, w[i % w.size()], dim, dim, x, rows, y, nullptr,
                     gemv_scratch),
            "gemv");
    });
    std::printf("%-6s %12.1f %12.1f %13.2fx\n", WeightTypeName(type),
                base * 1e6, lora * 1e6, base / (base + lora));
    for (const void* p : w) cudaFree(const_cast<void*>(p));
  }
}

int Main(int argc, char** argv) {
  if (!CudaDeviceAvailable()) {
    std::printf("no usable CUDA device (or built without CUDA)\n");
    return 0;
  }
  cudaDeviceProp prop{};
  Check(cudaGetDeviceProperties(&prop, 0), "properties");
  const int64_t out = FlagInt(argc, argv, "out", 14336);
  const int64_t in = FlagInt(argc, argv, "in", 4096);
  const int iters = static_cast<int>(FlagInt(argc, argv, "iters", 50));
  const double bw = CopyBandwidth(20);
  std::printf("%s, %d SMs, L2 %d MB; device copy %.0f GB/s (read + write)\n",
              prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20,
              bw * 1e-9);
  GemvTable(out, in, iters, bw);
  LoraTable(in, iters);
  return 0;
}

}  // namespace
}  // namespace edgesplit::kernels

int main(int argc, char** argv) { return edgesplit::kernels::Main(argc, argv); }
