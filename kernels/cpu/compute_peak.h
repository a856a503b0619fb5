// The kernel threads' arithmetic peak: the honest limit for batched decode,
// which does `batch` times one token's multiply-adds on weights read once,
// so past a few sessions it is bound by arithmetic, not by memory.
#ifndef EDGESPLIT_KERNELS_CPU_COMPUTE_PEAK_H_
#define EDGESPLIT_KERNELS_CPU_COMPUTE_PEAK_H_

namespace edgesplit::kernels {

struct ComputePeak {
  double f32_fma_per_s = 0;  // f32 multiply-adds per second.
  double i8_mac_per_s = 0;   // int8 products (u8 x s8 into int32) per second.
};

// Register-resident loops of the active level's widest multiply-adds
// (AVX-512: vfmadd231ps and vpdpbusd on zmm; AVX2: vfmadd231ps, and
// vpmaddubsw + vpmaddwd + vpaddd as the AVX2 quantized kernels multiply) on
// every thread of the kernel pool (compute_pool.h) at once, no memory
// traffic; best of `reps` passes. An upper bound: real kernels also load,
// unpack and scale. Not thread-safe against running kernels (it occupies
// the pool).
ComputePeak MeasureComputePeak(int reps = 3);

}  // namespace edgesplit::kernels

#endif  // EDGESPLIT_KERNELS_CPU_COMPUTE_PEAK_H_
