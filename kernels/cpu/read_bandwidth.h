// The machine's memory read bandwidth as the kernels' threads see it: the
// honest limit for decode, which reads every weight once per token.
#ifndef EDGESPLIT_KERNELS_CPU_READ_BANDWIDTH_H_
#define EDGESPLIT_KERNELS_CPU_READ_BANDWIDTH_H_

#include <cstdint>

namespace edgesplit::kernels {

// A buffer far larger than the caches, allocated once (2 MiB aligned, huge
// pages requested, as large weight copies get them), read by a plain
// streaming read: an integer sum over the widest loads the CPU has, split
// over the kernel pool's threads (compute_pool.h). Allocate it before
// loading models: later, fragmented memory would give it small pages and
// understate the bandwidth. Not thread-safe.
class ReadBandwidthProbe {
 public:
  explicit ReadBandwidthProbe(int64_t bytes = int64_t{512} << 20);
  ~ReadBandwidthProbe();
  ReadBandwidthProbe(const ReadBandwidthProbe&) = delete;
  ReadBandwidthProbe& operator=(const ReadBandwidthProbe&) = delete;

  // Best of `reps` timed passes, in bytes per second.
  double Measure(int reps = 5);

 private:
  uint64_t* words_ = nullptr;
  int64_t n_ = 0;
};

// One probe, measured once.
double MeasureReadBandwidth(int64_t bytes = int64_t{512} << 20, int reps = 5);

}  // namespace edgesplit::kernels

#endif  // EDGESPLIT_KERNELS_CPU_READ_BANDWIDTH_H_
