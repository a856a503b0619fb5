// The machine's memory read bandwidth as the kernels' threads see it: the
// honest limit for decode, which reads every weight once per token.
#ifndef EDGESPLIT_KERNELS_CPU_READ_BANDWIDTH_H_
#define EDGESPLIT_KERNELS_CPU_READ_BANDWIDTH_H_

#include <cstdint>

namespace edgesplit::kernels {

// Best of `reps` timed passes of a plain streaming read (an integer sum,
// which every compiler vectorises) over a buffer of `bytes` (far larger
// than the caches), split over the kernel pool's threads (compute_pool.h).
// Bytes per second.
double MeasureReadBandwidth(int64_t bytes = int64_t{512} << 20, int reps = 5);

}  // namespace edgesplit::kernels

#endif  // EDGESPLIT_KERNELS_CPU_READ_BANDWIDTH_H_
