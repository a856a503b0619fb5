#include "kernels/cpu/lora_sgmv.h"

#include <algorithm>
#include <cassert>
#include <vector>

#include "kernels/cpu/compute_pool.h"
#include "kernels/cpu/gemv.h"
#include "kernels/cpu/isa.h"

namespace edgesplit::kernels {
namespace {

// A block of output rows of one segment's shrink or expand.
struct Task {
  int64_t segment;
  int64_t o0, o1;
};

// Splits each segment's `n(segment)` output rows into blocks of about
// `block` rows: enough tasks for the pool, each still long enough that the
// GEMV's inner loops dominate.
template <typename RowsOf>
std::vector<Task> Tasks(int64_t count, int64_t block, RowsOf n) {
  std::vector<Task> tasks;
  for (int64_t s = 0; s < count; ++s) {
    const int64_t rows = n(s);
    for (int64_t o = 0; o < rows; o += block) {
      tasks.push_back({s, o, std::min(rows, o + block)});
    }
  }
  return tasks;
}

}  // namespace

void LoraSgmv(const LoraSegment* segments, int64_t count, const float* x,
              int64_t in, int64_t out, float* y) {
  if (count <= 0 || in <= 0 || out <= 0) return;
  // Scratch: each segment's low-rank rows and its delta, at offsets
  // computed up front (workers write disjoint parts of the caller's
  // buffers).
  thread_local std::vector<float> low, delta;
  std::vector<int64_t> low_at(count), delta_at(count);
  int64_t low_size = 0, delta_size = 0;
  for (int64_t s = 0; s < count; ++s) {
    assert(segments[s].rows >= 0 && segments[s].rank > 0);
    low_at[s] = low_size;
    delta_at[s] = delta_size;
    low_size += segments[s].rows * segments[s].rank;
    delta_size += segments[s].rows * out;
  }
  if (delta_size == 0) return;
  low.resize(static_cast<size_t>(low_size));
  delta.resize(static_cast<size_t>(delta_size));
  float* low_data = low.data();
  float* delta_data = delta.data();
  const Isa isa = ActiveIsa();

  // Shrink: low [rows, rank] = x[rows] A^T, a block of A's rows per task.
  const std::vector<Task> shrink =
      Tasks(count, 8, [&](int64_t s) { return segments[s].rank; });
  ParallelFor(
      static_cast<int64_t>(shrink.size()), 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const LoraSegment& g = segments[shrink[t].segment];
          if (g.rows == 0) continue;
          GemvOn(isa, {WeightType::kF32, g.a, g.rank, in}, x + g.row_begin * in,
                 g.rows, low_data + low_at[shrink[t].segment], shrink[t].o0,
                 shrink[t].o1);
        }
      });
  // Expand: delta [rows, out] = low B^T, then y += scaling * delta, a
  // block of B's rows (columns of y) per task.
  const std::vector<Task> expand =
      Tasks(count, 256, [&](int64_t) { return out; });
  ParallelFor(static_cast<int64_t>(expand.size()), 1,
              [&](int64_t t0, int64_t t1) {
                for (int64_t t = t0; t < t1; ++t) {
                  const int64_t s = expand[t].segment;
                  const LoraSegment& g = segments[s];
                  if (g.rows == 0) continue;
                  const int64_t o0 = expand[t].o0, o1 = expand[t].o1;
                  float* d = delta_data + delta_at[s];
                  GemvOn(isa, {WeightType::kF32, g.b, out, g.rank},
                         low_data + low_at[s], g.rows, d, o0, o1);
                  for (int64_t r = 0; r < g.rows; ++r) {
                    float* yr = y + (g.row_begin + r) * out;
                    const float* dr = d + r * out;
                    for (int64_t o = o0; o < o1; ++o)
                      yr[o] += g.scaling * dr[o];
                  }
                }
              });
}

}  // namespace edgesplit::kernels
